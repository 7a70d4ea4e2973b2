//! How client commands print: aligned text for people, JSON lines for scripts.

use serde_json::{json, Value};

use crate::domain::{
    ArticleLink, ArticleState, ContactChannel, Presence, Priority, Rank, SlaTarget, SwarmReason,
    TicketKind, TicketStatus, Visibility,
};
use crate::rpc::pb;

fn label<T: std::fmt::Display>(n: i32, from: fn(i32) -> Option<T>) -> String {
    from(n).map_or_else(|| "unspecified".to_owned(), |v| v.to_string())
}

/// A time for scripts (JSON): Unix seconds with microseconds.
fn time(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .map(|t| format!("{}.{:06}", t.seconds, t.nanos / 1000))
        .unwrap_or_default()
}

/// A time for people: how long ago or from now, then the local time.
fn when(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .map(|t| {
            super::humane::humane(
                t.seconds,
                jiff::Timestamp::now().as_second(),
                &jiff::tz::TimeZone::system(),
            )
        })
        .unwrap_or_default()
}

fn requirements(skills: &[pb::SkillRequirement]) -> Vec<String> {
    skills
        .iter()
        .map(|s| format!("{}:{}", s.tag, label(s.min_rank, Rank::from_number)))
        .collect()
}

fn ticket_json(t: &pb::Ticket) -> Value {
    json!({
        "id": t.id,
        "title": t.title,
        "description": t.description,
        "requester": t.requester,
        "channel": label(t.channel, ContactChannel::from_number),
        "kind": label(t.kind, TicketKind::from_number),
        "priority": label(t.priority, Priority::from_number),
        "skills": requirements(&t.skills),
        "help_tags": t.help_tags,
        "status": label(t.status, TicketStatus::from_number),
        "owner_id": t.owner_id,
        "swarm_member_ids": t.swarm_member_ids,
        "created_at": time(&t.created_at),
        "updated_at": time(&t.updated_at),
        "version": t.version,
        "created_by": t.created_by,
        "sla": t.sla.iter().map(sla_json).collect::<Vec<_>>(),
        "breached": t.breached.iter().map(|b| label(*b, SlaTarget::from_number)).collect::<Vec<_>>(),
        "escalated_to": t.escalated_to,
        "vendor": t.vendor.as_ref().map(|v| json!({"name": v.name, "reference": v.reference})),
        "rating": t.rating.as_ref().map(|r| json!({"score": r.score, "comment": r.comment, "rated_at": time(&r.rated_at)})),
    })
}

