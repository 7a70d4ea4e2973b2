//! The state: entries applied to sled, one at a time, in log order.
//!
//! A ticket commit is a run of single-key inserts whose commit point is one
//! key: the last event record, which carries what the rest of the commit
//! writes (experts, idempotency key). Order within a commit: the header
//! (harmless if orphaned: nothing reads a header without a state), the
//! events, then the keys derived from them (per-ticket index, state, live
//! flag, experts, idempotency). sled recovers a prefix of its log, so after
//! a crash only the last commit can be cut short; `recovery::repair` drops
//! a commit whose last event is missing and re-writes the derived keys of
//! the last complete one. (`apply_batch` would make this unnecessary, but
//! in sled 0.34 every batch rolls the log buffer twice and takes a global
//! write lock: measured 60-100 µs a ticket, which made it the bottleneck
//! of every write.) The other changes are rare and small: each is one key,
//! or one atomic sled batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::counts::StatusCounts;
use super::keys::{
    backend, counts_key, decode, encode, expert_key, is_live, key, request_key, seq_key, token_key,
    u64_at, CommitTail, EventRecord, KNOWLEDGE_GENERATION_KEY,
};
use crate::domain::model::Ticket;
use crate::domain::{Expert, KnowledgeCounts, TicketEvent, TicketId, TicketState};
use crate::store::{check_version, Change, Commit, Entry, StoreError};

/// How often commits save the status counts: whichever comes first.
const COUNTS_EVERY: Duration = Duration::from_secs(1);
const COUNTS_EVERY_COMMITS: u64 = 4096;

/// sled as the state a log is applied to. Reads are in `reads.rs`.
pub struct SledState {
    pub(super) tree: sled::Db,
    /// The position of the last event applied.
    pub(super) last_position: AtomicU64,
    /// Held while an entry is applied, so entries apply one at a time.
    applier: Mutex<Applier>,
}

struct Applier {
    status_counts: StatusCounts,
    /// When a commit last saved `status_counts`, and commits since.
    counts_saved_at: Instant,
    commits_since_counts: u64,
}

