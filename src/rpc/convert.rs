//! Conversions between generated messages and domain types. Parsing names
//! the offending field, so INVALID_ARGUMENT always says which one.

use prost_types::Timestamp;

use super::pb;
use crate::desk::ExpertView;
use crate::domain::knowledge::KnowledgeUse;
use crate::domain::sla::{ClockState, TargetClock, WorkMicros};
use crate::domain::{
    Article, ArticleId, ArticleState, DeskError, EventKind, ExpertId, Grant, Rank, Skill,
    SkillRequirement, SlaTarget, SwarmReason, Tag, Ticket, TicketEvent, TicketId, TokenRecord,
    UnixMicros, VendorRef,
};
use crate::hub::Delivery;
use crate::knowledge::index::Hit;

/// Parses an enum number: 0 gives `default` (or is refused when there is
/// none), and numbers outside the enum are refused.
pub fn parse_enum<T>(
    field: &str,
    n: i32,
    from_number: fn(i32) -> Option<T>,
    default: Option<T>,
) -> Result<T, DeskError> {
    match (n, default) {
        (0, Some(d)) => Ok(d),
        (0, None) => Err(DeskError::invalid(
            field,
            "a value is required (not UNSPECIFIED)",
        )),
        (n, _) => from_number(n)
            .ok_or_else(|| DeskError::invalid(field, format!("{n} is not a known value"))),
    }
}

/// Like [`parse_enum`] with no default, but 0 means "not given".
pub fn parse_optional_enum<T>(
    field: &str,
    n: i32,
    from_number: fn(i32) -> Option<T>,
) -> Result<Option<T>, DeskError> {
    if n == 0 {
        return Ok(None);
    }
    parse_enum(field, n, from_number, None).map(Some)
}

pub fn ticket_id(field: &str, raw: &str) -> Result<TicketId, DeskError> {
    TicketId::parse(field, raw)
}

pub fn expert_id(field: &str, raw: &str) -> Result<ExpertId, DeskError> {
    ExpertId::parse(field, raw)
}

pub fn requirements(
    field: &str,
    skills: &[pb::SkillRequirement],
) -> Result<Vec<SkillRequirement>, DeskError> {
    skills
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(SkillRequirement {
                tag: Tag::parse(&format!("{field}[{i}].tag"), &s.tag)?,
                min_rank: parse_enum(
                    &format!("{field}[{i}].min_rank"),
                    s.min_rank,
                    Rank::from_number,
                    Some(Rank::L1),
                )?,
            })
        })
        .collect()
}

pub fn skills(field: &str, skills: &[pb::Skill]) -> Result<Vec<Skill>, DeskError> {
    skills
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(Skill {
                tag: Tag::parse(&format!("{field}[{i}].tag"), &s.tag)?,
                rank: parse_enum(
                    &format!("{field}[{i}].rank"),
                    s.rank,
                    Rank::from_number,
                    None,
                )?,
            })
        })
        .collect()
}

pub fn tags(field: &str, raw: &[String]) -> Result<Vec<Tag>, DeskError> {
    raw.iter()
        .enumerate()
        .map(|(i, t)| Tag::parse(&format!("{field}[{i}]"), t))
        .collect()
}

/// A request's timestamp as microseconds, refused when out of range.
pub fn micros(field: &str, t: &Timestamp) -> Result<UnixMicros, DeskError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(DeskError::invalid(field, "nanos must be in 0..1e9"));
    }
    t.seconds
        .checked_mul(1_000_000)
        .and_then(|s| s.checked_add(i64::from(t.nanos / 1000)))
        .ok_or_else(|| DeskError::invalid(field, "timestamp out of range"))
}

pub fn timestamp(micros: UnixMicros) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    })
}

pub fn duration(micros: WorkMicros) -> prost_types::Duration {
    // Seconds and nanos carry the same sign, as the type requires.
    prost_types::Duration {
        seconds: micros / 1_000_000,
        nanos: ((micros % 1_000_000) * 1000) as i32,
    }
}

