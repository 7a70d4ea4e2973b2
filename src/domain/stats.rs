//! Aggregates kept as events happen, so a report over any range is a sum
//! of hourly buckets, never a scan of tickets.
//!
//! Each event is recorded once, against the state its ticket had before
//! it (the caller keeps or looks that up). Buckets are per UTC hour and per
//! tag: one for all tickets, one for each skill tag of the ticket.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::event::{EventKind, TicketEvent};
use super::knowledge::ArticleLink;
use super::model::{ExpertId, Tag, TicketState, TicketStatus, UnixMicros, Visibility};
use super::sla::{ClockState, SlaTarget};

pub const HOUR_MICROS: i64 = 3_600_000_000;
/// Ratio between neighbouring histogram buckets: quantiles are within 1 %.
const BUCKET_GROWTH: f64 = 1.02;
/// Scores at or above this count as satisfied.
pub const SATISFIED_SCORE: u8 = 4;

/// Durations on a log scale (milliseconds, 2 % buckets), sparse.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    counts: BTreeMap<u16, u64>,
}

impl Histogram {
    pub fn record(&mut self, micros: i64) {
        let millis = (micros.max(0) as f64 / 1000.0).max(1.0);
        let bucket = (millis.ln() / BUCKET_GROWTH.ln()).floor() as u16;
        *self.counts.entry(bucket).or_default() += 1;
    }

    pub fn count(&self) -> u64 {
        self.counts.values().sum()
    }

    fn merge(&mut self, other: &Histogram) {
        for (bucket, n) in &other.counts {
            *self.counts.entry(*bucket).or_default() += n;
        }
    }

    /// The `q` quantile (0..=1) in microseconds: the middle of its bucket.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, n) in &self.counts {
            seen += n;
            if seen >= rank {
                let millis = BUCKET_GROWTH.powf(f64::from(*bucket) + 0.5);
                return Some((millis * 1000.0) as i64);
            }
        }
        None
    }
}

/// What one expert did that swarming recognises.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    pub resolved_as_owner: u64,
    pub swarms_joined: u64,
    pub internal_notes: u64,
    /// Tickets they were a swarm member of when someone else resolved them.
    pub helped_others_resolve: u64,
    /// Resolutions of theirs that reused an article.
    pub articles_reused: u64,
    /// Resolutions of theirs that captured a new draft.
    pub articles_captured: u64,
}

impl Contribution {
    fn merge(&mut self, other: &Contribution) {
        self.resolved_as_owner += other.resolved_as_owner;
        self.swarms_joined += other.swarms_joined;
        self.internal_notes += other.internal_notes;
        self.helped_others_resolve += other.helped_others_resolve;
        self.articles_reused += other.articles_reused;
        self.articles_captured += other.articles_captured;
    }
}

/// Met and breached counts of one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attainment {
    pub met: u64,
    pub breached: u64,
}

/// Everything counted in one hour for one tag (or all tickets).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub created: u64,
    pub resolved: u64,
    /// From creation to the target being reached, per target.
    pub times: [Histogram; 3],
    pub attainment: [Attainment; 3],
    pub ratings: u64,
    pub rating_sum: u64,
    pub satisfied: u64,
    pub experts: BTreeMap<ExpertId, Contribution>,
    /// Articles offered on new tickets.
    pub suggested_on_tickets: u64,
    /// Resolutions that reused an article, and that captured a draft.
    pub reused: u64,
    pub captured: u64,
}

impl Bucket {
    fn merge(&mut self, other: &Bucket) {
        self.created += other.created;
        self.resolved += other.resolved;
        for i in 0..3 {
            self.times[i].merge(&other.times[i]);
            self.attainment[i].met += other.attainment[i].met;
            self.attainment[i].breached += other.attainment[i].breached;
        }
        self.ratings += other.ratings;
        self.rating_sum += other.rating_sum;
        self.satisfied += other.satisfied;
        self.suggested_on_tickets += other.suggested_on_tickets;
        self.reused += other.reused;
        self.captured += other.captured;
        for (id, c) in &other.experts {
            self.experts.entry(id.clone()).or_default().merge(c);
        }
    }

