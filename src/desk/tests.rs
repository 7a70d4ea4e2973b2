//! The desk over a log that can lose its fence or time out (the in-memory
//! backend): what a replicated log will do, which sled never does.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::domain::{
    ContactChannel, ExpertId, Presence, Priority, Rank, Skill, SkillRequirement, Tag, TicketKind,
    TicketStatus,
};
use crate::store::memory::{Fault, MemoryLog, Stream};
use crate::store::{ExpertStore, Log, TicketStore};

fn tag(s: &str) -> Tag {
    Tag::parse("t", s).unwrap()
}

fn ann() -> ExpertId {
    ExpertId::parse("e", "ann").unwrap()
}

/// A desk writing through its own node's log over `stream`.
fn desk_over(stream: &Arc<Stream>) -> (Desk, Arc<MemoryLog>) {
    let hub = Hub::new(64);
    let log = Arc::new(MemoryLog::open(stream.clone(), Arc::new(hub.clone())).unwrap());
    let storage = Storage::new(log.clone(), log.state().clone());
    let options = DeskOptions::default();
    let parts = DeskParts::open(&storage, AuthLimits::default(), &options).unwrap();
    (Desk::open(storage, hub, parts, options).unwrap(), log)
}

fn new_ticket(request_id: Option<&str>) -> NewTicket {
    NewTicket {
        title: "VPN down".into(),
        description: String::new(),
        requester: "cust".into(),
        channel: ContactChannel::Chat,
        kind: TicketKind::Incident,
        priority: Priority::P3,
        skills: vec![SkillRequirement {
            tag: tag("network"),
            min_rank: Rank::L1,
        }],
        request_id: request_id.map(str::to_owned),
        created_by: None,
    }
}

/// Ann, registered and online.
async fn ann_online(desk: &Desk) -> ExpertStream {
    desk.register_expert(ExpertProfile {
        id: ann(),
        display_name: "Ann".into(),
        skills: vec![Skill {
            tag: tag("network"),
            rank: Rank::L2,
        }],
        capacity: 0,
    })
    .await
    .unwrap();
    desk.subscribe(&ann(), vec![], 0, CancellationToken::new())
        .await
        .unwrap()
}

fn all_tickets(desk: &Desk) -> Vec<Ticket> {
    desk.list_tickets(&TicketQuery::default()).unwrap().tickets
}

#[tokio::test]
async fn a_lost_fence_drops_what_the_desk_computed_and_the_retry_sees_the_other_writer() {
    let stream = Stream::new();
    let (desk, _) = desk_over(&stream);
    let _online = ann_online(&desk).await;
    // Another node, caught up, sets Ann away behind this desk's back.
    let other = MemoryLog::open(stream.clone(), Arc::new(Hub::new(8))).unwrap();
    let mut away = other.state().expert(&ann()).unwrap().unwrap();
    away.presence = Presence::Away;
    away.version += 1;
    other.append(crate::store::Change::Expert(away)).unwrap();

    // This desk still believes Ann is available and routes to her: its
    // append is refused, and nothing of it stays.
    let refused = desk.create_ticket(new_ticket(None)).await.unwrap_err();
    assert!(matches!(refused, DeskError::NotWriter(_)), "{refused:?}");
    assert!(all_tickets(&desk).is_empty());

    // It caught up: the retry is computed from the log as the other node left it.
    let (ticket, created, _) = desk.create_ticket(new_ticket(None)).await.unwrap();
    assert!(created);
    assert_eq!(ticket.state.owner, None, "Ann is away: nobody owns it");
    assert_eq!(ticket.state.status, TicketStatus::Open);
    let view = desk.get_expert(&ann()).unwrap();
    assert_eq!(view.expert.presence, Presence::Away);
    assert!(
        view.online,
        "presence is this node's own and survives the resync"
    );
    assert_eq!(view.expert.owned_open, 0);
    assert_eq!(
        stream.last_sequence(),
        3,
        "in the log: Ann registered, set away, the one ticket"
    );
}

#[tokio::test]
async fn an_append_of_unknown_outcome_is_retried_safely_with_its_request_id() {
    let stream = Stream::new();
    let (desk, log) = desk_over(&stream);
    let _online = ann_online(&desk).await;

    // Stored, but the desk was not told: the retry finds it, once.
    log.inject(Fault::TimeoutStored);
    let unknown = desk
        .create_ticket(new_ticket(Some("r1")))
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, DeskError::OutcomeUnknown(_)),
        "{unknown:?}"
    );
    let (first, created, _) = desk.create_ticket(new_ticket(Some("r1"))).await.unwrap();
    assert!(
        !created,
        "the first attempt was stored: the retry returns it"
    );
    assert_eq!(first.state.owner, Some(ann()));

    // Lost on the way: the retry creates it.
    log.inject(Fault::TimeoutLost);
    assert!(desk.create_ticket(new_ticket(Some("r2"))).await.is_err());
    let (second, created, _) = desk.create_ticket(new_ticket(Some("r2"))).await.unwrap();
    assert!(created);
    assert_ne!(second.id(), first.id());

    let tickets = all_tickets(&desk);
    assert_eq!(tickets.len(), 2, "each request applied once");
    let owned = desk.get_expert(&ann()).unwrap().expert.owned_open;
    assert_eq!(owned, 2, "Ann's load counts each ticket once");
    let positions: Vec<u64> = log
        .state()
        .events_between(0, 100, 100)
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(positions, (1..=positions.len() as u64).collect::<Vec<_>>());
}
