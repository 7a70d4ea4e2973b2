//! What the simulated clients do, and the faults the simulated log meets.

use std::sync::Arc;
use std::time::Duration;

use super::{expert_id, subscribe, tag, Rng, Watched, World, EXPERTS};
use crate::desk::NewTicket;
use crate::domain::{
    ContactChannel, DeskError, Presence, Priority, Rank, SkillRequirement, TicketId, TicketKind,
    TicketStatus, Visibility,
};
use crate::hub::Hub;
use crate::store::memory::{Fault, MemoryLog};
use crate::store::{Change, ExpertStore, Log};

/// A fault for a coming append: another writer appends first, the append
/// is lost or stored without an answer, or the node dies at it.
pub(super) async fn inject(world: &mut World, rng: &mut Rng) -> Result<(), String> {
    match rng.below(5) {
        0 => {
            // A real second writer, caught up, changes an expert's presence.
            let other = MemoryLog::open(world.stream.clone(), Arc::new(Hub::new(8)))
                .map_err(|e| e.to_string())?;
            let id = expert_id(rng.below(EXPERTS));
            let mut expert = other
                .state()
                .expert(&id)
                .map_err(|e| e.to_string())?
                .ok_or("an expert is missing")?;
            expert.presence = if expert.presence == Presence::Available {
                Presence::Away
            } else {
                Presence::Available
            };
            expert.version += 1;
            other
                .append(Change::Expert(expert))
                .map_err(|e| format!("the other writer: {e}"))?;
        }
        1 => world.log.inject(Fault::TimeoutLost),
        2 => world.log.inject(Fault::TimeoutStored),
        _ => world.log.inject(Fault::Crash {
            stored: rng.chance(50),
        }),
    }
    Ok(())
}

fn pick_ticket(world: &World, rng: &mut Rng) -> Option<TicketId> {
    (!world.tickets.is_empty()).then(|| world.tickets[rng.below(world.tickets.len())])
}

/// Opens expert `n`'s stream after position `after`.
pub(super) async fn watch(world: &mut World, n: usize, after: u64) -> Result<(), DeskError> {
    let stream = subscribe(&world.desk, n, after).await?;
    if after > 0 {
        world.resumed += 1;
    }
    world.streams[n] = Some(Watched {
        stream,
        delivered: Vec::new(),
        checked: 0,
        checked_upto: after,
    });
    Ok(())
}

/// A create, with a request id now and then (a new one, or a retry of an
/// earlier one, answered or not); its title names its request id, so
/// that a request applied twice shows as two tickets.
async fn create(world: &mut World, rng: &mut Rng) -> Result<bool, DeskError> {
    let request_id = match rng.below(4) {
        0 => None,
        1 if !world.answered.is_empty() => {
            let n = rng.below(world.answered.len());
            world.answered.keys().nth(n).cloned()
        }
        2 if !world.unanswered.is_empty() => {
            Some(world.unanswered[rng.below(world.unanswered.len())].clone())
        }
        _ => Some(format!("req-{}", rng.next_u64() % 1_000_000)),
    };
    let title = match &request_id {
        Some(r) => format!("sim {r}"),
        None => "sim".to_owned(),
    };
    let outcome = world
        .desk
        .create_ticket(NewTicket {
            title,
            description: String::new(),
            requester: "cust".into(),
            channel: ContactChannel::Chat,
            kind: TicketKind::Incident,
            priority: [Priority::P1, Priority::P2, Priority::P3, Priority::P3][rng.below(4)],
            skills: vec![SkillRequirement {
                tag: tag(),
                min_rank: [Rank::L1, Rank::L2][rng.below(2)],
            }],
            request_id: request_id.clone(),
            created_by: None,
        })
        .await;
    let (ticket, _, _) = match outcome {
        Ok(created) => created,
        Err(e) => {
            if let Some(r) = request_id {
                if !world.answered.contains_key(&r) && !world.unanswered.contains(&r) {
                    world.unanswered.push(r);
                }
            }
            return Err(e);
        }
    };
    if let Some(r) = request_id {
        if let Some(before) = world.answered.get(&r) {
            if *before != ticket.id() {
                return Err(DeskError::Storage(format!(
                    "IDEMPOTENCY: {r} named {before}, now {}",
                    ticket.id()
                )));
            }
        }
        world.unanswered.retain(|u| u != &r);
        world.answered.insert(r, ticket.id());
    }
    if !world.tickets.contains(&ticket.id()) {
        world.tickets.push(ticket.id());
    }
    Ok(true)
}

/// One random operation; true if it was an acknowledged create.
pub(super) async fn act(world: &mut World, rng: &mut Rng) -> Result<bool, DeskError> {
    let desk = world.desk.clone();
    let expert = expert_id(rng.below(EXPERTS));
    match rng.below(11) {
        0..=2 => create(world, rng).await,
        3 => {
            let Some(id) = pick_ticket(world, rng) else {
                return Ok(false);
            };
            desk.claim(id, &expert).await.map(|_| false)
        }
        4 => {
            let Some(id) = pick_ticket(world, rng) else {
                return Ok(false);
            };
            let to = expert_id(rng.below(EXPERTS));
            desk.transfer(id, &expert, &to).await.map(|_| false)
        }
        5 => {
            let Some(id) = pick_ticket(world, rng) else {
                return Ok(false);
            };
            desk.release(id, &expert).await.map(|_| false)
        }
        6 => {
            let Some(id) = pick_ticket(world, rng) else {
                return Ok(false);
            };
            let to = [
                TicketStatus::Resolved,
                TicketStatus::Closed,
                TicketStatus::WaitingCustomer,
                TicketStatus::Assigned,
            ][rng.below(4)];
            desk.update_status(id, &expert, to, String::new(), None, None)
                .await
                .map(|_| false)
        }
        7 => {
            let Some(id) = pick_ticket(world, rng) else {
                return Ok(false);
            };
            let author = if rng.chance(50) {
                "cust".to_owned()
            } else {
                expert.to_string()
            };
            desk.post_message(id, &author, "hello".into(), Visibility::Public, None, None)
                .await
                .map(|_| false)
        }
        8 => {
            let presence = [Presence::Available, Presence::Away][rng.below(2)];
            desk.set_presence(&expert, presence).await.map(|_| false)
        }
        9 => {
            // A stream dropped (what it delivered checked first, as its
            // client saw it), or opened: from the start, or resumed where
            // the last one stopped.
            let n = rng.below(EXPERTS);
            if world.streams[n].is_some() {
                super::invariants::check_stream(world, n)
                    .await
                    .map_err(DeskError::Storage)?;
                if let Some(watched) = world.streams[n].take() {
                    world.resume_from[n] = watched.checked_upto;
                }
            } else {
                let after = if rng.chance(70) {
                    world.resume_from[n]
                } else {
                    0
                };
                watch(world, n, after).await?;
            }
            Ok(false)
        }
        _ => {
            // Time passes and the deadlines due are acted on (a failed one
            // is tried again a second later, as the timer task does).
            world
                .clock
                .advance(Duration::from_secs(rng.below(900) as u64));
            world.desk.fire_due();
            Ok(false)
        }
    }
}
