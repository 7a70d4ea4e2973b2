//! StatsService against a known sequence of events on the real server.

mod common;

use std::time::Duration;

use common::*;
use swarmdesk::domain::{SlaPolicies, SlaPolicy};
use swarmdesk::rpc::pb;
use swarmdesk::rpc::pb::stats_service_client::StatsServiceClient;
use swarmdesk::server::ServerConfig;
use swarmdesk::timers::ManualClock;
use tonic::Code;

fn one_hour_around_now() -> pb::GetStatsRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    pb::GetStatsRequest {
        from: Some(prost_types::Timestamp {
            seconds: now - 3600,
            nanos: 0,
        }),
        to: Some(prost_types::Timestamp {
            seconds: now + 3600,
            nanos: 0,
        }),
        tag: String::new(),
    }
}

async fn stats(server: &TestServer, tag: &str) -> pb::Stats {
    StatsServiceClient::new(server.admin_channel())
        .get_stats(pb::GetStatsRequest {
            tag: tag.into(),
            ..one_hour_around_now()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn rate(server: &TestServer, ticket: &str, score: u32) {
    server
        .tickets
        .clone()
        .rate_ticket(pb::RateTicketRequest {
            ticket_id: ticket.into(),
            score,
            comment: String::new(),
        })
        .await
        .unwrap();
}

async fn resolve(server: &TestServer, ticket: &str, owner: &str) {
    server
        .set_status(ticket, owner, pb::TicketStatus::Resolved)
        .await
        .unwrap();
}

#[tokio::test]
async fn stats_add_up_a_known_sequence_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Own within 1 s: the ticket nobody can own breaches it.
    let policy = SlaPolicy {
        own: 1_000_000,
        first_response: 600_000_000,
        resolve: 600_000_000,
        calendar: None,
    };
    let sla = SlaPolicies::new(policy.clone(), policy.clone(), policy.clone(), policy);
    // The desk's clock starts now (the report asks for the hour around
    // now) and moves only when the test moves it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let clock = ManualClock::starting_at(now);
    let config = ServerConfig {
        sla,
        clock: std::sync::Arc::new(clock.clone()),
        ..ServerConfig::new(dir.path())
    };
    let mut server = spawn_server_with(config.clone()).await;
    server.keep_dir(dir);
    server.register("ann", &[("network", L3)], 10).await;
    server.register("bob", &[("database", L2)], 10).await;
    let _ann = server.subscribe("ann").await;
    let _bob = server.subscribe("bob").await;

    // Three network tickets owned by ann at creation; bob joins the first
    // and leaves a note; ann answers two in public and resolves all three.
    let mut network = Vec::new();
    for title in ["vpn", "wifi", "dns"] {
        let t = server.create(title, &[("network", L1)], P3).await;
        assert_eq!(t.owner_id, "ann");
        network.push(t.id);
    }
    server
        .tickets
        .clone()
        .join_swarm(pb::JoinSwarmRequest {
            ticket_id: network[0].clone(),
            expert_id: "bob".into(),
        })
        .await
        .unwrap();
    server
        .post(
            &network[0],
            "bob",
            "checked the db",
            pb::Visibility::Internal,
        )
        .await
        .unwrap();
    for id in &network[..2] {
        server
            .post(id, "ann", "on it", pb::Visibility::Public)
            .await
            .unwrap();
    }
    for id in &network {
        resolve(&server, id, "ann").await;
    }
    for (id, score) in network.iter().zip([5, 4, 2]) {
        rate(&server, id, score).await;
    }
    // A database ticket only an L3 may own: nobody can, so it breaches.
    let stuck = server.create("replica lag", &[("database", L3)], P3).await;
    assert_eq!(stuck.owner_id, "");
    clock.advance(Duration::from_secs(2));
    // Polls for up to 20 s: a loaded machine may run the timer late.
    for _ in 0..400 {
        if !server.get(&stuck.id).await.breached.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let check = |s: &pb::Stats| {
        assert_eq!((s.created, s.resolved), (4, 3));
        let own = s.time_to_own.unwrap();
        let response = s.time_to_first_response.unwrap();
        let resolve = s.time_to_resolve.unwrap();
        assert_eq!((own.count, response.count, resolve.count), (3, 2, 3));
        assert!(own.median.unwrap().seconds < 1, "owned at creation");
        let attainment: Vec<_> = s.sla.iter().map(|a| (a.met, a.breached)).collect();
        assert_eq!(attainment, vec![(3, 1), (2, 0), (3, 0)]);
        assert!((s.sla[0].attainment - 0.75).abs() < 1e-9);
        assert_eq!(s.ratings, 3);
        assert!((s.csat_average - 11.0 / 3.0).abs() < 1e-9);
        assert!((s.satisfied_share - 2.0 / 3.0).abs() < 1e-9);
        assert!(!s.satisfied_goal_met);
        let experts: Vec<_> = s
            .experts
            .iter()
            .map(|e| {
                (
                    e.expert_id.as_str(),
                    e.resolved_as_owner,
                    e.swarms_joined,
                    e.internal_notes,
                    e.helped_others_resolve,
                )
            })
            .collect();
        assert_eq!(experts, vec![("ann", 3, 0, 0, 0), ("bob", 0, 1, 1, 1)]);
    };
    check(&stats(&server, "").await);
    let db = stats(&server, "database").await;
    assert_eq!((db.created, db.resolved, db.sla[0].breached), (1, 0, 1));

    // The CLI shows the same figures.
    let (ok, stdout, stderr) = run_cli(
        vec![
            "--server".into(),
            format!("http://{}", server.addr),
            "--json".into(),
            "stats".into(),
            "--last".into(),
            "1h".into(),
        ],
        Some(server.admin_token.clone()),
    )
    .await;
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (v["created"].as_u64(), v["resolved"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(v["experts"][1]["helped_others_resolve"].as_u64(), Some(1));

    let server = server.restart_with(config).await;
    check(&stats(&server, "").await);
}

#[tokio::test]
async fn stats_refuse_bots_and_bad_ranges() {
    let server = spawn_server().await;
    let bot = server.token(pb::Role::Bot, "", "chat").await;
    let refused = StatsServiceClient::new(server.channel_for(&bot))
        .get_stats(one_hour_around_now())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut client = StatsServiceClient::new(server.admin_channel());
    let backwards = pb::GetStatsRequest {
        from: one_hour_around_now().to,
        to: one_hour_around_now().from,
        tag: String::new(),
    };
    let err = client.get_stats(backwards).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .get_stats(pb::GetStatsRequest {
            tag: "Not A Tag".into(),
            ..one_hour_around_now()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("tag:"), "{err:?}");
    // Nothing happened yet: every figure is zero.
    let empty = client
        .get_stats(one_hour_around_now())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((empty.created, empty.ratings), (0, 0));
    assert!(empty.time_to_own.unwrap().median.is_none());
}
