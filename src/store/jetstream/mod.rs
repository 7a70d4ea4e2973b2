//! The replicated backend: the log is a NATS JetStream stream, and every
//! node applies it, in order, to its own sled replica.
//!
//! ```text
//!  writer node                                   every node
//!  append ─▶ replica (speculative) ─▶ pending    consumer ─▶ replica ─▶ sink
//!                  publisher: one message per batch,           (in stream order)
//!                  Nats-Expected-Last-Sequence = last acked
//!                  ack ─▶ durable ─▶ sink
//! ```
//!
//! - **One writer, fenced.** Only a node that was promoted
//!   ([`JetStreamLog::promote`]: it applied the stream to its end) appends.
//!   Every batch it publishes names the stream sequence it expects to be
//!   the last; a deposed writer's batch is refused by JetStream, and the
//!   node steps down. Who *should* write is the lease's business
//!   (`cluster.rs`); safety comes from this fence alone.
//! - **Appends are local.** The desk appends under its routing lock, so an
//!   append is checked and applied to the writer's replica at once
//!   (speculatively) and published in the background; it is durable when
//!   JetStream acknowledged its batch (after quorum). A batch that times
//!   out is retried with the same `Nats-Msg-Id` and expected sequence
//!   until its outcome is known or `append_timeout` passes.
//! - **A replica that holds what the log does not** (a deposed writer's
//!   speculative appends, or any replica after a crash) is rebuilt from
//!   the log beside the current one and swapped in (`replica.rs`).
//! - Events reach the sink once durable: on the writer after the ack, on
//!   the others as they apply the stream; positions are the writer's, so
//!   they are the same on every node.

pub mod audit;
mod follow;
mod publish;
mod replica;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use self::replica::Replica;
use super::{
    Appended, BlobStore, Change, ChangeObserver, DurableFuture, Entry, EventSink, KnowledgeStore,
    Log, Lsn, PairSink, Snapshot, State, Storage, StoreError, TicketStore,
};
use crate::domain::{ArticleId, TicketEvent, TicketId};

/// The oldest NATS server the cluster runs on: 2.11 fixed per-subject
/// compare-and-swap and lost acknowledgements across leader changes
/// (nats-server #4320, #6485), which the fence depends on.
pub const MIN_SERVER: (u64, u64) = (2, 11);

/// How a node reaches the cluster's NATS, and where it keeps its replica.
#[derive(Clone, Debug)]
pub struct JetStreamConfig {
    pub urls: Vec<String>,
    /// This node's name in the cluster (unique).
    pub node_id: String,
    /// The prefix of every stream, bucket and subject, so several desks
    /// can share one NATS.
    pub name: String,
    /// Copies JetStream keeps of the stream (3 in production).
    pub replicas: usize,
    /// Where the replica lives (under `replica-<n>`).
    pub data_dir: PathBuf,
    pub cache_capacity: u64,
    /// How long a batch is retried before its outcome counts as unknown.
    pub append_timeout: Duration,
    pub credentials: Option<PathBuf>,
    /// A CA to trust for the NATS servers' TLS (TLS is then required).
    pub tls_ca: Option<PathBuf>,
}

impl JetStreamConfig {
    pub fn new(urls: Vec<String>, node_id: impl Into<String>, data_dir: PathBuf) -> Self {
        JetStreamConfig {
            urls,
            node_id: node_id.into(),
            name: "swarmdesk".into(),
            replicas: 3,
            data_dir,
            cache_capacity: 256 * 1024 * 1024,
            append_timeout: Duration::from_secs(10),
            credentials: None,
            tls_ca: None,
        }
    }

    /// The stream holding the log.
    pub fn stream_name(&self) -> String {
        format!("{}_LOG", nats_token(&self.name).to_uppercase())
    }

    /// The subject the log is published on.
    pub fn subject(&self) -> String {
        format!("{}.log", nats_token(&self.name))
    }
}

/// `name` with what NATS does not allow in a stream or bucket name replaced.
pub fn nats_token(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One stream message: the entries of one group-commit batch.
#[derive(Debug, Serialize, Deserialize)]
struct Batch {
    entries: Vec<Entry>,
}

/// Whether this node writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Applies the log; refuses appends.
    Follower,
    /// Appends: it applied the log to its end when promoted.
    Writer,
    /// Its replica holds what the log does not; a clean one is being
    /// built from the log. Refuses appends.
    Rebuilding,
}

