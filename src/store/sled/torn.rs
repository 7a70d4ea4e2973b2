//! Recovery from a log cut or damaged in its last commit, as a kill -9
//! mid-write or a bad sector would leave it. [`TornLog`] makes a store of
//! a few durable tickets plus one last commit, and opens copies of it
//! with that commit's bytes cut or changed: the store must open with a
//! prefix (every earlier commit as it was, the last whole or not at all,
//! its request id exactly when it is there) and take the next write at
//! the next position, or refuse a damaged log with its reason; never
//! panic. The unit test walks every offset of the last commit; the fuzz
//! target `recovery` (fuzz/) tries combinations.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{SledConfig, SledStore};
use crate::domain::{
    ContactChannel, EventKind, Priority, SlaClocks, TicketHeader, TicketId, TicketKind, TicketState,
};
use crate::store::{Change, Commit, Log, NewEvent, NoSink, StoreError, TicketStore};

/// One change to the last commit's bytes, at an offset from its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// The file ends here (a write cut short).
    Cut(usize),
    /// The byte here is XORed with this (a bad sector, a bit flip).
    Flip(usize, u8),
}

/// What a damaged copy opened as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// Every commit, the last one whole.
    Whole,
    /// Every commit before the last; the last is gone.
    Dropped,
    /// The store refused to open, saying why.
    Refused(String),
}

/// A store with `before` durable tickets and one last commit, kept open
/// (the original to compare with), and a copy of its files as a kill -9
/// would leave them right after that commit.
#[derive(Debug)]
pub struct TornLog {
    dir: tempfile::TempDir,
    original: SledStore,
    copy: PathBuf,
    db: Vec<u8>,
    /// Where the last commit's bytes start in `db`.
    start: usize,
    last: TicketId,
}

const REQUEST_ID: &str = "the-last-commit";

fn create(store: &SledStore, request_id: Option<&str>) -> Result<u64, StoreError> {
    let id = store.allocate_ticket_id()?;
    let header = TicketHeader {
        id,
        title: format!("ticket {}", id.0),
        description: "d".repeat(100),
        requester: "cust".into(),
        channel: ContactChannel::Phone,
        kind: TicketKind::Incident,
        priority: Priority::P2,
        skills: vec![],
        created_at: 1,
        created_by: None,
    };
    let appended = store.append(Change::Ticket(Commit {
        ticket: id,
        header: Some(Arc::new(header)),
        expected_version: 0,
        events: vec![NewEvent {
            at: 1,
            actor: "cust".into(),
            kind: EventKind::Created,
            state: TicketState {
                version: 1,
                ..TicketState::blank(1, SlaClocks::untracked())
            },
        }],
        experts: vec![],
        idempotency_key: request_id.map(str::to_owned),
    }))?;
    Ok(appended.lsn)
}

