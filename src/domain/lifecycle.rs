//! Moves of one ticket: each takes the ticket as it is and returns the state
//! after the move with the event that records it, or the reason it may not
//! happen. Pure: the desk stores what these return.

use std::sync::Arc;

use super::error::DeskError;
use super::event::EventKind;
use super::knowledge::ArticleId;
use super::model::{
    check_short_text, Expert, ExpertId, NamedSwarm, Priority, Rating, SkillRequirement, Tag,
    Ticket, TicketHeader, TicketState, TicketStatus, UnixMicros, VendorRef, Visibility, MAX_SCORE,
    MIN_SCORE,
};
use super::routing::check_can_take;
use super::sla::{ClockState, SlaClocks, SlaTarget};

/// An owner who releases a ticket this soon after getting it has declined
/// it: routing will not offer it to them again.
pub const DECLINE_WINDOW_MICROS: i64 = 60_000_000;

/// One move: the state after it and the event that records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub state: TicketState,
    pub kind: EventKind,
}

/// The state an event starts from: one version on, touched now.
fn next(ticket: &Ticket, now: UnixMicros) -> TicketState {
    let mut state = ticket.state.clone();
    state.version += 1;
    state.updated_at = now.max(state.updated_at);
    state
}

fn refuse_closed(ticket: &Ticket, why: &'static str) -> Result<(), DeskError> {
    if ticket.state.status == TicketStatus::Closed {
        return Err(DeskError::WrongState {
            ticket: ticket.id(),
            status: TicketStatus::Closed,
            why,
        });
    }
    Ok(())
}

fn require_owner(ticket: &Ticket, expert: &ExpertId) -> Result<(), DeskError> {
    if ticket.state.owner.as_ref() != Some(expert) {
        return Err(DeskError::NotOwner {
            ticket: ticket.id(),
            expert: expert.clone(),
            owner: ticket.state.owner.clone(),
        });
    }
    Ok(())
}

fn require_active(ticket: &Ticket, why: &'static str) -> Result<(), DeskError> {
    if !ticket.state.status.is_active() {
        return Err(DeskError::WrongState {
            ticket: ticket.id(),
            status: ticket.state.status,
            why,
        });
    }
    Ok(())
}

fn take_ownership(state: &mut TicketState, owner: &ExpertId, now: UnixMicros) {
    state.status = TicketStatus::Assigned;
    state.owner = Some(owner.clone());
    state.owned_since = Some(now);
    state.members.retain(|m| m != owner);
}

/// A new ticket: the blank it starts from (version 0: nothing stored yet)
/// and its first moves. It is created with `owner` if routing found one,
/// reaches the sev1 swarm at once if it is a P1, and records the articles
/// suggested for it.
pub fn create(
    header: Arc<TicketHeader>,
    owner: Option<&ExpertId>,
    clocks: SlaClocks,
    suggested: Vec<ArticleId>,
    now: UnixMicros,
) -> (Ticket, Vec<Move>) {
    let blank = Ticket {
        state: TicketState::blank(now, clocks),
        header,
    };
    let mut first = blank.state.clone();
    first.version = 1;
    if let Some(owner) = owner {
        take_ownership(&mut first, owner, now);
    }
    if blank.header.priority == Priority::P1 {
        first.escalated.push(NamedSwarm::Sev1.tag());
    }
    let suggestions = (!suggested.is_empty()).then(|| {
        annotate(
            &first,
            EventKind::ArticlesSuggested {
                articles: suggested,
            },
        )
    });
    let created = Move {
        state: first,
        kind: EventKind::Created,
    };
    let moves = std::iter::once(created).chain(suggestions).collect();
    (blank, moves)
}

/// Routing hands an unowned ticket to `to` (eligibility was checked by routing).
pub fn assign(ticket: &Ticket, to: &ExpertId, now: UnixMicros) -> Result<Move, DeskError> {
    if let Some(owner) = &ticket.state.owner {
        return Err(DeskError::AlreadyOwned {
            ticket: ticket.id(),
            owner: owner.clone(),
        });
    }
    let mut state = next(ticket, now);
    take_ownership(&mut state, to, now);
    Ok(Move {
        state,
        kind: EventKind::Assigned { to: to.clone() },
    })
}

