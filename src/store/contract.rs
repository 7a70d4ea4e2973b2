//! The contract every backend keeps, as one suite run against each:
//! appends are atomic and compare-and-swap on versions; positions are
//! strictly increasing and contiguous; applying the log to an empty state
//! reproduces the writer's state, positions included; what was durable
//! survives a restart and reaches the sink once, in order; idempotency
//! keys are kept; a second writer cannot append behind the first's back.
//!
//! A backend joins with an implementation of [`Backend`] and one line of
//! [`contract_tests!`] at the bottom. It runs on sled, memory, JetStream on
//! one NATS server (one replica) and JetStream on three (three replicas,
//! as a cluster runs); the JetStream runs skip, saying why, where no
//! nats-server runs.
//!
//! Over 600 lines on purpose: one suite in one place, so that a backend is
//! held to all of it by one line.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::jetstream::{JetStreamConfig, JetStreamLog};
use super::memory::{MemoryLog, MemoryState, Stream};
use super::sled::{SledConfig, SledState, SledStore};
use super::{
    Change, Commit, Entry, EventSink, ExpertStore, KnowledgeStore, Log, NewEvent, State, Storage,
    StoreError, TicketStore, TokenStore,
};
use crate::domain::model::*;
use crate::domain::{
    Article, ArticleContent, ArticleId, EventKind, Grant, KnowledgeCounts, SlaClocks, TicketEvent,
    TokenId, TokenRecord,
};

/// Collects the positions of the events a sink is handed.
#[derive(Default)]
pub(super) struct Collect(Mutex<Vec<u64>>);

impl EventSink for Collect {
    fn publish(&self, events: &[Arc<TicketEvent>]) {
        self.0
            .lock()
            .unwrap()
            .extend(events.iter().map(|e| e.position));
    }
}

impl Collect {
    pub(super) fn positions(&self) -> Vec<u64> {
        self.0.lock().unwrap().clone()
    }
}

/// A backend under test.
pub(super) trait Backend {
    /// What survives a restart (a data dir, a shared stream), and room for
    /// a second, empty state.
    type Place;

    fn place() -> Self::Place;

    /// The writer over `place`, as after a restart: a handle whose storage
    /// holds what was durable there.
    fn open(place: &Self::Place, sink: Arc<dyn EventSink>) -> Storage;

    /// An empty state of this backend's kind, to apply entries to.
    fn empty_state(place: &Self::Place) -> Arc<dyn State>;

    /// A second writer over the same place while the first is open: either
    /// it cannot be opened, or its appends are refused until it catches up.
    fn second_writer(place: &Self::Place) -> Result<Storage, StoreError>;

    /// Makes a writer that was fenced and caught up write again (a log
    /// with a writer's role promotes it; the others need nothing).
    fn resume_writing(_place: &Self::Place, _storage: &Storage) {}

    /// Whether this machine can run the backend (a server it needs).
    fn available() -> Result<(), String> {
        Ok(())
    }
}

pub(super) struct Sled;

impl Sled {
    /// An empty sled state in a new temporary dir kept in `dirs`.
    fn empty_state_in(dirs: &Mutex<Vec<tempfile::TempDir>>) -> Arc<dyn State> {
        let dir = tempfile::tempdir().unwrap();
        let state = SledState::open(&SledConfig::new(dir.path())).unwrap();
        dirs.lock().unwrap().push(dir);
        Arc::new(state)
    }
}

pub(super) struct SledPlace {
    dir: tempfile::TempDir,
    /// The data dirs of the empty states handed out.
    empties: Mutex<Vec<tempfile::TempDir>>,
}

impl Backend for Sled {
    type Place = SledPlace;

    fn place() -> SledPlace {
        SledPlace {
            dir: tempfile::tempdir().unwrap(),
            empties: Mutex::new(Vec::new()),
        }
    }

    fn open(place: &SledPlace, sink: Arc<dyn EventSink>) -> Storage {
        let store = Arc::new(SledStore::open(&SledConfig::new(place.dir.path()), sink).unwrap());
        Storage::new(store.clone(), store.state().clone())
    }

    fn empty_state(place: &SledPlace) -> Arc<dyn State> {
        Sled::empty_state_in(&place.empties)
    }

    fn second_writer(place: &SledPlace) -> Result<Storage, StoreError> {
        let store = SledStore::open(
            &SledConfig::new(place.dir.path()),
            Arc::new(Collect::default()),
        )?;
        let store = Arc::new(store);
        Ok(Storage::new(store.clone(), store.state().clone()))
    }
}

