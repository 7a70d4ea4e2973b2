use std::sync::Arc;

use super::*;
use crate::domain::model::*;

fn id(s: &str) -> ExpertId {
    ExpertId::parse("e", s).unwrap()
}

fn tag(s: &str) -> Tag {
    Tag::parse("t", s).unwrap()
}

#[test]
fn a_new_ticket_starts_owned_if_routed_and_a_p1_reaches_sev1_at_once() {
    let base = ticket(TicketStatus::Open, None);
    let header = |priority| {
        Arc::new(TicketHeader {
            priority,
            ..(*base.header).clone()
        })
    };
    let ann = id("ann");
    let (blank, moves) = create(
        header(Priority::P1),
        Some(&ann),
        SlaClocks::untracked(),
        vec![ArticleId(3)],
        50,
    );
    assert_eq!(blank.state.version, 0);
    assert_eq!(moves.len(), 2);
    let first = &moves[0].state;
    assert_eq!(moves[0].kind, EventKind::Created);
    assert_eq!(first.version, 1);
    assert_eq!(first.status, TicketStatus::Assigned);
    assert_eq!(first.owner.as_ref(), Some(&ann));
    assert_eq!(first.owned_since, Some(50));
    assert_eq!(first.escalated, vec![NamedSwarm::Sev1.tag()]);
    assert_eq!(
        moves[1].kind,
        EventKind::ArticlesSuggested {
            articles: vec![ArticleId(3)]
        }
    );
    assert_eq!(moves[1].state.version, 2);

    let (_, moves) = create(
        header(Priority::P2),
        None,
        SlaClocks::untracked(),
        vec![],
        50,
    );
    assert_eq!(moves.len(), 1, "no suggestions, no event for them");
    assert_eq!(moves[0].state.status, TicketStatus::Open);
    assert_eq!(moves[0].state.owner, None);
    assert!(
        moves[0].state.escalated.is_empty(),
        "only a P1 reaches sev1"
    );
}

fn ticket(status: TicketStatus, owner: Option<&str>) -> Ticket {
    Ticket {
        header: Arc::new(TicketHeader {
            id: TicketId(7),
            title: "t".into(),
            description: String::new(),
            requester: "cust".into(),
            channel: ContactChannel::Email,
            kind: TicketKind::Question,
            priority: Priority::P3,
            skills: vec![SkillRequirement {
                tag: tag("net"),
                min_rank: Rank::L2,
            }],
            created_at: 0,
            created_by: None,
        }),
        state: TicketState {
            status,
            owner: owner.map(id),
            members: vec![],
            version: 3,
            ..TicketState::blank(0, crate::domain::SlaClocks::untracked())
        },
    }
}

fn expert(name: &str, rank: Rank, owned: u32) -> Expert {
    Expert {
        id: id(name),
        display_name: name.into(),
        skills: vec![Skill {
            tag: tag("net"),
            rank,
        }],
        capacity: 2,
        presence: Presence::Away,
        owned_open: owned,
        last_assigned_seq: 0,
        channels: None,
        version: 1,
    }
}

#[test]
fn claim_checks_owner_rank_and_capacity() {
    let open = ticket(TicketStatus::Open, None);
    let m = claim(&open, &expert("ann", Rank::L2, 0), 5).unwrap();
    assert_eq!(m.state.owner, Some(id("ann")));
    assert_eq!(m.state.status, TicketStatus::Assigned);
    assert_eq!(m.state.version, 4);
    let owned = ticket(TicketStatus::Assigned, Some("bob"));
    let err = claim(&owned, &expert("ann", Rank::L2, 0), 5).unwrap_err();
    assert!(err.to_string().contains("bob"), "{err}");
    assert!(matches!(
        claim(&open, &expert("ann", Rank::L1, 0), 5),
        Err(DeskError::RankTooLow { .. })
    ));
    assert!(matches!(
        claim(&open, &expert("ann", Rank::L3, 2), 5),
        Err(DeskError::AtCapacity { .. })
    ));
}

#[test]
fn release_reopens_and_a_quick_one_declines() {
    let mut t = ticket(TicketStatus::WaitingVendor, Some("ann"));
    t.state.owned_since = Some(1_000);
    let m = release(&t, &id("ann"), 1_000 + DECLINE_WINDOW_MICROS - 1).unwrap();
    assert_eq!(m.state.status, TicketStatus::Open);
    assert_eq!(m.state.owner, None);
    assert_eq!(m.state.owned_since, None);
    assert_eq!(m.state.declined, vec![id("ann")]);
    // A minute or more after getting it, letting go is not a decline.
    let late = release(&t, &id("ann"), 1_000 + DECLINE_WINDOW_MICROS).unwrap();
    assert!(late.state.declined.is_empty());
    assert!(matches!(
        release(&t, &id("bob"), 1),
        Err(DeskError::NotOwner { .. })
    ));
    let resolved = ticket(TicketStatus::Resolved, Some("ann"));
    assert!(matches!(
        release(&resolved, &id("ann"), 1),
        Err(DeskError::WrongState { .. })
    ));
}

