//! The embedded backend: one sled tree, one commit point per commit, and one
//! committer thread that makes batches of writes durable together.
//!
//! Key layout (all integers big-endian, so byte order is numeric order):
//! ```text
//! m/schema                  schema version (u32)
//! h/<ticket u64>            TicketHeader      (never changes)
//! s/<ticket u64>            TicketState       (compare-and-swap on version)
//! e/<position u64>          EventRecord       (the event log)
//! x/<ticket u64><seq u64>   position          (a ticket's events)
//! l/<ticket u64>            ()                (live tickets: not resolved or closed)
//! p/<expert id>             Expert
//! r/<key>                   position          (idempotency)
//! k/<token id>              TokenRecord       (hash of the secret, never the secret)
//! m/status-counts           StatusCounts      (tickets per status)
//! b/<name>                  bytes             (server blobs: stats snapshot)
//! a/<article u64>           Article           (compare-and-swap on version)
//! m/knowledge-generation    u64               (article writes; the index's freshness)
//! q/<tag>/<hour u64>        KnowledgeCounts   (per UTC hour; tag "" is every article)
//! ```
//! Schema 2 added `created_by` to TicketHeader; opening a schema 1 store
//! rewrites its headers once ([`migrate_v1_headers`]). Schema 3 added
//! `m/status-counts`; opening an older store counts its states once. Schema
//! 4 added service-level clocks, escalations, vendor, rating and owner
//! time to ticket states, and replaced the index of tickets waiting for an
//! owner (`u/`) by one of live tickets (`l/`, what start-up loads); opening
//! an older store rewrites its states and events once
//! ([`migrate_v3_states`]), in atomic chunks that record their progress.
//! Schema 5 added articles, knowledge counters and two event kinds: older
//! stores need no rewrite, but older builds cannot read the new events.
//! Knowledge writes are rare and small, so each is one atomic sled batch.
//! A commit is a run of single-key inserts whose commit point is one key:
//! the last event record of the commit, which carries what the rest of the
//! commit writes (experts, idempotency key). Order within a commit: the
//! header (harmless if orphaned: nothing reads a header without a state),
//! the events, then the keys derived from them (state, index, waiting flag,
//! experts, idempotency). sled recovers a prefix of its log, and commits are
//! sequential, so after a crash only the last commit can be cut short; on
//! open, [`repair`] drops a commit whose last event is missing and re-writes
//! the derived keys of the last complete one. (`apply_batch` would make this
//! unnecessary, but in sled 0.34 every batch rolls the log buffer twice and
//! takes a global write lock: measured 60-100 µs a ticket, which made it the
//! bottleneck of every write.)
//!
//! Durability (see shared/SLED.md): request handlers never flush. Writers
//! write their keys, take an lsn and wait; the committer thread runs one
//! blocking `flush()` plus an `fdatasync` of sled's log file for everything
//! written before it began, then wakes those writers and hands the batch's
//! events to the sink. Concurrent `flush_async` calls deadlock sled 0.34, and
//! `flush` alone does not reach the disk's platter on Linux; this design
//! avoids the first and fixes the second.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Commit, DurableFuture, EventSink, Lsn, Pair, PairSink, Receipt, Store, StoreError};
use crate::domain::model::Ticket;
use crate::domain::stats::HOUR_MICROS;
use crate::domain::{
    Article, ArticleId, EventKind, Expert, ExpertId, KnowledgeCounts, SlaClocks, Tag, TicketEvent,
    TicketHeader, TicketId, TicketState, TicketStatus, TokenId, TokenRecord, UnixMicros,
};

const SCHEMA_VERSION: u32 = 5;
/// Where an interrupted schema-4 migration got to: the last key rewritten.
const MIGRATE_4_KEY: &[u8] = b"m/migrate-4";
const SCHEMA_KEY: &[u8] = b"m/schema";
const STATUS_COUNTS_KEY: &[u8] = b"m/status-counts";
const KNOWLEDGE_GENERATION_KEY: &[u8] = b"m/knowledge-generation";

/// How many tickets are in each status, as of the event at `through`.
/// Saved by a commit (after its commit point) about once a second and at
/// close, not by every commit: a key written per created ticket was a
/// sixth of the store's work. Opening counts the events after `through`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StatusCounts {
    through: u64,
    counts: BTreeMap<TicketStatus, u64>,
}

impl StatusCounts {
    /// Counts a ticket moving `from` (`None`: a new ticket) `to`, by the
    /// commit ending at `through`; false when that is no change.
    fn moved(&mut self, from: Option<TicketStatus>, to: TicketStatus, through: u64) -> bool {
        if from == Some(to) {
            return false;
        }
        if let Some(from) = from {
            let n = self.counts.entry(from).or_default();
            *n = n.saturating_sub(1);
        }
        *self.counts.entry(to).or_default() += 1;
        self.through = through;
        true
    }

    fn load(tree: &sled::Db) -> Result<StatusCounts, StoreError> {
        tree.get(STATUS_COUNTS_KEY)
            .map_err(backend)?
            .map_or(Ok(StatusCounts::default()), |v| decode("status counts", &v))
    }

    /// The counts as last saved, brought up to date with the events
    /// written after them (saved again if there were any).
    fn recount(tree: &sled::Db) -> Result<StatusCounts, StoreError> {
        let mut counts = Self::load(tree)?;
        let mut latest: HashMap<TicketId, TicketStatus> = HashMap::new();
        let mut recounted = 0u64;
        let from = key(b'e', counts.through.saturating_add(1));
        for item in tree.range(from..=key(b'e', u64::MAX)) {
            let (k, v) = item.map_err(backend)?;
            let position = u64_at(&k, 2)?;
            let record: EventRecord = decode("event", &v)?;
            let before = match latest.get(&record.ticket) {
                Some(status) => Some(*status),
                None => status_before(tree, record.ticket, record.state.version)?,
            };
            counts.moved(before, record.state.status, position);
            counts.through = position;
            latest.insert(record.ticket, record.state.status);
            recounted += 1;
        }
        if recounted > 0 {
            tracing::info!(
                events = recounted,
                "ticket counts brought up to date from the log"
            );
            tree.insert(STATUS_COUNTS_KEY, encode(&counts)?)
                .map_err(backend)?;
        }
        Ok(counts)
    }

