//! A node's replica of the log's state: a sled state under the data dir,
//! replaced whole when it holds what the log does not (a deposed writer's
//! speculative appends, a crash since it was last closed cleanly).
//!
//! Each replica lives in `<data dir>/replica-<n>`; the current one is the
//! highest `n`. A clean close records the last stream sequence it holds
//! (the blob `replica-applied`); opening removes that record before
//! anything is applied, so a replica opened again after a crash has none
//! and is rebuilt from the log instead of trusted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::domain::model::Ticket;
use crate::domain::{
    Article, ArticleId, Expert, ExpertId, KnowledgeCounts, Tag, TicketEvent, TicketId, TokenRecord,
    UnixMicros,
};
use crate::store::sled::{SledConfig, SledState};
use crate::store::{
    Entry, ExpertStore, KnowledgeStore, State, StoreError, TicketStore, TokenStore,
};

/// The blob a clean close leaves: the last stream sequence the replica holds.
const APPLIED_BLOB: &str = "replica-applied";
const PREFIX: &str = "replica-";

/// The current replica, swappable under its readers.
pub(crate) struct Replica {
    data_dir: PathBuf,
    cache_capacity: u64,
    current: RwLock<(u64, Arc<SledState>)>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("generation", &self.generation())
            .finish()
    }
}