/// An expert takes an unowned ticket; the first claim wins.
pub fn claim(ticket: &Ticket, expert: &Expert, now: UnixMicros) -> Result<Move, DeskError> {
    if let Some(owner) = &ticket.state.owner {
        return Err(DeskError::AlreadyOwned {
            ticket: ticket.id(),
            owner: owner.clone(),
        });
    }
    check_can_take(expert, &ticket.header.skills)?;
    let mut state = next(ticket, now);
    take_ownership(&mut state, &expert.id, now);
    Ok(Move {
        state,
        kind: EventKind::Claimed {
            by: expert.id.clone(),
        },
    })
}

/// The owner hands the ticket to another qualified expert with room; the
/// previous owner stays on as a swarm member, since they hold the context.
pub fn transfer(
    ticket: &Ticket,
    from: &ExpertId,
    to: &Expert,
    now: UnixMicros,
) -> Result<Move, DeskError> {
    require_owner(ticket, from)?;
    require_active(ticket, "only an open ticket can be transferred")?;
    if &to.id == from {
        return Err(DeskError::invalid(
            "to_expert_id",
            "a ticket cannot be transferred to its own owner",
        ));
    }
    check_can_take(to, &ticket.header.skills)?;
    let mut state = next(ticket, now);
    let status = state.status;
    take_ownership(&mut state, &to.id, now);
    state.status = status;
    if !state.members.contains(from) {
        state.members.push(from.clone());
    }
    Ok(Move {
        state,
        kind: EventKind::Transferred {
            from: from.clone(),
            to: to.id.clone(),
        },
    })
}

/// The owner gives the ticket up: it is open again. Within
/// [`DECLINE_WINDOW_MICROS`] of getting it, that is a decline, and routing
/// will not hand it back to them.
pub fn release(ticket: &Ticket, expert: &ExpertId, now: UnixMicros) -> Result<Move, DeskError> {
    require_owner(ticket, expert)?;
    require_active(ticket, "only an open ticket can be released")?;
    let mut state = next(ticket, now);
    state.status = TicketStatus::Open;
    state.owner = None;
    let declined = ticket
        .state
        .owned_since
        .is_some_and(|since| now - since < DECLINE_WINDOW_MICROS);
    state.owned_since = None;
    if declined && !state.declined.contains(expert) {
        state.declined.push(expert.clone());
    }
    Ok(Move {
        state,
        kind: EventKind::Released {
            from: expert.clone(),
        },
    })
}

/// Becomes a collaborator; `None` when already on the ticket (nothing to record).
pub fn join(
    ticket: &Ticket,
    expert: &ExpertId,
    now: UnixMicros,
) -> Result<Option<Move>, DeskError> {
    refuse_closed(ticket, "a closed ticket's swarm cannot be joined")?;
    if ticket.involves(expert) {
        return Ok(None);
    }
    let mut state = next(ticket, now);
    state.members.push(expert.clone());
    Ok(Some(Move {
        state,
        kind: EventKind::Joined {
            expert: expert.clone(),
        },
    }))
}

/// Stops collaborating; `None` when not a member. The owner cannot leave.
pub fn leave(
    ticket: &Ticket,
    expert: &ExpertId,
    now: UnixMicros,
) -> Result<Option<Move>, DeskError> {
    if ticket.state.owner.as_ref() == Some(expert) {
        return Err(DeskError::WrongState {
            ticket: ticket.id(),
            status: ticket.state.status,
            why: "its owner cannot leave the swarm; transfer or release it instead",
        });
    }
    if !ticket.state.members.contains(expert) {
        return Ok(None);
    }
    let mut state = next(ticket, now);
    state.members.retain(|m| m != expert);
    Ok(Some(Move {
        state,
        kind: EventKind::Left {
            expert: expert.clone(),
        },
    }))
}

/// The owner or a member widens the audience to more skill channels.
pub fn request_help(
    ticket: &Ticket,
    expert: &ExpertId,
    skills: Vec<SkillRequirement>,
    note: String,
    now: UnixMicros,
) -> Result<Move, DeskError> {
    refuse_closed(ticket, "help cannot be requested on a closed ticket")?;
    if !ticket.involves(expert) {
        return Err(DeskError::PermissionDenied(format!(
            "only the owner or a swarm member of {} may request help; {expert} is neither",
            ticket.id()
        )));
    }
    if skills.is_empty() {
        return Err(DeskError::invalid(
            "skills",
            "name at least one skill to ask for",
        ));
    }
    let mut state = next(ticket, now);
    let mut added: Vec<Tag> = Vec::new();
    for req in &skills {
        if !ticket.audience().any(|t| t == &req.tag) && !added.contains(&req.tag) {
            added.push(req.tag.clone());
        }
    }
    state.help_tags.extend(added.iter().cloned());
    Ok(Move {
        state,
        kind: EventKind::HelpRequested {
            skills,
            added,
            note,
        },
    })
}