impl std::fmt::Debug for SledState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledState")
            .field("last_position", &self.last_position.load(Ordering::Relaxed))
            .finish()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain counters behind,
    // never a half-written commit (repair finishes or drops it on open).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SledState {
    /// The state in `tree`, repaired and migrated (see `SledStore::open`).
    pub(super) fn new(tree: sled::Db) -> Result<Self, StoreError> {
        let status_counts = StatusCounts::recount(&tree)?;
        status_counts.publish();
        let last_position = super::keys::last_number(&tree, b'e')?;
        Ok(SledState {
            tree,
            last_position: AtomicU64::new(last_position),
            applier: Mutex::new(Applier {
                status_counts,
                counts_saved_at: Instant::now(),
                commits_since_counts: 0,
            }),
        })
    }

    /// Saves the status counts and flushes (at close: the next open then
    /// has nothing to recount).
    pub(super) fn save_counts(&self) -> Result<(), StoreError> {
        lock(&self.applier).status_counts.save(&self.tree)?;
        self.tree.flush().map_err(backend)?;
        Ok(())
    }

    #[cfg(test)]
    pub(super) fn status_counts(&self) -> StatusCounts {
        lock(&self.applier).status_counts.clone()
    }

    pub(super) fn check_expert_version(&self, expert: &Expert) -> Result<(), StoreError> {
        let stored = self.stored_expert(&expert.id)?.map_or(0, |e| e.version);
        check_version(
            format_args!("expert {}", expert.id),
            stored,
            expert.version.saturating_sub(1),
        )
    }

    /// Applies one entry (see [`crate::store::State::apply`]). Every check
    /// comes before the first write, so a refused entry changes nothing.
    pub(super) fn apply_entry(&self, entry: Entry) -> Result<Vec<Arc<TicketEvent>>, StoreError> {
        let mut applier = lock(&self.applier);
        match entry.change {
            Change::Ticket(commit) => self.apply_commit(&mut applier, entry.first_position, commit),
            Change::Expert(expert) => {
                self.check_expert_version(&expert)?;
                self.tree
                    .insert(expert_key(&expert.id), encode(&expert)?)
                    .map_err(backend)?;
                Ok(Vec::new())
            }
            Change::Token(token) => {
                self.tree
                    .insert(token_key(&token.id), encode(&token)?)
                    .map_err(backend)?;
                Ok(Vec::new())
            }
            Change::Article(article) => {
                let stored = self.stored_article(article.id)?.map_or(0, |a| a.version);
                check_version(
                    format_args!("article {}", article.id),
                    stored,
                    article.version.saturating_sub(1),
                )?;
                let generation = self.generation()? + 1;
                let mut batch = sled::Batch::default();
                batch.insert(&key(b'a', article.id.0), encode(&article)?);
                batch.insert(KNOWLEDGE_GENERATION_KEY, &generation.to_be_bytes());
                self.tree.apply_batch(batch).map_err(backend)?;
                Ok(Vec::new())
            }
            Change::KnowledgeCounts { hour, counts, once } => {
                let mut batch = sled::Batch::default();
                if let Some(k) = &once {
                    batch.insert(request_key(k), &0u64.to_be_bytes());
                }
                for (tag, add) in &counts {
                    let k = counts_key(tag.as_ref(), hour);
                    let mut total: KnowledgeCounts = match self.tree.get(&k).map_err(backend)? {
                        Some(v) => decode("knowledge counts", &v)?,
                        None => KnowledgeCounts::default(),
                    };
                    total.add(*add);
                    batch.insert(k, encode(&total)?);
                }
                self.tree.apply_batch(batch).map_err(backend)?;
                Ok(Vec::new())
            }
        }
    }

    fn apply_commit(
        &self,
        applier: &mut Applier,
        first: u64,
        commit: Commit,
    ) -> Result<Vec<Arc<TicketEvent>>, StoreError> {
        let id = commit.ticket;
        let expected_first = self.last_position.load(Ordering::Acquire) + 1;
        if first != expected_first {
            return Err(StoreError::Corrupt(format!(
                "an entry for ticket {id} starts at position {first}, but the next position is {expected_first}"
            )));
        }
        let stored = self.stored_state(id)?;
        let stored_version = stored.as_ref().map_or(0, |s| s.version);
        check_version(
            format_args!("ticket {id}"),
            stored_version,
            commit.expected_version,
        )?;
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
        let Some(last) = commit.events.last() else {
            return Err(StoreError::Backend(
                "a commit needs at least one event".into(),
            ));
        };
        let was_live = stored.as_ref().is_some_and(|s| is_live(s.status));
        let count = commit.events.len() as u64;
        let last_position = first + count - 1;
        let mut status_counts = applier.status_counts.clone();
        let moved = status_counts.moved(stored.map(|s| s.status), last.state.status, last_position);
        status_counts.through = last_position;
        let save_counts = applier.commits_since_counts + 1 >= COUNTS_EVERY_COMMITS
            || applier.counts_saved_at.elapsed() >= COUNTS_EVERY;
        let header_bytes = commit.header.as_deref().map(encode).transpose()?;
        let tail = CommitTail {
            experts: commit.experts,
            idempotency_key: commit.idempotency_key,
        };
        let mut records: Vec<EventRecord> = commit
            .events
            .into_iter()
            .map(|new| EventRecord {
                ticket: id,
                at: new.at,
                actor: new.actor,
                kind: new.kind,
                state: new.state,
                commit_first: first,
                tail: None,
            })
            .collect();
        if let Some(last) = records.last_mut() {
            last.tail = Some(tail);
        }
        // Everything is encoded before the first write, so that an
        // encoding failure leaves nothing behind.
        let event_bytes = records.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let counts_bytes = save_counts.then(|| encode(&status_counts)).transpose()?;
        let tree = &self.tree;
        let started = Instant::now();
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
            tree.insert(super::keys::STATUS_COUNTS_KEY, bytes.as_slice())
                .map_err(backend)?;
        }
        let m = crate::metrics::metrics();
        m.store_write_seconds
            .observe(started.elapsed().as_secs_f64());
        m.events_appended.inc_by(count);
        if moved {
            status_counts.publish();
        }
        applier.status_counts = status_counts;
        if save_counts {
            applier.counts_saved_at = Instant::now();
            applier.commits_since_counts = 0;
        } else {
            applier.commits_since_counts += 1;
        }
        self.last_position.store(last_position, Ordering::Release);
        Ok(records
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
            .collect())
    }
}

/// Writes the keys a commit derives from its events: the per-ticket index,
/// the state, the live flag, the experts and the idempotency record.
/// With `repairing`, keys already newer than the commit's are left alone, so
/// running it again over a finished commit changes nothing.
pub(super) fn write_derived(
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

/// Reads a stored number (a position, a generation).
pub(super) fn number(value: &[u8]) -> Result<u64, StoreError> {
    u64_at(value, 0)
}