pub(super) struct Memory;

impl Backend for Memory {
    type Place = Arc<Stream>;

    fn place() -> Arc<Stream> {
        Stream::new()
    }

    fn open(place: &Arc<Stream>, sink: Arc<dyn EventSink>) -> Storage {
        let log = Arc::new(MemoryLog::open(place.clone(), sink).unwrap());
        Storage::new(log.clone(), log.state().clone())
    }

    fn empty_state(_: &Arc<Stream>) -> Arc<dyn State> {
        Arc::new(MemoryState::default())
    }

    fn second_writer(place: &Arc<Stream>) -> Result<Storage, StoreError> {
        Ok(Self::open(place, Arc::new(Collect::default())))
    }
}

fn expert_id(s: &str) -> ExpertId {
    ExpertId::parse("e", s).unwrap()
}

fn expert(name: &str, version: u64, owned_open: u32) -> Expert {
    Expert {
        id: expert_id(name),
        display_name: name.to_uppercase(),
        skills: vec![Skill {
            tag: Tag::parse("t", "net").unwrap(),
            rank: Rank::L2,
        }],
        capacity: 5,
        presence: Presence::Available,
        owned_open,
        last_assigned_seq: version,
        channels: None,
        version,
    }
}

fn header(id: TicketId) -> Arc<TicketHeader> {
    Arc::new(TicketHeader {
        id,
        title: format!("ticket {}", id.0),
        description: "d".repeat(50),
        requester: "cust".into(),
        channel: ContactChannel::Email,
        kind: TicketKind::Incident,
        priority: Priority::P2,
        skills: vec![],
        created_at: 1,
        created_by: None,
    })
}

fn state(version: u64, status: TicketStatus, owner: Option<&str>) -> TicketState {
    TicketState {
        status,
        version,
        owner: owner.map(expert_id),
        ..TicketState::blank(1, SlaClocks::untracked())
    }
}

fn event(version: u64, status: TicketStatus, owner: Option<&str>) -> NewEvent {
    NewEvent {
        at: 10 + version as i64,
        actor: "cust".into(),
        kind: if version == 1 {
            EventKind::Created
        } else {
            EventKind::StatusChanged {
                from: TicketStatus::Open,
                to: status,
                note: String::new(),
            }
        },
        state: state(version, status, owner),
    }
}

/// A new ticket with `events` events (versions 1..=events), all open.
fn create(log: &dyn Log, events: u64, key: Option<&str>, experts: Vec<Expert>) -> Change {
    let id = log.allocate_ticket_id().unwrap();
    Change::Ticket(Commit {
        ticket: id,
        header: Some(header(id)),
        expected_version: 0,
        events: (1..=events)
            .map(|v| event(v, TicketStatus::Open, None))
            .collect(),
        experts,
        idempotency_key: key.map(str::to_owned),
    })
}

fn move_to(id: TicketId, from_version: u64, to: TicketStatus, experts: Vec<Expert>) -> Change {
    Change::Ticket(Commit {
        ticket: id,
        header: None,
        expected_version: from_version,
        events: vec![event(from_version + 1, to, None)],
        experts,
        idempotency_key: None,
    })
}

fn token(n: u8) -> TokenRecord {
    TokenRecord {
        id: TokenId::from_random([n; 8]),
        label: format!("token {n}"),
        grant: Grant::Admin,
        secret_hash: [n; 32],
        created_at: 5,
        last_used_at: None,
        revoked_at: None,
    }
}

fn article(id: ArticleId, version: u64) -> Article {
    let content = ArticleContent {
        title: "VPN drops".into(),
        body: format!("version {version}"),
        tags: vec![Tag::parse("t", "net").unwrap()],
    };
    let mut article = Article::draft(id, content, "ann".into(), None, 7).unwrap();
    article.version = version;
    article
}

fn counts(deflected: u64) -> BTreeMap<Option<Tag>, KnowledgeCounts> {
    let add = KnowledgeCounts {
        deflected,
        ..KnowledgeCounts::default()
    };
    [(None, add), (Some(Tag::parse("t", "net").unwrap()), add)]
        .into_iter()
        .collect()
}

const HOUR: i64 = 3_600_000_000;

