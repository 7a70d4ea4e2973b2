//! The desk: every operation of the API, carried out against the store and
//! the hub with the domain's rules.
//!
//! Concurrency: one `std::sync::Mutex` over the routing state (experts,
//! who is online, tickets waiting for an owner) serialises decisions that
//! read and change it, so a ticket can never get two owners nor an expert
//! more tickets than their capacity. It is held only while deciding and
//! applying a commit (microseconds), never across an await: durability is
//! awaited after it is released, so one flush covers many writers. Every
//! ownership change is also a compare-and-swap on the stored version, which
//! is what will keep the single-owner rule across nodes.

mod deadlines;
mod experts;
mod knowledge;
mod live;
mod routing;
#[cfg(test)]
mod tests;
mod tickets;

use self::deadlines::{micros, Deadline};
pub use self::experts::{ExpertProfile, ExpertStream, ExpertView};
pub use self::live::{ActivityFeed, TicketActivityView};
use self::routing::RoutingState;
pub use self::tickets::{NewTicket, TicketPage, TicketQuery};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::{AuthLimits, TokenRegistry};
use crate::domain::{BotName, DeskError, Expert, SlaPolicies, Ticket, TicketId, UnixMicros};
use crate::hub::Hub;
use crate::knowledge::KnowledgeBase;
use crate::stats::StatsKeeper;
use crate::store::{Appended, Change, Lsn, Storage, StoreError};
use crate::timers::{Clock, SystemClock, Timers};

/// Most tickets one ListTickets call examines, so a rare filter over a big
/// store answers with a short page and a token instead of scanning it all.
const LIST_SCAN_LIMIT: usize = 10_000;
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 500;

impl From<StoreError> for DeskError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => DeskError::Conflict(what),
            StoreError::Fenced(what) => DeskError::NotWriter(what),
            StoreError::Timeout(what) => DeskError::OutcomeUnknown(what),
            StoreError::Unavailable(what) => DeskError::StorageUnavailable(what),
            StoreError::Closed => DeskError::ShuttingDown,
            StoreError::DiskFull { data_dir } => DeskError::DiskFull { data_dir },
            StoreError::DiskFailed { data_dir, reason } => {
                DeskError::DiskFailed { data_dir, reason }
            }
            other @ (StoreError::Corrupt(_) | StoreError::Backend(_)) => {
                DeskError::Storage(other.to_string())
            }
        }
    }
}

/// The idempotency key of a request id. Each bot has its own namespace, so
/// one bot can neither replay nor probe another's request ids (bot names
/// have no ':', so the two forms never collide).
fn request_key(operation: &str, bot: Option<&BotName>, request_id: &str) -> String {
    match bot {
        Some(bot) => format!("{operation}@{bot}:{request_id}"),
        None => format!("{operation}:{request_id}"),
    }
}

/// What the desk runs by besides its store.
#[derive(Clone, Debug)]
pub struct DeskOptions {
    /// Service levels per priority.
    pub sla: SlaPolicies,
    /// How long the owner of an active P1 or P2 ticket may be offline
    /// before the ticket goes back to routing.
    pub owner_grace: Duration,
    pub clock: Arc<dyn Clock>,
    /// Where the knowledge base's search index lives; `None`: in memory
    /// (rebuilt from the store at every start).
    pub knowledge_index: Option<PathBuf>,
}

impl Default for DeskOptions {
    fn default() -> Self {
        DeskOptions {
            sla: SlaPolicies::default(),
            owner_grace: Duration::from_secs(600),
            clock: Arc::new(SystemClock),
            knowledge_index: None,
        }
    }
}

#[derive(Debug)]
struct Inner {
    storage: Storage,
    hub: Hub,
    routing: Mutex<RoutingState>,
    shutdown: CancellationToken,
    tokens: Arc<TokenRegistry>,
    options: DeskOptions,
    timers: Arc<Timers<Deadline>>,
    /// Experts not seen online since the desk opened count as offline from here.
    opened_at: UnixMicros,
    stats: Arc<StatsKeeper>,
    knowledge: Arc<KnowledgeBase>,
    /// Set (under the routing lock) when an append was refused by the
    /// log's fence or its outcome is unknown: the routing state may hold
    /// what the log does not, and nothing is appended on it until it is
    /// reloaded. An atomic, so that every operation can look without
    /// taking the lock.
    stale: AtomicBool,
    /// Held while a stale routing state is brought up to date.
    resync: tokio::sync::Mutex<()>,
    /// The log's epoch the routing state was loaded at: another one means
    /// the state changed under it (this node became the writer, or its
    /// replica was rebuilt), and it is loaded again before any append.
    loaded_epoch: AtomicU64,
    /// What is never stored: activity on tickets, expert changes.
    live: live::Live,
}