    fn expert(&mut self, id: &ExpertId) -> &mut Contribution {
        self.experts.entry(id.clone()).or_default()
    }
}

fn index(target: SlaTarget) -> usize {
    (target.number() - 1) as usize
}

/// The aggregates, and the position of the last event recorded in them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsBook {
    /// Keyed by (hour start, tag); the empty tag is every ticket.
    buckets: BTreeMap<(UnixMicros, String), Bucket>,
    pub through: u64,
}

impl StatsBook {
    /// Records `event`, given its ticket's state before it (`None` for a
    /// creation). Events at or before `through` are ignored, so replaying
    /// a range twice counts it once.
    pub fn record(&mut self, event: &TicketEvent, before: Option<&TicketState>) {
        if event.position <= self.through {
            return;
        }
        self.through = event.position;
        let hour = event.at.div_euclid(HOUR_MICROS) * HOUR_MICROS;
        let ticket = &event.ticket;
        let after = &ticket.state;
        let mut keys = vec![(hour, String::new())];
        keys.extend(
            ticket
                .header
                .skills
                .iter()
                .map(|s| (hour, s.tag.as_str().to_owned())),
        );
        for key in keys {
            let bucket = self.buckets.entry(key).or_default();
            record_into(bucket, event, before, after);
        }
    }

    /// Sums the hours that start in `[from, to)`, for one tag or all.
    pub fn report(&self, from: UnixMicros, to: UnixMicros, tag: Option<&Tag>) -> Bucket {
        let wanted = tag.map_or("", Tag::as_str);
        let first = from.div_euclid(HOUR_MICROS) * HOUR_MICROS;
        let mut total = Bucket::default();
        for ((hour, t), bucket) in self.buckets.range((first, String::new())..) {
            if *hour >= to {
                break;
            }
            if t == wanted {
                total.merge(bucket);
            }
        }
        total
    }
}