/// An append applied to the writer's replica, not yet published.
#[derive(Debug)]
struct Staged {
    lsn: Lsn,
    entry: Entry,
    events: Vec<Arc<TicketEvent>>,
}

/// Which appends are durable, and which failed.
#[derive(Clone, Debug, Default)]
struct Durable {
    lsn: Lsn,
    /// Appends up to here that are not durable failed with `error`.
    failed_upto: Lsn,
    error: Option<StoreError>,
}

#[derive(Debug)]
struct Core {
    role: Role,
    /// Unique to one promotion: part of every message id it publishes.
    term: String,
    /// The last stream sequence the replica holds (on the writer: the last
    /// acknowledged; its speculative appends come after).
    applied_seq: u64,
    next_lsn: Lsn,
    written_lsn: Lsn,
    durable_lsn: Lsn,
    /// Appends not yet handed to the publisher.
    pending: VecDeque<Staged>,
    /// A batch is being published (its appends are no longer in `pending`).
    in_flight: bool,
    /// Another writer's message was seen while a batch was in flight: the
    /// publisher steps down once it knows that batch's outcome.
    deposed: Option<String>,
    next_ticket: u64,
    next_article: u64,
    /// The position of the last event handed to the sink.
    published_position: u64,
    /// Changes whenever the replica changed under the writer's feet
    /// (promotion, rebuild): routing state computed before is stale.
    epoch: u64,
    closed: bool,
}

struct Shared {
    config: JetStreamConfig,
    client: async_nats::Client,
    subject: String,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    replica: Arc<Replica>,
    sink: Arc<dyn EventSink>,
    observer: std::sync::OnceLock<Arc<dyn ChangeObserver>>,
    core: Mutex<Core>,
    /// Wakes the publisher (appends waiting) and the follower (a rebuild).
    publish_wake: Notify,
    follow_wake: Notify,
    durable: watch::Sender<Durable>,
    /// The stream sequence applied, for those waiting to catch up.
    applied: watch::Sender<u64>,
    /// The stream's last sequence, as last seen.
    stream_last: AtomicU64,
    /// Largest batch payload the servers take.
    max_batch_bytes: usize,
    /// `core.role` and `core.epoch`, readable without the core's lock
    /// (the desk asks under its own lock, which the follower takes while
    /// holding the core's).
    role_now: std::sync::atomic::AtomicU8,
    epoch_now: AtomicU64,
    stop: CancellationToken,
}

impl Shared {
    /// Moves this node to `role` (the caller holds `core`'s lock): a new
    /// epoch, as the state changed under the routing state.
    fn take_role(&self, core: &mut Core, role: Role) {
        core.role = role;
        core.epoch += 1;
        self.role_now.store(role as u8, Ordering::Release);
        self.epoch_now.store(core.epoch, Ordering::Release);
        crate::metrics::metrics()
            .cluster_writer
            .set(i64::from(role == Role::Writer));
    }

