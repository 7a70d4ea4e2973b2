//! Storage behind one small trait, so a second backend (a distributed store)
//! can be added without touching the domain or the desk.
//!
//! The contract every backend keeps:
//! - [`Store::commit`] is atomic: a ticket's new state, its events, the
//!   experts it touches and the idempotency key are stored together or not
//!   at all. It is a compare-and-swap: it fails with [`StoreError::Conflict`]
//!   unless the stored ticket and expert versions are the ones the change was
//!   computed from.
//! - Events get global positions, strictly increasing in commit order.
//! - A commit is visible to reads at once and durable once
//!   [`Store::wait_durable`] for its lsn returns; durable events are then
//!   handed, in position order, to the [`EventSink`] given at open. The
//!   wait does not cover that hand-over (a reply need not wait for the
//!   fan-out); [`Store::close`] does.

pub mod sled;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::domain::model::Ticket;
use crate::domain::{
    Article, ArticleId, EventKind, Expert, ExpertId, KnowledgeCounts, Tag, TicketEvent,
    TicketHeader, TicketId, TicketState, TokenRecord, UnixMicros,
};

/// A write's place in the store's write order.
pub type Lsn = u64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare-and-swap lost: the stored version was not the expected one.
    #[error("version conflict on {0}")]
    Conflict(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("store is closed")]
    Closed,
}

/// Receives durable events in position order, exactly once each.
pub trait EventSink: Send + Sync + 'static {
    fn publish(&self, events: &[Arc<TicketEvent>]);
}

/// One event to append; its ticket_seq is `state.version`.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub at: UnixMicros,
    pub actor: String,
    pub kind: EventKind,
    /// The ticket's state after this event.
    pub state: TicketState,
}

/// One atomic change of one ticket.
#[derive(Clone, Debug)]
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

#[derive(Debug)]
pub struct Receipt {
    pub lsn: Lsn,
    pub events: Vec<Arc<TicketEvent>>,
}

/// One stored key and its value, as [`Store::export`] hands them out.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Receives exported pairs.
pub type PairSink<'a> = dyn FnMut(&[u8], &[u8]) -> std::io::Result<()> + 'a;

pub type DurableFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'static>>;

pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// A fresh ticket id (ids are never reused; a failed create leaves a gap).
    fn allocate_ticket_id(&self) -> Result<TicketId, StoreError>;

    /// Applies `commit` atomically if the versions match; see the module doc.
    fn commit(&self, commit: Commit) -> Result<Receipt, StoreError>;

    /// Stores an expert alone, compare-and-swap on `expert.version - 1`.
    fn put_expert(&self, expert: &Expert) -> Result<Lsn, StoreError>;

    /// Stores a token record, replacing the one with its id.
    fn put_token(&self, token: &TokenRecord) -> Result<Lsn, StoreError>;

    /// Stores a named blob the server keeps for itself (snapshots of
    /// derived data, such as the stats aggregates), replacing the old one.
    fn put_blob(&self, name: &str, value: &[u8]) -> Result<Lsn, StoreError>;

    fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every token record (revoked ones too), read once at start-up.
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Resolves once every write up to `lsn` is durable.
    fn wait_durable(&self, lsn: Lsn) -> DurableFuture;

    /// The lsn of the latest write; waiting for it covers everything seen so far.
    fn written_lsn(&self) -> Lsn;

    /// The position of the latest stored event (0: none).
    fn last_position(&self) -> u64;

    fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError>;

    /// Up to `limit` tickets with id >= `from`, in id order.
    fn tickets_from(&self, from: TicketId, limit: usize) -> Result<Vec<Ticket>, StoreError>;

    /// Live tickets (neither resolved nor closed), read once at start-up:
    /// those waiting for an owner, and those whose clocks or owners the
    /// desk watches.
    fn live_tickets(&self) -> Result<Vec<Ticket>, StoreError>;

    /// Every expert, read once at start-up.
    fn experts(&self) -> Result<Vec<Expert>, StoreError>;

    fn expert(&self, id: &ExpertId) -> Result<Option<Expert>, StoreError>;

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

    /// A fresh article id (never reused).
    fn allocate_article_id(&self) -> Result<ArticleId, StoreError>;

    /// Stores an article, compare-and-swap on `article.version - 1` (a new
    /// article has version 1). Every article write adds one to the
    /// knowledge generation, atomically with it; returns the write's lsn
    /// and the generation it made.
    fn put_article(&self, article: &Article) -> Result<(Lsn, u64), StoreError>;

    fn article(&self, id: ArticleId) -> Result<Option<Article>, StoreError>;

    /// Every article, in id order (to rebuild a search index).
    fn articles(&self) -> Result<Vec<Article>, StoreError>;

    /// How many article writes the store holds: what an index built from
    /// it must say it covers to be current.
    fn knowledge_generation(&self) -> Result<u64, StoreError>;

    /// Adds `counts` to the counters of the hour starting at `hour`, per
    /// tag (`None`: every article), atomically. With `once`, only if that
    /// key was never recorded before (then `None` is returned).
    fn add_knowledge_counts(
        &self,
        hour: UnixMicros,
        counts: &BTreeMap<Option<Tag>, KnowledgeCounts>,
        once: Option<&str>,
    ) -> Result<Option<Lsn>, StoreError>;

    /// The sum of the counters of the hours starting in `[from, to)`.
    fn knowledge_counts(
        &self,
        from: UnixMicros,
        to: UnixMicros,
        tag: Option<&Tag>,
    ) -> Result<KnowledgeCounts, StoreError>;

    /// Makes everything durable and stops the background work.
    fn close(&self) -> Result<(), StoreError>;

    /// Hands every stored key and value, as of one moment (writes wait
    /// meanwhile), to `each`; returns how many. The pairs are the backend's
    /// own layout: a backup restores into the same backend.
    fn export(&self, each: &mut PairSink<'_>) -> Result<u64, StoreError>;
}