/// The files of a data dir as a kill -9 would leave them: after a flush
/// sled writes nothing until the next write.
fn copy_files(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_files(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

impl TornLog {
    /// Makes the store in a temporary dir under `parent` (a tmpfs keeps a
    /// fuzzer fast), or the system's.
    pub async fn prepare(before: u64, parent: Option<&Path>) -> Result<TornLog, String> {
        let dir = match parent {
            Some(p) => tempfile::tempdir_in(p),
            None => tempfile::tempdir(),
        }
        .map_err(io)?;
        let live = dir.path().join("live");
        let err = |e: StoreError| e.to_string();
        let original = SledStore::open(&SledConfig::new(&live), Arc::new(NoSink)).map_err(err)?;
        for _ in 0..before {
            let lsn = create(&original, None).map_err(err)?;
            original.wait_durable(lsn).await.map_err(err)?;
        }
        let earlier = dir.path().join("earlier");
        copy_files(&live, &earlier).map_err(io)?;
        let lsn = create(&original, Some(REQUEST_ID)).map_err(err)?;
        original.wait_durable(lsn).await.map_err(err)?;
        let copy = dir.path().join("copy");
        copy_files(&live, &copy).map_err(io)?;
        let old = std::fs::read(earlier.join("db")).map_err(io)?;
        let db = std::fs::read(copy.join("db")).map_err(io)?;
        // The last commit's bytes: from the first byte it changed to the end.
        let start = old
            .iter()
            .zip(&db)
            .position(|(a, b)| a != b)
            .unwrap_or(old.len().min(db.len()));
        if db.len() <= start {
            return Err("the last commit wrote nothing to the db file".into());
        }
        Ok(TornLog {
            dir,
            original,
            copy,
            db,
            start,
            last: TicketId(before + 1),
        })
    }

    /// How many bytes the last commit wrote (damage offsets are below it).
    pub fn last_commit_len(&self) -> usize {
        self.db.len() - self.start
    }

    /// Opens a copy with `damage` done to the last commit's bytes (offsets
    /// taken modulo its length), checks what it holds, and writes to it
    /// once; an error says which rule it broke.
    pub async fn recover(&self, damage: &[Damage]) -> Result<Recovered, String> {
        let mut bytes = self.db.clone();
        let len = self.last_commit_len();
        for d in damage {
            match *d {
                Damage::Cut(at) => bytes.truncate(bytes.len().min(self.start + at % len)),
                Damage::Flip(at, with) => {
                    if let Some(b) = bytes.get_mut(self.start + at % len) {
                        *b ^= with;
                    }
                }
            }
        }
        let case = tempfile::tempdir_in(self.dir.path()).map_err(io)?;
        copy_files(&self.copy, case.path()).map_err(io)?;
        std::fs::write(case.path().join("db"), &bytes).map_err(io)?;
        let config = SledConfig::new(case.path());
        let opened = std::panic::catch_unwind(|| SledStore::open(&config, Arc::new(NoSink)))
            .map_err(|_| "opening the store panicked".to_owned())?;
        let store = match opened {
            Ok(store) => store,
            Err(e) => return Ok(Recovered::Refused(e.to_string())),
        };
        let recovered = self.holds_a_prefix(&store).await;
        let _ = store.close();
        recovered
    }

    async fn holds_a_prefix(&self, store: &SledStore) -> Result<Recovered, String> {
        let err = |e: StoreError| e.to_string();
        let (state, original) = (store.state(), self.original.state());
        for n in 1..self.last.0 {
            let ticket = state.ticket(TicketId(n)).map_err(err)?;
            if ticket != original.ticket(TicketId(n)).map_err(err)? {
                return Err(format!(
                    "T-{n}, durable before the last commit, differs: {ticket:?}"
                ));
            }
        }
        let kept = match state.ticket(self.last).map_err(err)? {
            None => false,
            Some(t) if Some(&t) == original.ticket(self.last).map_err(err)?.as_ref() => true,
            Some(t) => return Err(format!("the last ticket came back changed: {t:?}")),
        };
        let keyed = state.idempotent(REQUEST_ID).map_err(err)?;
        if keyed != kept.then_some(self.last.0) {
            return Err(format!(
                "the last ticket kept: {kept}, its request id: {keyed:?}"
            ));
        }
        let held = self.last.0 - 1 + u64::from(kept);
        let events = state.events_between(0, u64::MAX, 10_000).map_err(err)?;
        if events != original.events_between(0, held, 10_000).map_err(err)? {
            return Err("the events differ from the original's".into());
        }
        let lsn = create(store, None).map_err(|e| format!("not writable after recovery: {e}"))?;
        store
            .wait_durable(lsn)
            .await
            .map_err(|e| format!("not durable after recovery: {e}"))?;
        if state.last_position() != held + 1 {
            return Err(format!(
                "the next write took position {} after {held}",
                state.last_position()
            ));
        }
        Ok(if kept {
            Recovered::Whole
        } else {
            Recovered::Dropped
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_log_cut_or_damaged_at_any_offset_of_its_last_commit_recovers_a_prefix() {
        let torn = TornLog::prepare(20, None).await.unwrap();
        let len = torn.last_commit_len();
        let (mut whole, mut dropped, mut refused) = (0, 0, 0);
        for offset in 0..len {
            for damage in [Damage::Cut(offset), Damage::Flip(offset, 0x5A)] {
                match torn.recover(&[damage]).await {
                    Ok(Recovered::Whole) => whole += 1,
                    Ok(Recovered::Dropped) => dropped += 1,
                    Ok(Recovered::Refused(why)) if matches!(damage, Damage::Flip(..)) => {
                        assert!(!why.is_empty());
                        refused += 1;
                    }
                    Ok(Recovered::Refused(why)) => {
                        panic!("cut at {offset} of {len}: refused to open: {why}")
                    }
                    Err(e) => panic!("{damage:?} of {len}: {e}"),
                }
            }
        }
        eprintln!(
            "{len} offsets of the last commit, cut and damaged: the last commit kept whole \
             {whole} times, dropped {dropped}, a damaged log refused {refused}"
        );
        // Cutting at its first byte loses the whole commit.
        assert_eq!(
            torn.recover(&[Damage::Cut(0)]).await,
            Ok(Recovered::Dropped)
        );
        assert!(dropped > 0);
    }
}
