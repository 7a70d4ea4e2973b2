//! Service-level clocks, named swarms, owners who go away, vendors and
//! ratings, against the real server with targets of a few seconds on a
//! clock the test moves: deadlines come when the test says, never because
//! a loaded machine was slow (or early because it was fast).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use swarmdesk::domain::{SlaPolicies, SlaPolicy};
use swarmdesk::rpc::pb;
use swarmdesk::server::ServerConfig;
use swarmdesk::timers::ManualClock;
use tonic::Code;

use pb::SwarmEventReason as R;
use pb::TicketEventType as T;

const SEC: i64 = 1_000_000;

/// Every priority: own within `own`, first response within `response`,
/// resolve within `resolve` seconds, around the clock.
fn seconds(own: i64, response: i64, resolve: i64) -> SlaPolicies {
    let policy = SlaPolicy {
        own: own * SEC,
        first_response: response * SEC,
        resolve: resolve * SEC,
        calendar: None,
    };
    SlaPolicies::new(policy.clone(), policy.clone(), policy.clone(), policy)
}

/// The desk's clock, from a fixed moment (2027-01-15, 08:00 UTC).
fn clock() -> ManualClock {
    ManualClock::starting_at(1_800_000_000 * SEC)
}

fn config(sla: SlaPolicies, clock: &ManualClock) -> ServerConfig {
    ServerConfig {
        sla,
        owner_grace: Duration::from_secs(1),
        clock: Arc::new(clock.clone()),
        ..ServerConfig::new("unused")
    }
}

async fn spawn(sla: SlaPolicies, clock: &ManualClock) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server_with(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        ..config(sla, clock)
    })
    .await;
    server.keep_dir(dir);
    server
}

/// Waits until the server counts `expert` online (or offline): a dropped
/// stream is noticed by the server a moment after the client drops it.
async fn wait_online(server: &TestServer, expert: &str, online: bool) {
    tokio::time::timeout(WAIT, async {
        while server.expert(expert).await.online != online {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{expert} never became online={online}"));
}

/// Real time for the timer task to act on a move of the clock, before a
/// check that nothing happened.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn breach_target(e: &pb::TicketEvent) -> Option<pb::SlaTarget> {
    match &e.payload {
        Some(pb::ticket_event::Payload::SlaBreached(b)) => pb::SlaTarget::try_from(b.target).ok(),
        _ => None,
    }
}

fn is_breach(e: &pb::SwarmEvent) -> bool {
    e.event.as_ref().is_some_and(|e| breach_target(e).is_some())
}

/// The breach targets recorded for a ticket, from a replay of an expert
/// stream that follows it (the customer's watch hides breaches).
async fn breaches_in_history(server: &TestServer, expert: &str, ticket: &str) -> Vec<String> {
    // Replaying an expert stream from 0 shows what the store holds; the
    // replay ends at the first silence, long enough that a loaded machine's
    // pause mid-replay is not taken for its end.
    let mut replay = server.subscribe_with(expert, &[], 0).await.unwrap();
    let mut found = Vec::new();
    while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_millis(1500), replay.message())
        .await
        .map(|m| m.transpose())
    {
        let event = e.event.unwrap();
        if event.ticket_id == ticket {
            if let Some(target) = breach_target(&event) {
                found.push(target.as_str_name().to_owned());
            }
        }
    }
    found
}

#[tokio::test]
async fn each_breach_fires_once_and_reaches_the_swarm_and_its_named_channel() {
    let clock = clock();
    let server = spawn(seconds(1, 2, 3), &clock).await;
    // dba follows the database channel but may not own an L3 ticket; the
    // on-call lead follows only the named swarms.
    server.register("dba", &[("database", L1)], 5).await;
    server.register("lead", &[("office", L1)], 5).await;
    let mut dba = server.subscribe("dba").await;
    let mut lead = server
        .subscribe_with("lead", &["triage", "backlog"], 0)
        .await
        .unwrap();

    let t = server.create("db corrupt", &[("database", L3)], P2).await;
    assert_eq!(t.owner_id, "");
    let clocks: Vec<_> = t.sla.iter().map(|c| (c.target, c.state)).collect();
    let running = pb::SlaClockState::Running as i32;
    assert_eq!(
        clocks,
        vec![
            (pb::SlaTarget::Own as i32, running),
            (pb::SlaTarget::FirstResponse as i32, running),
            (pb::SlaTarget::Resolve as i32, running)
        ]
    );
    assert_eq!(summary(&next(&mut dba).await).2, T::Created);

    // Own, then first response: both go to triage; resolve to backlog.
    for (target, channel) in [
        (pb::SlaTarget::Own, "triage"),
        (pb::SlaTarget::FirstResponse, "triage"),
        (pb::SlaTarget::Resolve, "backlog"),
    ] {
        clock.advance(Duration::from_secs(1));
        let seen = next_where(&mut lead, is_breach).await;
        assert_eq!(seen.reason, R::Escalated as i32, "{target:?}");
        let event = seen.event.unwrap();
        assert_eq!(breach_target(&event), Some(target));
        assert!(event
            .ticket
            .unwrap()
            .escalated_to
            .contains(&channel.to_owned()));
        let swarm = next_where(&mut dba, is_breach).await;
        assert_eq!(swarm.reason, R::Swarm as i32);
        assert_eq!(breach_target(swarm.event.as_ref().unwrap()), Some(target));
    }
    clock.advance(Duration::from_secs(3_600));
    assert!(
        silent_for(&mut lead, Duration::from_millis(1500)).await,
        "fired twice"
    );

    let after = server.get(&t.id).await;
    assert_eq!(
        after.breached,
        vec![
            pb::SlaTarget::Own as i32,
            pb::SlaTarget::FirstResponse as i32,
            pb::SlaTarget::Resolve as i32
        ]
    );
    assert_eq!(after.escalated_to, vec!["triage", "backlog"]);
    assert_eq!(
        breaches_in_history(&server, "dba", &t.id).await,
        [
            "SLA_TARGET_OWN",
            "SLA_TARGET_FIRST_RESPONSE",
            "SLA_TARGET_RESOLVE"
        ]
    );
}

#[tokio::test]
async fn targets_met_in_time_never_breach() {
    let clock = clock();
    let server = spawn(seconds(2, 2, 3), &clock).await;
    server.register("ann", &[("network", L2)], 5).await;
    let mut ann = server.subscribe("ann").await;
    let t = server.create("vpn", &[("network", L1)], P2).await;
    assert_eq!(t.owner_id, "ann", "owned at creation: own is met");
    server
        .post(&t.id, "ann", "looking at it", pb::Visibility::Public)
        .await
        .unwrap();
    let resolved = server
        .set_status(&t.id, "ann", pb::TicketStatus::Resolved)
        .await
        .unwrap();
    let met = pb::SlaClockState::Met as i32;
    assert!(
        resolved.sla.iter().all(|c| c.state == met),
        "{:?}",
        resolved.sla
    );
    clock.advance(Duration::from_secs(4));
    settle().await;
    assert!(server.get(&t.id).await.breached.is_empty());
    let mut saw = Vec::new();
    while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_millis(200), ann.message())
        .await
        .map(|m| m.transpose())
    {
        saw.push(summary(&e).2);
    }
    assert!(!saw.contains(&T::SlaBreached), "{saw:?}");
}