    fn role(&self) -> Role {
        match self.role_now.load(Ordering::Acquire) {
            r if r == Role::Writer as u8 => Role::Writer,
            r if r == Role::Rebuilding as u8 => Role::Rebuilding,
            _ => Role::Follower,
        }
    }
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

/// The numbers of a `major.minor.patch` version (a `-suffix` ignored).
pub fn parse_version(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim_start_matches('v').split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Retries `attempt` for up to a minute: a NATS cluster that has just
/// started elects its JetStream leader before it creates anything.
pub(crate) async fn until_jetstream_answers<T, E, F, Fut>(
    what: &str,
    mut attempt: F,
) -> Result<T, StoreError>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut warned = false;
    loop {
        match attempt().await {
            Ok(made) => return Ok(made),
            Err(e) if tokio::time::Instant::now() < deadline => {
                // A few seconds is an election; longer is worth a warning.
                if !warned && started.elapsed() > Duration::from_secs(10) {
                    warned = true;
                    tracing::warn!(what, error = %e, "JetStream has not answered for 10 s; still waiting");
                } else {
                    tracing::info!(what, error = %e, "waiting for JetStream");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(unavailable(&format!("cannot create or find {what}"), e)),
        }
    }
}

/// Connects to NATS and checks the server's version.
pub async fn connect(config: &JetStreamConfig) -> Result<async_nats::Client, StoreError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("swarmdesk {}", config.node_id))
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .retry_on_initial_connect()
        .max_reconnects(None);
    if let Some(path) = &config.credentials {
        options = options.credentials_file(path).await.map_err(|e| {
            StoreError::Backend(format!("NATS credentials {}: {e}", path.display()))
        })?;
    }
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let urls: Vec<async_nats::ServerAddr> = config
        .urls
        .iter()
        .map(|u| {
            u.parse()
                .map_err(|e| StoreError::Backend(format!("NATS URL {u:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let client = options
        .connect(urls)
        .await
        .map_err(|e| unavailable("cannot connect to NATS", e))?;
    // Connecting goes on in the background until a server answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client.server_info().version.is_empty() {
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::Unavailable(format!(
                "no NATS server of {:?} answered within 30 s",
                config.urls
            )));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let info = client.server_info();
    match parse_version(&info.version) {
        Some(found) if found >= MIN_SERVER => Ok(client),
        _ => Err(StoreError::Backend(format!(
            "NATS server {} runs version {}; swarmdesk needs {}.{} or newer, which fixed \
             per-subject compare-and-swap and acknowledgements lost across leader changes \
             (nats-server #4320, #6485) that the writer's fence relies on",
            info.server_name, info.version, MIN_SERVER.0, MIN_SERVER.1
        ))),
    }
}

/// The log over a JetStream stream; one per node. Its network work runs
/// on a runtime of its own, so its blocking calls may be made from any
/// thread (also one of another runtime).
pub struct JetStreamLog {
    shared: Arc<Shared>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("node", &self.shared.config.node_id)
            .field("core", &*lock(&self.shared.core))
            .finish_non_exhaustive()
    }
}

impl JetStreamLog {
    /// Connects, creates the stream if it is missing, opens the replica
    /// and applies the log to its end, as a follower. Blocking.
    pub fn open(config: JetStreamConfig, sink: Arc<dyn EventSink>) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("swarmdesk-nats")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot start the NATS runtime: {e}")))?;
        let opened = std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(Self::start(config, sink)))
                .join()
                .unwrap_or_else(|_| Err(StoreError::Backend("start-up panicked".into())))
        });
        let shared = match opened {
            Ok(shared) => shared,
            Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        runtime.spawn(follow::run(shared.clone()));
        runtime.spawn(publish::run(shared.clone()));
        let log = JetStreamLog {
            shared,
            runtime: Mutex::new(Some(runtime)),
        };
        log.wait_caught_up(Duration::from_secs(600))?;
        Ok(log)
    }

    async fn start(
        config: JetStreamConfig,
        sink: Arc<dyn EventSink>,
    ) -> Result<Arc<Shared>, StoreError> {
        let client = connect(&config).await?;
        let max_payload = client.server_info().max_payload;
        let js = jetstream::new(client.clone());
        let stream = until_jetstream_answers("the log's stream", || {
            js.get_or_create_stream(jetstream::stream::Config {
                name: config.stream_name(),
                subjects: vec![config.subject()],
                num_replicas: config.replicas,
                storage: jetstream::stream::StorageType::File,
                // A retried batch within this window is recognised by its id.
                duplicate_window: Duration::from_secs(120),
                allow_direct: true,
                deny_delete: true,
                deny_purge: true,
                ..Default::default()
            })
        })
        .await?;
        let last = stream.cached_info().state.last_sequence;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StoreError::Backend(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let (replica, applied_seq) = Replica::open(&config.data_dir, config.cache_capacity)?;
        let state = replica.state();
        let published_position = state.last_position();
        tracing::info!(
            node = %config.node_id,
            stream = %config.stream_name(),
            stream_last = last,
            replica_holds = applied_seq,
            "joined the log"
        );
        Ok(Arc::new(Shared {
            client,
            subject: config.subject(),
            js,
            stream,
            sink,
            observer: std::sync::OnceLock::new(),
            core: Mutex::new(Core {
                role: Role::Follower,
                term: String::new(),
                applied_seq,
                next_lsn: 1,
                written_lsn: 0,
                durable_lsn: 0,
                pending: VecDeque::new(),
                in_flight: false,
                deposed: None,
                next_ticket: 1,
                next_article: 1,
                published_position,
                epoch: 0,
                closed: false,
            }),
            publish_wake: Notify::new(),
            follow_wake: Notify::new(),
            durable: watch::channel(Durable::default()).0,
            applied: watch::channel(applied_seq).0,
            stream_last: AtomicU64::new(last),
            // Room for the headers; a batch holds at least one entry.
            max_batch_bytes: max_payload.saturating_sub(4096).max(64 * 1024),
            role_now: std::sync::atomic::AtomicU8::new(Role::Follower as u8),
            epoch_now: AtomicU64::new(0),
            stop: CancellationToken::new(),
            replica: Arc::new(replica),
            config,
        }))
    }

    /// The parts of this backend, as the desk and the server use them.
    pub fn storage(self: &Arc<Self>) -> Storage {
        Storage::new(self.clone(), self.shared.replica.clone())
    }

    /// Tells `observer` of what this node applies from others' appends.
    pub fn observe(&self, observer: Arc<dyn ChangeObserver>) {
        let _ = self.shared.observer.set(observer);
    }

    /// The NATS client the log uses.
    pub fn client(&self) -> async_nats::Client {
        self.shared.client.clone()
    }

    /// Whether every append made so far is durable (or failed).
    pub fn drained(&self) -> bool {
        let core = lock(&self.shared.core);
        core.durable_lsn >= core.written_lsn || core.role != Role::Writer
    }

    /// The log's last sequence and the health of each copy of it.
    pub async fn stream_health(
        &self,
    ) -> Result<(u64, Vec<crate::cluster::ReplicaHealth>), StoreError> {
        let info = self
            .shared
            .stream
            .get_info()
            .await
            .map_err(|e| unavailable("cannot read the log's stream", e))?;
        let mut replicas = Vec::new();
        if let Some(cluster) = &info.cluster {
            if let Some(leader) = &cluster.leader {
                replicas.push(crate::cluster::ReplicaHealth {
                    server: leader.clone(),
                    leader: true,
                    current: true,
                    offline: false,
                    lag: 0,
                });
            }
            for peer in &cluster.replicas {
                replicas.push(crate::cluster::ReplicaHealth {
                    server: peer.name.clone(),
                    leader: false,
                    current: peer.current,
                    offline: peer.offline,
                    lag: peer.lag.unwrap_or(0),
                });
            }
        }
        Ok((info.state.last_sequence, replicas))
    }

    /// Whether the NATS connection is up now.
    pub fn connected(&self) -> bool {
        self.shared.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The JetStream context the log uses (for the cluster's buckets).
    pub fn jetstream(&self) -> jetstream::Context {
        self.shared.js.clone()
    }

    pub fn config(&self) -> &JetStreamConfig {
        &self.shared.config
    }

    /// Resolves once this node applied the stream up to `seq`, or fails
    /// after `timeout` (from any runtime).
    pub async fn applied_to(&self, seq: u64, timeout: Duration) -> Result<(), StoreError> {
        let mut applied = self.shared.applied.subscribe();
        let reached = tokio::time::timeout(timeout, async {
            applied.wait_for(|a| *a >= seq).await.map(drop)
        })
        .await;
        match reached {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::Unavailable(format!(
                "this node has not applied the log up to {seq} within {timeout:?}"
            ))),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.shared.config.node_id
    }

    pub fn role(&self) -> Role {
        self.shared.role()
    }

    /// The last stream sequence this node applied.
    pub fn applied_seq(&self) -> u64 {
        lock(&self.shared.core).applied_seq
    }

    /// The stream's last sequence, as last seen by this node.
    pub fn stream_last(&self) -> u64 {
        self.shared.stream_last.load(Ordering::Acquire)
    }

    /// Runs `work` on the log's runtime and waits for it (from any thread).
    fn block_on<T: Send + 'static>(
        &self,
        timeout: Duration,
        work: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::channel();
        {
            let runtime = self
                .runtime
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let runtime = runtime.as_ref().ok_or(StoreError::Closed)?;
            runtime.spawn(async move {
                let _ = tx.send(work.await);
            });
        }
        rx.recv_timeout(timeout).unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "the log did not answer within {timeout:?}"
            )))
        })
    }

    /// Waits until this node applied the stream up to its last sequence
    /// (read from JetStream now) and holds no state the log does not.
    fn wait_caught_up(&self, timeout: Duration) -> Result<u64, StoreError> {
        let shared = self.shared.clone();
        self.block_on(timeout, async move {
            let target = shared.read_stream_last().await?;
            let mut applied = shared.applied.subscribe();
            loop {
                {
                    let core = lock(&shared.core);
                    if core.closed {
                        return Err(StoreError::Closed);
                    }
                    if core.role != Role::Rebuilding && core.applied_seq >= target {
                        return Ok(core.applied_seq);
                    }
                }
                tokio::select! {
                    changed = applied.changed() => changed.map_err(|_| StoreError::Closed)?,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        })
    }

    /// Makes this node the writer: it applies the log to its end, and its
    /// appends then expect the stream to end where it applied. Called
    /// when it holds the lease; safe (if pointless) when it does not, as
    /// the fence refuses its first batch if another writer moved on.
    pub fn promote(&self, timeout: Duration) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let target = self.wait_caught_up(timeout)?;
            let mut core = lock(&self.shared.core);
            match core.role {
                Role::Writer => return Ok(()),
                Role::Rebuilding => {}
                Role::Follower if core.applied_seq >= target => {
                    let (ticket, article) = self.shared.replica.state().last_ids()?;
                    core.next_ticket = core.next_ticket.max(ticket.0 + 1);
                    core.next_article = core.next_article.max(article.0 + 1);
                    core.term = format!("{:016x}", random_u64());
                    self.shared.take_role(&mut core, Role::Writer);
                    tracing::info!(node = %self.shared.config.node_id, at = core.applied_seq, "this node writes the log");
                    crate::metrics::metrics().cluster_failovers.inc();
                    return Ok(());
                }
                Role::Follower => {}
            }
            drop(core);
            if std::time::Instant::now() >= deadline {
                return Err(StoreError::Unavailable(
                    "could not catch up with the log to become its writer".into(),
                ));
            }
        }
    }

    /// Stops writing (the lease went to another node): appends not yet
    /// acknowledged fail, and a replica holding any is rebuilt.
    pub fn demote(&self, why: &str) {
        self.shared.step_down(StoreError::Fenced(format!(
            "this node stopped writing: {why}"
        )));
    }

    /// Who wrote the stream's last message, and its sequence (None: empty).
    pub fn last_writer(&self) -> Result<Option<(u64, String)>, StoreError> {
        let shared = self.shared.clone();
        self.block_on(Duration::from_secs(10), async move {
            let last = shared.read_stream_last().await?;
            if last == 0 {
                return Ok(None);
            }
            let message = shared
                .stream
                .direct_get(last)
                .await
                .map_err(|e| unavailable("cannot read the log's last message", e))?;
            let node = message
                .headers
                .get(publish::NODE_HEADER)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            Ok(Some((last, node)))
        })
    }
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS has random numbers");
    u64::from_le_bytes(bytes)
}

