//! Storage: a log, and the state it is applied to, behind small traits.
//!
//! ```text
//!   writer ──Change──▶ Log::append ──Entry──▶ State::apply ──▶ tickets, experts, …
//!                        (positions,            (the one way        │
//!                         fencing,               state changes)     ▼ once durable
//!                         durability)                          EventSink (the hub)
//! ```
//!
//! - A [`Change`] is what a writer asks for: one atomic change (a ticket's
//!   commit, an expert, a token, an article, knowledge counters), with the
//!   ids it needs already allocated by the writer ([`Log::allocate_ticket_id`]).
//! - The [`Log`] checks it against the state (every version is a
//!   compare-and-swap), gives it its event positions and so makes it an
//!   [`Entry`], and appends it. An append is durable once
//!   [`Log::wait_durable`] for its lsn returns; a log shared by several
//!   writers refuses a deposed writer's append with [`StoreError::Fenced`],
//!   and one whose outcome is unknown fails with [`StoreError::Timeout`].
//! - The state ([`State`]) changes only by [`State::apply`] of an entry, so a
//!   node that did not compute an entry reproduces the writer's state, its
//!   positions included, by applying it. Reads are per area: [`TicketStore`]
//!   (tickets, events by position, per-ticket index, idempotency keys),
//!   [`ExpertStore`], [`TokenStore`], [`KnowledgeStore`]; [`BlobStore`] holds
//!   what a node derives for itself (not replicated).
//! - Events reach the [`EventSink`] from apply, in position order, exactly
//!   once each, and only once durable.
//!
//! The embedded backend ([`sled`]) is log and state at once: the commit
//! record in sled is the log entry, applied as it is appended (visible to
//! reads at once, durable after its group commit). A replicated backend
//! keeps its log elsewhere and applies it to a local sled state. Every
//! backend passes the one contract suite (`contract.rs`).

pub mod invariants;
pub mod jetstream;
pub mod memory;
pub mod sled;

#[cfg(test)]
mod contract;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::model::Ticket;
use crate::domain::{
    Article, ArticleId, EventKind, Expert, ExpertId, KnowledgeCounts, Tag, TicketEvent,
    TicketHeader, TicketId, TicketState, TokenRecord, UnixMicros,
};

/// A write's place in the log's order (on this node).
pub type Lsn = u64;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare-and-swap lost: the stored version was not the expected one.
    #[error("version conflict on {0}")]
    Conflict(String),
    /// Another writer appended to the log first: this one must step down,
    /// drop what it computed and catch up.
    #[error("not the writer: {0}")]
    Fenced(String),
    /// The append may or may not have happened (a timeout): retry with the
    /// same request id once the log is read again.
    #[error("outcome unknown: {0}")]
    Timeout(String),
    /// The backend cannot be reached now; nothing was written.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The disk holding the data dir is full: nothing more can be stored
    /// until space is freed.
    #[error("no space left on the disk of data dir {data_dir}")]
    DiskFull { data_dir: String },
    /// The data dir cannot be written (read-only, or an I/O error).
    #[error("data dir {data_dir} cannot be written: {reason}")]
    DiskFailed { data_dir: String, reason: String },
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("store is closed")]
    Closed,
}

/// The compare-and-swap of every versioned record (tickets, experts,
/// articles): a change computed from version `expected` applies only if
/// that is the version stored.
pub(crate) fn check_version(
    what: impl fmt::Display,
    stored: u64,
    expected: u64,
) -> Result<(), StoreError> {
    if stored == expected {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "{what} (stored version {stored}, expected {expected})"
        )))
    }
}

/// Receives durable events in position order, exactly once each.
pub trait EventSink: Send + Sync + 'static {
    fn publish(&self, events: &[Arc<TicketEvent>]);
}

/// A sink for a store whose events nobody streams.
#[derive(Debug)]
pub struct NoSink;

impl EventSink for NoSink {
    fn publish(&self, _events: &[Arc<TicketEvent>]) {}
}

/// One event to append; its ticket_seq is `state.version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    pub at: UnixMicros,
    pub actor: String,
    pub kind: EventKind,
    /// The ticket's state after this event.
    pub state: TicketState,
}

/// One atomic change of one ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub ticket: TicketId,
    /// Present exactly when the ticket is new.
    pub header: Option<Arc<TicketHeader>>,
    /// The stored version the change was computed from (0: a new ticket).
    pub expected_version: u64,
    /// In order; the last one's state becomes the ticket's state.
    pub events: Vec<NewEvent>,
    /// Experts to store, each carrying its new version (stored version + 1).
    pub experts: Vec<Expert>,
    /// Maps to the position of this commit's first event.
    pub idempotency_key: Option<String>,
}

