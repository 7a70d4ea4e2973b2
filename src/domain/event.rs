//! Ticket events, and the two pure functions that decide who sees them: an
//! expert's stream ([`swarm_reason`]) and a requester's watch ([`public_view`]).
//!
//! Both are functions of the event and the viewer only, so a replay from the
//! store and live delivery always agree.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::knowledge::{ArticleId, ArticleLink};
use super::model::{
    ExpertId, Skill, SkillRequirement, SwarmReason, Tag, Ticket, TicketId, TicketStatus,
    UnixMicros, Visibility,
};
use super::routing::qualifies;
use super::sla::SlaTarget;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The ticket was created; its snapshot names the owner if routing found one.
    Created,
    /// Routing gave an unowned ticket an owner.
    Assigned {
        to: ExpertId,
    },
    Claimed {
        by: ExpertId,
    },
    Transferred {
        from: ExpertId,
        to: ExpertId,
    },
    Released {
        from: ExpertId,
    },
    Joined {
        expert: ExpertId,
    },
    Left {
        expert: ExpertId,
    },
    HelpRequested {
        skills: Vec<SkillRequirement>,
        /// The tags that were new to the audience.
        added: Vec<Tag>,
        note: String,
    },
    StatusChanged {
        from: TicketStatus,
        to: TicketStatus,
        note: String,
    },
    Message {
        body: String,
        visibility: Visibility,
    },
    // Variants are only ever appended: stored events name theirs by index.
    /// A service-level target's deadline passed.
    SlaBreached {
        target: SlaTarget,
        due: UnixMicros,
    },
    /// The owner was offline too long (or when the ticket was reopened),
    /// so the ticket went back to routing.
    OwnerLost {
        from: ExpertId,
        reason: String,
    },
    /// The requester rated the resolution.
    Rated {
        score: u8,
        comment: String,
    },
    /// Published articles offered to the requester when the ticket was
    /// created (in the creation's commit).
    ArticlesSuggested {
        articles: Vec<ArticleId>,
    },
    /// The resolution reused an article or captured a new draft.
    ArticleLinked {
        article: ArticleId,
        link: ArticleLink,
    },
}

/// One stored event, with the ticket as it is after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketEvent {
    /// Global, strictly increasing.
    pub position: u64,
    pub at: UnixMicros,
    pub actor: String,
    pub kind: EventKind,
    pub ticket: Ticket,
}

impl TicketEvent {
    pub fn ticket_id(&self) -> TicketId {
        self.ticket.id()
    }

    /// The ticket's own sequence number for this event (1 = creation).
    pub fn seq(&self) -> u64 {
        self.ticket.state.version
    }

    /// The expert this event made the owner, if it made one.
    pub fn assigned_to(&self) -> Option<&ExpertId> {
        match &self.kind {
            EventKind::Created => self.ticket.state.owner.as_ref(),
            EventKind::Assigned { to } | EventKind::Transferred { to, .. } => Some(to),
            EventKind::Claimed { by } => Some(by),
            _ => None,
        }
    }

    /// Experts the event is about who may no longer be on the ticket after it:
    /// they still hear of it.
    pub fn departed(&self) -> Option<&ExpertId> {
        match &self.kind {
            EventKind::Released { from } => Some(from),
            EventKind::Left { expert } => Some(expert),
            EventKind::OwnerLost { from, .. } => Some(from),
            _ => None,
        }
    }

    /// Every expert id the event names directly (owner, members, departed):
    /// the hub's index uses these to find per-expert recipients.
    pub fn named_experts(&self) -> impl Iterator<Item = &ExpertId> {
        self.ticket
            .state
            .owner
            .iter()
            .chain(self.ticket.state.members.iter())
            .chain(self.departed())
    }

    /// Tags whose channels may be interested: the audience after the event
    /// (help requests only ever add to it).
    pub fn tags(&self) -> impl Iterator<Item = &Tag> {
        self.ticket.audience()
    }
}

/// Who is looking at an expert stream.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub expert: ExpertId,
    pub channels: HashSet<Tag>,
    pub skills: Vec<Skill>,
}

