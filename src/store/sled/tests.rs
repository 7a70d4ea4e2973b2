//! The sled backend's own tests: recovery, migrations, counts, group
//! commit. What every backend must do is in the store's contract suite.

use std::time::Duration;

use super::counts::{migrate_status_counts, StatusCounts};
use super::keys::{
    decode, encode, key, last_number, request_key, seq_key, CommitTail, EventRecord, MIGRATE_4_KEY,
    SCHEMA_KEY, STATUS_COUNTS_KEY,
};
use super::migrate::{EventRecordV3, TicketStateV3};
use super::recovery::open_db;
use super::*;
use crate::domain::model::*;
use crate::domain::{EventKind, SlaClocks};
use crate::store::contract::Collect;
use crate::store::{Commit, NewEvent};

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

fn create(store: &SledStore, key: Option<&str>) -> Appended {
    let id = store.allocate_ticket_id().unwrap();
    store
        .append(Change::Ticket(Commit {
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
        }))
        .unwrap()
}

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
    assert_eq!(sink.positions(), vec![1, 2]);
    let store = SledStore::open(&SledConfig::new(dir.path()), sink).unwrap();
    assert_eq!(store.state.last_position(), 2);
    assert_eq!(store.state.idempotent("req-1").unwrap(), Some(1));
    assert_eq!(store.state.live_tickets().unwrap().len(), 2);
    let next = store.allocate_ticket_id().unwrap();
    assert_eq!(next, TicketId(3));
    let events = store.state.events_between(0, 2, 10).unwrap();
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
    assert!(matches!(
        store.append(Change::Ticket(stale)),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.state.ticket(id).unwrap().unwrap().state.version, 1);
    assert_eq!(store.state.last_position(), 1);
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
    assert!(matches!(
        store.append(Change::Expert(e.clone())),
        Err(StoreError::Conflict(_))
    ));
    let e1 = Expert { version: 1, ..e };
    store.append(Change::Expert(e1.clone())).unwrap();
    assert!(store.append(Change::Expert(e1)).is_err());
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
            .state
            .tree
            .insert(key(b'e', 2), encode(&orphan).unwrap())
            .unwrap();
        store.close().unwrap();
    }
    let store = SledStore::open(&SledConfig::new(dir.path()), sink).unwrap();
    assert_eq!(store.state.last_position(), 1);
    assert!(store.state.event(2).unwrap().is_none());
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
        let tree = &store.state.tree;
        tree.remove(key(b's', id.0)).unwrap();
        tree.remove(key(b'u', id.0)).unwrap();
        tree.remove(seq_key(id, 1)).unwrap();
        tree.remove(request_key("create:req-9")).unwrap();
        tree.remove(request_key("req-9")).unwrap();
        store.close().unwrap();
    }
    let store = SledStore::open(&SledConfig::new(dir.path()), sink).unwrap();
    let ticket = store.state.ticket(id).unwrap().expect("state re-written");
    assert_eq!(ticket.state.version, 1);
    assert_eq!(store.state.live_tickets().unwrap().len(), 1);
    assert_eq!(store.state.idempotent("req-9").unwrap(), Some(1));
    assert_eq!(store.state.ticket_events(id, 0, 10, 10).unwrap().len(), 1);
}

fn move_to(store: &SledStore, id: TicketId, version: u64, to: TicketStatus) -> Appended {
    store
        .append(Change::Ticket(Commit {
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
        }))
        .unwrap()
}

fn counts(store: &SledStore) -> Vec<(TicketStatus, u64)> {
    store
        .state
        .status_counts()
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
        .state
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
    let before = store.state.tree.get(STATUS_COUNTS_KEY).unwrap().unwrap();
    move_to(&store, ids[2], 2, Assigned);
    move_to(&store, ids[2], 3, Assigned);
    move_to(&store, ids[2], 4, Closed);
    let new = create(&store, None).events[0].ticket_id();
    let r = move_to(&store, new, 2, WaitingCustomer);
    store.wait_durable(r.lsn).await.unwrap();
    store.close().unwrap();
    // `close` saved them: put the stale ones back, as a crash leaves them.
    store.state.tree.insert(STATUS_COUNTS_KEY, before).unwrap();
    store.state.tree.flush().unwrap();
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
    let tree = &store.state.tree;
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
        let live = store.state.live_tickets().unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].id(), TicketId(1));
        assert_eq!(live[0].state.sla, SlaClocks::untracked());
        let closed = store.state.ticket(TicketId(2)).unwrap().unwrap();
        assert_eq!(closed.state.status, TicketStatus::Closed);
        let events = store.state.events_between(0, 2, 10).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].ticket.state.status, TicketStatus::Closed);
        assert!(store.state.tree.scan_prefix(b"u/").next().is_none());
        assert!(store.state.tree.get(MIGRATE_4_KEY).unwrap().is_none());
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
    // Fails loudly instead of hanging if sled deadlocks: concurrent
    // flushes park every sled-io thread in 0.34 (sled issues #1308, #1357).
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
    let published = sink.positions();
    assert_eq!(published, (1..=640).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_replica_that_applies_the_log_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SledStore::open(&SledConfig::new(dir.path()), Arc::new(Collect::default())).unwrap(),
    );
    let storage = crate::store::Storage::new(store.clone(), store.state().clone());
    let entries = crate::store::contract::workload(&storage).await;
    let replica_dir = tempfile::tempdir().unwrap();
    let replica = SledState::open(&SledConfig::new(replica_dir.path())).unwrap();
    for entry in entries {
        replica.apply(entry).unwrap();
    }
    store.close().unwrap();
    replica.save_counts().unwrap();
    let pairs = |tree: &sled::Db| -> Vec<(Vec<u8>, Vec<u8>)> {
        tree.iter()
            .map(|item| {
                let (k, v) = item.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    };
    let written = pairs(&store.state.tree);
    assert!(
        written.len() > 20,
        "the workload wrote {} keys",
        written.len()
    );
    assert_eq!(pairs(&replica.tree), written);
}