impl Shared {
    async fn read_stream_last(&self) -> Result<u64, StoreError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| unavailable("cannot read the log's stream", e))?;
        let last = info.state.last_sequence;
        self.stream_last.fetch_max(last, Ordering::AcqRel);
        Ok(last)
    }

    /// Leaves the writer's role after `error` (a lost fence, an unknown
    /// outcome, a demotion): every append not yet durable fails with it,
    /// and a replica holding any of them is rebuilt from the log.
    fn step_down(&self, error: StoreError) {
        let mut core = lock(&self.core);
        if core.role != Role::Writer {
            return;
        }
        let speculative = core.written_lsn > core.durable_lsn;
        // A batch in flight may yet be stored: its callers cannot be told
        // it failed, only that its outcome is unknown (they retry by id).
        let error = match error {
            StoreError::Fenced(why) if core.in_flight => {
                StoreError::Timeout(format!("{why}; a batch was in flight"))
            }
            other => other,
        };
        core.pending.clear();
        core.deposed = None;
        let role = if speculative {
            Role::Rebuilding
        } else {
            Role::Follower
        };
        self.take_role(&mut core, role);
        let failed_upto = core.written_lsn;
        drop(core);
        tracing::warn!(node = %self.config.node_id, %error, speculative, "stepped down from writing the log");
        self.durable.send_modify(|d| {
            d.failed_upto = failed_upto;
            d.error = Some(error);
        });
        self.follow_wake.notify_one();
    }
}