    fn publish(&self) {
        let gauge = &crate::metrics::metrics().tickets_by_status;
        for status in TicketStatus::ALL {
            let n = self.counts.get(status).copied().unwrap_or(0);
            gauge
                .with_label_values(&[status.label()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

#[derive(Serialize, Deserialize)]
struct EventRecord {
    ticket: TicketId,
    at: UnixMicros,
    actor: String,
    kind: EventKind,
    state: TicketState,
    /// Position of the first event of the commit this event belongs to.
    commit_first: u64,
    /// Present on the commit's last event only: it is the commit point.
    tail: Option<CommitTail>,
}

/// What a commit writes besides its events, kept on its commit point so
/// that recovery can finish the commit.
#[derive(Serialize, Deserialize)]
struct CommitTail {
    experts: Vec<Expert>,
    idempotency_key: Option<String>,
}

fn key(prefix: u8, n: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = prefix;
    k[1] = b'/';
    k[2..].copy_from_slice(&n.to_be_bytes());
    k
}

fn seq_key(ticket: TicketId, seq: u64) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..10].copy_from_slice(&key(b'x', ticket.0));
    k[10..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn expert_key(id: &ExpertId) -> Vec<u8> {
    [b"p/", id.as_str().as_bytes()].concat()
}

fn token_key(id: &TokenId) -> Vec<u8> {
    [b"k/", id.as_str().as_bytes()].concat()
}

fn blob_key(name: &str) -> Vec<u8> {
    [b"b/", name.as_bytes()].concat()
}

/// `q/<tag>/` (tag "" for every article): the prefix of a tag's counters.
fn counts_prefix(tag: Option<&Tag>) -> Vec<u8> {
    [b"q/", tag.map_or("", Tag::as_str).as_bytes(), b"/"].concat()
}

fn counts_key(tag: Option<&Tag>, hour: UnixMicros) -> Vec<u8> {
    // Times before 1970 do not occur; clamping keeps the order numeric.
    let hour = u64::try_from(hour).unwrap_or(0);
    [counts_prefix(tag), hour.to_be_bytes().to_vec()].concat()
}

fn request_key(k: &str) -> Vec<u8> {
    [b"r/", k.as_bytes()].concat()
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64, StoreError> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("short key or value ({} bytes)", bytes.len())))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|e| StoreError::Backend(format!("encode: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Tuning for the embedded store.
#[derive(Clone, Debug)]
pub struct SledConfig {
    pub path: PathBuf,
    /// sled's page cache, in bytes.
    pub cache_capacity: u64,
}

impl SledConfig {
    pub fn new(path: impl AsRef<Path>) -> Self {
        SledConfig {
            path: path.as_ref().to_path_buf(),
            cache_capacity: 256 * 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Durable {
    lsn: Lsn,
    failed: Option<String>,
}

/// What the sequencer hands the committer: writes done, events to publish.
#[derive(Default)]
struct Pending {
    written: Lsn,
    events: Vec<Arc<TicketEvent>>,
    closing: bool,
    /// The committer sleeps on `wake`. Writers notify only then: a notify
    /// is a system call even when nobody waits, once per commit.
    idle: bool,
}

struct Shared {
    tree: sled::Db,
    /// sled's log file, for the fdatasync that `flush` leaves out.
    log_file: File,
    /// The sequencer: held across the version checks and the writes, so that
    /// positions, lsns and the store's contents advance in one order. Never
    /// held across an await or a flush.
    sequencer: Mutex<Sequencer>,
    /// Writes not yet durable; the committer waits on `wake`.
    pending: Mutex<Pending>,
    wake: Condvar,
    durable: watch::Sender<Durable>,
    next_ticket: AtomicU64,
    next_article: AtomicU64,
    last_position: AtomicU64,
    written: AtomicU64,
    sink: Arc<dyn EventSink>,
}

struct Sequencer {
    next_position: u64,
    next_lsn: Lsn,
    status_counts: StatusCounts,
    /// When a commit last saved `status_counts`, and commits since.
    counts_saved_at: std::time::Instant,
    commits_since_counts: u64,
}

/// How often commits save the status counts: whichever comes first.
const COUNTS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
const COUNTS_EVERY_COMMITS: u64 = 4096;

/// The sled backend. Cheap to share behind an `Arc`.
pub struct SledStore {
    shared: Arc<Shared>,
    committer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("written", &self.shared.written.load(Ordering::Relaxed))
            .field(
                "last_position",
                &self.shared.last_position.load(Ordering::Relaxed),
            )
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain counters behind,
    // never a half-written commit (repair finishes or drops it on open).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SledStore {
    /// Opens (or creates) the store; fails if another process holds it.
    pub fn open(config: &SledConfig, sink: Arc<dyn EventSink>) -> Result<Self, StoreError> {
        let db = open_db(config)?;
        let found = match db.get(SCHEMA_KEY).map_err(backend)? {
            None => None,
            Some(v) => Some(
                v.as_ref()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt("schema version".into()))?,
            ),
        };
        if let Some(found) = found.filter(|&f| f > SCHEMA_VERSION) {
            return Err(StoreError::Backend(format!(
                "data dir {} was written by a newer swarmdesk (schema {found}, this build reads up to {SCHEMA_VERSION})",
                config.path.display()
            )));
        }
        if found.is_some_and(|f| f < 2) {
            migrate_v1_headers(&db)?;
        }
        if found.is_some_and(|f| f < 4) {
            migrate_v3_states(&db)?;
        }
        let log_file = File::open(config.path.join("db")).map_err(|e| {
            StoreError::Backend(format!("cannot open sled's log file for syncing: {e}"))
        })?;
        repair(&db)?;
        // After repair: the count must include the last commit, whole.
        if found.is_some_and(|f| f < 3) {
            migrate_status_counts(&db, last_number(&db, b'e')?)?;
        }
        if found != Some(SCHEMA_VERSION) {
            db.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                .map_err(backend)?;
            db.flush().map_err(backend)?;
            if let Some(found) = found {
                tracing::info!(from = found, to = SCHEMA_VERSION, "store schema upgraded");
            }
        }
        let status_counts = StatusCounts::recount(&db)?;
        status_counts.publish();
        let last_position = last_number(&db, b'e')?;
        let last_ticket = last_number(&db, b'h')?;
        let last_article = last_number(&db, b'a')?;
        let (durable, _) = watch::channel(Durable::default());
        let shared = Arc::new(Shared {
            tree: db,
            log_file,
            sequencer: Mutex::new(Sequencer {
                next_position: last_position + 1,
                next_lsn: 1,
                status_counts,
                counts_saved_at: std::time::Instant::now(),
                commits_since_counts: 0,
            }),
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            durable,
            next_ticket: AtomicU64::new(last_ticket + 1),
            next_article: AtomicU64::new(last_article + 1),
            last_position: AtomicU64::new(last_position),
            written: AtomicU64::new(0),
            sink,
        });
        let committer_shared = shared.clone();
        let committer = std::thread::Builder::new()
            .name("swarmdesk-committer".into())
            .spawn(move || run_committer(&committer_shared))
            .map_err(|e| StoreError::Backend(format!("cannot start committer: {e}")))?;
        Ok(SledStore {
            shared,
            committer: Mutex::new(Some(committer)),
        })
    }

    fn header(&self, id: TicketId) -> Result<Option<Arc<TicketHeader>>, StoreError> {
        match self.shared.tree.get(key(b'h', id.0)).map_err(backend)? {
            Some(bytes) => Ok(Some(Arc::new(decode("ticket header", &bytes)?))),
            None => Ok(None),
        }
    }

    fn state(&self, id: TicketId) -> Result<Option<TicketState>, StoreError> {
        match self.shared.tree.get(key(b's', id.0)).map_err(backend)? {
            Some(bytes) => Ok(Some(decode("ticket state", &bytes)?)),
            None => Ok(None),
        }
    }

    fn stored_expert_version(&self, id: &ExpertId) -> Result<u64, StoreError> {
        Ok(self.expert(id)?.map_or(0, |e| e.version))
    }

    fn check_expert_version(&self, expert: &Expert) -> Result<(), StoreError> {
        let stored = self.stored_expert_version(&expert.id)?;
        if stored + 1 != expert.version {
            return Err(StoreError::Conflict(format!(
                "expert {} (stored version {stored}, expected {})",
                expert.id,
                expert.version.saturating_sub(1)
            )));
        }
        Ok(())
    }

    fn failed(&self) -> Option<String> {
        self.shared.durable.borrow().failed.clone()
    }

    fn refuse_if_failed(&self) -> Result<(), StoreError> {
        match self.failed() {
            Some(reason) => Err(StoreError::Backend(format!(
                "store failed earlier: {reason}"
            ))),
            None => Ok(()),
        }
    }

    /// A write failed part way: refuse every later write until a restart
    /// (whose repair finishes or drops the cut commit).
    fn poison(&self, error: StoreError) -> StoreError {
        let reason = error.to_string();
        self.shared
            .durable
            .send_modify(|d| d.failed = Some(reason.clone()));
        error
    }

    /// Records the writes just made as the next lsn and queues `events`
    /// for the committer; the caller holds the sequencer.
    fn written(&self, seq: &mut Sequencer, events: Vec<Arc<TicketEvent>>) -> Lsn {
        let lsn = seq.next_lsn;
        seq.next_lsn += 1;
        if let Some(last) = events.last() {
            self.shared
                .last_position
                .store(last.position, Ordering::Release);
        }
        self.shared.written.store(lsn, Ordering::Release);
        let mut pending = lock(&self.shared.pending);
        pending.written = lsn;
        pending.events.extend(events);
        let idle = std::mem::take(&mut pending.idle);
        drop(pending);
        if idle {
            self.shared.wake.notify_one();
        }
        lsn
    }

    fn read_event(
        &self,
        position: u64,
        bytes: &[u8],
        headers: &mut HashMap<TicketId, Arc<TicketHeader>>,
    ) -> Result<Arc<TicketEvent>, StoreError> {
        let record: EventRecord = decode("event", bytes)?;
        let header = match headers.get(&record.ticket) {
            Some(h) => h.clone(),
            None => {
                let h = self.header(record.ticket)?.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "event {position} names ticket {} which has no header",
                        record.ticket
                    ))
                })?;
                headers.insert(record.ticket, h.clone());
                h
            }
        };
        Ok(Arc::new(TicketEvent {
            position,
            at: record.at,
            actor: record.actor,
            kind: record.kind,
            ticket: Ticket {
                header,
                state: record.state,
            },
        }))
    }
}

/// Whether a ticket in `status` is loaded at start-up (it may still have an
/// owner to route or clocks to watch).
fn is_live(status: TicketStatus) -> bool {
    !matches!(status, TicketStatus::Resolved | TicketStatus::Closed)
}

/// Writes the keys a commit derives from its events: the per-ticket index,
/// the state, the live flag, the experts and the idempotency record.
/// With `repairing`, keys already newer than the commit's are left alone, so
/// running it again over a finished commit changes nothing.
fn write_derived(
    tree: &sled::Db,
    ticket: TicketId,
    states: &[(u64, &TicketState)],
    tail: &CommitTail,
    was_live: bool,
    repairing: bool,
) -> Result<(), StoreError> {
    let Some(&(first, _)) = states.first() else {
        return Ok(());
    };
    for (position, state) in states {
        tree.insert(seq_key(ticket, state.version), &position.to_be_bytes())
            .map_err(backend)?;
    }
    if let Some((_, last)) = states.last() {
        let stored_version = if repairing {
            match tree.get(key(b's', ticket.0)).map_err(backend)? {
                Some(bytes) => decode::<TicketState>("ticket state", &bytes)?.version,
                None => 0,
            }
        } else {
            0
        };
        if stored_version < last.version {
            tree.insert(key(b's', ticket.0), encode(*last)?)
                .map_err(backend)?;
        }
        if is_live(last.status) {
            // A live ticket has its flag already: set it only as it goes live.
            if !was_live || repairing {
                tree.insert(key(b'l', ticket.0), &[]).map_err(backend)?;
            }
        } else if was_live || repairing {
            tree.remove(key(b'l', ticket.0)).map_err(backend)?;
        }
    }
    for expert in &tail.experts {
        let stored_version = if repairing {
            match tree.get(expert_key(&expert.id)).map_err(backend)? {
                Some(bytes) => decode::<Expert>("expert", &bytes)?.version,
                None => 0,
            }
        } else {
            0
        };
        if stored_version < expert.version {
            tree.insert(expert_key(&expert.id), encode(expert)?)
                .map_err(backend)?;
        }
    }
    if let Some(k) = &tail.idempotency_key {
        tree.insert(request_key(k), &first.to_be_bytes())
            .map_err(backend)?;
    }
    Ok(())
}

/// A ticket header as schema 1 stored it (before `created_by`).
#[derive(Deserialize)]
struct TicketHeaderV1 {
    id: TicketId,
    title: String,
    description: String,
    requester: String,
    channel: crate::domain::ContactChannel,
    kind: crate::domain::TicketKind,
    priority: crate::domain::Priority,
    skills: Vec<crate::domain::SkillRequirement>,
    created_at: UnixMicros,
}

/// Rewrites schema 1 headers in the current form. Safe to run again after
/// a crash part way: a header already rewritten decodes as current.
fn migrate_v1_headers(db: &sled::Db) -> Result<(), StoreError> {
    let mut rewritten = 0u64;
    for item in db.scan_prefix(b"h/") {
        let (k, v) = item.map_err(backend)?;
        if postcard::from_bytes::<TicketHeader>(&v).is_ok() {
            continue;
        }
        let old: TicketHeaderV1 = decode("schema 1 ticket header", &v)?;
        let header = TicketHeader {
            id: old.id,
            title: old.title,
            description: old.description,
            requester: old.requester,
            channel: old.channel,
            kind: old.kind,
            priority: old.priority,
            skills: old.skills,
            created_at: old.created_at,
            created_by: None,
        };
        db.insert(k, encode(&header)?).map_err(backend)?;
        rewritten += 1;
    }
    db.flush().map_err(backend)?;
    tracing::info!(rewritten, "ticket headers migrated from schema 1");
    Ok(())
}

/// A ticket state as schemas 1 to 3 stored it.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct TicketStateV3 {
    status: TicketStatus,
    owner: Option<ExpertId>,
    members: Vec<ExpertId>,
    help_tags: Vec<crate::domain::Tag>,
    declined: Vec<ExpertId>,
    updated_at: UnixMicros,
    version: u64,
}

impl TicketStateV3 {
    /// Clocks that were never kept cannot be restored: they count as
    /// having no limit (no deadline, no breach).
    fn upgrade(self) -> TicketState {
        TicketState {
            status: self.status,
            owner: self.owner,
            members: self.members,
            help_tags: self.help_tags,
            declined: self.declined,
            updated_at: self.updated_at,
            version: self.version,
            ..TicketState::blank(0, SlaClocks::untracked())
        }
    }
}

/// An event record as schemas 1 to 3 stored it.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct EventRecordV3 {
    ticket: TicketId,
    at: UnixMicros,
    actor: String,
    kind: EventKind,
    state: TicketStateV3,
    commit_first: u64,
    tail: Option<CommitTail>,
}

impl EventRecordV3 {
    fn upgrade(self) -> EventRecord {
        EventRecord {
            ticket: self.ticket,
            at: self.at,
            actor: self.actor,
            kind: self.kind,
            state: self.state.upgrade(),
            commit_first: self.commit_first,
            tail: self.tail,
        }
    }
}

/// Rewrites every event and ticket state of a schema 3 (or older) store in
/// the schema 4 form, then indexes live tickets. Each chunk is one sled
/// batch that also records the last key it rewrote, so a crash part way
/// resumes after it and never decodes a record twice.
fn migrate_v3_states(db: &sled::Db) -> Result<(), StoreError> {
    const CHUNK: usize = 1024;
    let mut resume = db.get(MIGRATE_4_KEY).map_err(backend)?.map(|v| v.to_vec());
    let mut rewritten = 0u64;
    for prefix in [b"e/", b"s/"] {
        if resume
            .as_ref()
            .is_some_and(|k| k.as_slice() >= prefix.as_slice() && !k.starts_with(prefix))
        {
            continue; // this prefix was finished before the crash
        }
        loop {
            let start = match &resume {
                Some(k) if k.starts_with(prefix) => std::ops::Bound::Excluded(k.clone()),
                _ => std::ops::Bound::Included(prefix.to_vec()),
            };
            let mut batch = sled::Batch::default();
            let mut last = None;
            for item in db
                .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
                .take(CHUNK)
            {
                let (k, v) = item.map_err(backend)?;
                if !k.starts_with(prefix) {
                    break;
                }
                let bytes = if prefix == b"e/" {
                    encode(&decode::<EventRecordV3>("schema 3 event", &v)?.upgrade())?
                } else {
                    encode(&decode::<TicketStateV3>("schema 3 ticket state", &v)?.upgrade())?
                };
                batch.insert(k.to_vec(), bytes);
                last = Some(k.to_vec());
                rewritten += 1;
            }
            let Some(last) = last else { break };
            batch.insert(MIGRATE_4_KEY, last.clone());
            db.apply_batch(batch).map_err(backend)?;
            resume = Some(last);
        }
    }
    for item in db.scan_prefix(b"u/") {
        let (k, _) = item.map_err(backend)?;
        db.remove(k).map_err(backend)?;
    }
    for item in db.scan_prefix(b"s/") {
        let (k, v) = item.map_err(backend)?;
        let state: TicketState = decode("ticket state", &v)?;
        if is_live(state.status) {
            db.insert(key(b'l', u64_at(&k, 2)?), &[]).map_err(backend)?;
        }
    }
    db.remove(MIGRATE_4_KEY).map_err(backend)?;
    db.flush().map_err(backend)?;
    tracing::info!(rewritten, "ticket states and events migrated to schema 4");
    Ok(())
}

/// Finishes or drops the last commit after a crash (see the module doc):
/// only the last commit in sled's recovered prefix can be incomplete.
fn repair(tree: &sled::Db) -> Result<(), StoreError> {
    let Some((k, v)) = tree
        .scan_prefix(b"e/")
        .next_back()
        .transpose()
        .map_err(backend)?
    else {
        return Ok(());
    };
    let last_position = u64_at(&k, 2)?;
    let last: EventRecord = decode("event", &v)?;
    if last.tail.is_none() {
        // Cut before its commit point: the commit never happened.
        tracing::warn!(
            from = last.commit_first,
            to = last_position,
            "dropping an unfinished commit"
        );
        for position in last.commit_first..=last_position {
            tree.remove(key(b'e', position)).map_err(backend)?;
        }
    } else {
        let mut records = Vec::new();
        for position in last.commit_first..=last_position {
            let bytes = tree
                .get(key(b'e', position))
                .map_err(backend)?
                .ok_or_else(|| StoreError::Corrupt(format!("event {position} missing")))?;
            records.push((position, decode::<EventRecord>("event", &bytes)?));
        }
        let states: Vec<(u64, &TicketState)> =
            records.iter().map(|(p, r)| (*p, &r.state)).collect();
        if let Some(tail) = last.tail.as_ref() {
            write_derived(tree, last.ticket, &states, tail, true, true)?;
        }
        // The status counts of this commit, if not saved, are recounted
        // from the log on open, like every commit after their last save.
    }
    tree.flush().map_err(backend)?;
    Ok(())
}

/// The status of `ticket` before the event that made it `version`.
fn status_before(
    tree: &sled::Db,
    ticket: TicketId,
    version: u64,
) -> Result<Option<TicketStatus>, StoreError> {
    if version <= 1 {
        return Ok(None);
    }
    let Some(position) = tree.get(seq_key(ticket, version - 1)).map_err(backend)? else {
        return Err(StoreError::Corrupt(format!(
            "ticket {ticket} has no event for version {}",
            version - 1
        )));
    };
    let position = u64_at(&position, 0)?;
    let bytes = tree
        .get(key(b'e', position))
        .map_err(backend)?
        .ok_or_else(|| StoreError::Corrupt(format!("event {position} missing")))?;
    Ok(Some(decode::<EventRecord>("event", &bytes)?.state.status))
}

/// Counts every ticket's status once (opening a store from before schema 3).
fn migrate_status_counts(tree: &sled::Db, through: u64) -> Result<(), StoreError> {
    let mut counts = StatusCounts {
        through,
        counts: BTreeMap::new(),
    };
    for item in tree.scan_prefix(b"s/") {
        let (_, v) = item.map_err(backend)?;
        let state: TicketState = decode("ticket state", &v)?;
        *counts.counts.entry(state.status).or_default() += 1;
    }
    tree.insert(STATUS_COUNTS_KEY, encode(&counts)?)
        .map_err(backend)?;
    tracing::info!(?counts.counts, "tickets counted by status");
    Ok(())
}

/// Creates a new store at `path` from exported pairs (see
/// [`Store::export`]); `path` must not hold a store yet.
pub fn import(
    path: &Path,
    pairs: impl Iterator<Item = Result<Pair, StoreError>>,
) -> Result<u64, StoreError> {
    let db = open_db(&SledConfig::new(path))?;
    if !db.is_empty() {
        return Err(StoreError::Backend(format!(
            "{} already holds a store",
            path.display()
        )));
    }
    let mut count = 0;
    for pair in pairs {
        let (k, v) = pair?;
        db.insert(k, v).map_err(backend)?;
        count += 1;
    }
    db.flush().map_err(backend)?;
    Ok(count)
}

/// Opens sled, waiting briefly for a lock held by a store of this process
/// that is still shutting down (sled's own threads release it a moment
/// after the last handle drops); another process's lock stays an error.
fn open_db(config: &SledConfig) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let opened = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity)
            // The committer flushes every write; a second flusher would only contend.
            .flush_every_ms(None)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            // sled reports a held file lock as an I/O error with this text.
            Err(e) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Backend(format!(
                        "data dir {} is in use by another running server",
                        config.path.display()
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                return Err(StoreError::Backend(format!(
                    "cannot open data dir {}: {e}",
                    config.path.display()
                )))
            }
        }
    }
}

