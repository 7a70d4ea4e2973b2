//! The embedded backend: sled as the log and the state at once. An append
//! is checked and applied to the state at once (visible to reads) and made
//! durable by the next group commit; the commit record in sled is the log
//! entry. A replicated backend uses [`SledState`] alone, as its replica.
//!
//! - `keys.rs`: the layout below and its records;
//! - `apply.rs`: entries applied to sled, the commit point;
//! - `reads.rs`: the read traits;
//! - `committer.rs`: group commit (flush + fdatasync, then the sink);
//! - `recovery.rs`: opening sled, repair of a commit cut short, import;
//! - `migrate.rs`, `counts.rs`: older schemas, tickets per status.
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
//! rewrites its headers once. Schema 3 added `m/status-counts`; opening an
//! older store counts its states once. Schema 4 added service-level clocks,
//! escalations, vendor, rating and owner time to ticket states, and
//! replaced the index of tickets waiting for an owner (`u/`) by one of live
//! tickets (`l/`, what start-up loads); opening an older store rewrites its
//! states and events once, in atomic chunks that record their progress.
//! Schema 5 added articles, knowledge counters and two event kinds: older
//! stores need no rewrite, but older builds cannot read the new events.

mod apply;
mod committer;
mod counts;
mod keys;
mod migrate;
mod reads;
mod recovery;
#[cfg(test)]
mod tests;
pub mod torn;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::watch;

use self::apply::lock;
pub use self::apply::SledState;
use self::committer::{run_committer, Committer, Durable, Pending};
use self::keys::{backend, blob_key, last_number, SCHEMA_KEY, SCHEMA_VERSION};
use super::{
    Appended, BlobStore, Change, DurableFuture, Entry, EventSink, Log, Lsn, PairSink, Snapshot,
    State, StoreError, TicketStore,
};
use crate::domain::{ArticleId, TicketEvent, TicketId};

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

/// The sled backend: the single-node log over its [`SledState`]. Cheap to
/// share behind an `Arc`.
pub struct SledStore {
    state: Arc<SledState>,
    committer: Arc<Committer>,
    /// Held across the checks and the writes of an append, so that
    /// positions, lsns and the state advance in one order; the next lsn.
    /// Never held across an await or a flush.
    sequencer: Mutex<Lsn>,
    next_ticket: AtomicU64,
    next_article: AtomicU64,
    written: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("written", &self.written.load(Ordering::Relaxed))
            .field("state", &self.state)
            .finish()
    }
}