impl Log for JetStreamLog {
    fn allocate_ticket_id(&self) -> Result<TicketId, StoreError> {
        let mut core = lock(&self.shared.core);
        let id = core.next_ticket;
        core.next_ticket += 1;
        Ok(TicketId(id))
    }

    fn allocate_article_id(&self) -> Result<ArticleId, StoreError> {
        let mut core = lock(&self.shared.core);
        let id = core.next_article;
        core.next_article += 1;
        Ok(ArticleId(id))
    }

    fn append(&self, change: Change) -> Result<Appended, StoreError> {
        let mut core = lock(&self.shared.core);
        if core.closed {
            return Err(StoreError::Closed);
        }
        if core.role != Role::Writer {
            return Err(StoreError::Fenced(format!(
                "node {} does not write the log",
                self.shared.config.node_id
            )));
        }
        let state = self.shared.replica.state();
        if let Change::KnowledgeCounts { once: Some(k), .. } = &change {
            if state.idempotent(k)?.is_some() {
                return Ok(Appended::default());
            }
        }
        let is_article = matches!(change, Change::Article(_));
        let first_position = match change {
            Change::Ticket(_) => state.last_position() + 1,
            _ => 0,
        };
        let entry = Entry {
            first_position,
            change,
        };
        // Checked before anything is written: a refused change leaves the
        // replica as it was. A failure part way is a broken replica.
        let events = state.apply(entry.clone()).inspect_err(|e| {
            if !matches!(e, StoreError::Conflict(_)) {
                tracing::error!(error = %e, "applying an append failed part way");
            }
        })?;
        let generation = if is_article {
            state.knowledge_generation()?
        } else {
            0
        };
        let lsn = core.next_lsn;
        core.next_lsn += 1;
        core.written_lsn = lsn;
        core.pending.push_back(Staged {
            lsn,
            entry,
            events: events.clone(),
        });
        drop(core);
        self.shared.publish_wake.notify_one();
        Ok(Appended {
            lsn,
            events,
            generation,
            recorded: true,
        })
    }

