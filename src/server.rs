//! Wiring: the store, the hub and the desk behind the gRPC services, plus
//! health and reflection, served until a shutdown signal.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::auth::{AuthLimits, TokenRegistry};
use crate::cluster::forward::ForwardLayer;
use crate::cluster::{Cluster, ClusterConfig};
use crate::desk::{Desk, DeskOptions, DeskParts};
use crate::domain::SlaPolicies;
use crate::hub::Hub;
use crate::listener::capped_incoming;
use crate::rpc::admin::AdminApi;
use crate::rpc::experts::ExpertApi;
pub use crate::rpc::gate::AuthMode;
use crate::rpc::gate::Authenticate;
use crate::rpc::knowledge::KnowledgeApi;
use crate::rpc::pb::admin_service_server::AdminServiceServer;
use crate::rpc::pb::expert_service_server::ExpertServiceServer;
use crate::rpc::pb::knowledge_service_server::KnowledgeServiceServer;
use crate::rpc::pb::stats_service_server::StatsServiceServer;
use crate::rpc::pb::ticket_service_server::TicketServiceServer;
use crate::rpc::pb::FILE_DESCRIPTOR_SET;
use crate::rpc::stats::StatsApi;
use crate::rpc::tickets::TicketApi;
use crate::rpc::{DeskCell, Served};
use crate::store::jetstream::{JetStreamConfig, JetStreamLog};
use crate::store::sled::{SledConfig, SledStore};
use crate::store::Storage;
use crate::store::{Change, ChangeObserver};
use crate::timers::{Clock, SystemClock};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// Events buffered per stream before it is made to catch up from the store.
    pub stream_buffer: usize,
    /// sled's page cache, in bytes.
    pub cache_capacity: u64,
    /// Largest request message accepted, in bytes (gRPC's limit stays on).
    pub max_message_bytes: usize,
    /// How long in-flight work may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Where to serve Prometheus `/metrics`; off when `None`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Whether calls must carry a token (off: loopback only).
    pub auth: AuthMode,
    /// Per-token rate and stream caps, and the server's stream cap.
    pub limits: AuthLimits,
    /// Serve TLS with these files; plaintext when `None`.
    pub tls: Option<TlsFiles>,
    /// Connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams (calls) on one connection.
    pub max_streams_per_connection: u32,
    /// Longest a unary call may run (streams are not cut).
    pub request_timeout: Duration,
    /// How long a new connection has to send its first bytes (and, with
    /// TLS, to finish its handshake) before it is closed.
    pub handshake_timeout: Duration,
    /// Service levels per priority.
    pub sla: SlaPolicies,
    /// How long the owner of an active P1 or P2 ticket may be offline
    /// before the ticket is routed again.
    pub owner_grace: Duration,
    /// The desk's time (events, service levels, owners' grace): the
    /// system's, or one a test moves by hand.
    pub clock: Arc<dyn Clock>,
    /// Cluster mode (the log on NATS JetStream); `None`: a single node on
    /// its embedded sled store.
    pub cluster: Option<ClusterConfig>,
    /// Serve the web console (and gRPC-web) on the API's port.
    pub console: bool,
}

/// PEM files of the server's TLS identity, and the CA that client
/// certificates must chain to for mutual TLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            stream_buffer: 1024,
            cache_capacity: 256 * 1024 * 1024,
            // A 64 KiB description plus 16 skills fits many times over.
            max_message_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            metrics_listen: None,
            auth: AuthMode::On,
            limits: AuthLimits::default(),
            tls: None,
            max_connections: 10_000,
            max_streams_per_connection: 1024,
            request_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            sla: SlaPolicies::default(),
            owner_grace: DeskOptions::default().owner_grace,
            clock: Arc::new(SystemClock),
            cluster: None,
            console: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The store refused writes ({0}) and the disk is writable again: the
    /// server stopped in order to be started again, which recovers the
    /// store ([`EXIT_RESTART`]).
    #[error("restart needed: the store refused writes ({0}); the data dir is writable again")]
    RestartNeeded(String),
    #[error("{0}")]
    Desk(#[from] crate::domain::DeskError),
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data dir {path} is not writable: {source}")]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "--auth off is for local experiments: refused on {0}, which is not a loopback address"
    )]
    AuthOffNotLoopback(std::net::SocketAddr),
    #[error("cannot read {what} {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Fails early, with the path in the message, when the data dir cannot be
/// written (sled would otherwise fail later with a less helpful error).
fn check_writable(dir: &std::path::Path) -> Result<(), ServerError> {
    let probe = dir.join(".swarmdesk-write-check");
    std::fs::write(&probe, b"ok")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|source| ServerError::NotWritable {
            path: dir.to_path_buf(),
            source,
        })
}

