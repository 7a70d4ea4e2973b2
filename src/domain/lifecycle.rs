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
mod tests;