#[tokio::test]
async fn waiting_on_a_vendor_pauses_the_resolve_clock_and_shows_the_vendor() {
    let clock = clock();
    let server = spawn(seconds(60, 60, 2), &clock).await;
    server.register("ann", &[("network", L2)], 5).await;
    let mut ann = server.subscribe("ann").await;
    let t = server.create("line down", &[("network", L1)], P3).await;
    clock.advance(Duration::from_millis(500));
    let vendor = pb::Vendor {
        name: "telco".into(),
        reference: "TC-991".into(),
    };
    let waiting = server
        .set_status_with(
            &t.id,
            "ann",
            pb::TicketStatus::WaitingVendor,
            Some(vendor.clone()),
        )
        .await
        .unwrap();
    assert_eq!(waiting.vendor, Some(vendor.clone()));
    let resolve = &waiting.sla[2];
    assert_eq!(resolve.state, pb::SlaClockState::Paused as i32);
    let left = resolve.left.unwrap();
    assert!(left.seconds >= 1 && left.seconds < 2, "{left:?}");

    // A vendor is required for WAITING_VENDOR and refused for any other.
    let other = server.create("other", &[("network", L1)], P3).await;
    let missing = server
        .set_status_with(&other.id, "ann", pb::TicketStatus::WaitingVendor, None)
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(missing.message().contains("vendor_name"), "{missing:?}");
    let stray = server
        .set_status_with(
            &other.id,
            "ann",
            pb::TicketStatus::WaitingCustomer,
            Some(vendor),
        )
        .await
        .unwrap_err();
    assert_eq!(stray.code(), Code::InvalidArgument);
    assert_eq!(
        server.get(&other.id).await.status,
        pb::TicketStatus::Assigned as i32
    );

    // Listing by vendor finds it.
    let listed = server
        .tickets
        .clone()
        .list_tickets(pb::ListTicketsRequest {
            vendor: "telco".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tickets;
    assert_eq!(
        listed.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        vec![t.id.clone()]
    );

    // Paused for well over the target: no breach.
    clock.advance(Duration::from_secs(3));
    settle().await;
    assert!(server.get(&t.id).await.breached.is_empty());
    // Back to work: the clock resumes with what it had left, then breaches.
    let resumed = server
        .set_status(&t.id, "ann", pb::TicketStatus::Assigned)
        .await
        .unwrap();
    assert_eq!(resumed.sla[2].state, pb::SlaClockState::Running as i32);
    // It had 1.5 s left: not breached 1 s on, breached 1 s after that.
    // (The other ticket's resolve clock ran all along: it breached meanwhile.)
    clock.advance(Duration::from_secs(1));
    settle().await;
    assert!(server.get(&t.id).await.breached.is_empty());
    clock.advance(Duration::from_secs(1));
    let breach = next_where(&mut ann, |e| is_breach(e) && summary(e).0 == t.id).await;
    assert_eq!(
        breach_target(breach.event.as_ref().unwrap()),
        Some(pb::SlaTarget::Resolve)
    );
}

#[tokio::test]
async fn a_deadline_that_passed_while_down_fires_once_after_restart() {
    let sla = seconds(1, 60, 60);
    let clock = clock();
    let server = spawn(sla.clone(), &clock).await;
    server.register("dba", &[("database", L1)], 5).await;
    let t = server.create("slow query", &[("database", L3)], P3).await;
    // Stopped before the deadline; started again after it.
    let path = server.data_dir.clone();
    let kept = server.stop().await;
    clock.advance(Duration::from_millis(1500));
    let mut server = spawn_server_with(ServerConfig {
        data_dir: path,
        ..config(sla.clone(), &clock)
    })
    .await;
    if let Some(kept) = kept {
        server.keep_dir(kept);
    }
    let mut breached = server.get(&t.id).await;
    // Polls for up to 20 s: a loaded machine may run the timer late.
    for _ in 0..400 {
        if !breached.breached.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        breached = server.get(&t.id).await;
    }
    assert_eq!(breached.breached, vec![pb::SlaTarget::Own as i32]);
    let server = server.restart_with(config(sla, &clock)).await;
    clock.advance(Duration::from_secs(10));
    settle().await;
    assert_eq!(
        breaches_in_history(&server, "dba", &t.id).await,
        ["SLA_TARGET_OWN"],
        "exactly once across restarts"
    );
}

#[tokio::test]
async fn sev1_gets_every_p1_at_once_and_nothing_else() {
    let server = spawn(seconds(60, 60, 60), &clock()).await;
    server.register("oncall", &[("office", L1)], 5).await;
    server.register("net", &[("network", L3)], 5).await;
    let mut oncall = server.subscribe_with("oncall", &["sev1"], 0).await.unwrap();
    let mut net = server.subscribe("net").await;
    let p2 = server.create("slow vpn", &[("network", L1)], P2).await;
    let p1 = server.create("all down", &[("network", L1)], P1).await;
    assert_eq!(p1.escalated_to, vec!["sev1"]);
    assert!(p2.escalated_to.is_empty());
    assert_eq!(
        summary(&next(&mut oncall).await),
        (p1.id.clone(), R::Escalated, T::Created)
    );
    // The skill channel's expert owns both, as usual.
    assert_eq!(
        summary(&next(&mut net).await),
        (p2.id.clone(), R::Assigned, T::Created)
    );
    assert_eq!(
        summary(&next(&mut net).await),
        (p1.id.clone(), R::Assigned, T::Created)
    );
    assert!(silent_for(&mut oncall, Duration::from_millis(300)).await);
    // A named swarm is not a skill.
    let refused = server
        .try_create("x", &[("sev1", L1)], P1)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn an_owner_offline_past_the_grace_loses_p1_and_p2_tickets_only() {
    let clock = clock();
    let server = spawn(seconds(600, 600, 600), &clock).await;
    server.register("ann", &[("network", L3)], 5).await;
    server.register("bob", &[("network", L3)], 5).await;
    let ann_stream = server.subscribe("ann").await;
    let urgent = server.create("core down", &[("network", L2)], P1).await;
    let routine = server.create("new cable", &[("network", L2)], P3).await;
    assert_eq!(
        (urgent.owner_id.as_str(), routine.owner_id.as_str()),
        ("ann", "ann")
    );
    let mut bob = server.subscribe("bob").await;
    drop(ann_stream);
    wait_online(&server, "ann", false).await;
    clock.advance(Duration::from_secs(2));
    // Grace is one second: the P1 goes to bob, the P3 stays with ann.
    let lost = next_where(&mut bob, |e| summary(e).2 == T::OwnerLost).await;
    assert_eq!(summary(&lost).0, urgent.id);
    let assigned = next_where(&mut bob, |e| summary(e).1 == R::Assigned).await;
    assert_eq!(summary(&assigned).0, urgent.id);
    assert_eq!(server.get(&urgent.id).await.owner_id, "bob");
    assert_eq!(server.get(&routine.id).await.owner_id, "ann");
    assert_eq!(server.expert("ann").await.owned_open, 1);
}

#[tokio::test]
async fn an_owner_back_within_the_grace_keeps_the_ticket() {
    let clock = clock();
    let server = spawn(seconds(600, 600, 600), &clock).await;
    server.register("ann", &[("network", L3)], 5).await;
    server.register("bob", &[("network", L3)], 5).await;
    let first = server.subscribe("ann").await;
    let urgent = server.create("core down", &[("network", L2)], P1).await;
    let _bob = server.subscribe("bob").await;
    drop(first);
    wait_online(&server, "ann", false).await;
    clock.advance(Duration::from_millis(300));
    let _back = server.subscribe("ann").await;
    clock.advance(Duration::from_millis(1500));
    settle().await;
    assert_eq!(server.get(&urgent.id).await.owner_id, "ann");
}

#[tokio::test]
async fn a_customer_reply_reopens_and_an_absent_owner_is_replaced() {
    let server = spawn(seconds(600, 600, 600), &clock()).await;
    server.register("ann", &[("printing", L2)], 5).await;
    server.register("bob", &[("printing", L2)], 5).await;
    let ann = server.subscribe("ann").await;
    let t = server.create("printer jam", &[("printing", L1)], P4).await;
    assert_eq!(t.owner_id, "ann");
    server
        .set_status(&t.id, "ann", pb::TicketStatus::Resolved)
        .await
        .unwrap();
    drop(ann);
    wait_online(&server, "ann", false).await;
    let mut bob = server.subscribe("bob").await;
    server
        .post(&t.id, "customer-1", "still jammed", pb::Visibility::Public)
        .await
        .unwrap();
    let lost = next_where(&mut bob, |e| summary(e).2 == T::OwnerLost).await;
    assert_eq!(summary(&lost).0, t.id);
    let reopened = server.get(&t.id).await;
    assert_eq!(reopened.status, pb::TicketStatus::Assigned as i32);
    assert_eq!(reopened.owner_id, "bob");
}

#[tokio::test]
async fn ratings_follow_the_rules() {
    let server = spawn(seconds(600, 600, 600), &clock()).await;
    server.register("ann", &[("billing", L2)], 5).await;
    let _ann = server.subscribe("ann").await;
    let relay = server.as_token(&server.token(pb::Role::Bot, "", "chat").await);
    let other_bot = server.as_token(&server.token(pb::Role::Bot, "", "mail").await);
    let expert = server.as_token(&server.token(pb::Role::Expert, "ann", "").await);
    let t = relay
        .tickets
        .clone()
        .create_ticket(create_request("refund", &[("billing", L1)], P3))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let rate = |clients: &Clients, score: u32| {
        let mut tickets = clients.tickets.clone();
        let request = pb::RateTicketRequest {
            ticket_id: t.id.clone(),
            score,
            comment: "thanks".into(),
        };
        async move {
            tickets
                .rate_ticket(request)
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let unresolved = rate(&relay, 5).await.unwrap_err();
    assert_eq!(
        unresolved.code(),
        Code::FailedPrecondition,
        "{unresolved:?}"
    );
    server
        .set_status(&t.id, "ann", pb::TicketStatus::Resolved)
        .await
        .unwrap();
    for bad in [0, 6] {
        let err = rate(&relay, bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with("score:"), "{err:?}");
    }
    assert_eq!(
        rate(&other_bot, 5).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        rate(&expert, 5).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let rated = rate(&relay, 4).await.unwrap();
    assert_eq!(rated.rating.as_ref().map(|r| r.score), Some(4));
    let twice = rate(&relay, 5).await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);
    assert!(twice.message().contains("already rated"), "{twice:?}");

    // The customer writes back: reopened, the rating cleared; the next
    // resolution may be rated again.
    relay
        .tickets
        .clone()
        .post_message(pb::PostMessageRequest {
            ticket_id: t.id.clone(),
            author_id: "customer-1".into(),
            body: "it came back".into(),
            visibility: pb::Visibility::Public as i32,
            request_id: String::new(),
        })
        .await
        .unwrap();
    let reopened = server.get(&t.id).await;
    assert_eq!(reopened.status, pb::TicketStatus::Assigned as i32);
    assert_eq!(reopened.rating, None);
    server
        .set_status(&t.id, "ann", pb::TicketStatus::Resolved)
        .await
        .unwrap();
    assert_eq!(rate(&relay, 2).await.unwrap().rating.unwrap().score, 2);
}
