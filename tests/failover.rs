//! How clients and nodes of a cluster reach each other. A client given
//! every node's URL (`--server a,b,c`): when the writer dies, its calls
//! move on to the other nodes, retrying only what is safe to do twice, and
//! nothing acknowledged is lost or applied twice. Nodes serving only
//! mutual TLS forward writes to the writer over it; `bench --target a,b`
//! fails over the same way. The cluster tests are skipped, saying why,
//! where no nats-server can run (CI installs one).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::WAIT;
use swarmdesk::client::{servers, with_token_over, AuthedChannel, ClientTls};
use swarmdesk::rpc::pb;
use swarmdesk::rpc::pb::expert_service_client::ExpertServiceClient;
use swarmdesk::rpc::pb::ticket_service_client::TicketServiceClient;
use tonic::Code;

fn create(title: &str, request_id: &str) -> pb::CreateTicketRequest {
    pb::CreateTicketRequest {
        title: title.into(),
        requester: "cust".into(),
        request_id: request_id.into(),
        skills: vec![pb::SkillRequirement {
            tag: "db".into(),
            min_rank: pb::Rank::L1 as i32,
        }],
        ..Default::default()
    }
}

/// Creates until acknowledged, as a client with a request id may: the
/// failover channel picks the node; between a writer's death and the
/// next one's election every node says UNAVAILABLE, and only that is
/// retried here.
async fn create_until_acknowledged(
    tickets: &mut TicketServiceClient<AuthedChannel>,
    request: pb::CreateTicketRequest,
) -> pb::Ticket {
    let deadline = Instant::now() + WAIT * 3;
    loop {
        match tickets.create_ticket(request.clone()).await {
            Ok(reply) => return reply.into_inner().ticket.unwrap(),
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("{}: {status:?}", request.request_id),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_every_node_moves_on_when_the_writer_dies() {
    needs_nats!();
    let mut cluster = TestCluster::start(3).await;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let token = cluster.wait_token().await;
    // The writer (the first node) is first in the list.
    let failover = servers(&urls.join(","), &ClientTls::default()).unwrap();
    let channel = with_token_over(failover.clone(), Some(&token)).unwrap();
    let mut tickets = TicketServiceClient::new(channel.clone());
    let mut experts = ExpertServiceClient::new(channel);
    experts
        .register_expert(common::register_request("ana", &[("db", common::L3)], 1000))
        .await
        .unwrap();

    let mut named = BTreeMap::new();
    for n in 0..10 {
        let id = format!("before-{n}");
        let ticket = create_until_acknowledged(&mut tickets, create(&id, &id)).await;
        named.insert(id, ticket.id);
    }
    assert_eq!(failover.current(), urls[0]);

    cluster.nodes[0].kill();
    // Retried creates, some of them again with the same request id.
    for n in 0..30 {
        let id = format!("after-{}", n % 20);
        let ticket = create_until_acknowledged(&mut tickets, create(&id, &id)).await;
        if let Some(first) = named.insert(id.clone(), ticket.id.clone()) {
            assert_eq!(first, ticket.id, "{id} named two tickets");
        }
    }
    assert_ne!(failover.current(), urls[0], "still calling the dead node");

    // A write without a request id goes to a live node too: the dead one
    // was never reached, so moving on is safe.
    let some = named["before-3"].clone();
    let claimed = tickets
        .claim_ticket(pb::ClaimTicketRequest {
            ticket_id: some.clone(),
            expert_id: "ana".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claimed.owner_id, "ana");

    // Every node left holds every acknowledged ticket, once.
    for i in [1, 2] {
        let c = cluster.clients(i).await;
        let deadline = Instant::now() + WAIT * 3;
        loop {
            let listed = c.all_tickets().await;
            let mut titles: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for t in &listed {
                titles
                    .entry(t.title.clone())
                    .or_default()
                    .push(t.id.clone());
            }
            let all_there = named
                .iter()
                .all(|(title, id)| titles.get(title) == Some(&vec![id.clone()]));
            if all_there && listed.len() == named.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} holds {titles:?}, the client was told {named:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The CLI, given every URL with the dead node first, reads through a
    // live one.
    let output = std::process::Command::new(common::binary())
        .args(["show", &some, "--json", "--server", &urls.join(",")])
        .args(["--token", &token])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(shown.contains("\"ana\""), "{shown}");

    // A fresh client, the dead node first: a write without a request id
    // moves on too, since the dead node was never reached.
    let fresh = servers(&urls.join(","), &ClientTls::default()).unwrap();
    let mut tickets =
        TicketServiceClient::new(with_token_over(fresh.clone(), Some(&token)).unwrap());
    let claimed = tickets
        .claim_ticket(pb::ClaimTicketRequest {
            ticket_id: named["before-4"].clone(),
            expert_id: "ana".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claimed.owner_id, "ana");
    assert_ne!(fresh.current(), urls[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_follower_reach_the_writer_over_mutual_tls() {
    needs_nats!();
    // Starting waits until every node takes a write: the followers'
    // are forwarded, over mutual TLS, to the writer's https:// address.
    let cluster = TestCluster::start_tls(3).await;
    let mut follower = cluster.clients(2).await;
    let status = follower
        .admin
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let writer = status.writer.clone();
    assert_ne!(writer, "c", "{status:?}");
    let advertised = status
        .nodes
        .iter()
        .find(|n| n.id == writer)
        .map(|n| n.address.clone());
    assert!(
        advertised
            .as_deref()
            .is_some_and(|a| a.starts_with("https://")),
        "{status:?}"
    );
    let created = follower
        .tickets
        .create_ticket(create("over tls", "tls-1"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    // Read on the follower that was called (its own write), and on the
    // other one once applied.
    follower
        .tickets
        .get_ticket(pb::GetTicketRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap();
    let mut other = cluster.clients(1).await;
    let deadline = Instant::now() + WAIT;
    while other
        .tickets
        .get_ticket(pb::GetTicketRequest {
            id: created.id.clone(),
        })
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "{} never reached node b",
            created.id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The health a node reports, once it answers at all.
async fn health_of(url: &str) -> i32 {
    let endpoint = swarmdesk::client::endpoint(url, &ClientTls::default()).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(channel) = endpoint.connect().await {
            let asked = tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await;
            if let Ok(reply) = asked {
                return reply.into_inner().status;
            }
        }
        assert!(Instant::now() < deadline, "{url} never answered health");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_cannot_reach_the_writer_is_not_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    needs_nats!();
    // Every node advertises an address where nothing listens: the writer
    // serves, its followers cannot forward to it.
    let dead = common::process::free_port();
    let config = format!("[cluster]\nadvertise = \"http://{dead}\"\n");
    let mut cluster = TestCluster::start_with(1, Some(&config)).await;
    let b = cluster.add_node("b");
    let url = cluster.nodes[b].url();
    let deadline = Instant::now() + WAIT * 2;
    while health_of(&url).await != ServingStatus::NotServing as i32
        || !cluster.nodes[b]
            .logged()
            .contains("cannot reach the writer")
    {
        assert!(
            Instant::now() < deadline,
            "node b never said it cannot reach the writer:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        health_of(&cluster.nodes[0].url()).await,
        ServingStatus::Serving as i32
    );
    // And a write sent to it says why it cannot be done.
    let token = cluster.wait_token().await;
    let channel = swarmdesk::client::connect(&url, &ClientTls::default())
        .await
        .unwrap();
    let refused =
        TicketServiceClient::new(swarmdesk::client::with_token(channel, Some(&token)).unwrap())
            .create_ticket(create("unreachable", "u-1"))
            .await
            .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("writer"), "{refused:?}");
}

/// `swarmdesk bench --target a,b` fails over as the CLI does: with a node
/// that is down listed first, every call moves on to the live one, and
/// what the bench created and counted is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_takes_several_targets_and_moves_on_from_a_dead_one() {
    let server = common::spawn_server().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let targets = format!("{dead_url},{}", server.addr);
    let (ok, out, err) = common::run_cli(
        vec![
            "bench".into(),
            "--smoke".into(),
            "--scenario".into(),
            "create".into(),
            "--scenario".into(),
            "claim-storm".into(),
            "--target".into(),
            targets,
        ],
        Some(server.admin_token.clone()),
    )
    .await;
    assert!(ok, "bench failed:\n{out}\n{err}");
    let figures: serde_json::Value =
        serde_json::from_str(out.lines().last().unwrap()).expect("the bench's JSON line");
    let created = figures["create_rps_c1"].as_f64();
    assert!(created.is_some_and(|r| r > 0.0), "{figures}");
    assert_eq!(figures["create_deliveries_lost"], 0, "{figures}");
    assert_eq!(figures["double_owners"], 0, "{figures}");
    assert!(
        figures["claims_per_s"].as_f64().is_some_and(|r| r > 0.0),
        "{figures}"
    );
    // What the bench made is on the live server.
    let tickets = server.as_token(&server.admin_token).all_tickets().await;
    let created = tickets
        .iter()
        .filter(|t| t.title.starts_with("bench ticket"))
        .count();
    assert!(created > 0, "{tickets:?}");
}