/// What a desk is built from besides its storage and hub; the server hands
/// the same parts to the services that use them directly.
#[derive(Clone, Debug)]
pub struct DeskParts {
    pub tokens: Arc<TokenRegistry>,
    pub knowledge: Arc<KnowledgeBase>,
    /// Cancelled when shutdown begins: ends every stream, refuses new work.
    pub shutdown: CancellationToken,
}

impl DeskParts {
    /// The parts over `storage`: tokens loaded, the search index opened
    /// (rebuilt when missing or stale). Blocking.
    pub fn open(
        storage: &Storage,
        limits: AuthLimits,
        options: &DeskOptions,
    ) -> Result<Self, DeskError> {
        let shutdown = CancellationToken::new();
        let tokens = Arc::new(TokenRegistry::open(storage, limits, shutdown.clone())?);
        let knowledge = Arc::new(KnowledgeBase::open(
            storage,
            options.knowledge_index.as_deref(),
            options.clock.clone(),
        )?);
        Ok(DeskParts {
            tokens,
            knowledge,
            shutdown,
        })
    }
}

/// The swarmdesk service. Cheap to clone; every clone is the same desk.
#[derive(Clone, Debug)]
pub struct Desk {
    inner: Arc<Inner>,
}

impl Desk {
    /// Loads the routing state (every expert, the tickets waiting for an
    /// owner: not every ticket ever) from an open store.
    /// Every deadline of the live tickets is set again: one that passed
    /// while the server was down fires once the timers run.
    pub fn open(
        storage: Storage,
        hub: Hub,
        parts: DeskParts,
        options: DeskOptions,
    ) -> Result<Self, DeskError> {
        let DeskParts {
            tokens,
            knowledge,
            shutdown,
        } = parts;
        let timers = Arc::new(Timers::default());
        let opened_at = options.clock.now_micros();
        let (state, live) = RoutingState::load(&storage, &timers)?;
        let grace = micros(options.owner_grace);
        for owner in state.urgent.keys() {
            timers.set(Deadline::OwnerAway(owner.clone()), opened_at + grace);
        }
        crate::metrics::metrics()
            .tickets_waiting
            .set(state.pending.len() as i64);
        tracing::info!(
            experts = state.experts.len(),
            live_tickets = live,
            waiting_tickets = state.pending.len(),
            deadlines = timers.len(),
            last_position = storage.tickets.last_position(),
            "desk loaded"
        );
        hub.start_at(storage.tickets.last_position());
        let loaded_epoch = AtomicU64::new(storage.log.epoch());
        let stats = StatsKeeper::open(storage.tickets.clone(), storage.blobs.clone())?;
        Ok(Desk {
            inner: Arc::new(Inner {
                storage,
                hub,
                routing: Mutex::new(state),
                shutdown,
                tokens,
                options,
                timers,
                opened_at,
                stats,
                knowledge,
                stale: AtomicBool::new(false),
                resync: tokio::sync::Mutex::new(()),
                loaded_epoch,
                live: live::Live::default(),
            }),
        })
    }

    /// The desk's clock (event times, service levels).
    pub fn now(&self) -> UnixMicros {
        self.inner.options.clock.now_micros()
    }