fn sla_clock(target: SlaTarget, clock: &TargetClock) -> pb::SlaClock {
    use pb::SlaClockState as S;
    let mut out = pb::SlaClock {
        target: target.number(),
        breached_at: clock.breached_at.and_then(timestamp),
        ..Default::default()
    };
    match clock.state {
        ClockState::Running { due } if due == UnixMicros::MAX => {
            out.state = S::Untracked as i32;
        }
        ClockState::Paused { left } if left == WorkMicros::MAX => {
            out.state = S::Untracked as i32;
        }
        ClockState::Running { due } => {
            out.state = S::Running as i32;
            out.due = timestamp(due);
        }
        ClockState::Paused { left } => {
            out.state = S::Paused as i32;
            out.left = Some(duration(left));
        }
        ClockState::Met { at, left } => {
            out.state = S::Met as i32;
            out.met_at = timestamp(at);
            out.left = Some(duration(left));
        }
    }
    out
}

/// The vendor of an UpdateStatus, if one was given.
pub fn vendor(v: Option<&pb::Vendor>) -> Option<VendorRef> {
    v.map(|v| VendorRef {
        name: v.name.clone(),
        reference: v.reference.clone(),
    })
}

pub fn ticket(t: &Ticket) -> pb::Ticket {
    let h = &t.header;
    let s = &t.state;
    pb::Ticket {
        id: h.id.to_string(),
        title: h.title.clone(),
        description: h.description.clone(),
        requester: h.requester.clone(),
        channel: h.channel.number(),
        kind: h.kind.number(),
        priority: h.priority.number(),
        skills: h
            .skills
            .iter()
            .map(|r| pb::SkillRequirement {
                tag: r.tag.to_string(),
                min_rank: r.min_rank.number(),
            })
            .collect(),
        status: s.status.number(),
        owner_id: s
            .owner
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        swarm_member_ids: s.members.iter().map(ToString::to_string).collect(),
        created_at: timestamp(h.created_at),
        updated_at: timestamp(s.updated_at),
        version: s.version,
        help_tags: s.help_tags.iter().map(ToString::to_string).collect(),
        created_by: h
            .created_by
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        sla: SlaTarget::ALL
            .iter()
            .map(|t| sla_clock(*t, s.sla.get(*t)))
            .collect(),
        breached: s.sla.breached().map(SlaTarget::number).collect(),
        escalated_to: s.escalated.iter().map(ToString::to_string).collect(),
        vendor: s.vendor.as_ref().map(|v| pb::Vendor {
            name: v.name.clone(),
            reference: v.reference.clone(),
        }),
        rating: s.rating.as_ref().map(|r| pb::Rating {
            score: u32::from(r.score),
            comment: r.comment.clone(),
            rated_at: timestamp(r.at),
        }),
    }
}

/// A token record, never its secret (the record holds only a hash anyway).
/// A cluster's status, as `ClusterStatus` answers it.
pub fn cluster_status(status: &crate::cluster::ClusterStatus) -> pb::ClusterStatusResponse {
    pb::ClusterStatusResponse {
        node_id: status.node_id.clone(),
        writer: status
            .writer
            .as_ref()
            .map(|w| w.node.clone())
            .unwrap_or_default(),
        nodes: status
            .nodes
            .iter()
            .map(|n| pb::ClusterNode {
                id: n.node.clone(),
                address: n.url.clone(),
                writer: n.writer,
                applied_sequence: n.applied,
                lag: status.log_last.saturating_sub(n.applied),
                last_heartbeat: timestamp(n.at),
            })
            .collect(),
        log_last_sequence: status.log_last,
        replicas: status
            .replicas
            .iter()
            .map(|r| pb::LogReplica {
                server: r.server.clone(),
                leader: r.leader,
                current: r.current,
                offline: r.offline,
                lag: r.lag,
            })
            .collect(),
    }
}

pub fn token(t: &TokenRecord) -> pb::Token {
    let (expert_id, bot_name) = match &t.grant {
        Grant::Expert(e) => (e.to_string(), String::new()),
        Grant::Bot(b) => (String::new(), b.to_string()),
        Grant::Admin | Grant::Supervisor => (String::new(), String::new()),
    };
    pb::Token {
        id: t.id.to_string(),
        label: t.label.clone(),
        role: t.grant.role().number(),
        expert_id,
        bot_name,
        created_at: timestamp(t.created_at),
        last_used_at: t.last_used_at.and_then(timestamp),
        revoked_at: t.revoked_at.and_then(timestamp),
    }
}