/// One atomic change, as a writer asks the log for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A ticket's events, its new state and the experts whose load it moves.
    Ticket(Commit),
    /// An expert alone: compare-and-swap on `version - 1`.
    Expert(Expert),
    /// A token record, replacing the one with its id.
    Token(TokenRecord),
    /// An article: compare-and-swap on `version - 1` (a new one has
    /// version 1); adds one to the knowledge generation.
    Article(Article),
    /// Adds to the knowledge counters of the hour starting at `hour`, per
    /// tag (`None`: every article). With `once`, only if that key was never
    /// recorded (otherwise the change is not appended at all).
    KnowledgeCounts {
        hour: UnixMicros,
        counts: BTreeMap<Option<Tag>, KnowledgeCounts>,
        once: Option<String>,
    },
}

/// A change as the log holds it: checked, and given its positions by the
/// writer. Applying it is deterministic: the same entries applied to the
/// same state give the same state, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The position of a ticket change's first event (its others follow
    /// it); 0 for the other changes, which make no events.
    pub first_position: u64,
    pub change: Change,
}

/// What an append did.
#[derive(Debug, Default)]
pub struct Appended {
    /// Wait for it with [`Log::wait_durable`]; 0 when nothing was appended.
    pub lsn: Lsn,
    /// A ticket change's events, with their positions.
    pub events: Vec<Arc<TicketEvent>>,
    /// After an article change: the knowledge generation it made.
    pub generation: u64,
    /// False when a `once` key made the change a no-op.
    pub recorded: bool,
}

/// One stored key and its value, as [`Snapshot::export`] hands them out.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Receives exported pairs.
pub type PairSink<'a> = dyn FnMut(&[u8], &[u8]) -> std::io::Result<()> + 'a;

pub type DurableFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'static>>;

/// Where every change is appended, in one order. Nothing here waits on a
/// network or a disk but [`Log::wait_durable`]'s future: the desk appends
/// under its routing lock and awaits durability after releasing it.
pub trait Log: Send + Sync + fmt::Debug + 'static {
    /// A fresh ticket id (never reused; a failed create leaves a gap).
    fn allocate_ticket_id(&self) -> Result<TicketId, StoreError>;

    /// A fresh article id (never reused).
    fn allocate_article_id(&self) -> Result<ArticleId, StoreError>;

    /// Checks `change` against the state (fails with
    /// [`StoreError::Conflict`] unless every stored version is the one it
    /// was computed from), gives it its positions and appends it. The
    /// writer's own reads see it at once; it is durable once
    /// [`Log::wait_durable`] for the returned lsn resolves.
    fn append(&self, change: Change) -> Result<Appended, StoreError>;

    /// Resolves once every append up to `lsn` is durable; fails (and the
    /// writer must catch up before writing again) if it cannot be.
    fn wait_durable(&self, lsn: Lsn) -> DurableFuture;

    /// The lsn of the latest append; waiting for it covers everything seen so far.
    fn written_lsn(&self) -> Lsn;

    /// Applies what other writers appended since this one last did, so
    /// that its next append is computed from the log's end (after
    /// [`StoreError::Fenced`] or [`StoreError::Timeout`]). A single-node
    /// log has no other writer: nothing to do.
    fn catch_up(&self) -> Result<(), StoreError>;

    /// Why appends are refused now, if they are (a full or failed disk):
    /// what health reports while it lasts.
    fn failure(&self) -> Option<StoreError>;

    /// Makes everything durable and stops the background work.
    fn close(&self) -> Result<(), StoreError>;

    /// Changes whenever the state changed under the writer's feet (it
    /// became the writer, or its replica was rebuilt): what was computed
    /// from the state before must be computed again. Constant on a log
    /// with one writer.
    fn epoch(&self) -> u64 {
        0
    }

    /// Whether appends are taken here now (a replicated log's followers
    /// refuse them): background work that writes runs only where true.
    fn writes_here(&self) -> bool {
        true
    }
}

/// Told of what a node applies from a replicated log that it did not
/// append itself: the changes its in-memory copies (tokens it
/// authenticates, articles it indexes) follow.
pub trait ChangeObserver: Send + Sync + 'static {
    fn applied(&self, change: &Change);

    /// The state was rebuilt from the log: reload what is kept from it.
    fn rebuilt(&self);
}

