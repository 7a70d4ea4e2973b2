//! Who owns a ticket: eligibility, the order among the eligible, and the
//! queue of tickets waiting for an eligible owner.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::error::DeskError;
use super::model::{Expert, ExpertId, Presence, Priority, Skill, SkillRequirement, TicketId};

/// Whether `skills` hold every required tag at its min_rank; the error names
/// the first that falls short.
pub fn qualifies(skills: &[Skill], required: &[SkillRequirement]) -> Result<(), Shortfall> {
    for req in required {
        let held = skills.iter().find(|s| s.tag == req.tag).map(|s| s.rank);
        if held.is_none_or(|rank| rank < req.min_rank) {
            return Err(Shortfall {
                requirement: req.clone(),
                held,
            });
        }
    }
    Ok(())
}

/// The requirement an expert does not meet, and what they hold of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    pub requirement: SkillRequirement,
    pub held: Option<super::model::Rank>,
}

impl Shortfall {
    pub fn into_error(self, expert: &ExpertId) -> DeskError {
        DeskError::RankTooLow {
            expert: expert.clone(),
            tag: self.requirement.tag,
            needed: self.requirement.min_rank,
            held: self.held,
        }
    }
}

/// Sum of (rank − min_rank) over the required tags: how much seniority an
/// assignment would spend beyond what the ticket needs.
pub fn rank_surplus(skills: &[Skill], required: &[SkillRequirement]) -> u32 {
    required
        .iter()
        .filter_map(|req| {
            skills
                .iter()
                .find(|s| s.tag == req.tag)
                .map(|s| (s.rank.number() - req.min_rank.number()).max(0) as u32)
        })
        .sum()
}

/// Checks a manual move (claim, transfer) onto `expert`: ranks, then capacity.
/// Being online or away does not matter for a person's own choice.
pub fn check_can_take(expert: &Expert, required: &[SkillRequirement]) -> Result<(), DeskError> {
    qualifies(&expert.skills, required).map_err(|s| s.into_error(&expert.id))?;
    if !expert.has_room() {
        return Err(DeskError::AtCapacity {
            expert: expert.id.clone(),
            owned: expert.owned_open,
            capacity: expert.capacity,
        });
    }
    Ok(())
}

/// Whether routing may hand a ticket with these requirements to `expert`
/// now: online, available, with room, qualified, and not a decliner.
pub fn is_eligible(
    expert: &Expert,
    online: bool,
    required: &[SkillRequirement],
    declined: &[ExpertId],
) -> bool {
    online
        && expert.presence == Presence::Available
        && expert.has_room()
        && !declined.contains(&expert.id)
        && qualifies(&expert.skills, required).is_ok()
}

/// Orders two eligible experts for one ticket: smallest rank surplus, then
/// lowest load (owned / capacity), then the longest wait since their last
/// assignment, then the id.
fn compare_candidates(a: &Expert, b: &Expert, required: &[SkillRequirement]) -> Ordering {
    rank_surplus(&a.skills, required)
        .cmp(&rank_surplus(&b.skills, required))
        // a.owned / a.cap vs b.owned / b.cap without division.
        .then_with(|| {
            (u64::from(a.owned_open) * u64::from(b.capacity))
                .cmp(&(u64::from(b.owned_open) * u64::from(a.capacity)))
        })
        .then_with(|| a.last_assigned_seq.cmp(&b.last_assigned_seq))
        .then_with(|| a.id.cmp(&b.id))
}

/// The owner routing picks among `experts`, or `None` if nobody is eligible.
pub fn choose_owner<'a>(
    experts: impl IntoIterator<Item = (&'a Expert, bool)>,
    required: &[SkillRequirement],
    declined: &[ExpertId],
) -> Option<&'a Expert> {
    experts
        .into_iter()
        .filter(|(e, online)| is_eligible(e, *online, required, declined))
        .map(|(e, _)| e)
        .min_by(|a, b| compare_candidates(a, b, required))
}

/// What routing needs to remember of a ticket waiting for an owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingTicket {
    pub skills: Vec<SkillRequirement>,
    pub declined: Vec<ExpertId>,
}

/// Unowned tickets, higher priority first, then oldest (ids grow with age).
#[derive(Debug, Default)]
pub struct PendingQueue {
    tickets: BTreeMap<(Priority, TicketId), PendingTicket>,
    priority_of: std::collections::HashMap<TicketId, Priority>,
}

impl PendingQueue {
    pub fn insert(&mut self, id: TicketId, priority: Priority, ticket: PendingTicket) {
        self.remove(id);
        self.priority_of.insert(id, priority);
        self.tickets.insert((priority, id), ticket);
    }