impl SledStore {
    /// Opens (or creates) the store; fails if another process holds it.
    pub fn open(config: &SledConfig, sink: Arc<dyn EventSink>) -> Result<Self, StoreError> {
        let db = prepare(config)?;
        let log_file = File::open(config.path.join("db")).map_err(|e| {
            StoreError::Backend(format!("cannot open sled's log file for syncing: {e}"))
        })?;
        let last_ticket = last_number(&db, b'h')?;
        let last_article = last_number(&db, b'a')?;
        let (durable, _) = watch::channel(Durable::default());
        let committer = Arc::new(Committer {
            tree: db.clone(),
            path: config.path.clone(),
            log_file,
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            durable,
            sink,
        });
        let state = Arc::new(SledState::new(db)?);
        let shared = committer.clone();
        let thread = std::thread::Builder::new()
            .name("swarmdesk-committer".into())
            .spawn(move || run_committer(&shared))
            .map_err(|e| StoreError::Backend(format!("cannot start committer: {e}")))?;
        Ok(SledStore {
            state,
            committer,
            sequencer: Mutex::new(1),
            next_ticket: AtomicU64::new(last_ticket + 1),
            next_article: AtomicU64::new(last_article + 1),
            written: AtomicU64::new(0),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The state this log applies to, for reading.
    pub fn state(&self) -> &Arc<SledState> {
        &self.state
    }

    fn refuse_if_failed(&self) -> Result<(), StoreError> {
        match self.committer.failed() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// A write failed part way: refuse every later write until a restart
    /// (whose repair finishes or drops the cut commit). A refused check
    /// wrote nothing and leaves the store as it was.
    fn poison(&self, error: StoreError) -> StoreError {
        let error = keys::in_dir(error, &self.committer.path);
        if matches!(
            error,
            StoreError::Backend(_) | StoreError::DiskFull { .. } | StoreError::DiskFailed { .. }
        ) {
            self.committer.fail(error.clone());
        }
        error
    }

    /// Records the writes just made as the next lsn and queues `events`
    /// for the committer; the caller holds the sequencer.
    fn written(&self, next_lsn: &mut Lsn, events: Vec<Arc<TicketEvent>>) -> Lsn {
        let lsn = *next_lsn;
        *next_lsn += 1;
        self.written.store(lsn, Ordering::Release);
        self.committer.written(lsn, events);
        lsn
    }
}

/// Opens sled at `config` and brings it to this build's schema: older
/// schemas migrated, a commit cut short by a crash repaired.
fn prepare(config: &SledConfig) -> Result<sled::Db, StoreError> {
    let db = recovery::open_db(config)?;
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
        migrate::migrate_v1_headers(&db)?;
    }
    if found.is_some_and(|f| f < 4) {
        migrate::migrate_v3_states(&db)?;
    }
    recovery::repair(&db)?;
    // After repair: the count must include the last commit, whole.
    if found.is_some_and(|f| f < 3) {
        counts::migrate_status_counts(&db, last_number(&db, b'e')?)?;
    }
    if found != Some(SCHEMA_VERSION) {
        db.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
            .map_err(backend)?;
        db.flush().map_err(backend)?;
        if let Some(found) = found {
            tracing::info!(from = found, to = SCHEMA_VERSION, "store schema upgraded");
        }
    }
    Ok(db)
}

impl Log for SledStore {
    fn allocate_ticket_id(&self) -> Result<TicketId, StoreError> {
        Ok(TicketId(self.next_ticket.fetch_add(1, Ordering::Relaxed)))
    }

    fn allocate_article_id(&self) -> Result<ArticleId, StoreError> {
        Ok(ArticleId(self.next_article.fetch_add(1, Ordering::Relaxed)))
    }

    fn append(&self, change: Change) -> Result<Appended, StoreError> {
        let mut next_lsn = lock(&self.sequencer);
        self.refuse_if_failed()?;
        if let Change::KnowledgeCounts { once: Some(k), .. } = &change {
            if self.state.has_request(k)? {
                return Ok(Appended::default());
            }
        }
        let is_article = matches!(change, Change::Article(_));
        let first_position = match change {
            Change::Ticket(_) => self.state.last_position() + 1,
            _ => 0,
        };
        let events = self
            .state
            .apply_entry(Entry {
                first_position,
                change,
            })
            .map_err(|e| self.poison(e))?;
        let generation = if is_article {
            self.state.generation()?
        } else {
            0
        };
        let lsn = self.written(&mut next_lsn, events.clone());
        Ok(Appended {
            lsn,
            events,
            generation,
            recorded: true,
        })
    }

    fn wait_durable(&self, lsn: Lsn) -> DurableFuture {
        let mut durable = self.committer.durable.subscribe();
        Box::pin(async move {
            let state = durable
                .wait_for(|d| d.lsn >= lsn || d.failed.is_some())
                .await
                .map_err(|_| StoreError::Closed)?;
            match &state.failed {
                _ if state.lsn >= lsn => Ok(()),
                Some(error) => Err(error.clone()),
                None => Err(StoreError::Backend("flush failed".into())),
            }
        })
    }

    fn written_lsn(&self) -> Lsn {
        self.written.load(Ordering::Acquire)
    }

    fn catch_up(&self) -> Result<(), StoreError> {
        // One process holds the data dir: nobody else appends.
        Ok(())
    }

    fn failure(&self) -> Option<StoreError> {
        self.committer.failed()
    }

    fn close(&self) -> Result<(), StoreError> {
        self.committer.begin_close();
        if let Some(handle) = lock(&self.thread).take() {
            handle
                .join()
                .map_err(|_| StoreError::Backend("committer thread panicked".into()))?;
            if self.committer.failed().is_none() {
                let _writes_stopped = lock(&self.sequencer);
                self.state.save_counts()?;
            }
        }
        match self.committer.failed() {
            Some(error) => {
                // sled makes its log stable once more when its last handle
                // drops, and on a full or failed disk that never returns:
                // one handle is let go of instead, so that closing (and the
                // process's exit) cannot hang. Nothing is lost: what was
                // acknowledged was flushed, and the rest is refused.
                std::mem::forget(self.state.tree.clone());
                Err(error)
            }
            None => Ok(()),
        }
    }
}

impl BlobStore for SledStore {
    fn put_blob(&self, name: &str, value: &[u8]) -> Result<DurableFuture, StoreError> {
        let lsn = {
            let mut next_lsn = lock(&self.sequencer);
            self.refuse_if_failed()?;
            self.state
                .tree
                .insert(blob_key(name), value)
                .map_err(|e| self.poison(backend(e)))?;
            self.written(&mut next_lsn, Vec::new())
        };
        Ok(self.wait_durable(lsn))
    }

    fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.state.blob(name)
    }
}

impl Snapshot for SledStore {
    fn export(&self, each: &mut PairSink<'_>) -> Result<u64, StoreError> {
        // Holding the sequencer stops writes, so the copy is of one moment
        // (and, every commit being whole under it, needs no repair).
        let _writes_stopped = lock(&self.sequencer);
        self.state.export_pairs(each)
    }
}

impl SledState {
    /// A state alone at `config`, for a log kept elsewhere to apply to
    /// (a replica). It flushes only when told to (`save_counts`, or when
    /// dropped): what its log holds can always be applied again.
    pub fn open(config: &SledConfig) -> Result<Self, StoreError> {
        SledState::new(prepare(config)?)
    }
}

/// What a log kept elsewhere needs of its replica besides applying to it.
impl SledState {
    /// Stores a blob (not part of the log); durable at the next [`SledState::flush`].
    pub fn put_blob(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.tree.insert(blob_key(name), value).map_err(backend)?;
        Ok(())
    }

    pub fn remove_blob(&self, name: &str) -> Result<(), StoreError> {
        self.tree.remove(blob_key(name)).map_err(backend)?;
        Ok(())
    }

    pub fn blob_value(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.blob(name)
    }

    /// Saves the status counts and makes everything applied durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.save_counts()
    }

    /// The highest ticket and article ids applied (0: none).
    pub fn last_ids(&self) -> Result<(TicketId, ArticleId), StoreError> {
        Ok((
            TicketId(last_number(&self.tree, b'h')?),
            ArticleId(last_number(&self.tree, b'a')?),
        ))
    }

    /// Hands every stored pair to `each` (see [`Snapshot::export`]); the
    /// caller keeps appends out meanwhile.
    pub fn export_pairs(&self, each: &mut PairSink<'_>) -> Result<u64, StoreError> {
        let mut count = 0;
        for item in self.tree.iter() {
            let (k, v) = item.map_err(backend)?;
            each(&k, &v).map_err(|e| StoreError::Backend(format!("export: {e}")))?;
            count += 1;
        }
        Ok(count)
    }
}

impl State for SledState {
    fn apply(&self, entry: Entry) -> Result<Vec<Arc<TicketEvent>>, StoreError> {
        self.apply_entry(entry)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the store failed");
        }
    }
}