fn generations(data_dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut found = Vec::new();
    let dir = std::fs::read_dir(data_dir)
        .map_err(|e| StoreError::Backend(format!("cannot list {}: {e}", data_dir.display())))?;
    for item in dir {
        let item = item.map_err(|e| StoreError::Backend(format!("cannot list: {e}")))?;
        if let Some(n) = item
            .file_name()
            .to_str()
            .and_then(|name| name.strip_prefix(PREFIX))
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push(n);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// The stream sequence a replica's last clean close recorded, if any.
pub(super) fn recorded_applied(state: &SledState) -> Result<Option<u64>, StoreError> {
    Ok(state.blob_value(APPLIED_BLOB)?.and_then(|v| {
        <[u8; 8]>::try_from(v.as_slice())
            .ok()
            .map(u64::from_be_bytes)
    }))
}

/// The current replica under `data_dir` as it is, if there is one (for
/// audits of a stopped node: opening it changes nothing).
pub(super) fn latest_replica(data_dir: &Path) -> Result<Option<SledState>, StoreError> {
    match generations(data_dir)?.last() {
        Some(&n) => Replica::open_state(data_dir, 64 * 1024 * 1024, n).map(Some),
        None => Ok(None),
    }
}

impl Replica {
    /// Opens the current replica under `data_dir`; returns it with the
    /// stream sequence it holds, or a fresh empty one (sequence 0) when the
    /// last one was not closed cleanly. Older replicas are removed.
    pub(crate) fn open(data_dir: &Path, cache_capacity: u64) -> Result<(Self, u64), StoreError> {
        let found = generations(data_dir)?;
        let latest = found.last().copied();
        let mut opened = None;
        if let Some(n) = latest {
            let state = Self::open_state(data_dir, cache_capacity, n)?;
            match recorded_applied(&state)? {
                Some(seq) => {
                    // From here on it is trusted only if closed cleanly again.
                    state.remove_blob(APPLIED_BLOB)?;
                    state.flush()?;
                    opened = Some((n, state, seq));
                }
                None => tracing::warn!(
                    replica = n,
                    "the replica was not closed cleanly; rebuilding it from the log"
                ),
            }
        }
        let (n, state, seq) = match opened {
            Some(o) => o,
            None => {
                let n = latest.map_or(1, |n| n + 1);
                (n, Self::open_state(data_dir, cache_capacity, n)?, 0)
            }
        };
        for old in found.into_iter().filter(|&g| g != n) {
            remove_dir(&data_dir.join(format!("{PREFIX}{old}")));
        }
        Ok((
            Replica {
                data_dir: data_dir.to_path_buf(),
                cache_capacity,
                current: RwLock::new((n, Arc::new(state))),
            },
            seq,
        ))
    }

    fn open_state(data_dir: &Path, cache_capacity: u64, n: u64) -> Result<SledState, StoreError> {
        SledState::open(&SledConfig {
            cache_capacity,
            ..SledConfig::new(data_dir.join(format!("{PREFIX}{n}")))
        })
    }

    pub(crate) fn generation(&self) -> u64 {
        self.read().0
    }

    fn read(&self) -> (u64, Arc<SledState>) {
        let guard = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (guard.0, guard.1.clone())
    }

    pub(crate) fn state(&self) -> Arc<SledState> {
        self.read().1
    }

    /// An empty replica beside the current one, to rebuild into.
    pub(crate) fn fresh(&self) -> Result<(u64, SledState), StoreError> {
        let n = self.generation() + 1;
        Ok((n, Self::open_state(&self.data_dir, self.cache_capacity, n)?))
    }

    /// Makes `state` (from [`Replica::fresh`]) the current replica and
    /// removes the old one once its last reader lets go.
    pub(crate) fn replace(&self, n: u64, state: SledState) {
        let old = {
            let mut guard = self
                .current
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::replace(&mut *guard, (n, Arc::new(state)))
        };
        let dir = self.data_dir.join(format!("{PREFIX}{}", old.0));
        drop(old);
        // Readers holding the old state keep it open a moment; the next
        // open removes whatever is left.
        remove_dir(&dir);
    }

    /// Records `seq` as what the replica holds and makes it durable: the
    /// last step of a clean close.
    pub(crate) fn close_at(&self, seq: u64) -> Result<(), StoreError> {
        let state = self.state();
        state.flush()?;
        state.put_blob(APPLIED_BLOB, &seq.to_be_bytes())?;
        state.flush()
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an old replica");
        }
    }
}

impl State for Replica {
    fn apply(&self, entry: Entry) -> Result<Vec<Arc<TicketEvent>>, StoreError> {
        self.state().apply(entry)
    }
}

impl TicketStore for Replica {
    fn last_position(&self) -> u64 {
        self.state().last_position()
    }

    fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        self.state().ticket(id)
    }

    fn tickets_from(&self, from: TicketId, limit: usize) -> Result<Vec<Ticket>, StoreError> {
        self.state().tickets_from(from, limit)
    }

    fn live_tickets(&self) -> Result<Vec<Ticket>, StoreError> {
        self.state().live_tickets()
    }

    fn events_between(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Arc<TicketEvent>>, StoreError> {
        self.state().events_between(after, upto, limit)
    }

    fn ticket_events(
        &self,
        ticket: TicketId,
        after_seq: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Arc<TicketEvent>>, StoreError> {
        self.state().ticket_events(ticket, after_seq, upto, limit)
    }

    fn event(&self, position: u64) -> Result<Option<Arc<TicketEvent>>, StoreError> {
        self.state().event(position)
    }

    fn idempotent(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.state().idempotent(key)
    }
}

impl ExpertStore for Replica {
    fn experts(&self) -> Result<Vec<Expert>, StoreError> {
        self.state().experts()
    }

    fn expert(&self, id: &ExpertId) -> Result<Option<Expert>, StoreError> {
        self.state().expert(id)
    }
}

impl TokenStore for Replica {
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.state().tokens()
    }
}

impl KnowledgeStore for Replica {
    fn article(&self, id: ArticleId) -> Result<Option<Article>, StoreError> {
        self.state().article(id)
    }

    fn articles(&self) -> Result<Vec<Article>, StoreError> {
        self.state().articles()
    }

    fn knowledge_generation(&self) -> Result<u64, StoreError> {
        self.state().knowledge_generation()
    }

    fn knowledge_counts(
        &self,
        from: UnixMicros,
        to: UnixMicros,
        tag: Option<&Tag>,
    ) -> Result<KnowledgeCounts, StoreError> {
        self.state().knowledge_counts(from, to, tag)
    }
}