    pub fn remove(&mut self, id: TicketId) {
        if let Some(priority) = self.priority_of.remove(&id) {
            self.tickets.remove(&(priority, id));
        }
    }

    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }

    /// The first waiting ticket (in queue order) that `expert` may take.
    pub fn first_for(&self, expert: &Expert) -> Option<TicketId> {
        self.tickets
            .iter()
            .find(|(_, t)| is_eligible(expert, true, &t.skills, &t.declined))
            .map(|((_, id), _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{Rank, Tag};

    fn tag(s: &str) -> Tag {
        Tag::parse("t", s).unwrap()
    }

    fn expert(id: &str, skills: &[(&str, Rank)], owned: u32, capacity: u32) -> Expert {
        Expert {
            id: ExpertId::parse("e", id).unwrap(),
            display_name: id.into(),
            skills: skills
                .iter()
                .map(|(t, r)| Skill {
                    tag: tag(t),
                    rank: *r,
                })
                .collect(),
            capacity,
            presence: Presence::Available,
            owned_open: owned,
            last_assigned_seq: 0,
            channels: None,
            version: 1,
        }
    }

    fn need(tag_name: &str, rank: Rank) -> Vec<SkillRequirement> {
        vec![SkillRequirement {
            tag: tag(tag_name),
            min_rank: rank,
        }]
    }

    fn pick<'a>(experts: &'a [Expert], req: &[SkillRequirement]) -> Option<&'a str> {
        choose_owner(experts.iter().map(|e| (e, true)), req, &[]).map(|e| e.id.as_str())
    }

    #[test]
    fn smallest_surplus_wins_so_seniors_stay_free() {
        let experts = [
            expert("l3", &[("net", Rank::L3)], 0, 5),
            expert("l1", &[("net", Rank::L1)], 4, 5),
        ];
        assert_eq!(pick(&experts, &need("net", Rank::L1)), Some("l1"));
        assert_eq!(pick(&experts, &need("net", Rank::L2)), Some("l3"));
    }

    #[test]
    fn then_lowest_load_then_longest_wait_then_id() {
        let mut experts = [
            expert("b", &[("net", Rank::L2)], 1, 5),
            expert("a", &[("net", Rank::L2)], 2, 10),
        ];
        // 1/5 = 2/10: equal load; both never assigned: id decides.
        assert_eq!(pick(&experts, &need("net", Rank::L1)), Some("a"));
        experts[1].last_assigned_seq = 7;
        assert_eq!(pick(&experts, &need("net", Rank::L1)), Some("b"));
        experts[1].owned_open = 1; // 1/10 < 1/5
        assert_eq!(pick(&experts, &need("net", Rank::L1)), Some("a"));
    }

    #[test]
    fn the_ineligible_are_skipped() {
        let mut away = expert("away", &[("net", Rank::L1)], 0, 5);
        away.presence = Presence::Away;
        let full = expert("full", &[("net", Rank::L3)], 5, 5);
        let junior = expert("junior", &[("net", Rank::L1)], 0, 5);
        let offline = expert("offline", &[("net", Rank::L3)], 0, 5);
        let all = [
            (&away, true),
            (&full, true),
            (&junior, true),
            (&offline, false),
        ];
        assert!(choose_owner(all, &need("net", Rank::L2), &[]).is_none());
        assert_eq!(
            choose_owner(all, &need("net", Rank::L1), &[]).map(|e| e.id.as_str()),
            Some("junior")
        );
        assert!(choose_owner(
            all,
            &need("net", Rank::L1),
            std::slice::from_ref(&junior.id)
        )
        .is_none());
    }

    #[test]
    fn every_required_tag_must_be_held() {
        let e = expert("x", &[("net", Rank::L3)], 0, 5);
        let mut req = need("net", Rank::L1);
        req.extend(need("db", Rank::L1));
        let shortfall = qualifies(&e.skills, &req).unwrap_err();
        assert_eq!(shortfall.requirement.tag.as_str(), "db");
        assert_eq!(rank_surplus(&e.skills, &need("net", Rank::L1)), 2);
        assert!(check_can_take(&e, &need("net", Rank::L3)).is_ok());
        let full = expert("y", &[("net", Rank::L3)], 5, 5);
        assert!(matches!(
            check_can_take(&full, &need("net", Rank::L1)),
            Err(DeskError::AtCapacity { .. })
        ));
    }

    #[test]
    fn pending_queue_serves_priority_then_age() {
        let mut q = PendingQueue::default();
        let pt = |t: &str| PendingTicket {
            skills: need(t, Rank::L1),
            declined: vec![],
        };
        q.insert(TicketId(1), Priority::P3, pt("net"));
        q.insert(TicketId(2), Priority::P1, pt("db"));
        q.insert(TicketId(3), Priority::P1, pt("net"));
        q.insert(TicketId(4), Priority::P2, pt("net"));
        let net = expert("n", &[("net", Rank::L1)], 0, 5);
        assert_eq!(q.first_for(&net), Some(TicketId(3)));
        q.remove(TicketId(3));
        assert_eq!(q.first_for(&net), Some(TicketId(4)));
        q.remove(TicketId(4));
        assert_eq!(q.first_for(&net), Some(TicketId(1)));
        assert_eq!(q.len(), 2);
    }
}