#[test]
fn transfer_keeps_status_and_the_old_owner_in_the_swarm() {
    let t = ticket(TicketStatus::WaitingCustomer, Some("ann"));
    let m = transfer(&t, &id("ann"), &expert("bob", Rank::L3, 0), 1).unwrap();
    assert_eq!(m.state.owner, Some(id("bob")));
    assert_eq!(m.state.status, TicketStatus::WaitingCustomer);
    assert_eq!(m.state.members, vec![id("ann")]);
    assert!(transfer(&t, &id("ann"), &expert("ann", Rank::L3, 0), 1).is_err());
    assert!(transfer(&t, &id("cat"), &expert("bob", Rank::L3, 0), 1).is_err());
}

#[test]
fn status_moves_follow_the_table() {
    use TicketStatus::*;
    let allowed = [
        (Assigned, WaitingCustomer),
        (Assigned, Resolved),
        (WaitingVendor, Assigned),
        (WaitingCustomer, Closed),
        (Resolved, Assigned),
        (Resolved, Closed),
    ];
    for (from, to) in allowed {
        assert!(transition_allowed(from, to).is_ok(), "{from} -> {to}");
    }
    let refused = [
        (Open, Resolved),
        (Assigned, Open),
        (Closed, Assigned),
        (Resolved, WaitingCustomer),
        (Assigned, Assigned),
    ];
    for (from, to) in refused {
        assert!(transition_allowed(from, to).is_err(), "{from} -> {to}");
    }
    let unowned = ticket(Open, None);
    assert!(matches!(
        update_status(&unowned, &id("ann"), Resolved, String::new(), None, 0),
        Err(DeskError::NotOwner { owner: None, .. })
    ));
}

#[test]
fn customer_reply_ends_the_wait_on_them() {
    let t = ticket(TicketStatus::WaitingCustomer, Some("ann"));
    let moves = post_message(&t, Author::Requester, "hi".into(), Visibility::Public, 0).unwrap();
    assert_eq!(moves.len(), 2);
    assert_eq!(moves[1].state.status, TicketStatus::Assigned);
    assert_eq!(moves[1].state.version, 5);
    assert!(post_message(&t, Author::Requester, "x".into(), Visibility::Internal, 0).is_err());
    let closed = ticket(TicketStatus::Closed, Some("ann"));
    assert!(post_message(&closed, Author::Expert, "x".into(), Visibility::Public, 0).is_err());
}

#[test]
fn ownership_delta_tracks_active_work() {
    let assigned = ticket(TicketStatus::Assigned, Some("ann")).state;
    let mut resolved = assigned.clone();
    resolved.status = TicketStatus::Resolved;
    assert_eq!(ownership_delta(&assigned, &resolved), vec![(id("ann"), -1)]);
    assert_eq!(ownership_delta(&resolved, &assigned), vec![(id("ann"), 1)]);
    let mut moved = assigned.clone();
    moved.owner = Some(id("bob"));
    assert_eq!(
        ownership_delta(&assigned, &moved),
        vec![(id("ann"), -1), (id("bob"), 1)]
    );
    assert!(ownership_delta(&assigned, &assigned).is_empty());
}