/// Why `viewer` gets `event` on their stream, or `None` if they do not.
///
/// In order: they became the owner (ASSIGNED); they own, have joined, or just
/// left the ticket (UPDATE); a help request newly reached one of their
/// channels (HELP_REQUESTED); only a named swarm of theirs (sev1, triage,
/// backlog) is reached (ESCALATED); the ticket's skills meet their channels
/// (OFFER while it is unowned and their ranks qualify, else SWARM).
pub fn swarm_reason(event: &TicketEvent, viewer: &Viewer) -> Option<SwarmReason> {
    let ticket = &event.ticket;
    if event.assigned_to() == Some(&viewer.expert) {
        return Some(SwarmReason::Assigned);
    }
    if ticket.involves(&viewer.expert) || event.departed() == Some(&viewer.expert) {
        return Some(SwarmReason::Update);
    }
    if let EventKind::HelpRequested { added, .. } = &event.kind {
        let reached_now = added.iter().any(|t| viewer.channels.contains(t));
        let reached_before = ticket
            .audience()
            .filter(|t| !added.contains(t))
            .any(|t| viewer.channels.contains(t));
        if reached_now && !reached_before {
            return Some(SwarmReason::HelpRequested);
        }
    }
    if !ticket.audience().any(|t| viewer.channels.contains(t)) {
        return None;
    }
    if !ticket.skill_audience().any(|t| viewer.channels.contains(t)) {
        return Some(SwarmReason::Escalated);
    }
    let unowned = ticket.state.status == TicketStatus::Open;
    if unowned && qualifies(&viewer.skills, &ticket.header.skills).is_ok() {
        Some(SwarmReason::Offer)
    } else {
        Some(SwarmReason::Swarm)
    }
}