fn owner_changed(from: Option<&ExpertId>, to: Option<&ExpertId>) -> pb::ticket_event::Payload {
    pb::ticket_event::Payload::OwnerChanged(pb::OwnerChanged {
        from_expert_id: from.map(ToString::to_string).unwrap_or_default(),
        to_expert_id: to.map(ToString::to_string).unwrap_or_default(),
    })
}

pub fn event(e: &TicketEvent) -> pb::TicketEvent {
    use pb::ticket_event::Payload;
    use pb::TicketEventType as T;
    let (kind, payload) = match &e.kind {
        EventKind::Created => (
            T::Created,
            e.ticket
                .state
                .owner
                .as_ref()
                .map(|o| owner_changed(None, Some(o))),
        ),
        EventKind::Assigned { to } => (T::Assigned, Some(owner_changed(None, Some(to)))),
        EventKind::Claimed { by } => (T::Claimed, Some(owner_changed(None, Some(by)))),
        EventKind::Transferred { from, to } => {
            (T::Transferred, Some(owner_changed(Some(from), Some(to))))
        }
        EventKind::Released { from } => (T::Released, Some(owner_changed(Some(from), None))),
        EventKind::Joined { expert } => (
            T::Joined,
            Some(Payload::MemberChanged(pb::MemberChanged {
                expert_id: expert.to_string(),
            })),
        ),
        EventKind::Left { expert } => (
            T::Left,
            Some(Payload::MemberChanged(pb::MemberChanged {
                expert_id: expert.to_string(),
            })),
        ),
        EventKind::HelpRequested {
            skills,
            added,
            note,
        } => (
            T::HelpRequested,
            Some(Payload::HelpRequested(pb::HelpRequested {
                skills: skills
                    .iter()
                    .map(|r| pb::SkillRequirement {
                        tag: r.tag.to_string(),
                        min_rank: r.min_rank.number(),
                    })
                    .collect(),
                added_tags: added.iter().map(ToString::to_string).collect(),
                note: note.clone(),
            })),
        ),
        EventKind::StatusChanged { from, to, note } => (
            T::StatusChanged,
            Some(Payload::StatusChanged(pb::StatusChanged {
                from: from.number(),
                to: to.number(),
                note: note.clone(),
            })),
        ),
        EventKind::Message { body, visibility } => (
            T::Message,
            Some(Payload::Message(pb::MessagePosted {
                body: body.clone(),
                visibility: visibility.number(),
            })),
        ),
        EventKind::SlaBreached { target, due } => (
            T::SlaBreached,
            Some(Payload::SlaBreached(pb::SlaBreached {
                target: target.number(),
                due: timestamp(*due),
            })),
        ),
        EventKind::OwnerLost { from, reason } => (
            T::OwnerLost,
            Some(Payload::OwnerLost(pb::OwnerLost {
                expert_id: from.to_string(),
                reason: reason.clone(),
            })),
        ),
        EventKind::Rated { score, comment } => (
            T::Rated,
            Some(Payload::Rated(pb::Rated {
                score: u32::from(*score),
                comment: comment.clone(),
            })),
        ),
        EventKind::ArticlesSuggested { articles } => (
            T::ArticlesSuggested,
            Some(Payload::ArticlesSuggested(pb::ArticlesSuggested {
                article_ids: articles.iter().map(ToString::to_string).collect(),
            })),
        ),
        EventKind::ArticleLinked { article, link } => (
            T::ArticleLinked,
            Some(Payload::ArticleLinked(pb::ArticleLinked {
                article_id: article.to_string(),
                link: link.number(),
            })),
        ),
    };
    pb::TicketEvent {
        position: e.position,
        ticket_id: e.ticket_id().to_string(),
        ticket_seq: e.seq(),
        at: timestamp(e.at),
        r#type: kind as i32,
        actor_id: e.actor.clone(),
        ticket: Some(ticket(&e.ticket)),
        payload,
    }
}