#[test]
fn help_request_adds_only_new_tags() {
    let t = ticket(TicketStatus::Assigned, Some("ann"));
    let skills = vec![
        SkillRequirement {
            tag: tag("net"),
            min_rank: Rank::L1,
        },
        SkillRequirement {
            tag: tag("db"),
            min_rank: Rank::L1,
        },
    ];
    let m = request_help(&t, &id("ann"), skills.clone(), String::new(), 0).unwrap();
    assert_eq!(m.state.help_tags, vec![tag("db")]);
    assert!(matches!(
        request_help(&t, &id("zed"), skills, String::new(), 0),
        Err(DeskError::PermissionDenied(_))
    ));
}
#[test]
fn waiting_on_a_vendor_names_them_and_only_then() {
    let t = ticket(TicketStatus::Assigned, Some("ann"));
    let acme = VendorRef {
        name: "acme".into(),
        reference: "CASE-7".into(),
    };
    let to = TicketStatus::WaitingVendor;
    let m = update_status(&t, &id("ann"), to, String::new(), Some(acme.clone()), 1).unwrap();
    assert_eq!(m.state.vendor, Some(acme.clone()));
    for missing in [
        None,
        Some(VendorRef {
            name: "acme".into(),
            reference: " ".into(),
        }),
    ] {
        let err = update_status(&t, &id("ann"), to, String::new(), missing, 1).unwrap_err();
        assert!(matches!(err, DeskError::Invalid { .. }), "{err}");
    }
    let resolved = TicketStatus::Resolved;
    let err = update_status(&t, &id("ann"), resolved, String::new(), Some(acme), 1);
    assert!(matches!(err, Err(DeskError::Invalid { field, .. }) if field == "vendor_name"));
}

#[test]
fn a_resolution_is_rated_once_and_reopening_clears_it() {
    let open = ticket(TicketStatus::Assigned, Some("ann"));
    assert!(matches!(
        rate(&open, 5, String::new(), 1),
        Err(DeskError::WrongState { .. })
    ));
    let resolved = ticket(TicketStatus::Resolved, Some("ann"));
    for bad in [0, 6, 300] {
        assert!(matches!(
            rate(&resolved, bad, String::new(), 1),
            Err(DeskError::Invalid { field, .. }) if field == "score"
        ));
    }
    let rated = rate(&resolved, 4, "quick".into(), 1).unwrap();
    assert_eq!(rated.state.rating.as_ref().map(|r| r.score), Some(4));
    let again = Ticket {
        header: resolved.header.clone(),
        state: rated.state,
    };
    assert!(matches!(
        rate(&again, 5, String::new(), 2),
        Err(DeskError::AlreadyRated { score: 4, .. })
    ));
    // The customer writes back: reopened, the rating is gone.
    let moves = post_message(
        &again,
        Author::Requester,
        "still broken".into(),
        Visibility::Public,
        3,
    )
    .unwrap();
    let reopened = &moves[1].state;
    assert_eq!(reopened.status, TicketStatus::Assigned);
    assert_eq!(reopened.rating, None);
}

#[test]
fn an_experts_public_message_meets_the_first_response_target() {
    let policy = crate::domain::SlaPolicy::around_the_clock(5, 15, 60);
    let mut t = ticket(TicketStatus::Assigned, Some("ann"));
    t.state.sla = policy.fresh_clocks();
    let note = post_message(&t, Author::Expert, "n".into(), Visibility::Internal, 9).unwrap();
    assert!(!matches!(
        note[0].state.sla.first_response.state,
        ClockState::Met { .. }
    ));
    let reply = post_message(&t, Author::Expert, "r".into(), Visibility::Public, 9).unwrap();
    assert!(matches!(
        reply[0].state.sla.first_response.state,
        ClockState::Met { at: 9, .. }
    ));
}

#[test]
fn a_breach_escalates_once_to_its_named_swarm() {
    let mut t = ticket(TicketStatus::Open, None);
    t.state.sla.own.state = ClockState::Running { due: 100 };
    t.state.sla.resolve.state = ClockState::Running { due: 100 };
    assert!(breach(&t, SlaTarget::Own, 99).is_none());
    let m = breach(&t, SlaTarget::Own, 100).unwrap();
    assert_eq!(m.state.escalated, vec![NamedSwarm::Triage.tag()]);
    assert!(matches!(
        m.kind,
        EventKind::SlaBreached {
            target: SlaTarget::Own,
            due: 100
        }
    ));
    t.state = m.state;
    assert!(breach(&t, SlaTarget::Own, 200).is_none(), "only once");
    let m = breach(&t, SlaTarget::Resolve, 200).unwrap();
    assert_eq!(
        m.state.escalated,
        vec![NamedSwarm::Triage.tag(), NamedSwarm::Backlog.tag()]
    );
}

#[test]
fn losing_the_owner_reopens_without_declining() {
    let t = ticket(TicketStatus::WaitingCustomer, Some("ann"));
    let m = owner_lost(&t, "offline", 5).unwrap();
    assert_eq!(m.state.status, TicketStatus::Open);
    assert_eq!(m.state.owner, None);
    assert!(m.state.declined.is_empty());
    assert!(owner_lost(&ticket(TicketStatus::Open, None), "x", 5).is_err());
    assert!(owner_lost(&ticket(TicketStatus::Resolved, Some("ann")), "x", 5).is_err());
}
