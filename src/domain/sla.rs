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

use super::error::DeskError;
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
                format!("{raw:?} is not working hours of the form HH:MM-HH:MM"),
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
                format!("{raw:?} closes before it opens"),
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
mod tests {
    use super::*;
    use crate::domain::model::TicketState;

    const MIN: i64 = MICROS_PER_MINUTE;
    const HOUR: i64 = 60 * MIN;

    fn at(s: &str) -> UnixMicros {
        s.parse::<Timestamp>().unwrap().as_microsecond()
    }

    fn office() -> Calendar {
        let nine_to_five = Some(WorkingHours::parse("h", "09:00-17:00").unwrap());
        let mut week = [nine_to_five; 7];
        week[5] = None;
        week[6] = None;
        Calendar::new("office", "Europe/Berlin", week, &["2026-12-25".to_owned()]).unwrap()
    }

    fn with(status: TicketStatus, policy: &SlaPolicy) -> TicketState {
        let mut s = TicketState::blank(0, policy.fresh_clocks());
        s.status = status;
        s
    }

    #[test]
    fn working_hours_parse_and_refuse() {
        assert!(WorkingHours::parse("h", "09:00-17:30").is_ok());
        assert!(WorkingHours::parse("h", "00:00-24:00").is_ok());
        for bad in [
            "9-5",
            "17:00-09:00",
            "09:00-24:30",
            "25:00-26:00",
            "09:60-10:00",
        ] {
            assert!(WorkingHours::parse("h", bad).is_err(), "{bad}");
        }
        assert!(Calendar::new("c", "Mars/Olympus", [None; 7], &[]).is_err());
        let some = [Some(WorkingHours::parse("h", "09:00-17:00").unwrap()); 7];
        assert!(Calendar::new("c", "UTC", [None; 7], &[]).is_err());
        assert!(Calendar::new("c", "UTC", some, &["2026-13-01".into()]).is_err());
    }

    #[test]
    fn business_time_skips_nights_weekends_and_holidays() {
        let cal = office();
        // Friday 16:00 Berlin (15:00 UTC) + 2 working hours: 1 h on Friday,
        // then Monday 09:00 + 1 h.
        let due = cal.add(at("2026-11-27T15:00:00Z"), 2 * HOUR);
        assert_eq!(due, at("2026-11-30T09:00:00Z"));
        // Starting at night counts from the next opening.
        assert_eq!(
            cal.add(at("2026-11-24T03:00:00Z"), 30 * MIN),
            at("2026-11-24T08:30:00Z")
        );
        // Christmas (a Friday in 2026) is a holiday.
        let due = cal.add(at("2026-12-24T15:00:00Z"), 2 * HOUR);
        assert_eq!(due, at("2026-12-28T09:00:00Z"));
        // between is add's inverse, and negative backwards.
        let from = at("2026-11-27T15:00:00Z");
        assert_eq!(cal.between(from, at("2026-11-30T09:00:00Z")), 2 * HOUR);
        assert_eq!(cal.between(at("2026-11-30T09:00:00Z"), from), -2 * HOUR);
    }

    #[test]
    fn business_time_follows_daylight_saving() {
        let cal = office();
        // Berlin leaves summer time on 2026-10-25: 09:00 local is 07:00 UTC
        // on the Friday before and 08:00 UTC on the Monday after.
        let due = cal.add(at("2026-10-23T14:00:00Z"), 2 * HOUR);
        assert_eq!(due, at("2026-10-26T09:00:00Z"));
    }