/// Where, under the data dir, the knowledge base's search index lives
/// (derived data: rebuilt from the store when missing).
pub const KNOWLEDGE_INDEX_DIR: &str = "knowledge-index";

/// Opens the store and desk for `config` (recovery happens here).
pub async fn open_desk(config: &ServerConfig) -> Result<Served, ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    check_writable(&config.data_dir)?;
    let hub = Hub::new(config.stream_buffer);
    let sink = hub.clone();
    let (storage, replicated) = match &config.cluster {
        None => {
            let sled_config = SledConfig {
                cache_capacity: config.cache_capacity,
                ..SledConfig::new(&config.data_dir)
            };
            let store =
                tokio::task::spawn_blocking(move || SledStore::open(&sled_config, Arc::new(sink)))
                    .await??;
            let store = Arc::new(store);
            (Storage::new(store.clone(), store.state().clone()), None)
        }
        Some(cluster) => {
            let js = JetStreamConfig {
                name: cluster.name.clone(),
                replicas: cluster.replicas,
                cache_capacity: config.cache_capacity,
                credentials: cluster.credentials.clone(),
                tls_ca: cluster.tls_ca.clone(),
                ..JetStreamConfig::new(
                    cluster.urls.clone(),
                    cluster.node_id.clone(),
                    config.data_dir.clone(),
                )
            };
            // Applies the log to its end before the desk loads from it.
            let log = tokio::task::spawn_blocking(move || JetStreamLog::open(js, Arc::new(sink)))
                .await??;
            let log = Arc::new(log);
            (log.storage(), Some(log))
        }
    };
    let options = DeskOptions {
        sla: config.sla.clone(),
        owner_grace: config.owner_grace,
        knowledge_index: Some(config.data_dir.join(KNOWLEDGE_INDEX_DIR)),
        clock: config.clock.clone(),
    };
    let limits = config.limits.clone();
    let served = tokio::task::spawn_blocking(move || -> Result<Served, ServerError> {
        let parts = DeskParts::open(&storage, limits, &options)?;
        let snapshot = storage.snapshot.clone();
        let log = storage.log.clone();
        let desk = Desk::open(storage, hub, parts.clone(), options)?;
        Ok(Served {
            desk,
            tokens: parts.tokens,
            knowledge: parts.knowledge,
            snapshot,
            log,
            cluster: None,
        })
    })
    .await??;
    let mut served = served;
    if let (Some(log), Some(cluster)) = (replicated, &config.cluster) {
        let followed = Arc::new(Followed {
            desk: served.desk.clone(),
            tokens: served.tokens.clone(),
            knowledge: served.knowledge.clone(),
        });
        log.observe(followed.clone());
        // What was applied between loading and observing.
        let again = followed.clone();
        tokio::task::spawn_blocking(move || again.rebuilt()).await?;
        served.cluster = Some(Arc::new(Cluster::join(cluster.clone(), log).await?));
        // In a cluster the first admin token is the writer's to make.
        return Ok(served);
    }
    if config.auth == AuthMode::On {
        if let Some(path) = served.tokens.ensure_admin(&config.data_dir).await? {
            tracing::info!(path = %path.display(), "created the first admin token; it is in this file (mode 0600)");
        }
    }
    Ok(served)
}

/// What a cluster node keeps besides its replica, kept up with the log:
/// tokens it authenticates, articles it indexes, experts it routes and
/// streams to.
struct Followed {
    desk: Desk,
    tokens: Arc<TokenRegistry>,
    knowledge: Arc<crate::knowledge::KnowledgeBase>,
}

impl ChangeObserver for Followed {
    fn applied(&self, change: &Change) {
        match change {
            Change::Token(record) => self.tokens.applied(record),
            Change::Article(article) => self.knowledge.applied(article),
            Change::Expert(expert) => self.desk.expert_applied(expert),
            Change::Ticket(_) | Change::KnowledgeCounts { .. } => {}
        }
    }

    fn rebuilt(&self) {
        if let Err(e) = self.tokens.reload() {
            tracing::warn!(error = %e, "cannot reload the tokens");
        }
        self.knowledge.refresh();
        self.desk.reload_experts();
    }
}

/// Sets the overall and per-service health.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <TicketServiceServer<TicketApi> as NamedService>::NAME,
            status,
        )
        .await;
    health
        .set_service_status(
            <ExpertServiceServer<ExpertApi> as NamedService>::NAME,
            status,
        )
        .await;
    health
        .set_service_status(<AdminServiceServer<AdminApi> as NamedService>::NAME, status)
        .await;
    health
        .set_service_status(<StatsServiceServer<StatsApi> as NamedService>::NAME, status)
        .await;
    health
        .set_service_status(
            <KnowledgeServiceServer<KnowledgeApi> as NamedService>::NAME,
            status,
        )
        .await;
}

