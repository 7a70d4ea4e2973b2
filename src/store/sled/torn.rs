//! Recovery from a log cut or damaged at every offset of its last
//! commit, as a kill -9 or a bad sector mid-write would leave it: the
//! store opens with a prefix (every earlier commit as it was, the last
//! whole or not at all), or refuses a damaged log with its reason; it
//! never panics, and takes the next write at the next position.

use std::path::Path;
use std::sync::Arc;

use super::tests::create;
use super::{SledConfig, SledStore};
use crate::domain::TicketId;
use crate::store::contract::Collect;
use crate::store::{Log, StoreError, TicketStore};

/// The files of a data dir as a kill -9 would leave them: after a flush
/// sled writes nothing until the next write.
fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_files(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// What a store opened from a damaged copy must hold: the tickets of
/// `original` before `last` as they were, with their events, the last one
/// as it was or not at all (with its request id exactly when it is
/// there), and room for the next write at the next position.
async fn holds_a_prefix(
    store: &SledStore,
    original: &SledStore,
    last: TicketId,
) -> Result<(), String> {
    let err = |e: StoreError| e.to_string();
    for n in 1..last.0 {
        let ticket = store.state.ticket(TicketId(n)).map_err(err)?;
        if ticket != original.state.ticket(TicketId(n)).map_err(err)? {
            return Err(format!(
                "T-{n}, durable before the last commit, differs: {ticket:?}"
            ));
        }
    }
    let before = last.0 - 1;
    let kept = match store.state.ticket(last).map_err(err)? {
        None => false,
        Some(t) if Some(&t) == original.state.ticket(last).map_err(err)?.as_ref() => true,
        Some(t) => return Err(format!("the last ticket came back changed: {t:?}")),
    };
    let events = store
        .state
        .events_between(0, u64::MAX, 1_000)
        .map_err(err)?;
    let expected = original
        .state
        .events_between(0, before + u64::from(kept), 1_000)
        .map_err(err)?;
    if events != expected {
        return Err("the events differ from the original's".into());
    }
    let keyed = store.state.idempotent("last").map_err(|e| e.to_string())?;
    if keyed != kept.then_some(last.0) {
        return Err(format!(
            "the last ticket kept {kept}, its request id {keyed:?}"
        ));
    }
    let expected = before + u64::from(kept);
    if store.state.last_position() != expected {
        return Err(format!(
            "last position {} where {expected} were kept",
            store.state.last_position()
        ));
    }
    let next = create(store, None);
    store
        .wait_durable(next.lsn)
        .await
        .map_err(|e| format!("not writable after recovery: {e}"))?;
    match next.events.first().map(|e| e.position) {
        Some(p) if p == expected + 1 => Ok(()),
        other => Err(format!("the next write took position {other:?}")),
    }
}

#[tokio::test]
async fn a_log_cut_or_damaged_at_any_offset_of_its_last_commit_recovers_a_prefix() {
    const BEFORE: u64 = 20;
    let live = tempfile::tempdir().unwrap();
    let store =
        SledStore::open(&SledConfig::new(live.path()), Arc::new(Collect::default())).unwrap();
    for _ in 0..BEFORE {
        let appended = create(&store, None);
        store.wait_durable(appended.lsn).await.unwrap();
    }
    let copies = tempfile::tempdir().unwrap();
    let (old, new) = (copies.path().join("old"), copies.path().join("new"));
    copy_files(live.path(), &old);
    let last = create(&store, Some("last"));
    store.wait_durable(last.lsn).await.unwrap();
    copy_files(live.path(), &new);
    let last_id = TicketId(BEFORE + 1);
    let (old_db, new_db) = (
        std::fs::read(old.join("db")).unwrap(),
        std::fs::read(new.join("db")).unwrap(),
    );
    // The last commit's bytes: from the first byte it changed to the end.
    let start = old_db
        .iter()
        .zip(&new_db)
        .position(|(a, b)| a != b)
        .unwrap_or(old_db.len().min(new_db.len()));
    assert!(new_db.len() > start, "the last commit wrote nothing to db");
    let (mut whole, mut refused) = (0, 0);
    for offset in start..new_db.len() {
        for damaged in [false, true] {
            let case = copies.path().join(format!("case-{offset}-{damaged}"));
            copy_files(&new, &case);
            let mut bytes = new_db.clone();
            if damaged {
                bytes[offset] ^= 0x5A;
            } else {
                bytes.truncate(offset);
            }
            std::fs::write(case.join("db"), &bytes).unwrap();
            let what = if damaged { "damaged" } else { "cut" };
            let config = SledConfig::new(&case);
            let opened =
                std::panic::catch_unwind(|| SledStore::open(&config, Arc::new(Collect::default())));
            match opened {
                Err(_) => panic!("db {what} at {offset}: opening it panicked"),
                Ok(Err(e)) if damaged => {
                    // Refusing a damaged log, with the reason, is fine.
                    assert!(!e.to_string().is_empty());
                    refused += 1;
                }
                Ok(Err(e)) => panic!("db cut at {offset} does not open: {e}"),
                Ok(Ok(reopened)) => {
                    if let Err(e) = holds_a_prefix(&reopened, &store, last_id).await {
                        panic!("db {what} at {offset} of {}: {e}", new_db.len());
                    }
                    whole += usize::from(reopened.state.ticket(last_id).unwrap().is_some());
                    reopened.close().unwrap();
                }
            }
            std::fs::remove_dir_all(&case).unwrap();
        }
    }
    eprintln!(
        "{} offsets of the last commit ({start}..{}): kept whole {whole} times, \
         a damaged log refused {refused} times",
        new_db.len() - start,
        new_db.len()
    );
    store.close().unwrap();
}