/// The event as a requester's watch shows it, or `None` if it is for the
/// swarm only: internal messages, help requests, breaches, owner losses,
/// the suggestions made at creation (the requester got them in the
/// answer) and captured drafts are dropped, status notes are blanked; a
/// reused (published) article is shown. Borrowed when nothing needed hiding, so callers can share it.
pub fn public_view(event: &TicketEvent) -> Option<Cow<'_, TicketEvent>> {
    match &event.kind {
        EventKind::Message {
            visibility: Visibility::Internal,
            ..
        }
        | EventKind::HelpRequested { .. }
        | EventKind::SlaBreached { .. }
        | EventKind::OwnerLost { .. }
        | EventKind::ArticlesSuggested { .. }
        | EventKind::ArticleLinked {
            link: ArticleLink::Captured,
            ..
        } => None,
        EventKind::StatusChanged { from, to, note } if !note.is_empty() => {
            Some(Cow::Owned(TicketEvent {
                kind: EventKind::StatusChanged {
                    from: *from,
                    to: *to,
                    note: String::new(),
                },
                ..event.clone()
            }))
        }
        _ => Some(Cow::Borrowed(event)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::model::*;

    fn tag(s: &str) -> Tag {
        Tag::parse("t", s).unwrap()
    }

    fn id(s: &str) -> ExpertId {
        ExpertId::parse("e", s).unwrap()
    }

    fn ticket(owner: Option<&str>, members: &[&str], help: &[&str]) -> Ticket {
        Ticket {
            header: Arc::new(TicketHeader {
                id: TicketId(1),
                title: "VPN down".into(),
                description: String::new(),
                requester: "cust".into(),
                channel: ContactChannel::Chat,
                kind: TicketKind::Incident,
                priority: Priority::P2,
                skills: vec![SkillRequirement {
                    tag: tag("network"),
                    min_rank: Rank::L2,
                }],
                created_at: 0,
                created_by: None,
            }),
            state: TicketState {
                status: if owner.is_some() {
                    TicketStatus::Assigned
                } else {
                    TicketStatus::Open
                },
                owner: owner.map(id),
                members: members.iter().map(|m| id(m)).collect(),
                help_tags: help.iter().map(|h| tag(h)).collect(),
                version: 1,
                ..TicketState::blank(0, crate::domain::SlaClocks::untracked())
            },
        }
    }

    fn event(kind: EventKind, ticket: Ticket) -> TicketEvent {
        TicketEvent {
            position: 1,
            at: 0,
            actor: "x".into(),
            kind,
            ticket,
        }
    }

    fn viewer(name: &str, channels: &[&str], skills: &[(&str, Rank)]) -> Viewer {
        Viewer {
            expert: id(name),
            channels: channels.iter().map(|c| tag(c)).collect(),
            skills: skills
                .iter()
                .map(|(t, r)| Skill {
                    tag: tag(t),
                    rank: *r,
                })
                .collect(),
        }
    }

    #[test]
    fn unowned_ticket_is_an_offer_only_to_those_who_qualify() {
        let e = event(EventKind::Created, ticket(None, &[], &[]));
        let senior = viewer("ann", &["network"], &[("network", Rank::L3)]);
        let junior = viewer("bob", &["network"], &[("network", Rank::L1)]);
        let elsewhere = viewer("cat", &["office"], &[("network", Rank::L3)]);
        assert_eq!(swarm_reason(&e, &senior), Some(SwarmReason::Offer));
        assert_eq!(swarm_reason(&e, &junior), Some(SwarmReason::Swarm));
        assert_eq!(swarm_reason(&e, &elsewhere), None);
    }

    #[test]
    fn owner_gets_assigned_then_updates_even_off_channel() {
        let created = event(EventKind::Created, ticket(Some("ann"), &[], &[]));
        let ann = viewer("ann", &["office"], &[("network", Rank::L3)]);
        assert_eq!(swarm_reason(&created, &ann), Some(SwarmReason::Assigned));
        let msg = event(
            EventKind::Message {
                body: "hi".into(),
                visibility: Visibility::Internal,
            },
            ticket(Some("ann"), &["bob"], &[]),
        );
        assert_eq!(swarm_reason(&msg, &ann), Some(SwarmReason::Update));
        let bob = viewer("bob", &[], &[]);
        assert_eq!(swarm_reason(&msg, &bob), Some(SwarmReason::Update));
        let cat = viewer("cat", &["network"], &[("network", Rank::L3)]);
        assert_eq!(swarm_reason(&msg, &cat), Some(SwarmReason::Swarm));
    }

    #[test]
    fn leaver_and_releaser_hear_of_their_own_departure() {
        let left = event(
            EventKind::Left { expert: id("bob") },
            ticket(Some("ann"), &[], &[]),
        );
        assert_eq!(
            swarm_reason(&left, &viewer("bob", &[], &[])),
            Some(SwarmReason::Update)
        );
        let released = event(
            EventKind::Released { from: id("ann") },
            ticket(None, &[], &[]),
        );
        assert_eq!(
            swarm_reason(&released, &viewer("ann", &[], &[])),
            Some(SwarmReason::Update)
        );
    }

    #[test]
    fn help_request_reaches_new_channels_with_its_own_reason() {
        let e = event(
            EventKind::HelpRequested {
                skills: vec![],
                added: vec![tag("database")],
                note: String::new(),
            },
            ticket(Some("ann"), &[], &["database"]),
        );
        let dba = viewer("dan", &["database"], &[]);
        let netops = viewer("nat", &["network", "database"], &[]);
        assert_eq!(swarm_reason(&e, &dba), Some(SwarmReason::HelpRequested));
        // Already reached through network: an ordinary swarm update.
        assert_eq!(swarm_reason(&e, &netops), Some(SwarmReason::Swarm));
    }

    #[test]
    fn public_view_hides_the_swarm_only_parts() {
        let t = ticket(Some("ann"), &[], &[]);
        let internal = event(
            EventKind::Message {
                body: "note".into(),
                visibility: Visibility::Internal,
            },
            t.clone(),
        );
        assert!(public_view(&internal).is_none());
        let suggested = EventKind::ArticlesSuggested {
            articles: vec![ArticleId(1)],
        };
        assert!(public_view(&event(suggested, t.clone())).is_none());
        let link = |link| EventKind::ArticleLinked {
            article: ArticleId(2),
            link,
        };
        assert!(public_view(&event(link(ArticleLink::Captured), t.clone())).is_none());
        assert!(public_view(&event(link(ArticleLink::Reused), t.clone())).is_some());
        let status = event(
            EventKind::StatusChanged {
                from: TicketStatus::Assigned,
                to: TicketStatus::Resolved,
                note: "customer was rude".into(),
            },
            t,
        );
        match public_view(&status).unwrap().into_owned().kind {
            EventKind::StatusChanged { note, .. } => assert!(note.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_named_swarm_alone_gives_escalated() {
        let mut t = ticket(None, &[], &[]);
        t.state.escalated = vec![NamedSwarm::Sev1.tag()];
        let e = event(EventKind::Created, t);
        let on_call = viewer("oc", &["sev1"], &[("network", Rank::L3)]);
        let netops = viewer("nat", &["network", "sev1"], &[("network", Rank::L3)]);
        assert_eq!(swarm_reason(&e, &on_call), Some(SwarmReason::Escalated));
        assert_eq!(swarm_reason(&e, &netops), Some(SwarmReason::Offer));
        assert_eq!(swarm_reason(&e, &viewer("x", &["triage"], &[])), None);
    }
}