fn record_into(
    bucket: &mut Bucket,
    event: &TicketEvent,
    before: Option<&TicketState>,
    after: &TicketState,
) {
    let created_at = event.ticket.header.created_at;
    if matches!(event.kind, EventKind::Created) {
        bucket.created += 1;
    }
    for target in SlaTarget::ALL {
        let was_met =
            before.is_some_and(|b| matches!(b.sla.get(*target).state, ClockState::Met { .. }));
        let clock = after.sla.get(*target);
        if let (ClockState::Met { at, .. }, false) = (clock.state, was_met) {
            bucket.times[index(*target)].record(at - created_at);
            if clock.breached_at.is_none() {
                bucket.attainment[index(*target)].met += 1;
            }
        }
    }
    match &event.kind {
        EventKind::SlaBreached { target, .. } => {
            bucket.attainment[index(*target)].breached += 1;
        }
        EventKind::Joined { expert } => bucket.expert(expert).swarms_joined += 1,
        EventKind::Message {
            visibility: Visibility::Internal,
            ..
        } => {
            if let Ok(expert) = ExpertId::parse("actor", &event.actor) {
                bucket.expert(&expert).internal_notes += 1;
            }
        }
        EventKind::ArticlesSuggested { articles } => {
            bucket.suggested_on_tickets += articles.len() as u64;
        }
        EventKind::ArticleLinked { link, .. } => {
            let by = ExpertId::parse("actor", &event.actor).ok();
            match link {
                ArticleLink::Reused => {
                    bucket.reused += 1;
                    if let Some(by) = by {
                        bucket.expert(&by).articles_reused += 1;
                    }
                }
                ArticleLink::Captured => {
                    bucket.captured += 1;
                    if let Some(by) = by {
                        bucket.expert(&by).articles_captured += 1;
                    }
                }
            }
        }
        EventKind::Rated { score, .. } => {
            bucket.ratings += 1;
            bucket.rating_sum += u64::from(*score);
            if *score >= SATISFIED_SCORE {
                bucket.satisfied += 1;
            }
        }
        _ => {}
    }
    let resolved_now = after.status == TicketStatus::Resolved
        && before.is_none_or(|b| b.status != TicketStatus::Resolved);
    if resolved_now {
        bucket.resolved += 1;
        if let Some(owner) = &after.owner {
            bucket.expert(owner).resolved_as_owner += 1;
        }
        for member in &after.members {
            bucket.expert(member).helped_others_resolve += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::knowledge::ArticleId;
    use crate::domain::model::*;
    use crate::domain::sla::SlaPolicy;

    const MIN: i64 = 60_000_000;

    fn id(s: &str) -> ExpertId {
        ExpertId::parse("e", s).unwrap()
    }

    /// Plays a ticket's life through the real clock rules, recording each
    /// event; returns the state after the last.
    struct Life {
        header: Arc<TicketHeader>,
        state: TicketState,
        position: u64,
        policy: SlaPolicy,
    }

    impl Life {
        fn new(tag: &str, at: i64, position: u64) -> Self {
            let policy = SlaPolicy::around_the_clock(5, 15, 60);
            Life {
                header: Arc::new(TicketHeader {
                    id: TicketId(position),
                    title: "t".into(),
                    description: String::new(),
                    requester: "cust".into(),
                    channel: ContactChannel::Chat,
                    kind: TicketKind::Incident,
                    priority: Priority::P2,
                    skills: vec![SkillRequirement {
                        tag: Tag::parse("t", tag).unwrap(),
                        min_rank: Rank::L1,
                    }],
                    created_at: at,
                    created_by: None,
                }),
                state: TicketState::blank(at, policy.fresh_clocks()),
                position,
                policy,
            }
        }

        fn step(
            &mut self,
            book: &mut StatsBook,
            at: i64,
            kind: EventKind,
            actor: &str,
            change: impl FnOnce(&mut TicketState),
        ) {
            let before = (self.state.version > 0).then(|| self.state.clone());
            let mut after = self.state.clone();
            after.version += 1;
            change(&mut after);
            self.policy.track(&self.state, &mut after, at);
            self.position += 1000;
            let event = TicketEvent {
                position: self.position,
                at,
                actor: actor.into(),
                kind,
                ticket: Ticket {
                    header: self.header.clone(),
                    state: after.clone(),
                },
            };
            book.record(&event, before.as_ref());
            self.state = after;
        }
    }

    #[test]
    fn a_known_sequence_adds_up() {
        let mut book = StatsBook::default();
        let t0 = 10 * HOUR_MICROS;
        // Ticket 1 (network): owned at 2 min, answered at 10, resolved at
        // 50 by ann with bob's help, rated 5.
        let mut one = Life::new("network", t0, 1);
        one.step(&mut book, t0, EventKind::Created, "cust", |_| {});
        let suggested = EventKind::ArticlesSuggested {
            articles: vec![ArticleId(1), ArticleId(2)],
        };
        one.step(&mut book, t0, suggested, "cust", |_| {});
        one.step(
            &mut book,
            t0 + 2 * MIN,
            EventKind::Claimed { by: id("ann") },
            "ann",
            |s| {
                s.status = TicketStatus::Assigned;
                s.owner = Some(id("ann"));
            },
        );
        one.step(
            &mut book,
            t0 + 3 * MIN,
            EventKind::Joined { expert: id("bob") },
            "bob",
            |s| {
                s.members.push(id("bob"));
            },
        );
        let note = EventKind::Message {
            body: "n".into(),
            visibility: Visibility::Internal,
        };
        one.step(&mut book, t0 + 4 * MIN, note, "bob", |_| {});
        let reply = EventKind::Message {
            body: "r".into(),
            visibility: Visibility::Public,
        };
        one.step(&mut book, t0 + 10 * MIN, reply, "ann", |s| {
            s.sla.meet(SlaTarget::FirstResponse, t0 + 10 * MIN);
        });
        let resolve = EventKind::StatusChanged {
            from: TicketStatus::Assigned,
            to: TicketStatus::Resolved,
            note: String::new(),
        };
        one.step(&mut book, t0 + 50 * MIN, resolve, "ann", |s| {
            s.status = TicketStatus::Resolved;
        });
        let reused = EventKind::ArticleLinked {
            article: ArticleId(1),
            link: ArticleLink::Reused,
        };
        one.step(&mut book, t0 + 50 * MIN, reused, "ann", |_| {});
        let rated = EventKind::Rated {
            score: 5,
            comment: String::new(),
        };
        one.step(&mut book, t0 + 55 * MIN, rated, "chat", |_| {});
        // Ticket 2 (database): breaches own at 5 min, owned at 8, rated 2
        // after resolving at 20.
        let mut two = Life::new("database", t0, 100_000);
        two.step(&mut book, t0, EventKind::Created, "cust", |_| {});
        let breach = EventKind::SlaBreached {
            target: SlaTarget::Own,
            due: t0 + 5 * MIN,
        };
        two.step(&mut book, t0 + 5 * MIN, breach, "sla", |s| {
            s.sla.breach(SlaTarget::Own, t0 + 5 * MIN);
        });
        two.step(
            &mut book,
            t0 + 8 * MIN,
            EventKind::Assigned { to: id("cat") },
            "routing",
            |s| {
                s.status = TicketStatus::Assigned;
                s.owner = Some(id("cat"));
            },
        );
        let resolve = EventKind::StatusChanged {
            from: TicketStatus::Assigned,
            to: TicketStatus::Resolved,
            note: String::new(),
        };
        two.step(&mut book, t0 + 20 * MIN, resolve, "cat", |s| {
            s.status = TicketStatus::Resolved;
        });
        let captured = EventKind::ArticleLinked {
            article: ArticleId(3),
            link: ArticleLink::Captured,
        };
        two.step(&mut book, t0 + 20 * MIN, captured, "cat", |_| {});
        let rated = EventKind::Rated {
            score: 2,
            comment: String::new(),
        };
        two.step(&mut book, t0 + 21 * MIN, rated, "chat", |_| {});

        let all = book.report(t0, t0 + HOUR_MICROS, None);
        assert_eq!((all.created, all.resolved), (2, 2));
        assert_eq!(
            all.attainment[0],
            Attainment {
                met: 1,
                breached: 1
            }
        );
        assert_eq!(all.times[0].count(), 2);
        let near = |got: Option<i64>, want: i64| {
            let got = got.unwrap() as f64;
            assert!(
                (got - want as f64).abs() <= want as f64 * 0.02,
                "{got} vs {want}"
            );
        };
        // Time to own: 2 and 8 minutes; median is the lower, p90 the upper.
        near(all.times[0].quantile(0.5), 2 * MIN);
        near(all.times[0].quantile(0.9), 8 * MIN);
        near(all.times[2].quantile(0.5), 20 * MIN);
        assert_eq!((all.ratings, all.rating_sum, all.satisfied), (2, 7, 1));
        assert_eq!(
            (all.suggested_on_tickets, all.reused, all.captured),
            (2, 1, 1)
        );
        assert_eq!(
            all.experts[&id("ann")],
            Contribution {
                resolved_as_owner: 1,
                articles_reused: 1,
                ..Default::default()
            }
        );
        assert_eq!(all.experts[&id("cat")].articles_captured, 1);
        assert_eq!(
            all.experts[&id("bob")],
            Contribution {
                swarms_joined: 1,
                internal_notes: 1,
                helped_others_resolve: 1,
                ..Default::default()
            }
        );
        // By tag, and by time range.
        let db = book.report(
            t0,
            t0 + HOUR_MICROS,
            Some(&Tag::parse("t", "database").unwrap()),
        );
        assert_eq!((db.created, db.attainment[0].breached), (1, 1));
        assert_eq!((db.reused, db.captured, db.suggested_on_tickets), (0, 1, 0));
        assert_eq!(
            book.report(t0 + HOUR_MICROS, t0 + 2 * HOUR_MICROS, None)
                .created,
            0
        );
        // Replaying what was recorded changes nothing.
        let before = book.clone();
        two.position = 1;
        two.step(&mut book, t0 + 30 * MIN, EventKind::Created, "cust", |_| {});
        assert_eq!(book.buckets, before.buckets);
    }
}