fn read_tls(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::TlsFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn tls_config(
    files: &TlsFiles,
    handshake_timeout: Duration,
) -> Result<ServerTlsConfig, ServerError> {
    let identity = Identity::from_pem(
        read_tls("TLS certificate", &files.cert)?,
        read_tls("TLS key", &files.key)?,
    );
    let mut config = ServerTlsConfig::new()
        .identity(identity)
        // A client that connects and never finishes the handshake must
        // not hold its connection slot for long.
        .timeout(handshake_timeout);
    if let Some(ca) = &files.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read_tls("client CA", ca)?));
    }
    Ok(config)
}

/// Refuses `--auth off` off loopback, and warns about plaintext off it.
fn check_exposure(config: &ServerConfig, addr: std::net::SocketAddr) -> Result<(), ServerError> {
    let loopback = addr.ip().is_loopback();
    if config.auth == AuthMode::Off {
        if !loopback {
            return Err(ServerError::AuthOffNotLoopback(addr));
        }
        tracing::warn!(%addr, "authentication is OFF: every caller is an admin (local experiments only)");
    }
    if config.tls.is_none() && !loopback {
        tracing::warn!(%addr, "serving without TLS on a non-loopback address: tokens and tickets cross the network in clear; use --tls-cert and --tls-key");
    }
    Ok(())
}