/// Everything a state holds, read through the traits.
#[derive(Debug, PartialEq)]
struct Dump {
    last_position: u64,
    tickets: Vec<Ticket>,
    live: Vec<TicketId>,
    events: Vec<TicketEvent>,
    per_ticket: Vec<Vec<u64>>,
    experts: Vec<Expert>,
    tokens: Vec<TokenRecord>,
    articles: Vec<Article>,
    generation: u64,
    counts: Vec<KnowledgeCounts>,
    requests: Vec<Option<u64>>,
}

const KEYS: [&str; 3] = ["create:one", "deflect:x", "create:never"];

fn dump(
    tickets: &dyn TicketStore,
    experts: &dyn ExpertStore,
    tokens: &dyn TokenStore,
    knowledge: &dyn KnowledgeStore,
) -> Dump {
    let all = tickets.tickets_from(TicketId(1), 10_000).unwrap();
    let last = tickets.last_position();
    let per_ticket = all
        .iter()
        .map(|t| {
            tickets
                .ticket_events(t.id(), 0, last, 1000)
                .unwrap()
                .iter()
                .map(|e| e.position)
                .collect()
        })
        .collect();
    let mut live: Vec<TicketId> = tickets
        .live_tickets()
        .unwrap()
        .iter()
        .map(Ticket::id)
        .collect();
    live.sort();
    let net = Tag::parse("t", "net").unwrap();
    Dump {
        last_position: last,
        live,
        events: tickets
            .events_between(0, last, 10_000)
            .unwrap()
            .iter()
            .map(|e| (**e).clone())
            .collect(),
        per_ticket,
        tickets: all,
        experts: experts.experts().unwrap(),
        tokens: tokens.tokens().unwrap(),
        articles: knowledge.articles().unwrap(),
        generation: knowledge.knowledge_generation().unwrap(),
        counts: vec![
            knowledge.knowledge_counts(0, 100 * HOUR, None).unwrap(),
            knowledge
                .knowledge_counts(0, 100 * HOUR, Some(&net))
                .unwrap(),
            knowledge
                .knowledge_counts(2 * HOUR, 3 * HOUR, None)
                .unwrap(),
        ],
        requests: KEYS
            .iter()
            .map(|k| tickets.idempotent(k).unwrap())
            .collect(),
    }
}

fn dump_storage(s: &Storage) -> Dump {
    dump(&*s.tickets, &*s.experts, &*s.tokens, &*s.knowledge)
}

fn dump_state(s: &Arc<dyn State>) -> Dump {
    dump(&**s, &**s, &**s, &**s)
}

/// Appends `change` and keeps the entry it became.
fn append(storage: &Storage, change: Change, log: &mut Vec<Entry>) -> super::Appended {
    let appended = storage.log.append(change.clone()).unwrap();
    if appended.recorded {
        log.push(Entry {
            first_position: appended.events.first().map_or(0, |e| e.position),
            change,
        });
    }
    appended
}

/// A bit of everything, with refusals in between; returns the entries.
pub(super) async fn workload(storage: &Storage) -> Vec<Entry> {
    let log = &*storage.log;
    let mut entries = Vec::new();
    append(storage, Change::Expert(expert("ann", 1, 0)), &mut entries);
    append(storage, Change::Token(token(1)), &mut entries);
    let one = append(
        storage,
        create(log, 1, Some("create:one"), vec![expert("ann", 2, 1)]),
        &mut entries,
    );
    let one = one.events[0].ticket_id();
    let two = append(storage, create(log, 3, None, vec![]), &mut entries);
    let two = two.events[0].ticket_id();
    // Refused: stale versions, of the ticket and of an expert.
    assert!(log
        .append(move_to(one, 0, TicketStatus::Closed, vec![]))
        .is_err());
    assert!(log
        .append(move_to(
            one,
            1,
            TicketStatus::Closed,
            vec![expert("ann", 2, 0)]
        ))
        .is_err());
    append(
        storage,
        move_to(one, 1, TicketStatus::Resolved, vec![expert("ann", 3, 0)]),
        &mut entries,
    );
    append(
        storage,
        move_to(two, 3, TicketStatus::Assigned, vec![]),
        &mut entries,
    );
    let article_id = log.allocate_article_id().unwrap();
    append(
        storage,
        Change::Article(article(article_id, 1)),
        &mut entries,
    );
    append(
        storage,
        Change::Article(article(article_id, 2)),
        &mut entries,
    );
    let mut revoked = token(1);
    revoked.revoked_at = Some(9);
    append(storage, Change::Token(revoked), &mut entries);
    for hour in [2 * HOUR, 2 * HOUR, 5 * HOUR] {
        append(
            storage,
            Change::KnowledgeCounts {
                hour,
                counts: counts(1),
                once: None,
            },
            &mut entries,
        );
    }
    for _ in 0..2 {
        append(
            storage,
            Change::KnowledgeCounts {
                hour: 2 * HOUR,
                counts: counts(10),
                once: Some("deflect:x".into()),
            },
            &mut entries,
        );
    }
    let last = log.written_lsn();
    log.wait_durable(last).await.unwrap();
    entries
}

