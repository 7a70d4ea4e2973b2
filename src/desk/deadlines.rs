//! Deadlines and background work: service-level clocks and owners' grace,
//! run by one timer task, and the stats keeper's feed.
use super::{Desk, Inner};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::lifecycle::{self};
use crate::domain::{DeskError, ExpertId, Priority, SlaTarget, Ticket, TicketId};
use crate::timers::Timers;

/// Something the desk must look at again at a given time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Deadline {
    /// The earliest pending service-level deadline of a ticket.
    Sla(TicketId),
    /// An owner of urgent tickets who is offline: their grace runs out.
    OwnerAway(ExpertId),
}

pub(super) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Whether losing its owner's presence costs a ticket its owner.
pub(super) fn is_urgent(priority: Priority) -> bool {
    priority <= Priority::P2
}

/// Sets a ticket's service-level timer to its earliest pending deadline.
pub(super) fn follow_clocks(timers: &Timers<Deadline>, ticket: &Ticket) {
    let key = Deadline::Sla(ticket.id());
    match ticket.state.sla.pending().map(|(_, due)| due).min() {
        Some(due) => timers.set(key, due),
        None => timers.cancel(&key),
    }
}

impl Desk {
    /// Starts the background work, until `stop`: deadlines, lapsed
    /// activity and stats.
    pub fn start_background(&self, stop: CancellationToken) {
        self.start_timers(stop.clone());
        self.start_activity_sweep(stop.clone());
        self.inner.stats.start(&self.inner.hub, stop);
    }

    /// Runs the deadlines (service levels, owners' grace) until `stop`.
    /// The task holds the desk weakly: dropping every desk ends it too.
    pub(super) fn start_timers(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let timers = self.inner.timers.clone();
        let clock = self.inner.options.clock.clone();
        tokio::spawn(async move {
            timers
                .run(clock.as_ref(), &stop, |due| {
                    if let Some(inner) = weak.upgrade() {
                        Desk { inner }.fire(due);
                    }
                })
                .await;
        })
    }

    /// Acts now on every deadline due by the desk's clock; how many there
    /// were. For the simulator, which runs no timer task so that a seed
    /// replays exactly.
    pub(crate) fn fire_due(&self) -> usize {
        let due = self.inner.timers.take_due(self.now());
        let count = due.len();
        if count > 0 {
            self.fire(due);
        }
        count
    }

    /// Acts on deadlines that came due; one that fails is tried again a
    /// second later (what it would change is re-checked then).
    pub(super) fn fire(&self, due: Vec<Deadline>) {
        if !self.writes() {
            // A follower's deadlines are the writer's to act on; this node
            // sets them all again from the log if it becomes the writer.
            return;
        }
        for deadline in due {
            let done = match &deadline {
                Deadline::Sla(id) => self.fire_sla(*id),
                Deadline::OwnerAway(expert) => self.fire_owner_away(expert),
            };
            if let Err(e) = done {
                if matches!(e, DeskError::CatchingUp(_)) {
                    // Timers do not wait: the catch-up runs beside them.
                    let desk = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = desk.ready().await {
                            tracing::warn!(error = %e, "catching up from the log failed");
                        }
                    });
                }
                tracing::warn!(?deadline, error = %e, "deadline could not be acted on; retrying");
                self.inner.timers.set(deadline, self.now() + 1_000_000);
            }
        }
    }

    /// Records every breached target of one ticket, in one commit.
    pub(super) fn fire_sla(&self, id: TicketId) -> Result<(), DeskError> {
        if self.inner.shutdown.is_cancelled() {
            return Ok(());
        }
        let mut state = self.lock();
        let now = self.now();
        let ticket = self.load_ticket(id)?;
        let mut current = ticket.clone();
        let mut moves = Vec::new();
        for target in SlaTarget::ALL {
            if let Some(m) = lifecycle::breach(&current, *target, now) {
                tracing::warn!(ticket = %id, target = %target, "service level breached");
                current.state = m.state.clone();
                moves.push(m);
            }
        }
        if moves.is_empty() {
            follow_clocks(&self.inner.timers, &ticket);
            return Ok(());
        }
        self.commit_moves(&mut state, &ticket, None, moves, "sla", None)?;
        Ok(())
    }

    /// Takes the active P1 and P2 tickets of an owner whose grace ran out
    /// back to routing.
    pub(super) fn fire_owner_away(&self, expert: &ExpertId) -> Result<(), DeskError> {
        if self.inner.shutdown.is_cancelled() {
            return Ok(());
        }
        let mut state = self.lock();
        if state.is_online(expert) {
            return Ok(());
        }
        let now = self.now();
        if self.absence_deadline(&state, expert) > now {
            self.watch_absence(&state, expert);
            return Ok(());
        }
        let grace = self.inner.options.owner_grace;
        let owned: Vec<TicketId> = state
            .urgent
            .get(expert)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        let reason = format!(
            "offline for more than {}",
            humantime::format_duration(grace)
        );
        for id in owned {
            let ticket = self.load_ticket(id)?;
            self.take_from_owner(&mut state, &ticket, &reason, now)?;
        }
        Ok(())
    }
}