/// The largest number stored under `prefix/`, or 0.
fn last_number(db: &sled::Db, prefix: u8) -> Result<u64, StoreError> {
    match db
        .scan_prefix([prefix, b'/'])
        .next_back()
        .transpose()
        .map_err(backend)?
    {
        Some((k, _)) => u64_at(&k, 2),
        None => Ok(0),
    }
}

/// While writes keep arriving, the committer waits this long at a time
/// before flushing, up to [`GATHER_MAX`]: under concurrency one flush then
/// covers many writers. Each flush costs sled a log-buffer seal, a write
/// handed to its I/O thread pool (which wakes every idle I/O thread) and
/// an fdatasync; at 64 concurrent creates flushes covered 2-3 writes each
/// and that cost was a quarter of the server's CPU. A lone writer (the
/// last batch had one write) is flushed at once, so C = 1 pays nothing.
const GATHER_STEP: std::time::Duration = std::time::Duration::from_micros(100);
const GATHER_MAX: std::time::Duration = std::time::Duration::from_micros(400);

fn run_committer(shared: &Shared) {
    let mut durable_lsn: Lsn = 0;
    let mut last_batch: Lsn = 0;
    loop {
        {
            let mut pending = lock(&shared.pending);
            while pending.written == durable_lsn && !pending.closing {
                pending.idle = true;
                pending = shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }
        if last_batch > 1 {
            let started = std::time::Instant::now();
            let mut seen = lock(&shared.pending).written;
            while started.elapsed() < GATHER_MAX {
                std::thread::sleep(GATHER_STEP);
                let now = lock(&shared.pending);
                if now.written == seen || now.closing {
                    break;
                }
                seen = now.written;
            }
        }
        let (target, events, closing) = {
            let mut pending = lock(&shared.pending);
            (
                pending.written,
                std::mem::take(&mut pending.events),
                pending.closing,
            )
        };
        if target > durable_lsn {
            let started = std::time::Instant::now();
            let synced = shared
                .tree
                .flush()
                .map_err(|e| e.to_string())
                .and_then(|_| shared.log_file.sync_data().map_err(|e| e.to_string()));
            if let Err(reason) = synced {
                tracing::error!(%reason, "store flush failed; refusing further writes");
                shared.durable.send_modify(|d| d.failed = Some(reason));
                return;
            }
            crate::metrics::metrics()
                .store_flush_seconds
                .observe(started.elapsed().as_secs_f64());
            last_batch = target - durable_lsn;
            durable_lsn = target;
            shared.durable.send_modify(|d| d.lsn = target);
            if !events.is_empty() {
                // A panicking sink must not take the committer with it: every
                // later writer would wait for durability forever.
                let published = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    shared.sink.publish(&events)
                }));
                if published.is_err() {
                    tracing::error!(
                        first = events[0].position,
                        count = events.len(),
                        "event sink panicked; these events are in the store but were not streamed live"
                    );
                }
            }
        }
        if closing && lock(&shared.pending).written == durable_lsn {
            return;
        }
    }
}