pub(super) async fn appends_are_atomic_compare_and_swap<B: Backend>() {
    let place = B::place();
    let storage = B::open(&place, Arc::new(Collect::default()));
    let log = &*storage.log;
    let ann = expert("ann", 1, 0);
    log.append(Change::Expert(ann.clone())).unwrap();
    let created = log.append(create(log, 1, None, vec![])).unwrap();
    let id = created.events[0].ticket_id();
    let before = dump_storage(&storage);
    // A stale ticket version, a stale expert in a ticket's commit, a header
    // for a ticket that exists, a stale expert alone, a stale article: each
    // refused whole, nothing changed, no position taken.
    let refusals = [
        move_to(id, 0, TicketStatus::Closed, vec![]),
        move_to(id, 1, TicketStatus::Closed, vec![expert("ann", 1, 1)]),
        Change::Ticket(Commit {
            header: Some(header(id)),
            ..match move_to(id, 1, TicketStatus::Closed, vec![]) {
                Change::Ticket(c) => c,
                _ => unreachable!(),
            }
        }),
        Change::Expert(expert("ann", 3, 0)),
        Change::Article(article(ArticleId(1), 2)),
    ];
    for change in refusals {
        match log.append(change.clone()) {
            Err(StoreError::Conflict(_)) => {}
            other => panic!("{change:?} should be a conflict, got {other:?}"),
        }
        assert_eq!(dump_storage(&storage), before, "a refusal changed nothing");
    }
    // The right versions go through, with the next position.
    let moved = log
        .append(move_to(
            id,
            1,
            TicketStatus::Assigned,
            vec![expert("ann", 2, 1)],
        ))
        .unwrap();
    assert_eq!(moved.events[0].position, 2);
    assert_eq!(storage.experts.expert(&ann.id).unwrap().unwrap().version, 2);
    assert_eq!(
        storage.tickets.ticket(id).unwrap().unwrap().state.version,
        2
    );
}

pub(super) async fn positions_are_contiguous_and_increasing<B: Backend>() {
    let place = B::place();
    let storage = B::open(&place, Arc::new(Collect::default()));
    let log = &*storage.log;
    let mut expected = 1;
    let mut ids = Vec::new();
    for n in [1, 3, 2, 1] {
        let appended = log.append(create(log, n, None, vec![])).unwrap();
        let positions: Vec<u64> = appended.events.iter().map(|e| e.position).collect();
        assert_eq!(positions, (expected..expected + n).collect::<Vec<_>>());
        expected += n;
        ids.push(appended.events[0].ticket_id());
        // Changes that make no events take no position.
        log.append(Change::Token(token(n as u8))).unwrap();
    }
    assert_eq!(storage.tickets.last_position(), expected - 1);
    let all = storage.tickets.events_between(0, expected, 100).unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..expected).collect::<Vec<_>>());
    // Per ticket, by its own sequence, and bounded by `upto`.
    let second = storage.tickets.ticket_events(ids[1], 1, 100, 100).unwrap();
    let seqs: Vec<u64> = second.iter().map(|e| e.seq()).collect();
    assert_eq!(seqs, [2, 3]);
    assert!(storage
        .tickets
        .ticket_events(ids[1], 0, 2, 100)
        .unwrap()
        .iter()
        .all(|e| e.position <= 2));
    assert_eq!(
        storage.tickets.events_between(2, 4, 1).unwrap()[0].position,
        3
    );
    assert!(storage.tickets.event(expected).unwrap().is_none());
}

