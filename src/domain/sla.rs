//! Service-level clocks: a policy per priority with three targets (time to
//! own, to first response, to resolve), each counted in the working time of
//! a business calendar, and the rules that start, pause, resume and stop the
//! clocks as a ticket moves.
//!
//! A clock stores what it needs to survive a restart: its due time while it
//! runs, the working time left while it is paused. Whether a clock runs is a
//! function of the ticket's status alone ([`SlaTarget::runs_in`]), so every
//! move is tracked by one function, [`SlaPolicy::track`].

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::error::{quote, DeskError};
use super::model::{Priority, TicketState, TicketStatus, UnixMicros};

/// Microseconds of working time.
pub type WorkMicros = i64;

const MICROS_PER_MINUTE: i64 = 60_000_000;
/// Longest a calendar is searched for working time, in days; a deadline
/// further away than this counts as never.
const MAX_CALENDAR_DAYS: usize = 3 * 366;

numbered_enum! {
    /// What a policy sets a time limit on.
    SlaTarget {
        /// Until the ticket has its first owner.
        Own = 1 => "own",
        /// Until an expert's first PUBLIC message.
        FirstResponse = 2 => "first-response",
        /// Until the ticket is resolved; paused while it waits on the
        /// customer or a vendor.
        Resolve = 3 => "resolve",
    }
}

impl SlaTarget {
    /// Whether this target's clock counts while a ticket is in `status`.
    pub fn runs_in(self, status: TicketStatus) -> bool {
        use TicketStatus::*;
        match self {
            SlaTarget::Own | SlaTarget::FirstResponse => {
                matches!(status, Open | Assigned | WaitingCustomer | WaitingVendor)
            }
            SlaTarget::Resolve => matches!(status, Open | Assigned),
        }
    }
}

/// Working hours of one weekday: minutes after local midnight, `[open, close)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkingHours {
    open: u16,
    close: u16,
}

impl WorkingHours {
    /// Parses `HH:MM-HH:MM` (`24:00` closes at midnight).
    pub fn parse(field: &str, raw: &str) -> Result<Self, DeskError> {
        let bad = || {
            DeskError::invalid(
                field,
                format!(
                    "{} is not working hours of the form HH:MM-HH:MM",
                    quote(raw)
                ),
            )
        };
        let minutes = |s: &str| -> Option<u16> {
            let (h, m) = s.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
        };
        let (open, close) = raw.split_once('-').ok_or_else(bad)?;
        let (open, close) = (
            minutes(open).ok_or_else(bad)?,
            minutes(close).ok_or_else(bad)?,
        );
        if open >= close {
            return Err(DeskError::invalid(
                field,
                format!("{} closes before it opens", quote(raw)),
            ));
        }
        Ok(WorkingHours { open, close })
    }
}

/// When work happens: hours per weekday in a time zone, less holidays.
#[derive(Clone, Debug)]
pub struct Calendar {
    time_zone: TimeZone,
    /// Monday first.
    week: [Option<WorkingHours>; 7],
    holidays: BTreeSet<Date>,
}

