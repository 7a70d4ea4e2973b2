//! What the console's screens live on besides Subscribe: a supervisor's
//! desk-wide stream (WatchDesk) with its resume contract, the expert
//! changes it carries, and collision detection (ReportActivity) reaching
//! the others on a ticket and ending with the stream or the timeout.

mod common;

use std::sync::Arc;
use std::time::Duration;

use swarmdesk::rpc::pb;
use swarmdesk::server::ServerConfig;
use swarmdesk::timers::ManualClock;
use tonic::Streaming;

use common::*;

const L1: i32 = pb::Rank::L1 as i32;
const P3: i32 = pb::Priority::P3 as i32;

/// A desk stream (as `clients`) from after `after_position`.
async fn watch_desk(clients: &Clients, after_position: u64) -> Streaming<pb::SwarmEvent> {
    clients
        .tickets
        .clone()
        .watch_desk(pb::WatchDeskRequest { after_position })
        .await
        .unwrap()
        .into_inner()
}

/// The next event (not an ephemeral frame) of a desk stream.
async fn next_event(stream: &mut Streaming<pb::SwarmEvent>) -> pb::SwarmEvent {
    next_where(stream, |e| e.event.is_some()).await
}

#[tokio::test]
async fn a_supervisor_sees_every_event_of_the_desk_and_resumes_without_gap_or_duplicate() {
    let server = spawn_server().await;
    server.register("ann", &[("network", L1)], 3).await;
    let supervisor = server.as_token(&server.token(pb::Role::Supervisor, "", "").await);
    let mut desk = watch_desk(&supervisor, 0).await;
    // Tickets of unrelated skills: no expert's channel would get both.
    let vpn = server.create("vpn drops", &[("network", L1)], P3).await;
    let mail = server.create("mailbox full", &[("mail", L1)], P3).await;
    server.claim(&vpn.id, "ann").await.unwrap();
    server
        .post(
            &vpn.id,
            "ann",
            "checking the tunnel",
            pb::Visibility::Internal,
        )
        .await
        .unwrap();

    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = next_event(&mut desk).await;
        assert_eq!(e.reason(), pb::SwarmEventReason::Desk);
        seen.push(e);
    }
    let tickets: Vec<&str> = seen
        .iter()
        .map(|e| e.event.as_ref().unwrap().ticket_id.as_str())
        .collect();
    assert_eq!(
        tickets,
        [vpn.id.as_str(), mail.id.as_str(), &vpn.id, &vpn.id]
    );
    // Internal notes included: supervisors read everything.
    let note = seen[3].event.as_ref().unwrap();
    assert_eq!(note.r#type(), pb::TicketEventType::Message);
    let positions: Vec<u64> = seen.iter().map(|e| e.position).collect();
    assert!(
        positions.windows(2).all(|w| w[1] == w[0] + 1),
        "{positions:?}"
    );

    // Resume after the second: the third and fourth again, then live.
    drop(desk);
    let mut resumed = watch_desk(&supervisor, positions[1]).await;
    assert_eq!(next_event(&mut resumed).await.position, positions[2]);
    assert_eq!(next_event(&mut resumed).await.position, positions[3]);
    let later = server.create("printer", &[("printers", L1)], P3).await;
    let live = next_event(&mut resumed).await;
    assert_eq!(live.position, positions[3] + 1);
    assert_eq!(live.event.unwrap().ticket_id, later.id);

    // Beyond the end: refused, naming the field.
    let beyond = supervisor
        .tickets
        .clone()
        .watch_desk(pb::WatchDeskRequest {
            after_position: positions[3] + 100,
        })
        .await
        .unwrap_err();
    assert_eq!(beyond.code(), tonic::Code::InvalidArgument);
    assert!(
        beyond.message().contains("after_position"),
        "{}",
        beyond.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn the_desk_stream_carries_experts_coming_online_and_changing_presence() {
    let server = spawn_server().await;
    server.register("ann", &[("network", L1)], 3).await;
    let mut desk = watch_desk(&server.as_token(&server.admin_token), 0).await;
    let stream = server.subscribe("ann").await;
    let online = next_where(&mut desk, |e| e.expert.as_ref().is_some_and(|x| x.online)).await;
    assert_eq!(online.position, 0, "an expert frame has no position");
    assert_eq!(online.expert.unwrap().id, "ann");
    server
        .experts
        .clone()
        .set_presence(pb::SetPresenceRequest {
            expert_id: "ann".into(),
            presence: pb::Presence::Away as i32,
        })
        .await
        .unwrap();
    let away = next_where(&mut desk, |e| {
        e.expert
            .as_ref()
            .is_some_and(|x| x.presence() == pb::Presence::Away)
    })
    .await;
    assert!(away.expert.unwrap().online);
    drop(stream);
    let offline = next_where(&mut desk, |e| e.expert.as_ref().is_some_and(|x| !x.online)).await;
    assert_eq!(offline.expert.unwrap().id, "ann");
    server.stop().await;
}

async fn report(
    server: &TestServer,
    expert: &str,
    ticket: &str,
    activity: pb::Activity,
) -> pb::TicketActivity {
    server
        .tickets
        .clone()
        .report_activity(pb::ReportActivityRequest {
            expert_id: expert.into(),
            ticket_id: ticket.into(),
            activity: activity as i32,
        })
        .await
        .unwrap()
        .into_inner()
}

/// (expert, activity) pairs of a frame, for compact asserts.
fn who(frame: &pb::TicketActivity) -> Vec<(String, pb::Activity)> {
    frame
        .experts
        .iter()
        .map(|e| (e.expert_id.clone(), e.activity()))
        .collect()
}

/// The next activity frame of a Subscribe stream about `ticket`.
async fn next_activity(stream: &mut Streaming<pb::SwarmEvent>, ticket: &str) -> pb::TicketActivity {
    next_where(stream, |e| {
        e.activity.as_ref().is_some_and(|a| a.ticket_id == ticket)
    })
    .await
    .activity
    .unwrap()
}

#[tokio::test]
async fn viewing_and_typing_reach_the_others_on_the_ticket_and_end_with_the_stream() {
    let server = spawn_server().await;
    server.register("ann", &[("network", L1)], 3).await;
    server.register("bob", &[("network", L1)], 3).await;
    let ticket = server.create("vpn drops", &[("network", L1)], P3).await;
    let mut ann = server.subscribe("ann").await;
    let bob = server.subscribe("bob").await;
    // (Routed to one of them as they came online.)
    let before = server.get(&ticket.id).await;

    let answer = report(&server, "ann", &ticket.id, pb::Activity::Viewing).await;
    assert_eq!(who(&answer), [("ann".to_owned(), pb::Activity::Viewing)]);
    report(&server, "bob", &ticket.id, pb::Activity::Typing).await;
    let frame = next_activity(&mut ann, &ticket.id).await;
    let frame = if who(&frame).len() == 1 {
        // ann's own report came first.
        next_activity(&mut ann, &ticket.id).await
    } else {
        frame
    };
    assert_eq!(
        who(&frame),
        [
            ("ann".to_owned(), pb::Activity::Viewing),
            ("bob".to_owned(), pb::Activity::Typing)
        ]
    );
    assert!(frame.experts[1].since.is_some());
    assert_eq!(frame.experts[1].display_name, "BOB", "as registered");

    // bob's tab closes: his activity ends with his last stream.
    drop(bob);
    let frame = next_activity(&mut ann, &ticket.id).await;
    assert_eq!(who(&frame), [("ann".to_owned(), pb::Activity::Viewing)]);

    // Nothing is stored: the ticket's events are as they were.
    assert_eq!(server.get(&ticket.id).await, before);

    let mut tickets = server.tickets.clone();
    let bad = tickets
        .report_activity(pb::ReportActivityRequest {
            expert_id: "ann".into(),
            ticket_id: ticket.id.clone(),
            activity: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("activity"), "{}", bad.message());
    let missing = tickets
        .report_activity(pb::ReportActivityRequest {
            expert_id: "ann".into(),
            ticket_id: "T-999".into(),
            activity: pb::Activity::Viewing as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn typing_lapses_to_viewing_and_viewing_lapses_without_renewal() {
    let clock = ManualClock::starting_at(1_800_000_000_000_000);
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server_with(ServerConfig {
        clock: Arc::new(clock.clone()),
        ..ServerConfig::new(dir.path().join("data"))
    })
    .await;
    server.keep_dir(dir);
    server.register("ann", &[("network", L1)], 3).await;
    server.register("bob", &[("network", L1)], 3).await;
    let ticket = server.create("vpn drops", &[("network", L1)], P3).await;
    let mut ann = server.subscribe("ann").await;
    let _bob = server.subscribe("bob").await;
    report(&server, "ann", &ticket.id, pb::Activity::Viewing).await;
    report(&server, "bob", &ticket.id, pb::Activity::Typing).await;
    next_where(&mut ann, |e| {
        e.activity.as_ref().is_some_and(|a| a.experts.len() == 2)
    })
    .await;

    // No keystroke for 6 s: bob is viewing again.
    clock.advance(Duration::from_secs(7));
    let frame = next_activity(&mut ann, &ticket.id).await;
    assert_eq!(
        who(&frame),
        [
            ("ann".to_owned(), pb::Activity::Viewing),
            ("bob".to_owned(), pb::Activity::Viewing)
        ]
    );
    // ann renews; bob does not, and lapses 30 s after his last report.
    clock.advance(Duration::from_secs(20));
    report(&server, "ann", &ticket.id, pb::Activity::Viewing).await;
    clock.advance(Duration::from_secs(10));
    let frame = next_activity(&mut ann, &ticket.id).await;
    assert_eq!(who(&frame), [("ann".to_owned(), pb::Activity::Viewing)]);
    server.stop().await;
}