pub(super) async fn applying_the_log_reproduces_the_state<B: Backend>() {
    let place = B::place();
    let storage = B::open(&place, Arc::new(Collect::default()));
    let entries = workload(&storage).await;
    let expected = dump_storage(&storage);
    assert_eq!(expected.last_position, 6);
    assert_eq!(expected.requests, [Some(1), Some(0), None]);
    assert_eq!(expected.counts[2].deflected, 12, "once-counted once");
    let replica = B::empty_state(&place);
    for entry in entries.iter().cloned() {
        replica.apply(entry).unwrap();
    }
    assert_eq!(dump_state(&replica), expected);
    // An entry out of step with the state is refused and changes nothing:
    // one applied twice (its versions and position have passed), one that
    // skips a position.
    let fresh = B::empty_state(&place);
    fresh.apply(entries[0].clone()).unwrap();
    let ticket = entries
        .iter()
        .position(|e| matches!(e.change, Change::Ticket(_)))
        .unwrap();
    let mut skipping = entries[ticket].clone();
    skipping.first_position += 1;
    assert!(fresh.apply(skipping).is_err());
    assert!(fresh.apply(entries[0].clone()).is_err());
    assert_eq!(fresh.last_position(), 0);
    assert_eq!(fresh.experts().unwrap(), [expert("ann", 1, 0)]);
}

pub(super) async fn durable_appends_survive_a_restart_and_reach_the_sink_once<B: Backend>() {
    let place = B::place();
    let sink = Arc::new(Collect::default());
    let expected = {
        let storage = B::open(&place, sink.clone());
        workload(&storage).await;
        storage.log.close().unwrap();
        dump_storage(&storage)
    };
    assert_eq!(sink.positions(), (1..=6).collect::<Vec<_>>());
    let again = Arc::new(Collect::default());
    let storage = B::open(&place, again.clone());
    assert_eq!(dump_storage(&storage), expected);
    // Ids go on after the last one, never reused.
    let next = storage.log.allocate_ticket_id().unwrap();
    assert_eq!(next, TicketId(3));
    let appended = storage
        .log
        .append(create(&*storage.log, 1, None, vec![]))
        .unwrap();
    storage.log.wait_durable(appended.lsn).await.unwrap();
    storage.log.close().unwrap();
    assert_eq!(appended.events[0].position, 7);
    assert_eq!(
        again.positions().last(),
        Some(&7),
        "the restarted writer's sink gets its own appends"
    );
}

/// Appends `change` and waits until it is durable.
async fn append_durably(storage: &Storage, change: Change) -> Result<(), StoreError> {
    let appended = storage.log.append(change)?;
    storage.log.wait_durable(appended.lsn).await
}

/// A fenced append: refused at once (nothing applied), or, on a log that
/// stages appends and publishes them later, when it was to become durable.
async fn fenced(storage: &Storage, token: TokenRecord) {
    let id = token.id.clone();
    match storage.log.append(Change::Token(token)) {
        // Refused: the token is not there. (What the other writer appended
        // may be: a writer told by its log that it was deposed catches up
        // on its own, in the background.)
        Err(StoreError::Fenced(_)) => {
            assert!(
                !token_ids(storage).contains(&id),
                "a refused append left {id:?}"
            );
        }
        Ok(appended) => match storage.log.wait_durable(appended.lsn).await {
            Err(StoreError::Fenced(_)) => {}
            other => panic!("a writer behind the log must be fenced, got {other:?}"),
        },
        Err(other) => panic!("a writer behind the log must be fenced, got {other:?}"),
    }
}

fn token_ids(storage: &Storage) -> Vec<TokenId> {
    let mut ids: Vec<_> = storage
        .tokens
        .tokens()
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    ids.sort();
    ids
}

pub(super) async fn a_second_writer_cannot_append_behind_the_first<B: Backend>() {
    let place = B::place();
    let first = B::open(&place, Arc::new(Collect::default()));
    append_durably(&first, Change::Token(token(1)))
        .await
        .unwrap();
    match B::second_writer(&place) {
        Err(e) => assert!(e.to_string().contains("in use"), "{e}"),
        Ok(second) => {
            // It saw the log as it was when it opened; the first moves on.
            append_durably(&first, Change::Token(token(2)))
                .await
                .unwrap();
            fenced(&second, token(3)).await;
            second.log.catch_up().unwrap();
            // What it was refused is not in its state once caught up.
            let mut both = vec![token(1).id, token(2).id];
            both.sort();
            assert_eq!(token_ids(&second), both);
            B::resume_writing(&place, &second);
            append_durably(&second, Change::Token(token(3)))
                .await
                .unwrap();
            // Now the first is behind.
            fenced(&first, token(4)).await;
            first.log.catch_up().unwrap();
            assert_eq!(token_ids(&first).len(), 3);
            assert!(!token_ids(&first).contains(&token(4).id));
        }
    }
}

