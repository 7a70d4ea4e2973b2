//! Opening sled, finishing or dropping a commit a crash cut short, and
//! making a new store from exported pairs.

use super::apply::write_derived;
use super::keys::{backend, decode, key, u64_at, EventRecord};
use super::SledConfig;
use crate::domain::TicketState;
use crate::store::{Import, Pair, StoreError};

/// Finishes or drops the last commit after a crash (see the module doc):
/// only the last commit in sled's recovered prefix can be incomplete.
pub(super) fn repair(tree: &sled::Db) -> Result<(), StoreError> {
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

/// A new store at the config's path from exported pairs (see
/// [`crate::store::Snapshot::export`]); the path must not hold a store yet.
impl Import for SledConfig {
    fn import(&self, pairs: &mut dyn Iterator<Item = Pair>) -> Result<u64, StoreError> {
        let db = open_db(self)?;
        if !db.is_empty() {
            return Err(StoreError::Backend(format!(
                "{} already holds a store",
                self.path.display()
            )));
        }
        let mut count = 0;
        for (k, v) in pairs {
            db.insert(k, v).map_err(backend)?;
            count += 1;
        }
        db.flush().map_err(backend)?;
        Ok(count)
    }
}

/// Opens sled, waiting briefly for a lock held by a store of this process
/// that is still shutting down (sled's own threads release it a moment
/// after the last handle drops); another process's lock stays an error.
pub(super) fn open_db(config: &SledConfig) -> Result<sled::Db, StoreError> {
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
