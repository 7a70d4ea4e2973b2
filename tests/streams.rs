//! What each stream carries, in order, across disconnects and slow readers.

mod common;

use common::*;
use swarmdesk::rpc::pb;
use swarmdesk::server::ServerConfig;
use tonic::Code;

use pb::SwarmEventReason as R;
use pb::TicketEventType as T;

#[tokio::test]
async fn each_expert_stream_gets_its_swarm_and_nothing_else() {
    let server = spawn_server().await;
    server.register("net3", &[("network", L3)], 5).await;
    server.register("net1", &[("network", L1)], 5).await;
    server.register("office", &[("office", L1)], 5).await;
    server.register("dba", &[("database", L2)], 5).await;
    let mut net3 = server.subscribe("net3").await;
    let mut net1 = server.subscribe("net1").await;
    let mut office = server.subscribe("office").await;
    let mut dba = server.subscribe("dba").await;

    // Routed to net3 (only L3 may own it); net1 follows the network channel.
    let vpn = server.create("vpn down", &[("network", L2)], P2).await;
    assert_eq!(vpn.owner_id, "net3");
    assert_eq!(
        summary(&next(&mut net3).await),
        (vpn.id.clone(), R::Assigned, T::Created)
    );
    assert_eq!(
        summary(&next(&mut net1).await),
        (vpn.id.clone(), R::Swarm, T::Created)
    );

    // An internal note reaches the owner (UPDATE) and the channel (SWARM).
    server
        .post(
            &vpn.id,
            "net3",
            "checking the concentrator",
            pb::Visibility::Internal,
        )
        .await
        .unwrap();
    assert_eq!(
        summary(&next(&mut net3).await),
        (vpn.id.clone(), R::Update, T::Message)
    );
    assert_eq!(
        summary(&next(&mut net1).await),
        (vpn.id.clone(), R::Swarm, T::Message)
    );

    // The office expert joins: from now on they get UPDATEs for it.
    server
        .tickets
        .clone()
        .join_swarm(pb::JoinSwarmRequest {
            ticket_id: vpn.id.clone(),
            expert_id: "office".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        summary(&next(&mut office).await),
        (vpn.id.clone(), R::Update, T::Joined)
    );
    assert_eq!(
        summary(&next(&mut net3).await),
        (vpn.id.clone(), R::Update, T::Joined)
    );
    assert_eq!(
        summary(&next(&mut net1).await),
        (vpn.id.clone(), R::Swarm, T::Joined)
    );

    // Help requested from database: the dba is newly reached.
    server
        .tickets
        .clone()
        .request_help(pb::RequestHelpRequest {
            ticket_id: vpn.id.clone(),
            expert_id: "net3".into(),
            skills: vec![pb::SkillRequirement {
                tag: "database".into(),
                min_rank: L1,
            }],
            note: "auth db?".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        summary(&next(&mut dba).await),
        (vpn.id.clone(), R::HelpRequested, T::HelpRequested)
    );
    for (stream, reason) in [
        (&mut net3, R::Update),
        (&mut office, R::Update),
        (&mut net1, R::Swarm),
    ] {
        assert_eq!(
            summary(&next(stream).await),
            (vpn.id.clone(), reason, T::HelpRequested)
        );
    }

    // A ticket for office only: the network and database streams must not
    // see it. A later network ticket proves it: it is their next event.
    let printer = server.create("printer jam", &[("office", L1)], P3).await;
    assert_eq!(printer.owner_id, "office");
    assert_eq!(
        summary(&next(&mut office).await),
        (printer.id.clone(), R::Assigned, T::Created)
    );
    let wifi = server.create("wifi flaky", &[("network", L1)], P3).await;
    assert_eq!(wifi.owner_id, "net1", "smallest surplus wins");
    assert_eq!(
        summary(&next(&mut net1).await),
        (wifi.id.clone(), R::Assigned, T::Created)
    );
    assert_eq!(
        summary(&next(&mut net3).await),
        (wifi.id.clone(), R::Swarm, T::Created)
    );
    // The dba now follows vpn (help tags), not wifi; a later vpn event is next.
    server
        .post(&vpn.id, "customer-1", "any news?", pb::Visibility::Public)
        .await
        .unwrap();
    assert_eq!(
        summary(&next(&mut dba).await),
        (vpn.id.clone(), R::Swarm, T::Message)
    );
}

#[tokio::test]
async fn positions_increase_and_resume_has_no_gap_and_no_duplicate() {
    let server = spawn_server().await;
    server.register("ann", &[("network", L2)], 100).await;
    let mut stream = server.subscribe("ann").await;
    let mut seen = Vec::new();
    for i in 0..5 {
        server
            .create(&format!("t{i}"), &[("network", L1)], P3)
            .await;
        seen.push(next(&mut stream).await.position);
    }
    drop(stream);
    // While ann is away from her stream, more happens.
    for i in 5..10 {
        server
            .create(&format!("t{i}"), &[("network", L1)], P3)
            .await;
    }
    let last = *seen.last().unwrap();
    let mut resumed = server.subscribe_with("ann", &[], last).await.unwrap();
    for i in 10..13 {
        server
            .create(&format!("t{i}"), &[("network", L1)], P3)
            .await;
    }
    for _ in 5..13 {
        seen.push(next(&mut resumed).await.position);
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    // Every event (one creation per ticket, all for ann) exactly once.
    assert_eq!(seen, (1..=13).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_stream_resumes_right_after_the_position_a_post_answered_with() {
    let server = spawn_server().await;
    server.register("ann", &[("network", L2)], 100).await;
    // Online, so the ticket is hers at creation (no routing event later).
    let _online = server.subscribe("ann").await;
    let t = server.create("vpn", &[("network", L1)], P3).await;
    assert_eq!(t.owner_id, "ann");
    for round in 0..20 {
        // PostMessage answers with its event; resuming right after it, at
        // once, is valid and starts with what comes next.
        let posted = server
            .post(
                &t.id,
                "ann",
                &format!("note {round}"),
                pb::Visibility::Internal,
            )
            .await
            .unwrap();
        let mut stream = server
            .subscribe_with("ann", &[], posted.position)
            .await
            .unwrap();
        let after = server
            .post(&t.id, "ann", "next", pb::Visibility::Internal)
            .await
            .unwrap();
        let first = next(&mut stream).await;
        assert_eq!(first.position, after.position, "round {round}");
    }
}

#[tokio::test]
async fn channels_are_persisted_membership_and_survive_a_restart() {
    let server = spawn_server().await;
    server
        .register("ann", &[("network", L2), ("office", L1)], 5)
        .await;
    // Subscribing with channels sets the membership...
    let s = server.subscribe_with("ann", &["office"], 0).await.unwrap();
    drop(s);
    assert_eq!(
        server.expert("ann").await.channels,
        vec!["office".to_owned()]
    );
    let server = server.restart().await;
    assert_eq!(
        server.expert("ann").await.channels,
        vec!["office".to_owned()]
    );
    // ...and a Subscribe without channels uses it.
    let mut stream = server.subscribe("ann").await;
    server.register("netops", &[("network", L3)], 5).await;
    let _n = server.subscribe("netops").await;
    let net = server.create("net", &[("network", L3)], P3).await;
    let office = server.create("office", &[("office", L1)], P3).await;
    assert_eq!(net.owner_id, "netops");
    let first = next(&mut stream).await;
    assert_eq!(
        first.event.unwrap().ticket_id,
        office.id,
        "network is no longer ann's channel"
    );
}

#[tokio::test]
async fn watch_ticket_carries_public_events_only() {
    let server = spawn_server().await;
    server.register("ann", &[("billing", L1)], 5).await;
    let _a = server.subscribe("ann").await;
    let t = server.create("double charge", &[("billing", L1)], P3).await;
    server
        .post(
            &t.id,
            "ann",
            "looking at the ledger",
            pb::Visibility::Internal,
        )
        .await
        .unwrap();
    server
        .post(&t.id, "ann", "we are on it", pb::Visibility::Public)
        .await
        .unwrap();
    let mut watch = server
        .tickets
        .clone()
        .watch_ticket(pb::WatchTicketRequest {
            ticket_id: t.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let created = next(&mut watch).await;
    assert_eq!(created.r#type, T::Created as i32);
    let public = next(&mut watch).await;
    match public.payload {
        Some(pb::ticket_event::Payload::Message(m)) => assert_eq!(m.body, "we are on it"),
        other => panic!("expected the public message, got {other:?}"),
    }
    assert_eq!(
        public.ticket_seq, 3,
        "seq 2 (internal) skipped, not renumbered"
    );
    // Live: the customer's reply comes through; another internal note does not.
    server
        .post(&t.id, "ann", "ledger fixed", pb::Visibility::Internal)
        .await
        .unwrap();
    server
        .post(&t.id, "customer-1", "thanks!", pb::Visibility::Public)
        .await
        .unwrap();
    let reply = next(&mut watch).await;
    assert_eq!(reply.actor_id, "customer-1");
    // The requester may not post internal notes.
    let err = server
        .post(&t.id, "customer-1", "sneaky", pb::Visibility::Internal)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn slow_reader_catches_up_from_the_store_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A buffer of 4 events: the stalled stream overflows almost at once.
    let config = ServerConfig {
        stream_buffer: 4,
        ..ServerConfig::new(dir.path().join("data"))
    };
    let server = spawn_server_with(config).await;
    server.register("slow", &[("network", L1)], 1000).await;
    server.register("fast", &[("network", L1)], 1000).await;
    let mut slow = server.subscribe("slow").await;
    let mut fast = server.subscribe("fast").await;
    let mut created = Vec::new();
    let mut tickets = server.tickets.clone();
    for i in 0..400 {
        // Big enough that HTTP/2 and socket buffers cannot hide the stall.
        let mut request = create_request(&format!("t{i}"), &[("network", L1)], P3);
        request.description = "x".repeat(64 * 1024);
        let t = tickets.create_ticket(request).await.unwrap().into_inner();
        created.push(t.ticket.unwrap().id);
        // The fast reader keeps up as tickets are created.
        let e = next(&mut fast).await;
        assert_eq!(e.event.unwrap().ticket_id, created[i]);
    }
    // Only now does the slow reader read: everything, in order, once.
    let mut got = Vec::new();
    for _ in 0..400 {
        got.push(next(&mut slow).await.event.unwrap().ticket_id);
    }
    assert_eq!(got, created);
    drop(dir);
}

#[tokio::test]
async fn create_and_post_are_idempotent_on_request_id() {
    let server = spawn_server().await;
    let mut tickets = server.tickets.clone();
    let mut request = create_request("retry me", &[("network", L1)], P3);
    request.request_id = "bot-42".into();
    let first = tickets
        .create_ticket(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = tickets.create_ticket(request).await.unwrap().into_inner();
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(
        first.ticket.as_ref().unwrap().id,
        again.ticket.as_ref().unwrap().id
    );
    let id = first.ticket.unwrap().id;
    let post = pb::PostMessageRequest {
        ticket_id: id.clone(),
        author_id: "customer-1".into(),
        body: "hello".into(),
        visibility: pb::Visibility::Public as i32,
        request_id: "msg-1".into(),
    };
    let a = tickets
        .post_message(post.clone())
        .await
        .unwrap()
        .into_inner();
    let b = tickets
        .post_message(post.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.position, b.position);
    let page = tickets
        .list_tickets(pb::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.tickets.len(), 1);
    assert_eq!(page.tickets[0].version, 2, "one creation, one message");
    // The same request id on another ticket is a client bug, not a replay.
    let other = server.create("other", &[("network", L1)], P3).await;
    let reused = tickets
        .post_message(pb::PostMessageRequest {
            ticket_id: other.id.clone(),
            ..post
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::InvalidArgument, "{reused:?}");
    assert_eq!(server.get(&other.id).await.version, 1);
}

#[tokio::test]
async fn list_tickets_filters_and_pages_in_creation_order() {
    let server = spawn_server().await;
    server.register("ann", &[("network", L2)], 100).await;
    let _a = server.subscribe("ann").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let tag = if i % 2 == 0 { "network" } else { "office" };
        ids.push(server.create(&format!("t{i}"), &[(tag, L1)], P3).await.id);
    }
    let mut tickets = server.tickets.clone();
    let mut token = String::new();
    let mut listed = Vec::new();
    loop {
        let page = tickets
            .list_tickets(pb::ListTicketsRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.tickets.len() <= 3);
        listed.extend(page.tickets.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, ids);
    let owned = tickets
        .list_tickets(pb::ListTicketsRequest {
            owner_id: "ann".into(),
            status: pb::TicketStatus::Assigned as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let expected: Vec<String> = ids.iter().step_by(2).cloned().collect();
    assert_eq!(
        owned
            .tickets
            .iter()
            .map(|t| t.id.clone())
            .collect::<Vec<_>>(),
        expected
    );
    let office = tickets
        .list_tickets(pb::ListTicketsRequest {
            tag: "office".into(),
            status: pb::TicketStatus::Open as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(office.tickets.len(), 3);
}