/// Tickets, their events by position and per ticket, and idempotency keys.
pub trait TicketStore: Send + Sync + fmt::Debug + 'static {
    /// The position of the latest event applied (0: none); the writer's
    /// appends count from the moment they are made.
    fn last_position(&self) -> u64;

    fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError>;

    /// Up to `limit` tickets with id >= `from`, in id order.
    fn tickets_from(&self, from: TicketId, limit: usize) -> Result<Vec<Ticket>, StoreError>;

    /// Live tickets (neither resolved nor closed), read once at start-up:
    /// those waiting for an owner, and those whose clocks or owners the
    /// desk watches.
    fn live_tickets(&self) -> Result<Vec<Ticket>, StoreError>;

    /// Up to `limit` events with `after < position <= upto`, in order.
    fn events_between(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Arc<TicketEvent>>, StoreError>;

    /// Up to `limit` events of one ticket with ticket_seq > `after_seq` and
    /// position <= `upto`, in order.
    fn ticket_events(
        &self,
        ticket: TicketId,
        after_seq: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Arc<TicketEvent>>, StoreError>;

    fn event(&self, position: u64) -> Result<Option<Arc<TicketEvent>>, StoreError>;

    /// The position recorded under an idempotency key, if any.
    fn idempotent(&self, key: &str) -> Result<Option<u64>, StoreError>;
}

pub trait ExpertStore: Send + Sync + fmt::Debug + 'static {
    /// Every expert, read once at start-up.
    fn experts(&self) -> Result<Vec<Expert>, StoreError>;

    fn expert(&self, id: &ExpertId) -> Result<Option<Expert>, StoreError>;
}

pub trait TokenStore: Send + Sync + fmt::Debug + 'static {
    /// Every token record (revoked ones too), read once at start-up.
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
}

/// Articles and the counters of their use.
pub trait KnowledgeStore: Send + Sync + fmt::Debug + 'static {
    fn article(&self, id: ArticleId) -> Result<Option<Article>, StoreError>;

    /// Every article, in id order (to rebuild a search index).
    fn articles(&self) -> Result<Vec<Article>, StoreError>;

    /// How many article writes the state holds: what an index built from
    /// it must say it covers to be current.
    fn knowledge_generation(&self) -> Result<u64, StoreError>;

    /// The sum of the counters of the hours starting in `[from, to)`.
    fn knowledge_counts(
        &self,
        from: UnixMicros,
        to: UnixMicros,
        tag: Option<&Tag>,
    ) -> Result<KnowledgeCounts, StoreError>;
}

/// Named blobs a node keeps for itself: snapshots of what it derives from
/// the log (such as the stats aggregates). Not part of the log.
pub trait BlobStore: Send + Sync + fmt::Debug + 'static {
    /// Stores `value` under `name`, replacing the old one; durable once
    /// the returned future resolves.
    fn put_blob(&self, name: &str, value: &[u8]) -> Result<DurableFuture, StoreError>;

    fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// The state a log is applied to.
pub trait State: TicketStore + ExpertStore + TokenStore + KnowledgeStore {
    /// Applies one entry; returns the events it made. Entries are applied
    /// in log order, each once; one that does not fit the state (a version
    /// or a position out of step) is refused and changes nothing.
    fn apply(&self, entry: Entry) -> Result<Vec<Arc<TicketEvent>>, StoreError>;
}

/// A copy of the whole state, for backups.
pub trait Snapshot: Send + Sync + fmt::Debug + 'static {
    /// Hands every stored key and value, as of one moment (writes wait
    /// meanwhile), to `each`; returns how many. The pairs are the state's
    /// layout (sled's, on every backend that keeps its state in sled).
    fn export(&self, each: &mut PairSink<'_>) -> Result<u64, StoreError>;
}

/// Where a backup is restored: an empty place for a state of the kind
/// that exported it (offline: no server runs on it).
pub trait Import {
    /// Writes every pair into the empty place and makes them durable;
    /// refuses a place that already holds a state.
    fn import(&self, pairs: &mut dyn Iterator<Item = Pair>) -> Result<u64, StoreError>;
}

/// Every part of a backend, each as the trait its users need. Cheap to
/// clone; each part goes only where it is used.
#[derive(Clone, Debug)]
pub struct Storage {
    pub log: Arc<dyn Log>,
    pub tickets: Arc<dyn TicketStore>,
    pub experts: Arc<dyn ExpertStore>,
    pub tokens: Arc<dyn TokenStore>,
    pub knowledge: Arc<dyn KnowledgeStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub snapshot: Arc<dyn Snapshot>,
}

impl Storage {
    /// A log (which also keeps the node's blobs and takes its snapshots)
    /// and the state it applies to.
    pub fn new<L, S>(log: Arc<L>, state: Arc<S>) -> Self
    where
        L: Log + BlobStore + Snapshot,
        S: State,
    {
        Storage {
            log: log.clone(),
            tickets: state.clone(),
            experts: state.clone(),
            tokens: state.clone(),
            knowledge: state,
            blobs: log.clone(),
            snapshot: log,
        }
    }
}