    /// Ends every open stream (with its last position) and refuses new work.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Closes what the desk runs on, in order, once the server has stopped
    /// serving: tokens' last use and the stats snapshot are stored, the
    /// search index is closed (merges finished), then the log is made
    /// durable and closed. Every step runs even if one before it failed;
    /// the first failure is returned.
    pub async fn close(&self) -> Result<(), DeskError> {
        self.begin_shutdown();
        if let Err(e) = self.inner.tokens.save_last_used() {
            tracing::warn!(error = %e, "cannot store tokens' last use");
        }
        self.inner.stats.save();
        let knowledge = self.inner.knowledge.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || knowledge.close()).await {
            tracing::warn!(error = %e, "closing the knowledge base failed");
        }
        let log = self.inner.storage.log.clone();
        tokio::task::spawn_blocking(move || log.close())
            .await
            .map_err(|e| DeskError::Storage(format!("closing the store: {e}")))??;
        tracing::info!("store closed");
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, RoutingState> {
        // Every change under this lock is applied to the store before the
        // cached state; a panic can at worst leave the cache one write
        // behind the store, never ahead of it.
        self.inner
            .routing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_running(&self) -> Result<(), DeskError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(DeskError::ShuttingDown);
        }
        Ok(())
    }

    /// Appends `change` under the routing lock. A stale routing state (see
    /// [`Desk::resync_after`]) appends nothing until it is caught up.
    fn append(&self, state: &mut RoutingState, change: Change) -> Result<Appended, DeskError> {
        if self.is_stale() {
            self.inner.stale.store(true, Ordering::Release);
            return Err(DeskError::CatchingUp(
                "this node is catching up from the log; retry".into(),
            ));
        }
        self.inner
            .storage
            .log
            .append(change)
            .map_err(|e| self.resync_after(state, e.into()))
    }

    /// Stores an expert alone (compare-and-swap on its version).
    fn append_expert(&self, state: &mut RoutingState, expert: &Expert) -> Result<Lsn, DeskError> {
        Ok(self.append(state, Change::Expert(expert.clone()))?.lsn)
    }

    async fn durable(&self, lsn: Lsn) -> Result<(), DeskError> {
        if lsn > 0 {
            if let Err(e) = self.inner.storage.log.wait_durable(lsn).await {
                let mut state = self.lock();
                return Err(self.resync_after(&mut state, e.into()));
            }
        }
        Ok(())
    }

    /// After a lost fence or an append whose outcome is unknown, what the
    /// desk computed may not be in the log: the routing state is marked
    /// stale, nothing is appended on it, and the next operation catches up
    /// ([`Desk::ready`]) before it decides anything. Other errors left
    /// nothing behind and change nothing here. Returns `error`.
    /// `locked` is the routing state, so the caller holds the lock: no
    /// append passes between the failure and the mark.
    fn resync_after(&self, locked: &mut RoutingState, error: DeskError) -> DeskError {
        if matches!(
            error,
            DeskError::NotWriter(_) | DeskError::OutcomeUnknown(_)
        ) {
            tracing::warn!(%error, "routing state dropped; catching up from the log");
            let _ = locked;
            self.inner.stale.store(true, Ordering::Release);
        }
        error
    }

    /// Refuses work while shutting down, and brings a stale routing state
    /// up to date: the log is read to its end and the routing state
    /// reloaded from what was applied, on a blocking thread and outside
    /// the routing lock (reading a replicated log crosses a network). Who
    /// is online is this node's own knowledge and is kept.
    pub(crate) async fn ready(&self) -> Result<(), DeskError> {
        self.check_running()?;
        if !self.is_stale() {
            return Ok(());
        }
        let _one_at_a_time = self.inner.resync.lock().await;
        if !self.is_stale() {
            return Ok(());
        }
        let epoch = self.inner.storage.log.epoch();
        let (storage, timers) = (self.inner.storage.clone(), self.inner.timers.clone());
        let (fresh, live) = tokio::task::spawn_blocking(move || {
            storage.log.catch_up()?;
            RoutingState::load(&storage, &timers)
        })
        .await
        .map_err(|e| DeskError::Storage(format!("catch-up task: {e}")))??;
        // Nothing was appended meanwhile: a stale state appends nothing.
        let mut state = self.lock();
        let mut fresh = fresh;
        fresh.online = std::mem::take(&mut state.online);
        fresh.remote = std::mem::take(&mut state.remote);
        fresh.offline_since = std::mem::take(&mut state.offline_since);
        *state = fresh;
        // As at opening: an urgent ticket's owner who is offline has their
        // grace counted (from when they went, or from the desk's opening).
        let away: Vec<_> = state
            .urgent
            .keys()
            .filter(|owner| !state.is_online(owner))
            .cloned()
            .collect();
        for owner in away {
            self.watch_absence(&state, &owner);
        }
        crate::metrics::metrics()
            .tickets_waiting
            .set(state.pending.len() as i64);
        self.inner.loaded_epoch.store(epoch, Ordering::Release);
        self.inner.stale.store(false, Ordering::Release);
        drop(state);
        tracing::info!(live_tickets = live, "caught up from the log");
        Ok(())
    }

    /// Whether the routing state must be loaded again before anything is
    /// appended on it (see [`Desk::resync_after`], `loaded_epoch`).
    pub(crate) fn is_stale(&self) -> bool {
        self.inner.stale.load(Ordering::Acquire)
            || self.inner.storage.log.epoch() != self.inner.loaded_epoch.load(Ordering::Acquire)
    }

    /// Whether this node appends to the log (a cluster's followers do not:
    /// their writes go to the writer, and they do no background writes).
    fn writes(&self) -> bool {
        self.inner.storage.log.writes_here()
    }

    /// Brings the routing state up to date now (after this node became
    /// the cluster's writer), rather than at the next operation.
    pub async fn resync(&self) -> Result<(), DeskError> {
        self.ready().await
    }

    /// Takes in an expert another node wrote (applied from the log), so
    /// that a follower's reads and streams see it.
    pub fn expert_applied(&self, expert: &Expert) {
        if !self.writes() {
            self.lock().put_expert(expert.clone());
            self.expert_changed(&expert.id);
        }
    }

    /// Reads every expert again into a follower's routing state (after its
    /// replica was rebuilt). Blocking.
    pub fn reload_experts(&self) {
        if self.writes() {
            return;
        }
        match self.inner.storage.experts.experts() {
            Ok(experts) => {
                let mut state = self.lock();
                for expert in experts {
                    state.put_expert(expert);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot reload the experts"),
        }
    }

    fn load_ticket(&self, id: TicketId) -> Result<Ticket, DeskError> {
        self.inner
            .storage
            .tickets
            .ticket(id)?
            .ok_or(DeskError::TicketNotFound(id))
    }
}
