//! Cluster mode, as operators run it: three NATS servers with JetStream
//! and swarmdesk nodes as processes, which the tests kill, pause and start
//! again. Each test asserts what every node serves afterwards, against the
//! others and against a fresh replay of the whole log read from NATS: the
//! same tickets, owners and positions, and what must hold of any state
//! (one owner each, contiguous positions, each deadline recorded once).
//! At the end of the catch-up test every node's replica hashes as the
//! replay does. Skipped, saying why,
//! where no nats-server can run (CI installs one).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::cluster::{TestCluster, LEASE_MS};
use common::{create_request, Clients, WAIT};
use swarmdesk::rpc::pb;

use common::register_request as expert;
use swarmdesk::domain::TicketId;
use swarmdesk::store::invariants;
use swarmdesk::store::jetstream::audit::{self, Replayed};
use swarmdesk::store::TicketStore;

/// Creates a ticket through `clients`, which must succeed.
async fn create_ok(clients: &mut Clients, request: pb::CreateTicketRequest) -> pb::Ticket {
    clients
        .tickets
        .create_ticket(request)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap()
}

async fn subscribe(
    clients: &mut Clients,
    id: &str,
    after: u64,
) -> tonic::Streaming<pb::SwarmEvent> {
    clients
        .experts
        .subscribe(pb::SubscribeRequest {
            expert_id: id.into(),
            channels: vec![],
            after_position: after,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until `check` holds, or fails after `WAIT` with `what`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn online_on(clients: &Clients, id: &str) -> bool {
    clients
        .experts
        .clone()
        .get_expert(pb::GetExpertRequest { id: id.into() })
        .await
        .is_ok_and(|e| e.into_inner().online)
}

/// Every ticket a node serves, by id: (status, owner, version).
async fn tickets_on(clients: &Clients) -> BTreeMap<String, (i32, String, u64)> {
    let mut all = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = clients
            .tickets
            .clone()
            .list_tickets(pb::ListTicketsRequest {
                page_size: 500,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for t in page.tickets {
            all.insert(t.id.clone(), (t.status, t.owner_id.clone(), t.version));
        }
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

/// What a fresh replay of the whole log says: it applies in order to an
/// empty state, which then holds what must hold of any state (one owner
/// each, loads, contiguous positions, each deadline recorded once); its
/// tickets as `tickets_on` shows them.
async fn replayed(cluster: &TestCluster) -> (Replayed, BTreeMap<String, (i32, String, u64)>) {
    let replayed = cluster.replay().await;
    if let Err(e) = invariants::check(&*replayed.state) {
        panic!("the log, replayed afresh: {e}\n{}", cluster.logs());
    }
    let tickets = replayed
        .state
        .tickets_from(TicketId(1), usize::MAX)
        .unwrap()
        .iter()
        .map(|t| {
            let t = swarmdesk::rpc::convert::ticket(t);
            (t.id.clone(), (t.status, t.owner_id, t.version))
        })
        .collect();
    (replayed, tickets)
}

/// The same on every node in `nodes`, once each has applied the log, and
/// the same as a fresh replay of the whole log.
async fn same_everywhere(
    cluster: &TestCluster,
    nodes: &[usize],
) -> BTreeMap<String, (i32, String, u64)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let served = served_alike(cluster, nodes).await;
        let (_, from_log) = replayed(cluster).await;
        if served == from_log {
            return served;
        }
        // A write (a timer's, say) between the two reads: look again.
        assert!(
            Instant::now() < deadline,
            "the nodes serve {served:?}, a replay of the log says {from_log:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The same on every node in `nodes`, once each has applied the log.
async fn served_alike(
    cluster: &TestCluster,
    nodes: &[usize],
) -> BTreeMap<String, (i32, String, u64)> {
    let first = cluster.clients(nodes[0]).await;
    let mut expected = tickets_on(&first).await;
    for &i in &nodes[1..] {
        let clients = cluster.clients(i).await;
        let deadline = Instant::now() + WAIT;
        loop {
            let here = tickets_on(&clients).await;
            if here == expected {
                break;
            }
            if Instant::now() > deadline {
                let differ: Vec<_> = expected
                    .iter()
                    .filter(|(id, t)| here.get(*id) != Some(*t))
                    .map(|(id, t)| (id, t, here.get(id)))
                    .collect();
                let extra: Vec<_> = here
                    .keys()
                    .filter(|id| !expected.contains_key(*id))
                    .collect();
                panic!(
                    "node {} differs from node {}: {differ:?}, only there: {extra:?}\n{}",
                    cluster.nodes[i].id,
                    cluster.nodes[nodes[0]].id,
                    cluster.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            expected = tickets_on(&first).await;
        }
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_created_on_one_node_is_owned_once_and_streamed_on_another() {
    needs_nats!();
    let cluster = TestCluster::start(3).await;
    let (mut a, mut b, mut c) = (
        cluster.clients(0).await,
        cluster.clients(1).await,
        cluster.clients(2).await,
    );
    // Registered through a follower (forwarded), streaming from another.
    b.experts
        .register_expert(expert("ann", &[("network", common::L3)], 5))
        .await
        .unwrap();
    // Read-your-writes holds on the node called (b); c has ann once it
    // applied her registration.
    eventually("c applied ann's registration", || {
        let mut experts = c.experts.clone();
        async move {
            experts
                .get_expert(pb::GetExpertRequest { id: "ann".into() })
                .await
                .is_ok()
        }
    })
    .await;
    let mut stream = subscribe(&mut c, "ann", 0).await;
    eventually("the writer sees ann online", || online_on(&a, "ann")).await;

    let created = create_ok(
        &mut a,
        create_request("vpn down", &[("network", common::L2)], common::P2),
    )
    .await;
    assert_eq!(created.owner_id, "ann", "routed to the one online expert");
    let event = common::next_where(&mut stream, |e| {
        e.event
            .as_ref()
            .is_some_and(|ev| ev.ticket_id == created.id)
    })
    .await;
    assert_eq!(event.event.unwrap().ticket.unwrap().owner_id, "ann");

    // A claim storm from every node on one unowned ticket: one owner.
    for (i, id) in ["x1", "x2", "x3"].iter().enumerate() {
        let mut clients = cluster.clients(i).await;
        clients
            .experts
            .register_expert(expert(id, &[("storm", common::L2)], 5))
            .await
            .unwrap();
    }
    let open = create_ok(
        &mut b,
        create_request("storm", &[("storm", common::L2)], common::P3),
    )
    .await;
    assert_eq!(open.owner_id, "", "nobody with storm skills is online");
    let mut claims = Vec::new();
    for round in 0..4 {
        for (i, id) in ["x1", "x2", "x3"].iter().enumerate() {
            let mut clients = cluster.clients((i + round) % 3).await;
            let (ticket, id) = (open.id.clone(), id.to_string());
            claims.push(tokio::spawn(async move {
                clients
                    .tickets
                    .claim_ticket(pb::ClaimTicketRequest {
                        ticket_id: ticket,
                        expert_id: id.clone(),
                    })
                    .await
                    .map(|t| (id, t.into_inner().owner_id))
            }));
        }
    }
    let mut won = BTreeSet::new();
    for claim in claims {
        if let Ok((id, owner)) = claim.await.unwrap() {
            assert_eq!(id, owner);
            won.insert(id);
        }
    }
    assert_eq!(won.len(), 1, "exactly one claim wins: {won:?}");
    let everywhere = same_everywhere(&cluster, &[0, 1, 2]).await;
    assert_eq!(&everywhere[&open.id].1, won.iter().next().unwrap());
    assert_eq!(everywhere[&created.id].1, "ann");
}

/// Clients creating tickets (with request ids) through `nodes`, each
/// retried on the next node until acknowledged, until stopped.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    async fn start(cluster: &TestCluster, nodes: &[usize], skill: &str) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..4 {
            let mut clients = Vec::new();
            for &i in nodes {
                clients.push(cluster.clients(i).await);
            }
            let (stop, skill) = (stop.clone(), skill.to_owned());
            writers.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let title = format!("{skill}-w{w}-{n}");
                    let mut request = create_request(&title, &[(&skill, common::L1)], common::P3);
                    request.request_id = title;
                    let deadline = Instant::now() + WAIT * 2;
                    let mut attempt = 0usize;
                    let ticket = loop {
                        let mut c = clients[attempt % clients.len()].clone();
                        attempt += 1;
                        match c.tickets.create_ticket(request.clone()).await {
                            Ok(r) => break r.into_inner().ticket.unwrap(),
                            Err(status) => {
                                assert!(
                                    matches!(
                                        status.code(),
                                        tonic::Code::Unavailable | tonic::Code::Aborted
                                    ),
                                    "a failover answers UNAVAILABLE or ABORTED, got {status:?}"
                                );
                                assert!(
                                    Instant::now() < deadline,
                                    "no node took the write: {status:?}"
                                );
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    };
                    acknowledged.push(ticket.id);
                }
                acknowledged
            }));
        }
        Load { stop, writers }
    }

    /// Stops the clients; every ticket acknowledged to them.
    async fn stop(self) -> BTreeSet<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut acknowledged = BTreeSet::new();
        for w in self.writers {
            acknowledged.extend(w.await.unwrap());
        }
        assert!(
            acknowledged.len() > 8,
            "the load ran: {}",
            acknowledged.len()
        );
        acknowledged
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_writer_loses_no_acknowledged_write() {
    needs_nats!();
    let mut cluster = TestCluster::start(3).await;
    let mut c = cluster.clients(2).await;
    c.experts
        .register_expert(expert("kim", &[("db", common::L3)], 1000))
        .await
        .unwrap();
    let mut stream = subscribe(&mut c, "kim", 0).await;
    eventually("the writer sees kim online", || async {
        online_on(&cluster.clients(0).await, "kim").await
    })
    .await;

    // A second stream of kim's on the writer, which will die with it.
    let mut on_writer = cluster.clients(0).await;
    let mut doomed = subscribe(&mut on_writer, "kim", 0).await;
    let before_kill = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(e)) = doomed.message().await {
            seen.push(e.event.unwrap().position);
        }
        seen
    });

    let load = Load::start(&cluster, &[1, 2], "db").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.nodes[0].kill();
    tokio::time::sleep(Duration::from_millis(LEASE_MS * 3)).await;
    let acknowledged = load.stop().await;
    assert!(
        acknowledged.len() > 8,
        "the load ran: {}",
        acknowledged.len()
    );

    let everywhere = same_everywhere(&cluster, &[1, 2]).await;
    for id in &acknowledged {
        assert!(everywhere.contains_key(id), "acknowledged {id} was lost");
    }
    // Retried creates made no duplicates: one ticket per request title.
    let created: Vec<_> = everywhere.keys().collect();
    assert_eq!(created.len(), everywhere.len());

    // The stream on the surviving node saw every ticket once, in order.
    let mut seen = BTreeSet::new();
    let mut positions: Vec<u64> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !acknowledged.iter().all(|id| seen.contains(id)) {
        assert!(Instant::now() < deadline, "the stream missed tickets");
        let event = common::next(&mut stream).await.event.unwrap();
        let last = positions.last().copied().unwrap_or(0);
        assert!(
            event.position > last,
            "positions increase: {} after {last}",
            event.position
        );
        positions.push(event.position);
        seen.insert(event.ticket_id);
    }

    // Kim's stream on the dead node resumes on another from its last
    // position: together they saw what the survivor's stream saw.
    let mut seen_dead = before_kill.await.unwrap();
    let last = seen_dead.last().copied().unwrap_or(0);
    let mut b = cluster.clients(1).await;
    let mut resumed = subscribe(&mut b, "kim", last).await;
    while seen_dead.last().copied().unwrap_or(0) < positions.last().copied().unwrap_or(0) {
        seen_dead.push(common::next(&mut resumed).await.event.unwrap().position);
    }
    assert_eq!(seen_dead, positions, "no gap and no duplicate across nodes");

    // The dead writer comes back as a follower, with the same tickets.
    cluster.restart(0);
    cluster.wait_serving(0).await;
    same_everywhere(&cluster, &[1, 2, 0]).await;
}

#[tokio::test]
async fn a_nats_server_older_than_2_11_is_refused_with_its_version() {
    needs_nats!();
    let Some(old) = std::env::var_os("SWARMDESK_OLD_NATS_SERVER") else {
        eprintln!("skipped: SWARMDESK_OLD_NATS_SERVER names no nats-server older than 2.11");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nats = swarmdesk::nats_process::NatsCluster::start(
        std::path::Path::new(&old),
        &dir.path().join("nats"),
        1,
        &Default::default(),
    )
    .unwrap();
    let mut command = std::process::Command::new(common::binary());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--cluster",
            &nats.urls()[0],
            "--node-id",
            "a",
            "--cluster-replicas",
            "1",
        ])
        .env("SWARMDESK_LOG_LEVEL", "error");
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2.10."),
        "names the version found: {stderr}"
    );
    assert!(
        stderr.contains("2.11 or newer"),
        "says what it needs: {stderr}"
    );
    assert!(stderr.contains("#4320"), "says why: {stderr}");
}

/// The writer, as the nodes' records say (by trying: only it takes a
/// write without forwarding it). Here: the node whose log says so in its
/// warnings-free record is found by asking each node to forward nothing.
async fn writer_index(cluster: &TestCluster, among: &[usize]) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        for &i in among {
            let mut clients = cluster.clients(i).await;
            if let Ok(status) = clients
                .admin
                .cluster_status(pb::ClusterStatusRequest {})
                .await
            {
                let status = status.into_inner();
                if let Some(w) = cluster.nodes.iter().position(|n| n.id == status.writer) {
                    if among.contains(&w) {
                        return w;
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "no writer among {among:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_writer_is_fenced_when_it_wakes_and_the_log_does_not_fork() {
    needs_nats!();
    let cluster = TestCluster::start(3).await;
    let first = writer_index(&cluster, &[0, 1, 2]).await;
    let mut on_writer = cluster.clients(first).await;
    on_writer
        .experts
        .register_expert(expert("sam", &[("mail", common::L2)], 100))
        .await
        .unwrap();
    let ticket = create_ok(
        &mut on_writer,
        create_request("mail down", &[("mail", common::L1)], common::P3),
    )
    .await;

    // Paused past its lease: another node takes over.
    cluster.nodes[first].signal("STOP");
    let others: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let second = writer_index(&cluster, &others).await;
    assert_ne!(second, first);
    // A write goes through the new writer meanwhile.
    let mut on_second = cluster.clients(second).await;
    on_second
        .tickets
        .claim_ticket(pb::ClaimTicketRequest {
            ticket_id: ticket.id.clone(),
            expert_id: "sam".into(),
        })
        .await
        .unwrap();

    // Woken, the old writer still believes it writes: its next append is
    // refused by the fence (or forwarded once it knows), never forked.
    cluster.nodes[first].signal("CONT");
    let mut racing = Vec::new();
    for n in 0..5 {
        let mut clients = on_writer.clone();
        racing.push(tokio::spawn(async move {
            let mut request = create_request(
                &format!("after wake {n}"),
                &[("mail", common::L1)],
                common::P3,
            );
            request.request_id = format!("wake-{n}");
            clients.tickets.create_ticket(request).await
        }));
    }
    let mut answered = Vec::new();
    for r in racing {
        match r.await.unwrap() {
            Ok(t) => answered.push(t.into_inner().ticket.unwrap().id),
            Err(status) => assert!(
                matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Aborted
                ),
                "{status:?}"
            ),
        }
    }
    let everywhere = same_everywhere(&cluster, &[0, 1, 2]).await;
    for id in &answered {
        assert!(
            everywhere.contains_key(id),
            "acknowledged {id} is in the log"
        );
    }
    assert_eq!(
        everywhere[&ticket.id].1, "sam",
        "the new writer's claim stands"
    );
    assert!(
        cluster.nodes[first].logged().contains("stepped down")
            || cluster.nodes[first].logged().contains("stopped writing"),
        "the old writer stepped down:\n{}",
        cluster.nodes[first].logged()
    );
    // Positions are used once: every node streams the same events.
    let mut positions = Vec::new();
    for i in 0..3 {
        let mut clients = cluster.clients(i).await;
        let mut stream = clients
            .tickets
            .watch_ticket(pb::WatchTicketRequest {
                ticket_id: ticket.id.clone(),
                after_seq: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let e = common::next(&mut stream).await;
            seen.push((e.position, e.r#type));
        }
        positions.push(seen);
    }
    assert_eq!(positions[0], positions[1]);
    assert_eq!(positions[1], positions[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_with_an_empty_data_dir_catches_up_and_serves_the_same() {
    needs_nats!();
    let mut cluster = TestCluster::start(2).await;
    let mut a = cluster.clients(0).await;
    a.experts
        .register_expert(expert("lee", &[("print", common::L2)], 100))
        .await
        .unwrap();
    for n in 0..20 {
        a.tickets
            .create_ticket(create_request(
                &format!("printer {n}"),
                &[("print", common::L1)],
                common::P4,
            ))
            .await
            .unwrap();
    }
    let d = cluster.add_node("d");
    cluster.wait_serving(d).await;
    let everywhere = same_everywhere(&cluster, &[0, 1, d]).await;
    assert!(everywhere.len() >= 20);
    // It streams the same positions from the start.
    let mut streams = Vec::new();
    for i in [0, d] {
        let mut clients = cluster.clients(i).await;
        let mut stream = subscribe(&mut clients, "lee", 0).await;
        let mut seen = Vec::new();
        while seen.len() < 20 {
            let e = common::next(&mut stream).await.event.unwrap();
            seen.push((e.position, e.ticket_id));
        }
        streams.push(seen);
    }
    assert_eq!(streams[0], streams[1]);

    // Stopped cleanly, every node's replica holds all the test wrote and
    // hashes as a fresh replay of the log up to what it applied (stopping
    // may append: the writer notes the streams that closed).
    let (before, _) = replayed(&cluster).await;
    let mut replicas = Vec::new();
    for node in &mut cluster.nodes {
        node.stop();
        let (applied, digest) = audit::replica_digest(&node.data_dir).unwrap();
        let applied = applied.unwrap_or_else(|| panic!("node {} closed uncleanly", node.id));
        assert!(
            applied >= before.last_seq,
            "node {} holds {applied}",
            node.id
        );
        replicas.push((node.id.clone(), applied, digest));
    }
    for (id, applied, digest) in replicas {
        let log = cluster.replay_upto(applied).await;
        assert_eq!(
            digest,
            audit::digest(&*log.state).unwrap(),
            "node {id}'s replica"
        );
    }
}

/// Every event of `ticket` a watching expert's stream (from the start)
/// carries: at least `at_least`, and whatever follows at once.
async fn events_of(
    stream: &mut tonic::Streaming<pb::SwarmEvent>,
    ticket: &str,
    at_least: usize,
) -> Vec<pb::TicketEvent> {
    let mut events = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let wait = if events.len() < at_least {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::from_millis(500)
        };
        match tokio::time::timeout(wait, stream.message()).await {
            Ok(Ok(Some(e))) => {
                if let Some(event) = e.event.filter(|ev| ev.ticket_id == ticket) {
                    events.push(event);
                }
            }
            _ => return events,
        }
    }
}

fn count(events: &[pb::TicketEvent], kind: pb::TicketEventType) -> usize {
    events.iter().filter(|e| e.r#type == kind as i32).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_during_a_failover_fire_once_and_owner_grace_follows_the_streams() {
    needs_nats!();
    // First response due 2 s after creation; owners get 3 s of grace.
    let config =
        "owner_grace = 3\n[sla.p1]\nown = \"1h\"\nfirst_response = \"2s\"\nresolve = \"10h\"\n";
    let mut cluster = TestCluster::start_with(3, Some(config)).await;
    let writer = writer_index(&cluster, &[0, 1, 2]).await;
    let follower = (writer + 1) % 3;
    let survivor = (writer + 2) % 3;
    let mut on_writer = cluster.clients(writer).await;
    on_writer
        .experts
        .register_expert(expert("ann", &[("net", common::L2)], 5))
        .await
        .unwrap();
    on_writer
        .experts
        .register_expert(expert("bob", &[("db", common::L2)], 5))
        .await
        .unwrap();
    // Ann streams from a node that will die; Bob from the writer, which
    // will die too, and he reconnects to the survivor at once.
    let _ann = subscribe(&mut cluster.clients(follower).await, "ann", 0).await;
    let bob = subscribe(&mut on_writer, "bob", 0).await;
    let survivor_clients = cluster.clients(survivor).await;
    eventually("the writer sees ann online", || {
        online_on(&on_writer, "ann")
    })
    .await;
    let p1 = |title: &str, skill: &str| {
        let mut r = create_request(title, &[(skill, common::L1)], common::P1);
        r.request_id = title.into();
        r
    };
    let t1 = create_ok(&mut on_writer, p1("ann's", "net")).await;
    let t2 = create_ok(&mut on_writer, p1("bob's", "db")).await;
    assert_eq!((t1.owner_id.as_str(), t2.owner_id.as_str()), ("ann", "bob"));

    // Writer and ann's node die before the deadlines; bob moves over.
    cluster.nodes[writer].kill();
    cluster.nodes[follower].kill();
    drop(bob);
    let _bob = subscribe(&mut survivor_clients.clone(), "bob", 0).await;

    // After the failover and the grace: the breaches once each, ann's
    // ticket back to routing, bob's still his.
    eventually("ann loses her P1 ticket", || async {
        tickets_on(&survivor_clients).await[&t1.id].1.is_empty()
    })
    .await;
    // A watcher on both channels sees every event of both tickets.
    let mut watching = survivor_clients.clone();
    watching
        .experts
        .register_expert(expert("eve", &[("net", common::L1), ("db", common::L1)], 1))
        .await
        .unwrap();
    let e1 = events_of(&mut subscribe(&mut watching, "eve", 0).await, &t1.id, 3).await;
    let e2 = events_of(&mut subscribe(&mut watching, "eve", 0).await, &t2.id, 2).await;
    assert_eq!(count(&e1, pb::TicketEventType::SlaBreached), 1, "{e1:#?}");
    assert_eq!(count(&e2, pb::TicketEventType::SlaBreached), 1, "{e2:#?}");
    assert_eq!(count(&e1, pb::TicketEventType::OwnerLost), 1, "{e1:#?}");
    assert_eq!(
        count(&e2, pb::TicketEventType::OwnerLost),
        0,
        "bob reconnected in time"
    );
    assert_eq!(tickets_on(&survivor_clients).await[&t2.id].1, "bob");
    // The log, replayed afresh, says the same: each breach once.
    let survivor = (0..cluster.nodes.len())
        .find(|&i| cluster.nodes[i].process.is_some())
        .unwrap();
    same_everywhere(&cluster, &[survivor]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_nats_server_leading_the_log_loses_no_acknowledged_write() {
    needs_nats!();
    let mut cluster = TestCluster::start(3).await;
    let mut c = cluster.clients(2).await;
    c.experts
        .register_expert(expert("max", &[("hw", common::L3)], 1000))
        .await
        .unwrap();
    let mut stream = subscribe(&mut c, "max", 0).await;
    let load = Load::start(&cluster, &[0, 1, 2], "hw").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let status = c
        .admin
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let leader = status
        .replicas
        .iter()
        .find(|r| r.leader)
        .expect("the log has a leader")
        .server
        .clone();
    let server = cluster
        .nats
        .servers
        .iter_mut()
        .find(|s| s.name == leader)
        .expect("the leader is one of ours");
    server.kill();
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let acknowledged = load.stop().await;
    let everywhere = same_everywhere(&cluster, &[0, 1, 2]).await;
    for id in &acknowledged {
        assert!(everywhere.contains_key(id), "acknowledged {id} was lost");
    }
    let mut seen = BTreeSet::new();
    let mut last = 0;
    while !acknowledged.iter().all(|id| seen.contains(id)) {
        let event = common::next(&mut stream).await.event.unwrap();
        assert!(
            event.position > last,
            "no duplicate: {} after {last}",
            event.position
        );
        last = event.position;
        seen.insert(event.ticket_id);
    }
    // A new leader serves the log: a write after the kill is acknowledged.
    let after = create_ok(
        &mut c,
        create_request("after the leader died", &[("hw", common::L1)], common::P3),
    )
    .await;
    assert_eq!(after.owner_id, "max");
}