/// Whether the owner may move a ticket from `from` to `to`; the reason if not.
pub fn transition_allowed(from: TicketStatus, to: TicketStatus) -> Result<(), &'static str> {
    use TicketStatus::*;
    match (from, to) {
        (_, Open) => Err("a ticket becomes open only by being released"),
        (a, b) if a == b => Err("it is already there"),
        (Open, _) => Err("it has no owner"),
        (Closed, _) => Err("a closed ticket is final"),
        (Resolved, Assigned | Closed) => Ok(()),
        (Resolved, _) => Err("reopen it (assigned) first"),
        (Assigned | WaitingCustomer | WaitingVendor, _) => Ok(()),
    }
}

/// Checks a vendor named on a status change: required for WAITING_VENDOR
/// (name and reference), refused with any other status.
pub fn check_vendor(to: TicketStatus, vendor: Option<&VendorRef>) -> Result<(), DeskError> {
    match (to, vendor) {
        (TicketStatus::WaitingVendor, Some(v)) => {
            for (field, value) in [("vendor_name", &v.name), ("vendor_reference", &v.reference)] {
                if value.trim().is_empty() {
                    return Err(DeskError::invalid(
                        field,
                        "WAITING_VENDOR needs the vendor's name and their reference",
                    ));
                }
                check_short_text(field, value)?;
            }
            Ok(())
        }
        (TicketStatus::WaitingVendor, None) => Err(DeskError::invalid(
            "vendor_name",
            "WAITING_VENDOR needs the vendor's name and their reference",
        )),
        (_, Some(_)) => Err(DeskError::invalid(
            "vendor_name",
            "a vendor is named only when moving to WAITING_VENDOR",
        )),
        (_, None) => Ok(()),
    }
}

/// An event that records something about the ticket without changing it
/// (the suggestions made at creation, the knowledge a resolution used),
/// following the move that left it in `after`.
pub fn annotate(after: &TicketState, kind: EventKind) -> Move {
    let mut state = after.clone();
    state.version += 1;
    Move { state, kind }
}

/// The owner moves the ticket: waiting on the customer or a vendor (named
/// with their reference), back to work, resolved, closed, or reopened from
/// resolved (which clears the rating of the resolution that did not hold).
pub fn update_status(
    ticket: &Ticket,
    expert: &ExpertId,
    to: TicketStatus,
    note: String,
    vendor: Option<VendorRef>,
    now: UnixMicros,
) -> Result<Move, DeskError> {
    if to == TicketStatus::Open {
        return Err(DeskError::invalid(
            "status",
            "OPEN is reached by releasing the ticket (ReleaseTicket)",
        ));
    }
    check_vendor(to, vendor.as_ref())?;
    require_owner(ticket, expert)?;
    let from = ticket.state.status;
    transition_allowed(from, to).map_err(|why| DeskError::InvalidTransition {
        ticket: ticket.id(),
        from,
        to,
        why,
    })?;
    let mut state = next(ticket, now);
    state.status = to;
    if vendor.is_some() {
        state.vendor = vendor;
    }
    if from == TicketStatus::Resolved {
        state.rating = None;
    }
    Ok(Move {
        state,
        kind: EventKind::StatusChanged { from, to, note },
    })
}

/// The requester rates the resolution, once per resolution.
pub fn rate(
    ticket: &Ticket,
    score: u32,
    comment: String,
    now: UnixMicros,
) -> Result<Move, DeskError> {
    let score = u8::try_from(score)
        .ok()
        .filter(|s| (MIN_SCORE..=MAX_SCORE).contains(s))
        .ok_or_else(|| {
            DeskError::invalid(
                "score",
                format!("{score} is not a score from {MIN_SCORE} to {MAX_SCORE}"),
            )
        })?;
    let resolved = matches!(
        (ticket.state.status, ticket.state.sla.resolve.state),
        (TicketStatus::Resolved, _) | (TicketStatus::Closed, ClockState::Met { .. })
    );
    if !resolved {
        return Err(DeskError::WrongState {
            ticket: ticket.id(),
            status: ticket.state.status,
            why: "only a resolved ticket can be rated",
        });
    }
    if let Some(rating) = &ticket.state.rating {
        return Err(DeskError::AlreadyRated {
            ticket: ticket.id(),
            score: rating.score,
        });
    }
    let mut state = next(ticket, now);
    state.rating = Some(Rating {
        score,
        comment: comment.clone(),
        at: now,
    });
    Ok(Move {
        state,
        kind: EventKind::Rated { score, comment },
    })
}

