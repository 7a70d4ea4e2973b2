//! Collision detection: who is viewing or typing on which ticket right
//! now. Ephemeral by design (never stored, never replayed): an entry
//! lapses unless renewed, so a closed tab or a lost client leaves no ghost.

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use super::Activity;
use super::{ExpertId, TicketId, UnixMicros};

/// How long a VIEWING report holds without a renewal (clients renew well
/// within it, every 10 s).
pub const VIEWING_TTL_MICROS: UnixMicros = 30_000_000;
/// How long a TYPING report holds (keystrokes renew it): then the expert
/// is viewing again.
pub const TYPING_TTL_MICROS: UnixMicros = 6_000_000;

/// One expert's activity on a ticket, as others see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertActivity {
    pub expert: ExpertId,
    /// Viewing or Typing.
    pub activity: Activity,
    /// When this activity began (a renewal keeps it).
    pub since: UnixMicros,
}

#[derive(Clone, Debug)]
struct Entry {
    viewing_since: UnixMicros,
    viewing_until: UnixMicros,
    /// Set while typing: since, until.
    typing: Option<(UnixMicros, UnixMicros)>,
}

impl Entry {
    fn shown(&self, expert: &ExpertId) -> ExpertActivity {
        match self.typing {
            Some((since, _)) => ExpertActivity {
                expert: expert.clone(),
                activity: Activity::Typing,
                since,
            },
            None => ExpertActivity {
                expert: expert.clone(),
                activity: Activity::Viewing,
                since: self.viewing_since,
            },
        }
    }
}

/// Every ticket's current activity.
#[derive(Debug, Default)]
pub struct ActivityBoard {
    tickets: HashMap<TicketId, BTreeMap<ExpertId, Entry>>,
    /// The tickets each expert is active on.
    by_expert: HashMap<ExpertId, BTreeSet<TicketId>>,
}

impl ActivityBoard {
    /// Records a report; true when what others see of the ticket changed.
    pub fn report(
        &mut self,
        expert: &ExpertId,
        ticket: TicketId,
        activity: Activity,
        now: UnixMicros,
    ) -> bool {
        let before = self.shown(ticket);
        match activity {
            Activity::Idle => self.remove(expert, ticket),
            Activity::Viewing | Activity::Typing => {
                let entries = self.tickets.entry(ticket).or_default();
                let entry = entries.entry(expert.clone()).or_insert(Entry {
                    viewing_since: now,
                    viewing_until: now,
                    typing: None,
                });
                entry.viewing_until = now + VIEWING_TTL_MICROS;
                entry.typing = match (activity, entry.typing) {
                    (Activity::Typing, Some((since, _))) => Some((since, now + TYPING_TTL_MICROS)),
                    (Activity::Typing, None) => Some((now, now + TYPING_TTL_MICROS)),
                    _ => None,
                };
                self.by_expert
                    .entry(expert.clone())
                    .or_default()
                    .insert(ticket);
            }
        }
        self.shown(ticket) != before
    }

    fn remove(&mut self, expert: &ExpertId, ticket: TicketId) {
        if let Some(entries) = self.tickets.get_mut(&ticket) {
            entries.remove(expert);
            if entries.is_empty() {
                self.tickets.remove(&ticket);
            }
        }
        if let Some(tickets) = self.by_expert.get_mut(expert) {
            tickets.remove(&ticket);
            if tickets.is_empty() {
                self.by_expert.remove(expert);
            }
        }
    }

    /// Ends all of an expert's activity (their last stream closed); the
    /// tickets whose view changed.
    pub fn leave_all(&mut self, expert: &ExpertId) -> Vec<TicketId> {
        let tickets: Vec<TicketId> = self
            .by_expert
            .get(expert)
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default();
        for ticket in &tickets {
            self.remove(expert, *ticket);
        }
        tickets
    }

    /// Drops what lapsed by `now`: typing falls back to viewing, viewing
    /// ends. The tickets whose view changed, in id order.
    pub fn expire(&mut self, now: UnixMicros) -> Vec<TicketId> {
        let mut changed = BTreeSet::new();
        let mut gone = Vec::new();
        for (ticket, entries) in &mut self.tickets {
            for (expert, entry) in entries.iter_mut() {
                if entry.typing.is_some_and(|(_, until)| until <= now) {
                    entry.typing = None;
                    changed.insert(*ticket);
                }
                if entry.viewing_until <= now {
                    gone.push((expert.clone(), *ticket));
                }
            }
        }
        for (expert, ticket) in gone {
            self.remove(&expert, ticket);
            changed.insert(ticket);
        }
        changed.into_iter().collect()
    }

    /// Who is active on `ticket`, in expert id order.
    pub fn shown(&self, ticket: TicketId) -> Vec<ExpertActivity> {
        self.tickets
            .get(&ticket)
            .map(|entries| entries.iter().map(|(e, entry)| entry.shown(e)).collect())
            .unwrap_or_default()
    }

    /// Whether anything is recorded (nothing to expire otherwise).
    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expert(id: &str) -> ExpertId {
        ExpertId::parse("expert", id).unwrap()
    }

    const T1: TicketId = TicketId(1);

    #[test]
    fn viewing_then_typing_is_shown_with_when_each_began() {
        let mut board = ActivityBoard::default();
        assert!(board.report(&expert("ann"), T1, Activity::Viewing, 100));
        // A renewal changes nothing others see.
        assert!(!board.report(&expert("ann"), T1, Activity::Viewing, 200));
        assert!(board.report(&expert("bob"), T1, Activity::Typing, 300));
        assert!(!board.report(&expert("bob"), T1, Activity::Typing, 400));
        assert_eq!(
            board.shown(T1),
            vec![
                ExpertActivity {
                    expert: expert("ann"),
                    activity: Activity::Viewing,
                    since: 100
                },
                ExpertActivity {
                    expert: expert("bob"),
                    activity: Activity::Typing,
                    since: 300
                },
            ]
        );
        assert!(board.report(&expert("bob"), T1, Activity::Idle, 500));
        assert_eq!(board.shown(T1).len(), 1);
    }

    #[test]
    fn typing_lapses_to_viewing_and_viewing_lapses_to_nothing() {
        let mut board = ActivityBoard::default();
        board.report(&expert("ann"), T1, Activity::Typing, 0);
        assert!(board.expire(TYPING_TTL_MICROS - 1).is_empty());
        assert_eq!(board.expire(TYPING_TTL_MICROS), vec![T1]);
        assert_eq!(board.shown(T1)[0].activity, Activity::Viewing);
        // Renewed at 10 s: holds until 40 s.
        board.report(&expert("ann"), T1, Activity::Viewing, 10_000_000);
        assert!(board.expire(VIEWING_TTL_MICROS).is_empty());
        assert_eq!(board.expire(10_000_000 + VIEWING_TTL_MICROS), vec![T1]);
        assert!(board.shown(T1).is_empty());
        assert!(board.is_empty());
    }

    #[test]
    fn leaving_ends_every_ticket_of_that_expert_only() {
        let mut board = ActivityBoard::default();
        board.report(&expert("ann"), T1, Activity::Viewing, 0);
        board.report(&expert("ann"), TicketId(2), Activity::Typing, 0);
        board.report(&expert("bob"), TicketId(2), Activity::Viewing, 0);
        assert_eq!(board.leave_all(&expert("ann")), vec![T1, TicketId(2)]);
        assert!(board.shown(T1).is_empty());
        assert_eq!(board.shown(TicketId(2))[0].expert, expert("bob"));
        assert!(board.leave_all(&expert("ann")).is_empty());
    }
}