    fn wait_durable(&self, lsn: Lsn) -> DurableFuture {
        let mut durable = self.shared.durable.subscribe();
        Box::pin(async move {
            let state = durable
                .wait_for(|d| d.lsn >= lsn || d.failed_upto >= lsn)
                .await
                .map_err(|_| StoreError::Closed)?;
            if state.lsn >= lsn {
                Ok(())
            } else {
                Err(state
                    .error
                    .clone()
                    .unwrap_or_else(|| StoreError::Backend("append failed".into())))
            }
        })
    }

    fn written_lsn(&self) -> Lsn {
        lock(&self.shared.core).written_lsn
    }

    fn catch_up(&self) -> Result<(), StoreError> {
        self.wait_caught_up(Duration::from_secs(60)).map(drop)
    }

    fn failure(&self) -> Option<StoreError> {
        None
    }

    fn epoch(&self) -> u64 {
        self.shared.epoch_now.load(Ordering::Acquire)
    }

    fn writes_here(&self) -> bool {
        self.shared.role() == Role::Writer
    }

    fn close(&self) -> Result<(), StoreError> {
        let Some(runtime) = self
            .runtime
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        else {
            return Ok(());
        };
        // What was appended is published first (bounded by the append timeout).
        let written = self.written_lsn();
        let mut durable = self.shared.durable.subscribe();
        let drained = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    runtime.block_on(async {
                        tokio::time::timeout(
                            self.shared.config.append_timeout,
                            durable.wait_for(|d| d.lsn >= written || d.failed_upto >= written),
                        )
                        .await
                        .is_ok()
                    })
                })
                .join()
                .unwrap_or(false)
        });
        let clean = {
            let mut core = lock(&self.shared.core);
            core.closed = true;
            drained && core.role != Role::Rebuilding && core.durable_lsn >= core.written_lsn
        };
        self.shared.stop.cancel();
        // On a thread of its own: a runtime may not be shut down from
        // within another's tasks.
        std::thread::scope(|scope| {
            scope.spawn(|| runtime.shutdown_timeout(Duration::from_secs(2)));
        });
        if clean {
            let seq = lock(&self.shared.core).applied_seq;
            self.shared.replica.close_at(seq)?;
        } else {
            tracing::warn!(
                "closed with appends not acknowledged: the replica is rebuilt at the next start"
            );
        }
        Ok(())
    }
}

impl BlobStore for JetStreamLog {
    fn put_blob(&self, name: &str, value: &[u8]) -> Result<DurableFuture, StoreError> {
        // Blobs are the node's own (rare): written through at once.
        let state = self.shared.replica.state();
        state.put_blob(name, value)?;
        state.flush()?;
        Ok(Box::pin(async { Ok(()) }))
    }

    fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.shared.replica.state().blob_value(name)
    }
}

impl Snapshot for JetStreamLog {
    fn export(&self, each: &mut PairSink<'_>) -> Result<u64, StoreError> {
        // Appends wait meanwhile, so the copy is of one moment.
        let _core = lock(&self.shared.core);
        self.shared.replica.state().export_pairs(each)
    }
}

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the log failed");
        }
    }
}
