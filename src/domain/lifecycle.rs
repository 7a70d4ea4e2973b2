//! Moves of one ticket: each takes the ticket as it is and returns the state
//! after the move with the event that records it, or the reason it may not
//! happen. Pure: the desk stores what these return.

use super::error::DeskError;
use super::event::EventKind;
use super::model::{
    Expert, ExpertId, SkillRequirement, Tag, Ticket, TicketState, TicketStatus, UnixMicros,
    Visibility,
};
use super::routing::check_can_take;

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

fn take_ownership(state: &mut TicketState, owner: &ExpertId) {
    state.status = TicketStatus::Assigned;
    state.owner = Some(owner.clone());
    state.members.retain(|m| m != owner);
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
    take_ownership(&mut state, to);
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
    take_ownership(&mut state, &expert.id);
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
    take_ownership(&mut state, &to.id);
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

/// The owner gives the ticket up: it is open again, and routing will not
/// hand it straight back to them.
pub fn release(ticket: &Ticket, expert: &ExpertId, now: UnixMicros) -> Result<Move, DeskError> {
    require_owner(ticket, expert)?;
    require_active(ticket, "only an open ticket can be released")?;
    let mut state = next(ticket, now);
    state.status = TicketStatus::Open;
    state.owner = None;
    if !state.declined.contains(expert) {
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

/// The owner moves the ticket: waiting on the customer or a vendor, back to
/// work, resolved, closed, or reopened from resolved.
pub fn update_status(
    ticket: &Ticket,
    expert: &ExpertId,
    to: TicketStatus,
    note: String,
    now: UnixMicros,
) -> Result<Move, DeskError> {
    if to == TicketStatus::Open {
        return Err(DeskError::invalid(
            "status",
            "OPEN is reached by releasing the ticket (ReleaseTicket)",
        ));
    }
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
    Ok(Move {
        state,
        kind: EventKind::StatusChanged { from, to, note },
    })
}

/// Who is posting a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Author {
    /// The ticket's requester (a bot relaying the customer).
    Requester,
    Expert,
}

/// Appends a message. A customer's public reply to a ticket waiting on them
/// puts it back to work (a second move, returned after the message).
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
    let state = next(ticket, now);
    let mut moves = vec![Move {
        state,
        kind: EventKind::Message { body, visibility },
    }];
    if author == Author::Requester && ticket.state.status == TicketStatus::WaitingCustomer {
        let after_message = Ticket {
            header: ticket.header.clone(),
            state: moves[0].state.clone(),
        };
        let mut state = next(&after_message, now);
        state.status = TicketStatus::Assigned;
        moves.push(Move {
            state,
            kind: EventKind::StatusChanged {
                from: TicketStatus::WaitingCustomer,
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
                help_tags: vec![],
                declined: vec![],
                updated_at: 0,
                version: 3,
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
    fn release_reopens_and_remembers_the_decliner() {
        let t = ticket(TicketStatus::WaitingVendor, Some("ann"));
        let m = release(&t, &id("ann"), 1).unwrap();
        assert_eq!(m.state.status, TicketStatus::Open);
        assert_eq!(m.state.owner, None);
        assert_eq!(m.state.declined, vec![id("ann")]);
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
            update_status(&unowned, &id("ann"), Resolved, String::new(), 0),
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
}
