//! Ownership through the real server: routing order, capacity, offers that
//! become assignments, claims, transfers and releases.

mod common;

use common::*;
use swarmdesk::rpc::pb;
use tonic::Code;

#[tokio::test]
async fn exactly_one_of_32_parallel_claims_wins() {
    let server = spawn_server().await;
    for i in 0..32 {
        server
            .register(&format!("e{i:02}"), &[("network", L3)], 5)
            .await;
    }
    // Nobody is online: the ticket stays unowned until claimed.
    let ticket = server
        .create("router on fire", &[("network", L1)], P2)
        .await;
    assert_eq!(ticket.status, pb::TicketStatus::Open as i32);
    assert!(ticket.owner_id.is_empty());

    let mut claims = Vec::new();
    for i in 0..32 {
        let server_tickets = server.tickets.clone();
        let id = ticket.id.clone();
        claims.push(tokio::spawn(async move {
            let mut client = server_tickets;
            client
                .claim_ticket(pb::ClaimTicketRequest {
                    ticket_id: id,
                    expert_id: format!("e{i:02}"),
                })
                .await
        }));
    }
    let mut winners = Vec::new();
    for claim in claims {
        match claim.await.unwrap() {
            Ok(t) => winners.push(t.into_inner().owner_id),
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(status.message().contains("already owned by"), "{status:?}");
            }
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = server.get(&ticket.id).await;
    assert_eq!(stored.owner_id, winners[0]);
    assert_eq!(server.expert(&winners[0]).await.owned_open, 1);
    // The losing claims name the owner.
    let late = server.claim(&ticket.id, "e00").await;
    if winners[0] != "e00" {
        let status = late.unwrap_err();
        assert!(status.message().contains(&winners[0]), "{status:?}");
    }
}

#[tokio::test]
async fn routing_prefers_smallest_surplus_then_load_then_longest_wait() {
    let server = spawn_server().await;
    server.register("senior", &[("network", L3)], 5).await;
    server.register("mid-a", &[("network", L2)], 5).await;
    server.register("mid-b", &[("network", L2)], 5).await;
    let _s = server.subscribe("senior").await;
    let _a = server.subscribe("mid-a").await;
    let _b = server.subscribe("mid-b").await;

    // L3 work: only the senior qualifies.
    let t = server.create("core switch", &[("network", L3)], P2).await;
    assert_eq!(t.owner_id, "senior");
    // L1 work: the L2s have the smaller surplus; equal load, nobody has been
    // assigned yet: the id decides.
    let t = server.create("vpn 1", &[("network", L1)], P3).await;
    assert_eq!(t.owner_id, "mid-a");
    // mid-a now has load 1/5: mid-b has the lower load.
    let t = server.create("vpn 2", &[("network", L1)], P3).await;
    assert_eq!(t.owner_id, "mid-b");
    // Both at 1/5: mid-a has waited longer since their last assignment.
    let t = server.create("vpn 3", &[("network", L1)], P3).await;
    assert_eq!(t.owner_id, "mid-a");
    let t = server.create("vpn 4", &[("network", L1)], P3).await;
    assert_eq!(t.owner_id, "mid-b");
}

#[tokio::test]
async fn routing_follows_skills_as_they_change_and_needs_every_required_tag() {
    let server = spawn_server().await;
    server.register("ann", &[("network", L2)], 5).await;
    server
        .register("bob", &[("network", L1), ("database", L2)], 5)
        .await;
    let _a = server.subscribe("ann").await;
    let _b = server.subscribe("bob").await;
    // Both tags: only bob holds both.
    let both = [("network", L1), ("database", L1)];
    assert_eq!(
        server.create("db over vpn", &both, P3).await.owner_id,
        "bob"
    );
    // No skills at all: anyone may own it; ann has the lower load.
    assert_eq!(server.create("question", &[], P3).await.owner_id, "ann");
    // Ann moves from network to database: network work is no longer hers.
    server.register("ann", &[("database", L3)], 5).await;
    assert_eq!(
        server.create("vpn", &[("network", L1)], P3).await.owner_id,
        "bob"
    );
    let t = server.create("slow query", &[("database", L3)], P3).await;
    assert_eq!(t.owner_id, "ann");
    // A tag nobody holds: the ticket waits.
    assert_eq!(
        server
            .create("mainframe", &[("cobol", L1)], P3)
            .await
            .owner_id,
        ""
    );
}

#[tokio::test]
async fn capacity_bounds_assignment_and_claims() {
    let server = spawn_server().await;
    server.register("solo", &[("db", L2)], 2).await;
    let _s = server.subscribe("solo").await;
    let a = server.create("db 1", &[("db", L1)], P3).await;
    let b = server.create("db 2", &[("db", L1)], P3).await;
    let c = server.create("db 3", &[("db", L1)], P3).await;
    assert_eq!(a.owner_id, "solo");
    assert_eq!(b.owner_id, "solo");
    assert!(c.owner_id.is_empty(), "third ticket must wait: {c:?}");
    assert_eq!(server.expert("solo").await.owned_open, 2);

    let refused = server.claim(&c.id, "solo").await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    // Resolving one frees capacity: the waiting ticket is assigned at once.
    server
        .set_status(&a.id, "solo", pb::TicketStatus::Resolved)
        .await
        .unwrap();
    let c = server.get(&c.id).await;
    assert_eq!(c.owner_id, "solo");
    assert_eq!(c.status, pb::TicketStatus::Assigned as i32);
    assert_eq!(server.expert("solo").await.owned_open, 2);
}

#[tokio::test]
async fn offer_becomes_assignment_when_an_eligible_expert_comes_online() {
    let server = spawn_server().await;
    server.register("junior", &[("storage", L1)], 5).await;
    server.register("expert", &[("storage", L3)], 5).await;
    let mut junior = server.subscribe("junior").await;

    let low = server.create("disk slow", &[("storage", L2)], P3).await;
    let high = server.create("array down", &[("storage", L2)], P1).await;
    assert!(low.owner_id.is_empty() && high.owner_id.is_empty());
    // The junior's ranks do not qualify: they see it, not as an offer.
    let seen = summary(&next(&mut junior).await);
    assert_eq!(seen.1, pb::SwarmEventReason::Swarm);

    // An expert who qualifies but is offline gets nothing until online.
    let mut expert = server.subscribe("expert").await;
    // Replay from position 0 first: both creations, as offers...
    let first = summary(&next(&mut expert).await);
    assert_eq!(first.1, pb::SwarmEventReason::Offer);
    let second = summary(&next(&mut expert).await);
    assert_eq!(second.1, pb::SwarmEventReason::Offer);
    // ...then the assignments, higher priority first.
    let a = summary(&next(&mut expert).await);
    let b = summary(&next(&mut expert).await);
    assert_eq!(
        (a.0.as_str(), a.1, a.2),
        (
            high.id.as_str(),
            pb::SwarmEventReason::Assigned,
            pb::TicketEventType::Assigned
        )
    );
    assert_eq!(b.0, low.id);
    assert_eq!(b.1, pb::SwarmEventReason::Assigned);
    assert_eq!(server.get(&high.id).await.owner_id, "expert");
    assert_eq!(server.get(&low.id).await.owner_id, "expert");
}

#[tokio::test]
async fn away_experts_get_no_automatic_assignment_until_available() {
    let server = spawn_server().await;
    server.register("ann", &[("email", L2)], 5).await;
    let _s = server.subscribe("ann").await;
    let mut experts = server.experts.clone();
    let away = experts
        .set_presence(pb::SetPresenceRequest {
            expert_id: "ann".into(),
            presence: pb::Presence::Away as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(away.presence, pb::Presence::Away as i32);
    assert!(away.online);
    let t = server.create("mailbox full", &[("email", L1)], P3).await;
    assert!(t.owner_id.is_empty());
    experts
        .set_presence(pb::SetPresenceRequest {
            expert_id: "ann".into(),
            presence: pb::Presence::Available as i32,
        })
        .await
        .unwrap();
    assert_eq!(server.get(&t.id).await.owner_id, "ann");
}

#[tokio::test]
async fn release_reroutes_to_someone_else_and_transfer_moves_ownership() {
    let server = spawn_server().await;
    server.register("ann", &[("net", L2)], 5).await;
    server.register("bob", &[("net", L2)], 5).await;
    server.register("cat", &[("net", L1)], 5).await;
    let _a = server.subscribe("ann").await;
    let t = server.create("dns", &[("net", L2)], P3).await;
    assert_eq!(t.owner_id, "ann");

    // Transfer: only the owner may, only to a qualified expert.
    let mut tickets = server.tickets.clone();
    let wrong_from = tickets
        .transfer_ticket(pb::TransferTicketRequest {
            ticket_id: t.id.clone(),
            from_expert_id: "bob".into(),
            to_expert_id: "cat".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong_from.code(), Code::FailedPrecondition);
    let unqualified = tickets
        .transfer_ticket(pb::TransferTicketRequest {
            ticket_id: t.id.clone(),
            from_expert_id: "ann".into(),
            to_expert_id: "cat".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unqualified.code(), Code::PermissionDenied);
    let moved = tickets
        .transfer_ticket(pb::TransferTicketRequest {
            ticket_id: t.id.clone(),
            from_expert_id: "ann".into(),
            to_expert_id: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.owner_id, "bob");
    assert_eq!(moved.swarm_member_ids, vec!["ann".to_owned()]);
    assert_eq!(server.expert("ann").await.owned_open, 0);
    assert_eq!(server.expert("bob").await.owned_open, 1);

    // Bob releases: ann is online and qualifies, so routing hands it to her;
    // it never goes straight back to bob.
    let released = tickets
        .release_ticket(pb::ReleaseTicketRequest {
            ticket_id: t.id.clone(),
            expert_id: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.owner_id, "ann");
    assert_eq!(server.expert("bob").await.owned_open, 0);

    // Ann releases: nobody else eligible online, so it waits, open.
    let waiting = tickets
        .release_ticket(pb::ReleaseTicketRequest {
            ticket_id: t.id.clone(),
            expert_id: "ann".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(waiting.status, pb::TicketStatus::Open as i32);
    assert!(waiting.owner_id.is_empty());
    // Bob coming online picks it up? No: bob declined it earlier.
    let _b = server.subscribe("bob").await;
    assert!(server.get(&t.id).await.owner_id.is_empty());
    // A claim is still each expert's own choice.
    assert_eq!(server.claim(&t.id, "bob").await.unwrap().owner_id, "bob");
}

#[tokio::test]
async fn status_moves_follow_the_rules() {
    let server = spawn_server().await;
    server.register("ann", &[("hw", L1)], 5).await;
    let _a = server.subscribe("ann").await;
    let unowned_dummy = server.create("no skills match", &[("sw", L1)], P3).await;
    let err = server
        .set_status(&unowned_dummy.id, "ann", pb::TicketStatus::Resolved)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    let t = server.create("laptop", &[("hw", L1)], P3).await;
    let not_owner = server
        .set_status(&t.id, "zed", pb::TicketStatus::Resolved)
        .await
        .unwrap_err();
    assert_eq!(
        not_owner.code(),
        Code::NotFound,
        "unknown expert: {not_owner:?}"
    );
    for (to, ok) in [
        (pb::TicketStatus::WaitingCustomer, true),
        (pb::TicketStatus::WaitingVendor, true),
        (pb::TicketStatus::Assigned, true),
        (pb::TicketStatus::Resolved, true),
        (pb::TicketStatus::WaitingCustomer, false),
        (pb::TicketStatus::Assigned, true), // reopen
        (pb::TicketStatus::Closed, true),
        (pb::TicketStatus::Assigned, false),
    ] {
        let result = server.set_status(&t.id, "ann", to).await;
        match (ok, result) {
            (true, Ok(ticket)) => assert_eq!(ticket.status, to as i32),
            (false, Err(status)) => assert_eq!(status.code(), Code::FailedPrecondition),
            (expected, got) => panic!("{to:?}: expected ok={expected}, got {got:?}"),
        }
    }
    let closed = server
        .post(&t.id, "ann", "after close", pb::Visibility::Public)
        .await
        .unwrap_err();
    assert_eq!(closed.code(), Code::FailedPrecondition);
    assert_eq!(server.expert("ann").await.owned_open, 0);
}