fn sla_json(c: &pb::SlaClock) -> Value {
    let state = pb::SlaClockState::try_from(c.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("SLA_CLOCK_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unknown".to_owned());
    json!({
        "target": label(c.target, SlaTarget::from_number),
        "state": state,
        "due": time(&c.due),
        "left_seconds": c.left.as_ref().map(|d| d.seconds),
        "met_at": time(&c.met_at),
        "breached_at": time(&c.breached_at),
    })
}

fn role(n: i32) -> String {
    pb::Role::try_from(n)
        .map(|r| {
            r.as_str_name()
                .trim_start_matches("ROLE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn token_json(t: &pb::Token) -> Value {
    json!({
        "id": t.id,
        "label": t.label,
        "role": role(t.role),
        "expert_id": t.expert_id,
        "bot_name": t.bot_name,
        "created_at": time(&t.created_at),
        "last_used_at": time(&t.last_used_at),
        "revoked_at": time(&t.revoked_at),
    })
}

fn event_type(n: i32) -> String {
    pb::TicketEventType::try_from(n)
        .map(|t| {
            t.as_str_name()
                .trim_start_matches("TICKET_EVENT_TYPE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn payload_text(e: &pb::TicketEvent) -> String {
    use pb::ticket_event::Payload;
    match &e.payload {
        Some(Payload::Message(m)) => format!(
            "[{}] {}",
            label(m.visibility, Visibility::from_number),
            m.body
        ),
        Some(Payload::OwnerChanged(o)) => format!(
            "owner {} -> {}",
            if o.from_expert_id.is_empty() {
                "-"
            } else {
                &o.from_expert_id
            },
            if o.to_expert_id.is_empty() {
                "-"
            } else {
                &o.to_expert_id
            }
        ),
        Some(Payload::StatusChanged(s)) => format!(
            "{} -> {}{}",
            label(s.from, TicketStatus::from_number),
            label(s.to, TicketStatus::from_number),
            if s.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.note)
            }
        ),
        Some(Payload::HelpRequested(h)) => format!(
            "help wanted: {} {}",
            requirements(&h.skills).join(","),
            h.note
        ),
        Some(Payload::MemberChanged(m)) => m.expert_id.clone(),
        Some(Payload::SlaBreached(b)) => format!(
            "{} breached (due {})",
            label(b.target, SlaTarget::from_number),
            when(&b.due)
        ),
        Some(Payload::OwnerLost(o)) => format!("{} lost it: {}", o.expert_id, o.reason),
        Some(Payload::Rated(r)) => format!("{} of 5 {}", r.score, r.comment),
        Some(Payload::ArticlesSuggested(a)) => format!("suggested {}", a.article_ids.join(", ")),
        Some(Payload::ArticleLinked(a)) => format!(
            "{} {}",
            label(a.link, ArticleLink::from_number),
            a.article_id
        ),
        None => String::new(),
    }
}

fn event_json(e: &pb::TicketEvent, reason: Option<i32>) -> Value {
    let mut v = json!({
        "position": e.position,
        "ticket_id": e.ticket_id,
        "ticket_seq": e.ticket_seq,
        "at": time(&e.at),
        "type": event_type(e.r#type),
        "actor_id": e.actor_id,
        "detail": payload_text(e),
        "ticket": e.ticket.as_ref().map(ticket_json),
    });
    if let Some(reason) = reason {
        v["reason"] = json!(label(reason, SwarmReason::from_number));
    }
    v
}

/// Prints replies in the chosen format.
#[derive(Clone, Copy, Debug)]
pub(super) struct Printer {
    pub(super) json: bool,
}

impl Printer {
    pub(super) fn ticket(&self, t: &pb::Ticket) {
        if self.json {
            println!("{}", ticket_json(t));
            return;
        }
        let owner = if t.owner_id.is_empty() {
            "-"
        } else {
            &t.owner_id
        };
        println!(
            "{:<8} {:<16} owner={:<12} {} {:<16} {:?} [{}]",
            t.id,
            label(t.status, TicketStatus::from_number),
            owner,
            label(t.priority, Priority::from_number),
            label(t.kind, TicketKind::from_number),
            t.title,
            requirements(&t.skills).join(" ")
        );
    }

    pub(super) fn ticket_detail(&self, t: &pb::Ticket) {
        if self.json {
            println!("{}", ticket_json(t));
            return;
        }
        self.ticket(t);
        println!(
            "  requester: {}  channel: {}",
            t.requester,
            label(t.channel, ContactChannel::from_number)
        );
        if !t.swarm_member_ids.is_empty() {
            println!("  swarm: {}", t.swarm_member_ids.join(", "));
        }
        if !t.help_tags.is_empty() {
            println!("  help asked from: {}", t.help_tags.join(", "));
        }
        if !t.escalated_to.is_empty() {
            println!("  escalated to: {}", t.escalated_to.join(", "));
        }
        for clock in &t.sla {
            let v = sla_json(clock);
            println!(
                "  sla {}: {} {}{}",
                v["target"].as_str().unwrap_or_default(),
                v["state"].as_str().unwrap_or_default(),
                match v["state"].as_str() {
                    Some("running") => format!("due {}", when(&clock.due)),
                    Some("met") => when(&clock.met_at),
                    Some("paused") =>
                        format!("{}s left", clock.left.as_ref().map_or(0, |d| d.seconds)),
                    _ => String::new(),
                },
                if clock.breached_at.is_some() {
                    " (breached)"
                } else {
                    ""
                }
            );
        }
        if let Some(v) = &t.vendor {
            println!("  vendor: {} ref {}", v.name, v.reference);
        }
        if let Some(r) = &t.rating {
            println!("  rated {} of 5 {}", r.score, r.comment);
        }
        println!(
            "  version: {}  created: {}  updated: {}",
            t.version,
            when(&t.created_at),
            when(&t.updated_at)
        );
        if !t.description.is_empty() {
            println!("  {}", t.description);
        }
    }

    pub(super) fn token(&self, t: &pb::Token) {
        if self.json {
            println!("{}", token_json(t));
            return;
        }
        let bound = [t.expert_id.as_str(), t.bot_name.as_str()].concat();
        let dash = |s: String| if s.is_empty() { "-".to_owned() } else { s };
        println!(
            "{:<20} {:<10} {:<12} created={} last_used={}{} {:?}",
            t.id,
            role(t.role),
            dash(bound),
            when(&t.created_at),
            dash(when(&t.last_used_at)),
            t.revoked_at
                .as_ref()
                .map(|_| format!(" revoked={}", when(&t.revoked_at)))
                .unwrap_or_default(),
            t.label,
        );
    }

    /// A new token: its record, then the secret, which is shown only now.
    pub(super) fn new_token(&self, t: &pb::Token, secret: &str) {
        if self.json {
            let mut value = token_json(t);
            value["secret"] = json!(secret);
            println!("{value}");
            return;
        }
        self.token(t);
        println!("secret (shown once; store it now): {secret}");
    }

    pub(super) fn expert(&self, e: &pb::Expert) {
        let skills: Vec<String> = e
            .skills
            .iter()
            .map(|s| format!("{}:{}", s.tag, label(s.rank, Rank::from_number)))
            .collect();
        if self.json {
            println!(
                "{}",
                json!({
                    "id": e.id,
                    "display_name": e.display_name,
                    "skills": skills,
                    "capacity": e.capacity,
                    "online": e.online,
                    "owned_open": e.owned_open,
                    "presence": label(e.presence, Presence::from_number),
                    "channels": e.channels,
                })
            );
            return;
        }
        println!(
            "{:<12} {:<8} {:<9} load={}/{} [{}] {}",
            e.id,
            if e.online { "online" } else { "offline" },
            label(e.presence, Presence::from_number),
            e.owned_open,
            e.capacity,
            skills.join(" "),
            e.display_name
        );
    }

    pub(super) fn event(&self, e: &pb::TicketEvent, reason: Option<i32>) {
        if self.json {
            println!("{}", event_json(e, reason));
            return;
        }
        let reason = reason
            .map(|r| format!("{:<15}", label(r, SwarmReason::from_number)))
            .unwrap_or_default();
        let title = e.ticket.as_ref().map(|t| t.title.as_str()).unwrap_or("");
        println!(
            "@{:<6} {}{:<6} #{:<3} {:<15} by {:<10} {:?} {}",
            e.position,
            reason,
            e.ticket_id,
            e.ticket_seq,
            event_type(e.r#type),
            e.actor_id,
            title,
            payload_text(e)
        );
    }

    pub(super) fn swarm_event(&self, e: &pb::SwarmEvent) {
        if let Some(event) = &e.event {
            self.event(event, Some(e.reason));
        }
    }

    pub(super) fn next_page(&self, token: &str) {
        if token.is_empty() {
            return;
        }
        if self.json {
            println!("{}", json!({ "next_page_token": token }));
        } else {
            println!("(more: --page-token {token})");
        }
    }

    pub(super) fn stats(&self, s: &pb::Stats) {
        let seconds = |d: &Option<prost_types::Duration>| {
            d.as_ref()
                .map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
        };
        let summary = |d: &Option<pb::DurationSummary>| {
            let d = d.unwrap_or_default();
            json!({"count": d.count, "median_seconds": seconds(&d.median), "p90_seconds": seconds(&d.p90)})
        };
        let value = json!({
            "from": time(&s.from),
            "to": time(&s.to),
            "tag": s.tag,
            "created": s.created,
            "resolved": s.resolved,
            "time_to_own": summary(&s.time_to_own),
            "time_to_first_response": summary(&s.time_to_first_response),
            "time_to_resolve": summary(&s.time_to_resolve),
            "sla": s.sla.iter().map(|a| json!({
                "target": label(a.target, SlaTarget::from_number),
                "met": a.met,
                "breached": a.breached,
                "attainment": a.attainment,
            })).collect::<Vec<_>>(),
            "ratings": s.ratings,
            "csat_average": s.csat_average,
            "satisfied_share": s.satisfied_share,
            "satisfied_goal": s.satisfied_goal,
            "satisfied_goal_met": s.satisfied_goal_met,
            "experts": s.experts.iter().map(|e| json!({
                "expert_id": e.expert_id,
                "resolved_as_owner": e.resolved_as_owner,
                "swarms_joined": e.swarms_joined,
                "internal_notes": e.internal_notes,
                "helped_others_resolve": e.helped_others_resolve,
                "articles_reused": e.articles_reused,
                "articles_captured": e.articles_captured,
            })).collect::<Vec<_>>(),
            "knowledge": s.knowledge.as_ref().map(|k| json!({
                "articles_suggested": k.articles_suggested,
                "suggested_on_tickets": k.suggested_on_tickets,
                "deflections": k.deflections,
                "reused": k.reused,
                "captured": k.captured,
                "link_rate": k.link_rate,
            })),
        });
        if self.json {
            println!("{value}");
            return;
        }
        println!(
            "from {} to {}{}",
            when(&s.from),
            when(&s.to),
            if s.tag.is_empty() {
                String::new()
            } else {
                format!(" (tag {})", s.tag)
            }
        );
        println!("created {}  resolved {}", s.created, s.resolved);
        for (name, key) in [
            ("own", "time_to_own"),
            ("first response", "time_to_first_response"),
            ("resolve", "time_to_resolve"),
        ] {
            let v = &value[key];
            println!(
                "time to {name:<15} n={:<6} median={:>10} p90={:>10}",
                v["count"],
                v["median_seconds"]
                    .as_f64()
                    .map_or("-".into(), |x| format!("{x:.1}s")),
                v["p90_seconds"]
                    .as_f64()
                    .map_or("-".into(), |x| format!("{x:.1}s")),
            );
        }
        for a in &s.sla {
            println!(
                "sla {:<15} met {:<6} breached {:<6} attainment {}",
                label(a.target, SlaTarget::from_number),
                a.met,
                a.breached,
                super::humane::share(a.met + a.breached, a.attainment)
            );
        }
        println!(
            "csat {} ratings, average {:.2}, satisfied {} (goal {:.0}%: {})",
            s.ratings,
            s.csat_average,
            super::humane::share(s.ratings, s.satisfied_share),
            s.satisfied_goal * 100.0,
            if s.ratings == 0 {
                "no ratings yet"
            } else if s.satisfied_goal_met {
                "met"
            } else {
                "not met"
            }
        );
        if let Some(k) = &s.knowledge {
            println!(
                "knowledge suggested {} ({} on tickets)  deflections {}  reused {}  captured {}  link rate {}",
                k.articles_suggested,
                k.suggested_on_tickets,
                k.deflections,
                k.reused,
                k.captured,
                super::humane::share(s.resolved, k.link_rate)
            );
        }
        for e in &s.experts {
            println!(
                "  {:<20} resolved {:<4} joined {:<4} notes {:<4} helped {:<4} reused {:<4} captured {}",
                e.expert_id,
                e.resolved_as_owner,
                e.swarms_joined,
                e.internal_notes,
                e.helped_others_resolve,
                e.articles_reused,
                e.articles_captured
            );
        }
    }

    pub(super) fn article(&self, a: &pb::Article) {
        let value = json!({
            "id": a.id,
            "title": a.title,
            "body": a.body,
            "tags": a.tags,
            "state": label(a.state, ArticleState::from_number),
            "version": a.version,
            "author": a.author,
            "created_at": time(&a.created_at),
            "updated_at": time(&a.updated_at),
            "published_at": a.published_at.as_ref().map(|_| time(&a.published_at)),
            "source_ticket_id": a.source_ticket_id,
        });
        if self.json {
            println!("{value}");
            return;
        }
        println!(
            "{:<8} {:<10} v{:<3} {:?} [{}] by {}{}",
            a.id,
            label(a.state, ArticleState::from_number),
            a.version,
            a.title,
            a.tags.join(" "),
            a.author,
            if a.source_ticket_id.is_empty() {
                String::new()
            } else {
                format!(" from {}", a.source_ticket_id)
            }
        );
        println!("  {}", a.body.replace('\n', "\n  "));
    }

    pub(super) fn deflection(&self, article: &str, recorded: bool) {
        if self.json {
            println!("{}", json!({ "article_id": article, "recorded": recorded }));
        } else if recorded {
            println!("deflection recorded for {article}");
        } else {
            println!("already recorded (same request id): nothing counted");
        }
    }

    pub(super) fn hit(&self, h: &pb::ArticleHit) {
        if self.json {
            println!(
                "{}",
                json!({
                    "article_id": h.article_id,
                    "title": h.title,
                    "tags": h.tags,
                    "state": label(h.state, ArticleState::from_number),
                    "score": h.score,
                    "snippet": h.snippet,
                })
            );
            return;
        }
        println!(
            "{:<8} {:>6.2} {:<10} {:?} [{}]",
            h.article_id,
            h.score,
            label(h.state, ArticleState::from_number),
            h.title,
            h.tags.join(" ")
        );
        println!("  {}", h.snippet.replace('\n', " "));
    }
}
