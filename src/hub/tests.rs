use std::time::Duration;

use super::*;
use crate::domain::model::*;
use crate::domain::EventKind;
use crate::store::sled::{SledConfig, SledStore};
use crate::store::{Change, Commit, Log, NewEvent};

fn tag(s: &str) -> Tag {
    Tag::parse("t", s).unwrap()
}

/// Stores one new ticket tagged `tag_name`; returns its creation position.
async fn create(store: &SledStore, tag_name: &str) -> u64 {
    let id = store.allocate_ticket_id().unwrap();
    let receipt = store
        .append(Change::Ticket(Commit {
            ticket: id,
            header: Some(Arc::new(TicketHeader {
                id,
                title: "t".into(),
                description: String::new(),
                requester: "c".into(),
                channel: ContactChannel::Api,
                kind: TicketKind::Question,
                priority: Priority::P3,
                skills: vec![SkillRequirement {
                    tag: tag(tag_name),
                    min_rank: Rank::L1,
                }],
                created_at: 0,
                created_by: None,
            })),
            expected_version: 0,
            events: vec![NewEvent {
                at: 0,
                actor: "c".into(),
                kind: EventKind::Created,
                state: TicketState {
                    version: 1,
                    ..TicketState::blank(0, crate::domain::SlaClocks::untracked())
                },
            }],
            experts: vec![],
            idempotency_key: None,
        }))
        .unwrap();
    store.wait_durable(receipt.lsn).await.unwrap();
    receipt.events[0].position
}

fn viewer(channel: &str) -> Filter {
    Filter::Expert(Viewer {
        expert: ExpertId::parse("e", "ann").unwrap(),
        channels: [tag(channel)].into_iter().collect(),
        skills: vec![],
    })
}

async fn next_position(sub: &mut Subscription) -> u64 {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("subscription stalled")
        .expect("subscription ended")
        .event
        .position
}

#[tokio::test]
async fn a_stalled_subscriber_is_dropped_and_catches_up_without_loss() {
    // From recent events in memory, and (none kept) from the store.
    for recent in [RECENT_EVENTS, 0] {
        stalled_subscriber_catches_up(Hub::with_recent(2, recent)).await;
    }
}

#[test]
fn recent_events_answer_only_ranges_they_hold_whole() {
    let event = |position| {
        Arc::new(TicketEvent {
            position,
            at: 0,
            actor: "c".into(),
            kind: EventKind::Created,
            ticket: Ticket {
                header: Arc::new(TicketHeader {
                    id: TicketId(position),
                    title: "t".into(),
                    description: String::new(),
                    requester: "c".into(),
                    channel: ContactChannel::Api,
                    kind: TicketKind::Question,
                    priority: Priority::P3,
                    skills: vec![],
                    created_at: 0,
                    created_by: None,
                }),
                state: TicketState::blank(0, crate::domain::SlaClocks::untracked()),
            },
        })
    };
    let positions = |events: Option<Vec<Arc<TicketEvent>>>| {
        events.map(|e| e.iter().map(|e| e.position).collect::<Vec<_>>())
    };
    let mut recent = Recent {
        capacity: 4,
        max_bytes: RECENT_BYTES,
        ..Recent::default()
    };
    assert_eq!(
        positions(recent.between(0, 0, 10)),
        None,
        "empty holds nothing"
    );
    for p in 1..=6 {
        recent.push(&event(p));
    }
    // Holds 3..=6.
    assert_eq!(positions(recent.between(2, 6, 10)), Some(vec![3, 4, 5, 6]));
    assert_eq!(positions(recent.between(3, 5, 10)), Some(vec![4, 5]));
    assert_eq!(positions(recent.between(2, 6, 2)), Some(vec![3, 4]));
    assert_eq!(positions(recent.between(6, 6, 10)), Some(vec![]));
    assert_eq!(positions(recent.between(1, 6, 10)), None, "2 is gone");
    assert_eq!(
        positions(recent.between(4, 7, 10)),
        None,
        "7 is not there yet"
    );
    // A hole (never expected) empties memory rather than hide a gap.
    recent.push(&event(9));
    assert_eq!(positions(recent.between(5, 9, 10)), None);
    assert_eq!(positions(recent.between(8, 9, 10)), Some(vec![9]));
    // Big events are bounded by bytes as well as by count.
    let mut recent = Recent {
        capacity: 100,
        max_bytes: 3 * 1024,
        ..Recent::default()
    };
    for p in 1..=10 {
        let mut big = (*event(p)).clone();
        let mut header = (*big.ticket.header).clone();
        header.description = "x".repeat(500);
        big.ticket.header = Arc::new(header);
        recent.push(&Arc::new(big));
    }
    assert_eq!(positions(recent.between(7, 10, 10)), Some(vec![8, 9, 10]));
    assert_eq!(positions(recent.between(6, 10, 10)), None, "only three fit");
}

async fn stalled_subscriber_catches_up(hub: Hub) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(SledStore::open(&SledConfig::new(dir.path()), Arc::new(hub.clone())).unwrap());
    let before = create(&store, "net").await;
    let mut sub = hub.subscribe(
        store.state().clone(),
        viewer("net"),
        Start::AfterPosition(0),
        CancellationToken::new(),
    );
    let mut expected = vec![before];
    for i in 0..20 {
        // Every third ticket is on another channel and must be skipped.
        let channel = if i % 3 == 0 { "office" } else { "net" };
        let position = create(&store, channel).await;
        if channel == "net" {
            expected.push(position);
        }
    }
    // The buffer of 2 overflowed long ago: the hub dropped the feed.
    assert_eq!(hub.subscriber_count(), 0);
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.push(next_position(&mut sub).await);
    }
    assert_eq!(got, expected);
    // Re-registered, and live again.
    assert_eq!(hub.subscriber_count(), 1);
    let live = create(&store, "net").await;
    assert_eq!(next_position(&mut sub).await, live);
}

#[tokio::test]
async fn shutdown_ends_a_subscription_with_its_last_position() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::new(16);
    let store =
        Arc::new(SledStore::open(&SledConfig::new(dir.path()), Arc::new(hub.clone())).unwrap());
    let token = CancellationToken::new();
    let mut sub = hub.subscribe(
        store.state().clone(),
        viewer("net"),
        Start::AfterPosition(0),
        token.clone(),
    );
    let p = create(&store, "net").await;
    assert_eq!(next_position(&mut sub).await, p);
    token.cancel();
    match sub.next().await {
        Err(StreamEnd::ShuttingDown { last_position }) => assert_eq!(last_position, p),
        other => panic!("expected a shutdown end, got {other:?}"),
    }
    drop(sub);
    assert_eq!(hub.subscriber_count(), 0, "dropping unregisters");
}