/// Records a passed deadline, and sends the ticket to the named swarm that
/// deals with it; `None` when it is not due or was recorded already.
pub fn breach(ticket: &Ticket, target: SlaTarget, now: UnixMicros) -> Option<Move> {
    let due = ticket.state.sla.get(target).pending_due()?;
    let mut state = next(ticket, now);
    if !state.sla.breach(target, now) {
        return None;
    }
    let swarm = match target {
        SlaTarget::Own | SlaTarget::FirstResponse => NamedSwarm::Triage,
        SlaTarget::Resolve => NamedSwarm::Backlog,
    }
    .tag();
    if !state.escalated.contains(&swarm) {
        state.escalated.push(swarm);
    }
    Some(Move {
        state,
        kind: EventKind::SlaBreached { target, due },
    })
}

/// Takes an active ticket from its owner (who went offline), back to routing.
pub fn owner_lost(ticket: &Ticket, reason: &str, now: UnixMicros) -> Result<Move, DeskError> {
    let Some(owner) = ticket.state.owner.clone() else {
        return Err(DeskError::WrongState {
            ticket: ticket.id(),
            status: ticket.state.status,
            why: "it has no owner to lose",
        });
    };
    require_active(ticket, "only an active ticket's owner can be lost")?;
    let mut state = next(ticket, now);
    state.status = TicketStatus::Open;
    state.owner = None;
    state.owned_since = None;
    Ok(Move {
        state,
        kind: EventKind::OwnerLost {
            from: owner,
            reason: reason.to_owned(),
        },
    })
}

/// Who is posting a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Author {
    /// The ticket's requester (a bot relaying the customer).
    Requester,
    Expert,
}

/// Appends a message. An expert's public message meets the first-response
/// target. A customer's reply to a ticket waiting on them, or resolved,
/// puts it back to work (a second move, returned after the message): a
/// reply to a resolution reopens the ticket.
pub fn post_message(
    ticket: &Ticket,
    author: Author,
    body: String,
    visibility: Visibility,
    now: UnixMicros,
) -> Result<Vec<Move>, DeskError> {
    refuse_closed(ticket, "messages cannot be posted to a closed ticket")?;
    if author == Author::Requester && visibility == Visibility::Internal {
        return Err(DeskError::PermissionDenied(
            "the requester may only post PUBLIC messages".to_owned(),
        ));
    }
    let mut state = next(ticket, now);
    if author == Author::Expert && visibility == Visibility::Public {
        state.sla.meet(SlaTarget::FirstResponse, now);
    }
    let mut moves = vec![Move {
        state,
        kind: EventKind::Message { body, visibility },
    }];
    let from = ticket.state.status;
    let reply_reopens = matches!(from, TicketStatus::WaitingCustomer | TicketStatus::Resolved);
    if author == Author::Requester && reply_reopens {
        let after_message = Ticket {
            header: ticket.header.clone(),
            state: moves[0].state.clone(),
        };
        let mut state = next(&after_message, now);
        state.status = TicketStatus::Assigned;
        if from == TicketStatus::Resolved {
            state.rating = None;
        }
        moves.push(Move {
            state,
            kind: EventKind::StatusChanged {
                from,
                to: TicketStatus::Assigned,
                note: "the customer replied".to_owned(),
            },
        });
    }
    Ok(moves)
}

/// How a state change moves active-ticket counts: `(expert, -1 | +1)` pairs.
pub fn ownership_delta(before: &TicketState, after: &TicketState) -> Vec<(ExpertId, i32)> {
    let held = |s: &TicketState| s.owner.clone().filter(|_| s.status.is_active());
    match (held(before), held(after)) {
        (Some(a), Some(b)) if a == b => vec![],
        (a, b) => a
            .map(|a| (a, -1))
            .into_iter()
            .chain(b.map(|b| (b, 1)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
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
        let moves =
            post_message(&t, Author::Requester, "hi".into(), Visibility::Public, 0).unwrap();
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
}