/// An expert stream's message; the event is converted and encoded once
/// for all the streams the fan-out gave it to.
pub fn swarm_event(d: &Delivery) -> pb::SwarmEvent {
    let encoded = d
        .encoded
        .get_or_init(|| super::wire::encode_event(&event(&d.event)));
    pb::SwarmEvent {
        position: d.event.position,
        reason: d.reason.map_or(0, SwarmReason::number),
        encoded_event: Some(encoded.clone()),
        ..Default::default()
    }
}

/// A desk-wide stream's message: every event, reason DESK.
pub fn desk_event(d: &Delivery) -> pb::SwarmEvent {
    pb::SwarmEvent {
        reason: pb::SwarmEventReason::Desk as i32,
        ..swarm_event(d)
    }
}

pub fn ticket_activity(view: &crate::desk::TicketActivityView) -> pb::TicketActivity {
    pb::TicketActivity {
        ticket_id: view.ticket.to_string(),
        experts: view
            .experts
            .iter()
            .map(|(activity, name)| pb::ExpertActivity {
                expert_id: activity.expert.to_string(),
                display_name: name.clone(),
                activity: activity.activity.number(),
                since: timestamp(activity.since),
            })
            .collect(),
    }
}

pub fn expert(v: &ExpertView) -> pb::Expert {
    let e = &v.expert;
    pb::Expert {
        id: e.id.to_string(),
        display_name: e.display_name.clone(),
        skills: e
            .skills
            .iter()
            .map(|s| pb::Skill {
                tag: s.tag.to_string(),
                rank: s.rank.number(),
            })
            .collect(),
        capacity: e.capacity,
        online: v.online,
        owned_open: e.owned_open,
        presence: e.presence.number(),
        channels: e
            .channels
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect(),
    }
}

pub fn article(a: &Article) -> pb::Article {
    pb::Article {
        id: a.id.to_string(),
        title: a.content.title.clone(),
        body: a.content.body.clone(),
        tags: a.content.tags.iter().map(ToString::to_string).collect(),
        state: a.state.number(),
        version: a.version,
        author: a.author.clone(),
        created_at: timestamp(a.created_at),
        updated_at: timestamp(a.updated_at),
        published_at: a.published_at.and_then(timestamp),
        source_ticket_id: a.source_ticket.map(|t| t.to_string()).unwrap_or_default(),
    }
}

pub fn hit(h: &Hit) -> pb::ArticleHit {
    pb::ArticleHit {
        article_id: h.id.to_string(),
        title: h.title.clone(),
        tags: h.tags.iter().map(ToString::to_string).collect(),
        state: h.state.number(),
        score: h.score,
        snippet: h.snippet.clone(),
    }
}

pub fn article_state(field: &str, raw: i32) -> Result<ArticleState, DeskError> {
    parse_enum(field, raw, ArticleState::from_number, None)
}

pub fn knowledge_use(k: pb::update_status_request::Knowledge) -> Result<KnowledgeUse, DeskError> {
    use pb::update_status_request::Knowledge;
    Ok(match k {
        Knowledge::ReuseArticleId(id) => {
            KnowledgeUse::Reuse(ArticleId::parse("reuse_article_id", &id)?)
        }
        Knowledge::CaptureArticle(c) => KnowledgeUse::Capture {
            title: c.title,
            body: c.body,
            tags: if c.tags.is_empty() {
                None
            } else {
                Some(tags("capture_article.tags", &c.tags)?)
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_default_or_refuse_with_the_field_named() {
        assert_eq!(
            parse_enum("p", 0, Rank::from_number, Some(Rank::L1)).unwrap(),
            Rank::L1
        );
        let err = parse_enum("skills[0].rank", 0, Rank::from_number, None).unwrap_err();
        assert!(err.to_string().starts_with("skills[0].rank"), "{err}");
        let err = parse_enum("priority", 9, Rank::from_number, Some(Rank::L1)).unwrap_err();
        assert!(err.to_string().contains("9"), "{err}");
    }

    #[test]
    fn timestamps_split_micros() {
        let t = timestamp(1_500_000).unwrap();
        assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
    }
}
