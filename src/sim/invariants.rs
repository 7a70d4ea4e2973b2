//! What must hold after every step of a simulation:
//! - what holds of any state (`store::invariants`): one owner per owned
//!   ticket, loads, contiguous positions, each deadline recorded once;
//! - a fresh apply of the log reproduces the live state (tickets, events,
//!   experts);
//! - a request id is applied once: one ticket carries it;
//! - each service-level deadline is recorded at most once;
//! - every expert stream delivered exactly the events of the log its
//!   viewer sees, in order, with no gap and no duplicate, also across a
//!   resume;
//! - after a crash, every acknowledged write is there, unchanged;
//! - at the end, every deadline that came due was recorded.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures_util::FutureExt;

use super::{expert_id, World};
use crate::domain::{TicketEvent, TicketId};
use crate::store::memory::{MemoryLog, MemoryState};
use crate::store::{ExpertStore, State, TicketStore};

fn err(e: crate::store::StoreError) -> String {
    e.to_string()
}

/// The invariants, on the live state and against a fresh apply of the
/// log; returns how many service-level breaches the log records.
pub(super) fn check(world: &World) -> Result<usize, String> {
    let state = world.log.state();
    let checked = crate::store::invariants::check(state.as_ref())?;
    let tickets = state.tickets_from(TicketId(1), 100_000).map_err(err)?;
    let experts = state.experts().map_err(err)?;
    // A create's title names its request id.
    let mut titles = BTreeSet::new();
    for t in &tickets {
        if t.header.title != "sim" && !titles.insert(t.header.title.clone()) {
            return Err(format!(
                "'{}' was applied twice ({})",
                t.header.title,
                t.id()
            ));
        }
    }
    let events = state
        .events_between(0, checked.last_position, 1_000_000)
        .map_err(err)?;
    // The node's state is the log up to what it applied (an append stored
    // without an answer is in the log, and applied at the next catch-up).
    let replica = MemoryState::default();
    let applied = usize::try_from(world.log.applied()).unwrap_or(usize::MAX);
    for entry in world.stream.entries_after(0).into_iter().take(applied) {
        replica
            .apply(entry)
            .map_err(|e| format!("the log does not apply: {e}"))?;
    }
    let applied = replica
        .events_between(0, u64::MAX, 1_000_000)
        .map_err(err)?;
    if applied.len() != events.len() || applied.iter().zip(&events).any(|(a, b)| a != b) {
        return Err("a fresh apply of the log differs in its events".into());
    }
    let replayed = replica.experts().map_err(err)?;
    if replayed != experts {
        let differs = replayed
            .iter()
            .zip(&experts)
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("{a:?} applied afresh, {b:?} live"));
        return Err(format!(
            "a fresh apply of the log differs in its experts: {}",
            differs.unwrap_or_else(|| format!("{} against {}", replayed.len(), experts.len()))
        ));
    }
    if replica.tickets_from(TicketId(1), 100_000).map_err(err)? != tickets {
        return Err("a fresh apply of the log differs in its tickets".into());
    }
    Ok(checked.breaches)
}

/// After a restart: the node opened from the log holds every event the
/// old one had when it last acknowledged a write, unchanged, and every
/// answered request id still names its ticket.
pub(super) fn acknowledged_survived(
    world: &World,
    restarted: &MemoryLog,
    before: &[Arc<TicketEvent>],
) -> Result<(), String> {
    let state = restarted.state();
    let upto = world.acknowledged_upto;
    let after = state.events_between(0, upto, 1_000_000).map_err(err)?;
    if after.len() != before.len() || after.iter().zip(before).any(|(a, b)| a != b) {
        return Err(format!(
            "acknowledged events up to position {upto} differ after a restart \
             ({} before, {} after)",
            before.len(),
            after.len()
        ));
    }
    for (request, id) in &world.answered {
        if state.ticket(*id).map_err(err)?.is_none() {
            return Err(format!("{request} ({id}) lost on restart"));
        }
    }
    Ok(())
}

/// Every running service-level clock of a live ticket is still ahead: a
/// deadline that came due was recorded (for the end of a run, after time
/// moved on and the deadlines were acted on).
pub(super) fn no_deadline_missed(world: &World) -> Result<(), String> {
    let now = world.desk.now();
    let tickets = world
        .log
        .state()
        .tickets_from(TicketId(1), 100_000)
        .map_err(err)?;
    for t in &tickets {
        if let Some((target, due)) = t.state.sla.pending().find(|(_, due)| *due <= now) {
            return Err(format!(
                "{} ({}): its {target} deadline {due} passed unrecorded (now {now})",
                t.id(),
                t.state.status
            ));
        }
    }
    Ok(())
}

/// Takes what expert `n`'s open stream has ready, and checks that all it
/// delivered so far is exactly what its viewer sees of the log up to its
/// last delivery, in order.
pub(super) async fn check_stream(world: &mut World, n: usize) -> Result<(), String> {
    let Some(watched) = world.streams[n].as_mut() else {
        return Ok(());
    };
    loop {
        // Polled once: what is ready now (a zero timeout would wait for
        // the timer wheel's next tick).
        match watched.stream.subscription.next().now_or_never() {
            Some(Ok(delivery)) => watched.delivered.push(delivery.event.position),
            Some(Err(end)) => return Err(format!("e{n}'s stream ended: {end:?}")),
            None => break,
        }
    }
    let Some(&last) = watched.delivered.last() else {
        return Ok(());
    };
    if last <= watched.checked_upto {
        return match watched.delivered.len() == watched.checked {
            true => Ok(()),
            false => Err(format!("e{n}'s stream went back: {:?}", watched.delivered)),
        };
    }
    let expert = world
        .log
        .state()
        .expert(&expert_id(n))
        .map_err(err)?
        .ok_or("an expert is missing")?;
    let viewer = crate::domain::Viewer {
        expert: expert.id.clone(),
        channels: expert.effective_channels().into_iter().collect(),
        skills: expert.skills.clone(),
    };
    let expected: Vec<u64> = world
        .log
        .state()
        .events_between(watched.checked_upto, last, 1_000_000)
        .map_err(err)?
        .iter()
        .filter(|e| crate::domain::event::swarm_reason(e, &viewer).is_some())
        .map(|e| e.position)
        .collect();
    let new = &watched.delivered[watched.checked..];
    if new != expected.as_slice() {
        return Err(format!(
            "e{n}'s stream delivered {new:?} after position {}, the log says {expected:?}",
            watched.checked_upto
        ));
    }
    world.delivered += new.len();
    watched.checked = watched.delivered.len();
    watched.checked_upto = last;
    Ok(())
}