macro_rules! contract_tests {
    ($name:ident, $backend:ty) => {
        mod $name {
            use super::*;

            /// Runs `test` where the backend can run; says why not elsewhere.
            async fn run<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
                match <$backend as Backend>::available() {
                    Ok(()) => test().await,
                    Err(why) => eprintln!("skipped: {why}"),
                }
            }

            #[tokio::test]
            async fn appends_are_atomic_compare_and_swap() {
                run(super::appends_are_atomic_compare_and_swap::<$backend>).await;
            }

            #[tokio::test]
            async fn positions_are_contiguous_and_increasing() {
                run(super::positions_are_contiguous_and_increasing::<$backend>).await;
            }

            #[tokio::test]
            async fn applying_the_log_reproduces_the_state() {
                run(super::applying_the_log_reproduces_the_state::<$backend>).await;
            }

            #[tokio::test]
            async fn durable_appends_survive_a_restart_and_reach_the_sink_once() {
                run(super::durable_appends_survive_a_restart_and_reach_the_sink_once::<$backend>)
                    .await;
            }

            #[tokio::test]
            async fn a_second_writer_cannot_append_behind_the_first() {
                run(super::a_second_writer_cannot_append_behind_the_first::<$backend>).await;
            }
        }
    };
}

/// The JetStream backend against NATS servers of its own: `SERVERS` of
/// them, the log kept on each (one server and one replica; or three, as a
/// cluster runs), each node's replica in its own dir.
pub(super) struct JetStream<const SERVERS: usize>;

pub(super) struct JetStreamPlace {
    nats: crate::nats_process::NatsCluster,
    replicas: usize,
    dir: tempfile::TempDir,
    logs: Mutex<Vec<Arc<JetStreamLog>>>,
    empties: Mutex<Vec<tempfile::TempDir>>,
}

impl JetStreamPlace {
    fn node(&self, id: &str, sink: Arc<dyn EventSink>) -> Result<Storage, StoreError> {
        let mut config = JetStreamConfig::new(self.nats.urls(), id, self.dir.path().join(id));
        config.replicas = self.replicas;
        let log = Arc::new(JetStreamLog::open(config, sink)?);
        log.promote(std::time::Duration::from_secs(30))?;
        self.logs.lock().unwrap().push(log.clone());
        Ok(log.storage())
    }
}

impl<const SERVERS: usize> Backend for JetStream<SERVERS> {
    type Place = JetStreamPlace;

    fn available() -> Result<(), String> {
        let binary = crate::nats_process::binary();
        crate::nats_process::binary_version(&binary).map(drop)
    }

    fn place() -> JetStreamPlace {
        let dir = tempfile::tempdir().unwrap();
        let nats = crate::nats_process::NatsCluster::start(
            &crate::nats_process::binary(),
            &dir.path().join("nats"),
            SERVERS,
            &Default::default(),
        )
        .unwrap();
        JetStreamPlace {
            nats,
            replicas: SERVERS,
            dir,
            logs: Mutex::new(Vec::new()),
            empties: Mutex::new(Vec::new()),
        }
    }

    fn open(place: &JetStreamPlace, sink: Arc<dyn EventSink>) -> Storage {
        // As after a restart: the node closed before is opened again.
        let mut logs = place.logs.lock().unwrap();
        if let Some(i) = logs.iter().position(|l| l.node_id() == "a") {
            logs.remove(i).close().unwrap();
        }
        drop(logs);
        place.node("a", sink).unwrap()
    }

    fn empty_state(place: &JetStreamPlace) -> Arc<dyn State> {
        Sled::empty_state_in(&place.empties)
    }

    fn second_writer(place: &JetStreamPlace) -> Result<Storage, StoreError> {
        place.node("b", Arc::new(Collect::default()))
    }

    fn resume_writing(place: &JetStreamPlace, storage: &Storage) {
        let logs = place.logs.lock().unwrap();
        let log = logs
            .iter()
            .find(|l| std::ptr::addr_eq(Arc::as_ptr(*l), Arc::as_ptr(&storage.log)))
            .expect("a node of this place");
        log.promote(std::time::Duration::from_secs(30)).unwrap();
    }
}

contract_tests!(sled, Sled);
contract_tests!(memory, Memory);
contract_tests!(jetstream, JetStream<1>);
contract_tests!(jetstream_cluster, JetStream<3>);