/// Serves on `listener` until `shutdown` resolves, then ends open streams
/// (each with its last position), lets in-flight calls finish within the
/// grace period, and makes the store durable.
///
/// Health (overall and per service) is NOT_SERVING from the start until the
/// store is open and recovered, SERVING then, and NOT_SERVING again from the
/// shutdown signal on; the API answers UNAVAILABLE until the store is open.
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().ok();
    if let Some(addr) = addr {
        check_exposure(&config, addr)?;
    }
    let tls = config
        .tls
        .as_ref()
        .map(|files| tls_config(files, config.handshake_timeout))
        .transpose()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    // Alive from here until the process ends, whatever the store does: a
    // liveness probe must not restart a server that is only refusing
    // writes (its readiness, the other names, says so).
    health
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    let cell: DeskCell = Arc::new(OnceLock::new());

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    // The token is checked before a request body is decoded into work;
    // health and reflection stay open, as probes and tools carry no token.
    let gate = Authenticate::new(cell.clone(), config.auth);
    let tickets = InterceptedService::new(
        TicketServiceServer::new(TicketApi::new(cell.clone()))
            .max_decoding_message_size(config.max_message_bytes),
        gate.clone(),
    );
    let experts = InterceptedService::new(
        ExpertServiceServer::new(ExpertApi::new(cell.clone()))
            .max_decoding_message_size(config.max_message_bytes),
        gate.clone(),
    );
    let stats = InterceptedService::new(
        StatsServiceServer::new(StatsApi::new(cell.clone()))
            .max_decoding_message_size(config.max_message_bytes),
        gate.clone(),
    );
    let knowledge = InterceptedService::new(
        KnowledgeServiceServer::new(KnowledgeApi::new(cell.clone()))
            .max_decoding_message_size(config.max_message_bytes),
        gate.clone(),
    );
    let admin = InterceptedService::new(
        AdminServiceServer::new(AdminApi::new(cell.clone()))
            .max_decoding_message_size(config.max_message_bytes),
        gate,
    );

    // Fires on the shutdown signal, or when start-up fails.
    let stop = CancellationToken::new();
    if let Some(addr) = config.metrics_listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Metrics { addr, source })?;
        tracing::info!(%addr, "serving metrics at /metrics");
        tokio::spawn(crate::metrics::serve(listener, stop.clone()));
    }
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        });
    }
    let draining = {
        let (stop, cell, health) = (stop.clone(), cell.clone(), health.clone());
        async move {
            stop.cancelled().await;
            tracing::info!("shutting down: draining");
            set_health(&health, ServingStatus::NotServing).await;
            // Open streams hold the connection drain open: end them now.
            if let Some(served) = cell.get() {
                served.desk.begin_shutdown();
            }
        }
    };
    // Writes reaching a follower go to the writer; set once the node joined.
    let joined: Arc<OnceLock<Arc<Cluster>>> = Arc::new(OnceLock::new());
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let mut serve = tokio::spawn(
        builder
            // gRPC-web from browsers comes over HTTP/1.1 too.
            .accept_http1(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .max_concurrent_streams(config.max_streams_per_connection)
            .timeout(config.request_timeout)
            // The console's pages, and gRPC-web for the desk's services
            // only, before tonic-web (which refuses other HTTP/1.1).
            .layer(crate::console::ConsoleLayer::new(config.console))
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(crate::rpc::layer::RpcMetricsLayer)
            .layer(ForwardLayer::new(joined.clone()))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(tickets)
            .add_service(experts)
            .add_service(admin)
            .add_service(stats)
            .add_service(knowledge)
            .serve_with_incoming_shutdown(
                capped_incoming(listener, config.max_connections, config.handshake_timeout),
                draining,
            ),
    );

    let served = match open_desk(&config).await {
        Ok(opened) => opened,
        Err(e) => {
            stop.cancel();
            let _ = serve.await;
            return Err(e);
        }
    };
    let desk_handle = served.desk.clone();
    let tokens = served.tokens.clone();
    let log = served.log.clone();
    let cluster = served.cluster.clone();
    if let Some(cluster) = &cluster {
        let _ = joined.set(cluster.clone());
    }
    let _ = cell.set(served);
    let restart = Arc::new(std::sync::OnceLock::new());
    if stop.is_cancelled() {
        // The signal came during recovery: the drain has already run.
        desk_handle.begin_shutdown();
    } else {
        set_health(&health, ServingStatus::Serving).await;
        tracing::info!(?addr, data_dir = %config.data_dir.display(), tls = config.tls.is_some(), auth = ?config.auth, cluster = cluster.as_ref().map(|c| c.node_id()), "serving");
        if let Some(cluster) = &cluster {
            // Subscribed before the heartbeats start: a first promotion
            // that came before the task's first poll would otherwise be
            // missed (no first admin token, no reload).
            let promotions = cluster.promotions();
            tokio::spawn(on_promotion(
                cluster.clone(),
                promotions,
                desk_handle.clone(),
                tokens.clone(),
                (config.auth == AuthMode::On).then(|| config.data_dir.clone()),
                stop.clone(),
            ));
            tokio::spawn(cluster.clone().run(desk_handle.clone(), stop.clone()));
            tokio::spawn(watch_cluster(cluster.clone(), health.clone(), stop.clone()));
        }
        tokio::spawn(save_token_use(tokens, stop.clone()));
        tokio::spawn(watch_store(
            log,
            config.data_dir.clone(),
            health.clone(),
            stop.clone(),
            restart.clone(),
        ));
        desk_handle.start_background(stop.clone());
    }

    let grace = config.shutdown_grace;
    let result = tokio::select! {
        joined = &mut serve => match joined {
            Ok(served) => served.map_err(ServerError::from),
            Err(e) => Err(ServerError::from(e)),
        },
        _ = async {
            stop.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "shutdown grace period over; closing remaining connections");
            serve.abort();
            Ok(())
        }
    };
    let closed = desk_handle.close().await;
    if let Some(why) = restart.get() {
        return Err(ServerError::RestartNeeded(why.clone()));
    }
    closed?;
    result
}

/// Each time this node becomes the cluster's writer: the desk reloads its
/// routing state from the log (setting every deadline again), and, on a
/// cluster without an admin token yet, the first one is made and written
/// to `admin_token_dir` (only the first writer of a new cluster does).
async fn on_promotion(
    cluster: Arc<Cluster>,
    mut promotions: tokio::sync::watch::Receiver<u64>,
    desk: Desk,
    tokens: Arc<TokenRegistry>,
    admin_token_dir: Option<PathBuf>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            changed = promotions.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => return,
        }
        // Presence reports arrive every heartbeat: route with a full view.
        tokio::time::sleep(cluster.heartbeat()).await;
        if let Err(e) = desk.resync().await {
            tracing::warn!(error = %e, "the new writer could not load its routing state");
        }
        if let Some(dir) = &admin_token_dir {
            match tokens.ensure_admin(dir).await {
                Ok(Some(path)) => {
                    tracing::info!(path = %path.display(), "created the cluster's first admin token; it is in this file (mode 0600)")
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot create the first admin token"),
            }
        }
    }
}

