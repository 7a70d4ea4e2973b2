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
