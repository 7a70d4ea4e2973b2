//! What must hold of any state a log was applied to, whatever wrote it:
//! - every owned ticket has one owner, a known expert, and an active
//!   status; no active ticket is without one;
//! - each expert's load is the number of active tickets naming them;
//! - positions are contiguous from 1;
//! - each service-level deadline is recorded at most once.
//!
//! The simulator checks them after every step; the cluster tests check
//! them on a fresh replay of the whole log.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::event::EventKind;
use crate::domain::{ExpertId, TicketId, TicketStatus};
use crate::store::State;

/// What a state held that passed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub tickets: usize,
    pub last_position: u64,
    /// Service-level breaches recorded, each once.
    pub breaches: usize,
}

/// Checks `state`; the error names the first thing that does not hold.
pub fn check(state: &dyn State) -> Result<Checked, String> {
    let err = |e: crate::store::StoreError| e.to_string();
    let tickets = state.tickets_from(TicketId(1), usize::MAX).map_err(err)?;
    let experts = state.experts().map_err(err)?;
    let mut load: BTreeMap<ExpertId, u32> = BTreeMap::new();
    for t in &tickets {
        match (&t.state.owner, t.state.status.is_active()) {
            (Some(owner), true) => {
                if !experts.iter().any(|e| &e.id == owner) {
                    return Err(format!("{} is owned by unknown {owner}", t.id()));
                }
                *load.entry(owner.clone()).or_default() += 1;
            }
            (Some(_), false) if t.state.status == TicketStatus::Open => {
                return Err(format!("{} is open with an owner", t.id()));
            }
            (None, true) => return Err(format!("{} is {} with no owner", t.id(), t.state.status)),
            _ => {}
        }
    }
    for e in &experts {
        let counted = load.get(&e.id).copied().unwrap_or(0);
        if e.owned_open != counted {
            return Err(format!(
                "{} has load {} but owns {counted} active tickets",
                e.id, e.owned_open
            ));
        }
    }
    let last = state.last_position();
    let events = state.events_between(0, last, usize::MAX).map_err(err)?;
    if events.iter().map(|e| e.position).ne(1..=last) {
        return Err(format!("positions are not 1..={last}"));
    }
    let mut breaches = BTreeSet::new();
    for e in &events {
        if let EventKind::SlaBreached { target, due } = &e.kind {
            if !breaches.insert((e.ticket_id(), *target, *due)) {
                return Err(format!(
                    "{}'s {target} deadline {due} recorded twice (again at {})",
                    e.ticket_id(),
                    e.position
                ));
            }
        }
    }
    Ok(Checked {
        tickets: tickets.len(),
        last_position: last,
        breaches: breaches.len(),
    })
}