/// A cluster node's health: NOT_SERVING while it has no NATS or no writer
/// to send writes to, SERVING again once it has both.
async fn watch_cluster(cluster: Arc<Cluster>, health: HealthReporter, stop: CancellationToken) {
    let mut serving = true;
    let mut probe = WriterProbe::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => return,
        }
        let problem = if !cluster.connected() {
            Some("no connection to NATS".to_owned())
        } else {
            match cluster.writer() {
                None => Some("the cluster has no writer".to_owned()),
                Some(w) if w.node == cluster.node_id() => None,
                Some(w) => probe.reach(&w.url, cluster.peer_tls()).await.err(),
            }
        };
        match (problem, serving) {
            (Some(why), true) => {
                tracing::warn!(why, "health is NOT_SERVING");
                set_health(&health, ServingStatus::NotServing).await;
                serving = false;
            }
            (None, false) => {
                tracing::info!("health is SERVING again");
                set_health(&health, ServingStatus::Serving).await;
                serving = true;
            }
            _ => {}
        }
    }
}

/// Whether a follower reaches the writer it would forward writes to: the
/// writer's health service answers (whatever it says) within a second.
#[derive(Default)]
struct WriterProbe {
    channel: Option<(String, tonic::transport::Channel)>,
}

impl WriterProbe {
    async fn reach(&mut self, url: &str, tls: &crate::client::ClientTls) -> Result<(), String> {
        if self.channel.as_ref().is_none_or(|(u, _)| u != url) {
            let endpoint = crate::client::endpoint(url, tls)
                .map_err(|e| format!("cannot reach the writer at {url}: {e}"))?;
            let channel = endpoint
                .connect_timeout(Duration::from_secs(1))
                .connect_lazy();
            self.channel = Some((url.to_owned(), channel));
        }
        let (_, channel) = self.channel.as_ref().expect("set above");
        let asked = tokio::time::timeout(
            Duration::from_secs(1),
            tonic_health::pb::health_client::HealthClient::new(channel.clone())
                .check(tonic_health::pb::HealthCheckRequest::default()),
        )
        .await;
        match asked {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) if status.code() != tonic::Code::Unavailable => Ok(()),
            Ok(Err(status)) => Err(format!(
                "cannot reach the writer at {url}: {}",
                status.message()
            )),
            Err(_) => Err(format!("the writer at {url} did not answer within 1 s")),
        }
    }
}

/// The health service name that answers SERVING while the process runs, for
/// liveness probes; the whole server's (`""`) and each service's say whether
/// it serves (readiness).
pub const LIVENESS_SERVICE: &str = "liveness";

/// The exit status of a server that stopped to be restarted (EX_TEMPFAIL):
/// the systemd unit and Kubernetes start it again.
pub const EXIT_RESTART: u8 = 75;

/// How often health looks at the store, and a failed store at its disk.
const STORE_WATCH: Duration = Duration::from_millis(250);
const DISK_PROBE: Duration = Duration::from_secs(1);

/// While the store refuses writes (a full or unwritable disk), health says
/// NOT_SERVING and a metric says why; reads go on. Once the data dir can
/// be written again the server shuts down in order, asking to be started
/// again (`RestartNeeded`, a distinct exit status): the restart recovers
/// the store, which sled cannot do in the process that saw it fail.
async fn watch_store(
    log: Arc<dyn crate::store::Log>,
    data_dir: PathBuf,
    health: HealthReporter,
    stop: CancellationToken,
    restart: Arc<std::sync::OnceLock<String>>,
) {
    let mut every = tokio::time::interval(STORE_WATCH);
    let failure = loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Some(failure) = log.failure() {
            break failure;
        }
    };
    let reason = match &failure {
        crate::store::StoreError::DiskFull { .. } => "disk_full",
        crate::store::StoreError::DiskFailed { .. } => "unwritable",
        _ => "failed",
    };
    crate::metrics::metrics()
        .store_refusing_writes
        .with_label_values(&[reason])
        .set(1);
    tracing::error!(error = %failure, "the store refuses writes; health is NOT_SERVING, reads go on");
    set_health(&health, ServingStatus::NotServing).await;
    let mut every = tokio::time::interval(DISK_PROBE);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        let dir = data_dir.clone();
        let writable = tokio::task::spawn_blocking(move || probe_disk(&dir))
            .await
            .is_ok_and(|probed| probed.is_ok());
        if writable {
            tracing::warn!(data_dir = %data_dir.display(), "the data dir can be written again: shutting down to be restarted with the store recovered");
            let _ = restart.set(failure.to_string());
            stop.cancel();
            return;
        }
    }
}

/// Whether the data dir takes a durable write of some room again (1 MiB,
/// written, synced and removed).
fn probe_disk(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(".swarmdesk-space-probe");
    let written = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&vec![0u8; 1024 * 1024])?;
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    written
}

/// Stores tokens' last-use times once a minute (they change on every call,
/// far too often to write each time).
async fn save_token_use(tokens: Arc<TokenRegistry>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = tokens.save_last_used() {
            tracing::warn!(error = %e, "cannot store tokens' last use");
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