    #[test]
    fn clocks_start_pause_resume_and_stop_with_the_status() {
        let policy = SlaPolicy::around_the_clock(5, 15, 240);
        let blank = TicketState::blank(0, policy.fresh_clocks());
        let mut open = with(TicketStatus::Open, &policy);
        policy.track(&blank, &mut open, 1000);
        assert_eq!(
            open.sla.own.state,
            ClockState::Running {
                due: 1000 + 5 * MIN
            }
        );
        assert_eq!(
            open.sla.resolve.state,
            ClockState::Running {
                due: 1000 + 240 * MIN
            }
        );

        let mut owned = open.clone();
        owned.status = TicketStatus::Assigned;
        owned.owner = Some(crate::domain::ExpertId::parse("e", "ann").unwrap());
        policy.track(&open, &mut owned, 2000);
        assert_eq!(
            owned.sla.own.state,
            ClockState::Met {
                at: 2000,
                left: 5 * MIN - 1000
            }
        );

        // Waiting on the customer pauses only the resolve clock.
        let mut waiting = owned.clone();
        waiting.status = TicketStatus::WaitingCustomer;
        policy.track(&owned, &mut waiting, 1000 + 60 * MIN);
        assert_eq!(
            waiting.sla.resolve.state,
            ClockState::Paused { left: 180 * MIN }
        );
        assert!(matches!(
            waiting.sla.first_response.state,
            ClockState::Running { .. }
        ));

        // Back to work an hour later: the deadline moved by that hour.
        let mut back = waiting.clone();
        back.status = TicketStatus::Assigned;
        policy.track(&waiting, &mut back, 1000 + 120 * MIN);
        assert_eq!(
            back.sla.resolve.state,
            ClockState::Running {
                due: 1000 + 300 * MIN
            }
        );

        // Resolving stops it; reopening counts on from what was left.
        let mut resolved = back.clone();
        resolved.status = TicketStatus::Resolved;
        policy.track(&back, &mut resolved, 1000 + 200 * MIN);
        assert_eq!(
            resolved.sla.resolve.state,
            ClockState::Met {
                at: 1000 + 200 * MIN,
                left: 100 * MIN
            }
        );
        assert!(matches!(
            resolved.sla.first_response.state,
            ClockState::Paused { .. }
        ));
        let mut reopened = resolved.clone();
        reopened.status = TicketStatus::Assigned;
        policy.track(&resolved, &mut reopened, 1000 + 1000 * MIN);
        assert_eq!(
            reopened.sla.resolve.state,
            ClockState::Running {
                due: 1000 + 1100 * MIN
            }
        );
    }

    #[test]
    fn a_deadline_breaches_once_and_only_when_due() {
        let policy = SlaPolicy::around_the_clock(5, 15, 240);
        let blank = TicketState::blank(0, policy.fresh_clocks());
        let mut open = with(TicketStatus::Open, &policy);
        policy.track(&blank, &mut open, 0);
        assert_eq!(
            open.sla.pending().collect::<Vec<_>>(),
            vec![
                (SlaTarget::Own, 5 * MIN),
                (SlaTarget::FirstResponse, 15 * MIN),
                (SlaTarget::Resolve, 240 * MIN)
            ]
        );
        assert!(!open.sla.breach(SlaTarget::Own, 5 * MIN - 1));
        assert!(open.sla.breach(SlaTarget::Own, 5 * MIN));
        assert!(!open.sla.breach(SlaTarget::Own, 6 * MIN));
        assert_eq!(
            open.sla.breached().collect::<Vec<_>>(),
            vec![SlaTarget::Own]
        );
        assert_eq!(open.sla.pending().count(), 2);
        // Met late still shows the breach.
        open.sla.meet(SlaTarget::Own, 7 * MIN);
        assert_eq!(open.sla.own.breached_at, Some(5 * MIN));
    }

    #[test]
    fn business_calendar_policy_pauses_in_working_time() {
        let policy = SlaPolicy {
            calendar: Some(Arc::new(office())),
            ..SlaPolicy::around_the_clock(60, 120, 8 * 60)
        };
        // Created Friday 16:00 Berlin: resolve due after 8 working hours,
        // Monday 16:00.
        let blank = TicketState::blank(0, policy.fresh_clocks());
        let mut open = with(TicketStatus::Open, &policy);
        policy.track(&blank, &mut open, at("2026-11-27T15:00:00Z"));
        assert_eq!(
            open.sla.resolve.state,
            ClockState::Running {
                due: at("2026-11-30T15:00:00Z")
            }
        );
        // Paused over the weekend, nothing is lost: Saturday counts zero.
        let mut waiting = open.clone();
        waiting.status = TicketStatus::WaitingVendor;
        policy.track(&open, &mut waiting, at("2026-11-28T12:00:00Z"));
        assert_eq!(
            waiting.sla.resolve.state,
            ClockState::Paused { left: 7 * HOUR }
        );
    }
}