impl Calendar {
    /// `week` is Monday first; `holidays` are `YYYY-MM-DD` local dates.
    pub fn new(
        field: &str,
        time_zone: &str,
        week: [Option<WorkingHours>; 7],
        holidays: &[String],
    ) -> Result<Self, DeskError> {
        let time_zone = TimeZone::get(time_zone).map_err(|e| {
            DeskError::invalid(
                format!("{field}.time_zone"),
                format!("unknown time zone {time_zone:?}: {e}"),
            )
        })?;
        if week.iter().all(Option::is_none) {
            return Err(DeskError::invalid(
                format!("{field}.hours"),
                "a calendar needs working hours on at least one weekday",
            ));
        }
        let holidays = holidays
            .iter()
            .map(|d| {
                d.parse::<Date>().map_err(|e| {
                    DeskError::invalid(
                        format!("{field}.holidays"),
                        format!("{d:?} is not a date (YYYY-MM-DD): {e}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Calendar {
            time_zone,
            week,
            holidays,
        })
    }

    fn instant(&self, date: Date, minutes: u16) -> Option<UnixMicros> {
        let (date, minutes) = if minutes >= 24 * 60 {
            (date.tomorrow().ok()?, minutes - 24 * 60)
        } else {
            (date, minutes)
        };
        let time = Time::new((minutes / 60) as i8, (minutes % 60) as i8, 0, 0).ok()?;
        let at = self.time_zone.to_timestamp(date.to_datetime(time)).ok()?;
        Some(at.as_microsecond())
    }

    /// Working intervals `[start, end)` that end after `from`, in order,
    /// the first clipped to start at `from`.
    fn intervals_from(&self, from: UnixMicros) -> impl Iterator<Item = (i64, i64)> + '_ {
        let first_day = Timestamp::from_microsecond(from)
            .map(|t| t.to_zoned(self.time_zone.clone()).date())
            .ok();
        // A day earlier too: its hours may run past midnight in local time
        // after a DST change, and it costs one skipped interval.
        let days = std::iter::successors(first_day.and_then(|d| d.yesterday().ok()), |d: &Date| {
            d.tomorrow().ok()
        })
        .take(MAX_CALENDAR_DAYS);
        days.filter(|d| !self.holidays.contains(d))
            .filter_map(move |d| {
                let hours = self.week[d.weekday().to_monday_zero_offset() as usize]?;
                let (start, end) = (self.instant(d, hours.open)?, self.instant(d, hours.close)?);
                (end > from).then_some((start.max(from), end))
            })
    }

    /// The instant `work` of working time after `start`.
    fn add(&self, start: UnixMicros, work: WorkMicros) -> UnixMicros {
        if work <= 0 {
            return start;
        }
        let mut left = work;
        for (s, e) in self.intervals_from(start) {
            if left <= e - s {
                return s + left;
            }
            left -= e - s;
        }
        UnixMicros::MAX
    }

    /// Working time in `[from, to)`; negative when `to` is before `from`.
    fn between(&self, from: UnixMicros, to: UnixMicros) -> WorkMicros {
        if to < from {
            return -self.between(to, from);
        }
        let mut total = 0;
        for (s, e) in self.intervals_from(from) {
            if s >= to {
                break;
            }
            total += e.min(to) - s;
        }
        total
    }
}

/// The three limits for one priority, in working time of its calendar.
#[derive(Clone, Debug)]
pub struct SlaPolicy {
    pub own: WorkMicros,
    pub first_response: WorkMicros,
    pub resolve: WorkMicros,
    /// `None`: around the clock.
    pub calendar: Option<Arc<Calendar>>,
}

impl SlaPolicy {
    pub fn around_the_clock(own_min: i64, response_min: i64, resolve_min: i64) -> Self {
        SlaPolicy {
            own: own_min * MICROS_PER_MINUTE,
            first_response: response_min * MICROS_PER_MINUTE,
            resolve: resolve_min * MICROS_PER_MINUTE,
            calendar: None,
        }
    }

    fn limit(&self, target: SlaTarget) -> WorkMicros {
        match target {
            SlaTarget::Own => self.own,
            SlaTarget::FirstResponse => self.first_response,
            SlaTarget::Resolve => self.resolve,
        }
    }

    /// The instant `work` of working time after `start`.
    pub fn due_after(&self, start: UnixMicros, work: WorkMicros) -> UnixMicros {
        match &self.calendar {
            None => start.saturating_add(work.max(0)),
            Some(c) => c.add(start, work),
        }
    }

    /// Working time from `now` to `due` (negative once overdue).
    pub fn left_until(&self, now: UnixMicros, due: UnixMicros) -> WorkMicros {
        match &self.calendar {
            None => due.saturating_sub(now),
            Some(c) => c.between(now, due),
        }
    }

    /// Clocks for a new ticket: every target's full limit, not yet counting
    /// (the first [`track`](Self::track) starts what the status runs).
    pub fn fresh_clocks(&self) -> SlaClocks {
        let paused = |t| TargetClock {
            state: ClockState::Paused {
                left: self.limit(t),
            },
            breached_at: None,
        };
        SlaClocks {
            own: paused(SlaTarget::Own),
            first_response: paused(SlaTarget::FirstResponse),
            resolve: paused(SlaTarget::Resolve),
        }
    }

    /// Brings `after`'s clocks in line with the move from `before`: the own
    /// clock stops at the first owner, the resolve clock at a resolution
    /// (and counts again on reopening), and every clock not yet met runs or
    /// pauses as [`SlaTarget::runs_in`] says for the new status. The first
    /// response is met by the message itself ([`SlaClocks::meet`]).
    pub fn track(&self, before: &TicketState, after: &mut TicketState, now: UnixMicros) {
        let clocks = &mut after.sla;
        if after.owner.is_some() {
            clocks.meet(SlaTarget::Own, now);
        }
        let resolved = after.status == TicketStatus::Resolved;
        if resolved && before.status != TicketStatus::Resolved {
            let left = clocks.resolve.left(self, now);
            clocks.resolve.state = ClockState::Met { at: now, left };
        }
        if before.status == TicketStatus::Resolved && SlaTarget::Resolve.runs_in(after.status) {
            // Reopened: the resolution did not hold, so the clock counts on
            // with what it had left.
            if let ClockState::Met { left, .. } = clocks.resolve.state {
                clocks.resolve.state = ClockState::Paused { left };
            }
        }
        for target in SlaTarget::ALL {
            let clock = clocks.get_mut(*target);
            match clock.state {
                ClockState::Paused { left } if target.runs_in(after.status) => {
                    clock.state = ClockState::Running {
                        due: self.due_after(now, left),
                    };
                }
                ClockState::Running { due } if !target.runs_in(after.status) => {
                    clock.state = ClockState::Paused {
                        left: self.left_until(now, due),
                    };
                }
                _ => {}
            }
        }
    }
}

/// A policy per priority.
#[derive(Clone, Debug)]
pub struct SlaPolicies {
    by_priority: [SlaPolicy; 4],
}

impl Default for SlaPolicies {
    /// P1 5 min / 15 min / 4 h; P2 15 min / 1 h / 1 day; P3 1 h / 4 h /
    /// 3 days; P4 4 h / 1 day / 7 days; around the clock.
    fn default() -> Self {
        const H: i64 = 60;
        const D: i64 = 24 * H;
        SlaPolicies {
            by_priority: [
                SlaPolicy::around_the_clock(5, 15, 4 * H),
                SlaPolicy::around_the_clock(15, H, D),
                SlaPolicy::around_the_clock(H, 4 * H, 3 * D),
                SlaPolicy::around_the_clock(4 * H, D, 7 * D),
            ],
        }
    }
}

impl SlaPolicies {
    pub fn new(p1: SlaPolicy, p2: SlaPolicy, p3: SlaPolicy, p4: SlaPolicy) -> Self {
        SlaPolicies {
            by_priority: [p1, p2, p3, p4],
        }
    }

    pub fn for_priority(&self, priority: Priority) -> &SlaPolicy {
        &self.by_priority[(priority.number() - 1) as usize]
    }
}

/// Where one target's clock stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClockState {
    /// Counting down to `due`.
    Running { due: UnixMicros },
    /// Not counting; `left` working time remains (negative: overdue).
    Paused { left: WorkMicros },
    /// The target was reached at `at`, with `left` working time to spare
    /// (kept so a reopened ticket's resolve clock can count on).
    Met { at: UnixMicros, left: WorkMicros },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetClock {
    pub state: ClockState,
    /// When the breach was recorded; a clock breaches at most once.
    pub breached_at: Option<UnixMicros>,
}

impl TargetClock {
    fn left(&self, policy: &SlaPolicy, now: UnixMicros) -> WorkMicros {
        match self.state {
            ClockState::Running { due } => policy.left_until(now, due),
            ClockState::Paused { left } | ClockState::Met { left, .. } => left,
        }
    }

    /// The due time a breach is still waiting for, if any.
    pub fn pending_due(&self) -> Option<UnixMicros> {
        match self.state {
            // MAX: no working time left in the calendar's reach, or no limit.
            ClockState::Running { due } if self.breached_at.is_none() && due < UnixMicros::MAX => {
                Some(due)
            }
            _ => None,
        }
    }
}

/// The three clocks of one ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaClocks {
    pub own: TargetClock,
    pub first_response: TargetClock,
    pub resolve: TargetClock,
}

impl SlaClocks {
    /// Clocks of a ticket from before clocks were kept: no limit.
    pub fn untracked() -> Self {
        let never = TargetClock {
            state: ClockState::Paused {
                left: WorkMicros::MAX,
            },
            breached_at: None,
        };
        SlaClocks {
            own: never,
            first_response: never,
            resolve: never,
        }
    }

    pub fn get(&self, target: SlaTarget) -> &TargetClock {
        match target {
            SlaTarget::Own => &self.own,
            SlaTarget::FirstResponse => &self.first_response,
            SlaTarget::Resolve => &self.resolve,
        }
    }

    fn get_mut(&mut self, target: SlaTarget) -> &mut TargetClock {
        match target {
            SlaTarget::Own => &mut self.own,
            SlaTarget::FirstResponse => &mut self.first_response,
            SlaTarget::Resolve => &mut self.resolve,
        }
    }

    /// Stops a target's clock as reached, if it was not reached before.
    pub fn meet(&mut self, target: SlaTarget, now: UnixMicros) {
        let clock = self.get_mut(target);
        let left = match clock.state {
            ClockState::Running { due } => due.saturating_sub(now),
            ClockState::Paused { left } => left,
            ClockState::Met { .. } => return,
        };
        clock.state = ClockState::Met { at: now, left };
    }

    /// Records the breach of `target` if its deadline has passed and it was
    /// not recorded before; false when there is nothing to record (so a
    /// deadline fires once, however often it is looked at).
    pub fn breach(&mut self, target: SlaTarget, now: UnixMicros) -> bool {
        let clock = self.get_mut(target);
        match clock.pending_due() {
            Some(due) if due <= now => {
                clock.breached_at = Some(now);
                true
            }
            _ => false,
        }
    }

    /// The deadlines still to watch: running clocks not yet breached.
    pub fn pending(&self) -> impl Iterator<Item = (SlaTarget, UnixMicros)> + '_ {
        SlaTarget::ALL
            .iter()
            .filter_map(|t| self.get(*t).pending_due().map(|due| (*t, due)))
    }

    pub fn breached(&self) -> impl Iterator<Item = SlaTarget> + '_ {
        SlaTarget::ALL
            .iter()
            .copied()
            .filter(|t| self.get(*t).breached_at.is_some())
    }
}

#[cfg(test)]
mod tests;