impl Store for SledStore {
    fn allocate_ticket_id(&self) -> Result<TicketId, StoreError> {
        Ok(TicketId(
            self.shared.next_ticket.fetch_add(1, Ordering::Relaxed),
        ))
    }

    fn commit(&self, commit: Commit) -> Result<Receipt, StoreError> {
        let id = commit.ticket;
        let mut seq = lock(&self.shared.sequencer);
        let stored = self.state(id)?;
        let stored_version = stored.as_ref().map_or(0, |s| s.version);
        if stored_version != commit.expected_version {
            return Err(StoreError::Conflict(format!(
                "ticket {id} (stored version {stored_version}, expected {})",
                commit.expected_version
            )));
        }
        let header = match (&commit.header, stored_version) {
            (Some(h), 0) => h.clone(),
            (None, v) if v > 0 => self
                .header(id)?
                .ok_or_else(|| StoreError::Corrupt(format!("ticket {id} has no header")))?,
            _ => {
                return Err(StoreError::Conflict(format!(
                    "ticket {id}: a header comes with, and only with, a new ticket"
                )))
            }
        };
        for expert in &commit.experts {
            self.check_expert_version(expert)?;
        }
        if commit.events.is_empty() {
            return Err(StoreError::Backend(
                "a commit needs at least one event".into(),
            ));
        }
        let was_live = stored.as_ref().is_some_and(|s| is_live(s.status));
        let first = seq.next_position;
        let count = commit.events.len() as u64;
        let last_position = first + count - 1;
        let mut status_counts = seq.status_counts.clone();
        let mut moved = false;
        if let Some(last) = commit.events.last() {
            moved = status_counts.moved(stored.map(|s| s.status), last.state.status, last_position);
        }
        status_counts.through = last_position;
        let save_counts = seq.commits_since_counts + 1 >= COUNTS_EVERY_COMMITS
            || seq.counts_saved_at.elapsed() >= COUNTS_EVERY;
        let tail = CommitTail {
            experts: commit.experts,
            idempotency_key: commit.idempotency_key,
        };
        let tree = &self.shared.tree;
        let mut records = Vec::with_capacity(commit.events.len());
        for new in commit.events {
            records.push(EventRecord {
                ticket: id,
                at: new.at,
                actor: new.actor,
                kind: new.kind,
                state: new.state,
                commit_first: first,
                tail: None,
            });
        }
        if let Some(last) = records.last_mut() {
            last.tail = Some(tail);
        }
        // Encode everything before the first write, so that an encoding
        // failure leaves nothing behind.
        let header_bytes = commit.header.as_deref().map(encode).transpose()?;
        let event_bytes = records.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let counts_bytes = save_counts.then(|| encode(&status_counts)).transpose()?;
        self.refuse_if_failed()?;
        let write = || -> Result<(), StoreError> {
            if let Some(bytes) = &header_bytes {
                tree.insert(key(b'h', id.0), bytes.as_slice())
                    .map_err(backend)?;
            }
            for (i, bytes) in event_bytes.iter().enumerate() {
                tree.insert(key(b'e', first + i as u64), bytes.as_slice())
                    .map_err(backend)?;
            }
            // The commit point has passed: the rest can be redone by repair.
            let states: Vec<(u64, &TicketState)> = records
                .iter()
                .enumerate()
                .map(|(i, r)| (first + i as u64, &r.state))
                .collect();
            let tail = records
                .last()
                .and_then(|r| r.tail.as_ref())
                .ok_or_else(|| StoreError::Backend("a commit needs a tail".into()))?;
            write_derived(tree, id, &states, tail, was_live, false)?;
            if let Some(bytes) = &counts_bytes {
                tree.insert(STATUS_COUNTS_KEY, bytes.as_slice())
                    .map_err(backend)?;
            }
            Ok(())
        };
        let started = std::time::Instant::now();
        write().map_err(|e| self.poison(e))?;
        let m = crate::metrics::metrics();
        m.store_write_seconds
            .observe(started.elapsed().as_secs_f64());
        m.events_appended.inc_by(count);
        seq.next_position = first + count;
        if moved {
            status_counts.publish();
        }
        seq.status_counts = status_counts;
        if save_counts {
            seq.counts_saved_at = std::time::Instant::now();
            seq.commits_since_counts = 0;
        } else {
            seq.commits_since_counts += 1;
        }
        let events: Vec<Arc<TicketEvent>> = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                Arc::new(TicketEvent {
                    position: first + i as u64,
                    at: r.at,
                    actor: r.actor,
                    kind: r.kind,
                    ticket: Ticket {
                        header: header.clone(),
                        state: r.state,
                    },
                })
            })
            .collect();
        let lsn = self.written(&mut seq, events.clone());
        Ok(Receipt { lsn, events })
    }

    fn put_expert(&self, expert: &Expert) -> Result<Lsn, StoreError> {
        let mut seq = lock(&self.shared.sequencer);
        self.check_expert_version(expert)?;
        let bytes = encode(expert)?;
        self.refuse_if_failed()?;
        self.shared
            .tree
            .insert(expert_key(&expert.id), bytes)
            .map_err(|e| self.poison(backend(e)))?;
        Ok(self.written(&mut seq, Vec::new()))
    }

    fn put_token(&self, token: &TokenRecord) -> Result<Lsn, StoreError> {
        let mut seq = lock(&self.shared.sequencer);
        let bytes = encode(token)?;
        self.refuse_if_failed()?;
        self.shared
            .tree
            .insert(token_key(&token.id), bytes)
            .map_err(|e| self.poison(backend(e)))?;
        Ok(self.written(&mut seq, Vec::new()))
    }

    fn put_blob(&self, name: &str, value: &[u8]) -> Result<Lsn, StoreError> {
        let mut seq = lock(&self.shared.sequencer);
        self.refuse_if_failed()?;
        self.shared
            .tree
            .insert(blob_key(name), value)
            .map_err(|e| self.poison(backend(e)))?;
        Ok(self.written(&mut seq, Vec::new()))
    }

    fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .shared
            .tree
            .get(blob_key(name))
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.shared
            .tree
            .scan_prefix(b"k/")
            .map(|item| {
                let (_, v) = item.map_err(backend)?;
                decode("token", &v)
            })
            .collect()
    }

    fn wait_durable(&self, lsn: Lsn) -> DurableFuture {
        let mut durable = self.shared.durable.subscribe();
        Box::pin(async move {
            let state = durable
                .wait_for(|d| d.lsn >= lsn || d.failed.is_some())
                .await
                .map_err(|_| StoreError::Closed)?;
            if state.lsn >= lsn {
                Ok(())
            } else {
                Err(StoreError::Backend(format!(
                    "flush failed: {}",
                    state.failed.clone().unwrap_or_default()
                )))
            }
        })
    }

    fn written_lsn(&self) -> Lsn {
        self.shared.written.load(Ordering::Acquire)
    }

    fn last_position(&self) -> u64 {
        self.shared.last_position.load(Ordering::Acquire)
    }

    fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        let Some(state) = self.state(id)? else {
            return Ok(None);
        };
        let header = self
            .header(id)?
            .ok_or_else(|| StoreError::Corrupt(format!("ticket {id} has no header")))?;
        Ok(Some(Ticket { header, state }))
    }

    fn tickets_from(&self, from: TicketId, limit: usize) -> Result<Vec<Ticket>, StoreError> {
        let mut tickets = Vec::new();
        for item in self
            .shared
            .tree
            .range(key(b's', from.0)..key(b's', u64::MAX))
        {
            if tickets.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(backend)?;
            let id = TicketId(u64_at(&k, 2)?);
            let header = self
                .header(id)?
                .ok_or_else(|| StoreError::Corrupt(format!("ticket {id} has no header")))?;
            tickets.push(Ticket {
                header,
                state: decode("ticket state", &v)?,
            });
        }
        Ok(tickets)
    }

    fn live_tickets(&self) -> Result<Vec<Ticket>, StoreError> {
        let mut tickets = Vec::new();
        for item in self.shared.tree.scan_prefix(b"l/") {
            let (k, _) = item.map_err(backend)?;
            let id = TicketId(u64_at(&k, 2)?);
            let ticket = self
                .ticket(id)?
                .ok_or_else(|| StoreError::Corrupt(format!("live ticket {id} is not stored")))?;
            tickets.push(ticket);
        }
        Ok(tickets)
    }

    fn experts(&self) -> Result<Vec<Expert>, StoreError> {
        self.shared
            .tree
            .scan_prefix(b"p/")
            .map(|item| {
                let (_, v) = item.map_err(backend)?;
                decode("expert", &v)
            })
            .collect()
    }

    fn expert(&self, id: &ExpertId) -> Result<Option<Expert>, StoreError> {
        match self.shared.tree.get(expert_key(id)).map_err(backend)? {
            Some(bytes) => Ok(Some(decode("expert", &bytes)?)),
            None => Ok(None),
        }
    }

    fn events_between(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Arc<TicketEvent>>, StoreError> {
        if after >= upto {
            return Ok(Vec::new());
        }
        let mut headers = HashMap::new();
        let mut events = Vec::new();
        for item in self
            .shared
            .tree
            .range(key(b'e', after + 1)..=key(b'e', upto))
            .take(limit)
        {
            let (k, v) = item.map_err(backend)?;
            events.push(self.read_event(u64_at(&k, 2)?, &v, &mut headers)?);
        }
        Ok(events)
    }

    fn ticket_events(
        &self,
        ticket: TicketId,
        after_seq: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Arc<TicketEvent>>, StoreError> {
        let mut headers = HashMap::new();
        let mut events = Vec::new();
        let start = seq_key(ticket, after_seq.saturating_add(1));
        let end = seq_key(ticket, u64::MAX);
        for item in self.shared.tree.range(start..end).take(limit) {
            let (_, v) = item.map_err(backend)?;
            let position = u64_at(&v, 0)?;
            if position > upto {
                break;
            }
            let bytes = self
                .shared
                .tree
                .get(key(b'e', position))
                .map_err(backend)?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("event {position} is indexed but missing"))
                })?;
            events.push(self.read_event(position, &bytes, &mut headers)?);
        }
        Ok(events)
    }

    fn event(&self, position: u64) -> Result<Option<Arc<TicketEvent>>, StoreError> {
        match self.shared.tree.get(key(b'e', position)).map_err(backend)? {
            Some(bytes) => Ok(Some(self.read_event(
                position,
                &bytes,
                &mut HashMap::new(),
            )?)),
            None => Ok(None),
        }
    }

    fn allocate_article_id(&self) -> Result<ArticleId, StoreError> {
        Ok(ArticleId(
            self.shared.next_article.fetch_add(1, Ordering::Relaxed),
        ))
    }

    fn put_article(&self, article: &Article) -> Result<(Lsn, u64), StoreError> {
        let mut seq = lock(&self.shared.sequencer);
        let stored = self.article(article.id)?.map_or(0, |a| a.version);
        if stored + 1 != article.version {
            return Err(StoreError::Conflict(format!(
                "article {} (stored version {stored}, expected {})",
                article.id,
                article.version.saturating_sub(1)
            )));
        }
        let generation = self.knowledge_generation()? + 1;
        let mut batch = sled::Batch::default();
        batch.insert(&key(b'a', article.id.0), encode(article)?);
        batch.insert(KNOWLEDGE_GENERATION_KEY, &generation.to_be_bytes());
        self.refuse_if_failed()?;
        self.shared
            .tree
            .apply_batch(batch)
            .map_err(|e| self.poison(backend(e)))?;
        Ok((self.written(&mut seq, Vec::new()), generation))
    }

    fn article(&self, id: ArticleId) -> Result<Option<Article>, StoreError> {
        match self.shared.tree.get(key(b'a', id.0)).map_err(backend)? {
            Some(bytes) => Ok(Some(decode("article", &bytes)?)),
            None => Ok(None),
        }
    }

    fn articles(&self) -> Result<Vec<Article>, StoreError> {
        self.shared
            .tree
            .scan_prefix(b"a/")
            .map(|item| {
                let (_, v) = item.map_err(backend)?;
                decode("article", &v)
            })
            .collect()
    }

    fn knowledge_generation(&self) -> Result<u64, StoreError> {
        match self
            .shared
            .tree
            .get(KNOWLEDGE_GENERATION_KEY)
            .map_err(backend)?
        {
            Some(v) => u64_at(&v, 0),
            None => Ok(0),
        }
    }

    fn add_knowledge_counts(
        &self,
        hour: UnixMicros,
        counts: &BTreeMap<Option<Tag>, KnowledgeCounts>,
        once: Option<&str>,
    ) -> Result<Option<Lsn>, StoreError> {
        // The sequencer orders every write, so these reads and the batch
        // that adds to them cannot interleave with another addition.
        let mut seq = lock(&self.shared.sequencer);
        let tree = &self.shared.tree;
        let mut batch = sled::Batch::default();
        if let Some(k) = once {
            let k = request_key(k);
            if tree.contains_key(&k).map_err(backend)? {
                return Ok(None);
            }
            batch.insert(k, &0u64.to_be_bytes());
        }
        for (tag, add) in counts {
            let k = counts_key(tag.as_ref(), hour);
            let mut total: KnowledgeCounts = match tree.get(&k).map_err(backend)? {
                Some(v) => decode("knowledge counts", &v)?,
                None => KnowledgeCounts::default(),
            };
            total.add(*add);
            batch.insert(k, encode(&total)?);
        }
        self.refuse_if_failed()?;
        tree.apply_batch(batch)
            .map_err(|e| self.poison(backend(e)))?;
        Ok(Some(self.written(&mut seq, Vec::new())))
    }

    fn knowledge_counts(
        &self,
        from: UnixMicros,
        to: UnixMicros,
        tag: Option<&Tag>,
    ) -> Result<KnowledgeCounts, StoreError> {
        let mut total = KnowledgeCounts::default();
        if to <= from {
            return Ok(total);
        }
        let first = from.div_euclid(HOUR_MICROS) * HOUR_MICROS;
        let range = counts_key(tag, first)..counts_key(tag, to);
        for item in self.shared.tree.range(range) {
            let (_, v) = item.map_err(backend)?;
            total.add(decode("knowledge counts", &v)?);
        }
        Ok(total)
    }

    fn idempotent(&self, k: &str) -> Result<Option<u64>, StoreError> {
        match self.shared.tree.get(request_key(k)).map_err(backend)? {
            Some(v) => Ok(Some(u64_at(&v, 0)?)),
            None => Ok(None),
        }
    }

    fn export(&self, each: &mut PairSink<'_>) -> Result<u64, StoreError> {
        // Holding the sequencer stops writes, so the copy is of one moment
        // (and, every commit being whole under it, needs no repair).
        let _seq = lock(&self.shared.sequencer);
        let mut count = 0;
        for item in self.shared.tree.iter() {
            let (k, v) = item.map_err(backend)?;
            each(&k, &v).map_err(|e| StoreError::Backend(format!("export: {e}")))?;
            count += 1;
        }
        Ok(count)
    }

    fn close(&self) -> Result<(), StoreError> {
        lock(&self.shared.pending).closing = true;
        self.shared.wake.notify_one();
        if let Some(handle) = lock(&self.committer).take() {
            handle
                .join()
                .map_err(|_| StoreError::Backend("committer thread panicked".into()))?;
            if self.failed().is_none() {
                // So that the next open has nothing to recount.
                let seq = lock(&self.shared.sequencer);
                self.shared
                    .tree
                    .insert(STATUS_COUNTS_KEY, encode(&seq.status_counts)?)
                    .map_err(backend)?;
                self.shared.tree.flush().map_err(backend)?;
            }
        }
        match self.failed() {
            Some(reason) => Err(StoreError::Backend(reason)),
            None => Ok(()),
        }
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the store failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::time::Duration;

    use super::*;
    use crate::domain::model::*;

    #[derive(Default)]
    struct Collect(StdMutex<Vec<u64>>);

    impl EventSink for Collect {
        fn publish(&self, events: &[Arc<TicketEvent>]) {
            self.0
                .lock()
                .unwrap()
                .extend(events.iter().map(|e| e.position));
        }
    }

    fn header(id: TicketId) -> Arc<TicketHeader> {
        Arc::new(TicketHeader {
            id,
            title: "printer on fire".into(),
            description: "d".repeat(100),
            requester: "cust".into(),
            channel: ContactChannel::Phone,
            kind: TicketKind::Incident,
            priority: Priority::P1,
            skills: vec![],
            created_at: 1,
            created_by: None,
        })
    }

    fn state(version: u64, status: TicketStatus) -> TicketState {
        TicketState {
            status,
            version,
            ..TicketState::blank(1, SlaClocks::untracked())
        }
    }

    fn create(store: &SledStore, key: Option<&str>) -> Receipt {
        let id = store.allocate_ticket_id().unwrap();
        store
            .commit(Commit {
                ticket: id,
                header: Some(header(id)),
                expected_version: 0,
                events: vec![NewEvent {
                    at: 1,
                    actor: "cust".into(),
                    kind: EventKind::Created,
                    state: state(1, TicketStatus::Open),
                }],
                experts: vec![],
                idempotency_key: key.map(str::to_owned),
            })
            .unwrap()
    }

    use super::super::NewEvent;

    #[tokio::test]
    async fn commits_survive_reopen_with_their_positions() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Collect::default());
        {
            let store = SledStore::open(&SledConfig::new(dir.path()), sink.clone()).unwrap();
            let a = create(&store, Some("req-1"));
            let b = create(&store, None);
            store.wait_durable(b.lsn).await.unwrap();
            assert_eq!(a.events[0].position, 1);
            assert_eq!(b.events[0].position, 2);
            store.close().unwrap();
        }
        assert_eq!(*sink.0.lock().unwrap(), vec![1, 2]);
        let store = SledStore::open(&SledConfig::new(dir.path()), sink).unwrap();
        assert_eq!(store.last_position(), 2);
        assert_eq!(store.idempotent("req-1").unwrap(), Some(1));
        assert_eq!(store.live_tickets().unwrap().len(), 2);
        let next = store.allocate_ticket_id().unwrap();
        assert_eq!(next, TicketId(3));
        let events = store.events_between(0, 2, 10).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].ticket.header.title, "printer on fire");
    }

    #[tokio::test]
    async fn stale_versions_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SledStore::open(&SledConfig::new(dir.path()), Arc::new(Collect::default())).unwrap();
        let r = create(&store, None);
        let id = r.events[0].ticket_id();
        let stale = Commit {
            ticket: id,
            header: None,
            expected_version: 5,
            events: vec![NewEvent {
                at: 2,
                actor: "x".into(),
                kind: EventKind::Created,
                state: state(6, TicketStatus::Closed),
            }],
            experts: vec![],
            idempotency_key: None,
        };
        assert!(matches!(store.commit(stale), Err(StoreError::Conflict(_))));
        assert_eq!(store.ticket(id).unwrap().unwrap().state.version, 1);
        assert_eq!(store.last_position(), 1);
        let e = Expert {
            id: ExpertId::parse("e", "ann").unwrap(),
            display_name: "Ann".into(),
            skills: vec![],
            capacity: 5,
            presence: Presence::Available,
            owned_open: 0,
            last_assigned_seq: 0,
            channels: None,
            version: 2,
        };
        assert!(matches!(store.put_expert(&e), Err(StoreError::Conflict(_))));
        let e1 = Expert { version: 1, ..e };
        store.put_expert(&e1).unwrap();
        assert!(store.put_expert(&e1).is_err());
    }

    #[tokio::test]
    async fn repair_drops_a_commit_cut_before_its_commit_point() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Collect::default());
        {
            let store = SledStore::open(&SledConfig::new(dir.path()), sink.clone()).unwrap();
            let r = create(&store, None);
            store.wait_durable(r.lsn).await.unwrap();
            // The first event of a two-event commit, written before a crash.
            let orphan = EventRecord {
                ticket: r.events[0].ticket_id(),
                at: 2,
                actor: "x".into(),
                kind: EventKind::Created,
                state: state(2, TicketStatus::Assigned),
                commit_first: 2,
                tail: None,
            };
            store
                .shared
                .tree
                .insert(key(b'e', 2), encode(&orphan).unwrap())
                .unwrap();
            store.close().unwrap();
        }
        let store = SledStore::open(&SledConfig::new(dir.path()), sink).unwrap();
        assert_eq!(store.last_position(), 1);
        assert!(store.event(2).unwrap().is_none());
        let again = create(&store, None);
        assert_eq!(
            again.events[0].position, 2,
            "the position is reused, never doubled"
        );
    }

    #[tokio::test]
    async fn repair_finishes_a_commit_cut_after_its_commit_point() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Collect::default());
        let id;
        {
            let store = SledStore::open(&SledConfig::new(dir.path()), sink.clone()).unwrap();
            let r = create(&store, Some("req-9"));
            store.wait_durable(r.lsn).await.unwrap();
            id = r.events[0].ticket_id();
            // Lose every key written after the commit point.
            let tree = &store.shared.tree;
            tree.remove(key(b's', id.0)).unwrap();
            tree.remove(key(b'u', id.0)).unwrap();
            tree.remove(seq_key(id, 1)).unwrap();
            tree.remove(request_key("create:req-9")).unwrap();
            tree.remove(request_key("req-9")).unwrap();
            store.close().unwrap();
        }
        let store = SledStore::open(&SledConfig::new(dir.path()), sink).unwrap();
        let ticket = store.ticket(id).unwrap().expect("state re-written");
        assert_eq!(ticket.state.version, 1);
        assert_eq!(store.live_tickets().unwrap().len(), 1);
        assert_eq!(store.idempotent("req-9").unwrap(), Some(1));
        assert_eq!(store.ticket_events(id, 0, 10, 10).unwrap().len(), 1);
    }

    fn move_to(store: &SledStore, id: TicketId, version: u64, to: TicketStatus) -> Receipt {
        store
            .commit(Commit {
                ticket: id,
                header: None,
                expected_version: version - 1,
                events: vec![NewEvent {
                    at: 2,
                    actor: "ann".into(),
                    kind: EventKind::StatusChanged {
                        from: TicketStatus::Open,
                        to,
                        note: String::new(),
                    },
                    state: state(version, to),
                }],
                experts: vec![],
                idempotency_key: None,
            })
            .unwrap()
    }

    fn counts(store: &SledStore) -> Vec<(TicketStatus, u64)> {
        lock(&store.shared.sequencer)
            .status_counts
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (*s, *n))
            .collect()
    }

    /// A data dir a test opens, closes and opens again.
    struct Reopenable {
        dir: tempfile::TempDir,
        sink: Arc<Collect>,
    }

    impl Reopenable {
        fn new() -> Self {
            Reopenable {
                dir: tempfile::tempdir().unwrap(),
                sink: Arc::new(Collect::default()),
            }
        }

        fn open(&self) -> SledStore {
            SledStore::open(&SledConfig::new(self.dir.path()), self.sink.clone()).unwrap()
        }
    }

    fn live_ids(store: &SledStore) -> Vec<TicketId> {
        store
            .live_tickets()
            .unwrap()
            .iter()
            .map(|t| t.header.id)
            .collect()
    }

    #[tokio::test]
    async fn live_flags_follow_the_status_through_moves_and_restarts() {
        use TicketStatus::*;
        let data = Reopenable::new();
        let open = || data.open();
        let store = open();
        let a = create(&store, None).events[0].ticket_id();
        let b = create(&store, None).events[0].ticket_id();
        assert_eq!(live_ids(&store), [a, b]);
        // Moves between live statuses keep the flag (written once, at creation).
        move_to(&store, a, 2, Assigned);
        move_to(&store, a, 3, WaitingCustomer);
        assert_eq!(live_ids(&store), [a, b]);
        move_to(&store, a, 4, Resolved);
        move_to(&store, b, 2, Closed);
        assert!(live_ids(&store).is_empty());
        // Reopened: live again, and still after a restart.
        let r = move_to(&store, a, 5, Open);
        assert_eq!(live_ids(&store), [a]);
        store.wait_durable(r.lsn).await.unwrap();
        store.close().unwrap();
        drop(store);
        let store = open();
        assert_eq!(live_ids(&store), [a]);
        move_to(&store, a, 6, Assigned);
        assert_eq!(live_ids(&store), [a]);
    }

    #[tokio::test]
    async fn status_counts_follow_commits_restarts_repair_and_migration() {
        use TicketStatus::*;
        let data = Reopenable::new();
        let open = || data.open();
        let store = open();
        let ids: Vec<TicketId> = (0..3)
            .map(|_| create(&store, None).events[0].ticket_id())
            .collect();
        assert_eq!(counts(&store), [(Open, 3)]);
        move_to(&store, ids[0], 2, Assigned);
        move_to(&store, ids[1], 2, Assigned);
        let r = move_to(&store, ids[1], 3, Resolved);
        store.wait_durable(r.lsn).await.unwrap();
        let expected = [(Open, 1), (Assigned, 1), (Resolved, 1)];
        assert_eq!(counts(&store), expected);
        store.close().unwrap();
        drop(store);

        let store = open();
        assert_eq!(counts(&store), expected, "after a restart");
        // A crash a while after the counts were last saved: several commits,
        // two of one ticket, and new tickets, are not in the saved counts.
        let before = store.shared.tree.get(STATUS_COUNTS_KEY).unwrap().unwrap();
        move_to(&store, ids[2], 2, Assigned);
        move_to(&store, ids[2], 3, Assigned);
        move_to(&store, ids[2], 4, Closed);
        let new = create(&store, None).events[0].ticket_id();
        let r = move_to(&store, new, 2, WaitingCustomer);
        store.wait_durable(r.lsn).await.unwrap();
        store.close().unwrap();
        // `close` saved them: put the stale ones back, as a crash leaves them.
        store.shared.tree.insert(STATUS_COUNTS_KEY, before).unwrap();
        store.shared.tree.flush().unwrap();
        drop(store);

        let store = open();
        let expected = [
            (Assigned, 1),
            (WaitingCustomer, 1),
            (Resolved, 1),
            (Closed, 1),
        ];
        assert_eq!(
            counts(&store),
            expected,
            "the log after the saved counts is counted"
        );
        store.close().unwrap();
        drop(store);
        let store = open();
        assert_eq!(counts(&store), expected, "and only once");

        // A schema 2 store has no counts: they are made by one scan.
        let tree = &store.shared.tree;
        tree.remove(STATUS_COUNTS_KEY).unwrap();
        migrate_status_counts(tree, last_number(tree, b'e').unwrap()).unwrap();
        let made = StatusCounts::load(tree).unwrap();
        let made: Vec<_> = made.counts.into_iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(made, expected, "after migration");
    }

    #[tokio::test]
    async fn a_schema_3_store_is_migrated_once_and_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Collect::default());
        {
            let db = open_db(&SledConfig::new(dir.path())).unwrap();
            db.insert(SCHEMA_KEY, &3u32.to_be_bytes()).unwrap();
            for (n, status) in [(1u64, TicketStatus::Open), (2, TicketStatus::Closed)] {
                let old = |version| TicketStateV3 {
                    status,
                    owner: None,
                    members: vec![],
                    help_tags: vec![],
                    declined: vec![],
                    updated_at: 5,
                    version,
                };
                db.insert(key(b'h', n), encode(&*header(TicketId(n))).unwrap())
                    .unwrap();
                let record = EventRecordV3 {
                    ticket: TicketId(n),
                    at: 5,
                    actor: "cust".into(),
                    kind: EventKind::Created,
                    state: old(1),
                    commit_first: n,
                    tail: Some(CommitTail {
                        experts: vec![],
                        idempotency_key: None,
                    }),
                };
                db.insert(key(b'e', n), encode(&record).unwrap()).unwrap();
                db.insert(seq_key(TicketId(n), 1), &n.to_be_bytes())
                    .unwrap();
                db.insert(key(b's', n), encode(&old(1)).unwrap()).unwrap();
                if status == TicketStatus::Open {
                    db.insert(key(b'u', n), &[]).unwrap();
                }
            }
            // Half done: the first event was rewritten before a crash.
            let first = db.get(key(b'e', 1)).unwrap().unwrap();
            let new = decode::<EventRecordV3>("event", &first).unwrap().upgrade();
            db.insert(key(b'e', 1), encode(&new).unwrap()).unwrap();
            db.insert(MIGRATE_4_KEY, key(b'e', 1).to_vec()).unwrap();
            db.flush().unwrap();
        }
        for _ in 0..2 {
            let store = SledStore::open(&SledConfig::new(dir.path()), sink.clone()).unwrap();
            let live = store.live_tickets().unwrap();
            assert_eq!(live.len(), 1);
            assert_eq!(live[0].id(), TicketId(1));
            assert_eq!(live[0].state.sla, SlaClocks::untracked());
            let closed = store.ticket(TicketId(2)).unwrap().unwrap();
            assert_eq!(closed.state.status, TicketStatus::Closed);
            let events = store.events_between(0, 2, 10).unwrap();
            assert_eq!(events.len(), 2);
            assert_eq!(events[1].ticket.state.status, TicketStatus::Closed);
            assert!(store.shared.tree.scan_prefix(b"u/").next().is_none());
            assert!(store.shared.tree.get(MIGRATE_4_KEY).unwrap().is_none());
            store.close().unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_are_all_made_durable_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Collect::default());
        let store = Arc::new(SledStore::open(&SledConfig::new(dir.path()), sink.clone()).unwrap());
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..20 {
                    let r = create(&store, None);
                    store.wait_durable(r.lsn).await.unwrap();
                }
            }));
        }
        // Fails loudly instead of hanging if sled deadlocks (see SLED.md).
        tokio::time::timeout(Duration::from_secs(60), async {
            for t in tasks {
                t.await.unwrap();
            }
        })
        .await
        .expect("writers hung: possible sled deadlock");
        // Writers are told their write is durable before its events go to
        // the sink (the reply does not wait for the fan-out); closing waits
        // for the committer, so every event has been handed over after it.
        store.close().unwrap();
        let published = sink.0.lock().unwrap().clone();
        assert_eq!(published, (1..=640).collect::<Vec<u64>>());
    }
}
