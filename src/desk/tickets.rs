//! Ticket moves: create (idempotent), read and list, and every change of
//! an existing ticket through one path (`change_ticket`).
use super::routing::RoutingState;
use super::{request_key, Desk, DEFAULT_PAGE_SIZE, LIST_SCAN_LIMIT, MAX_PAGE_SIZE};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::domain::knowledge::KnowledgeUse;
use crate::domain::lifecycle::{self, Author, Move};
use crate::domain::{
    check_short_text, check_skill_list, check_text, check_title, ArticleContent, ArticleId,
    ArticleLink, BotName, ContactChannel, DeskError, EventKind, ExpertId, Priority,
    SkillRequirement, Tag, Ticket, TicketEvent, TicketHeader, TicketId, TicketKind, TicketStatus,
    VendorRef, Visibility, MAX_BODY_BYTES, MAX_NOTE_BYTES,
};
use crate::hub::{Filter, Start, Subscription};
use crate::knowledge::index::Hit;

/// A ticket as CreateTicket asks for it, already parsed into domain types.
#[derive(Clone, Debug)]
pub struct NewTicket {
    pub title: String,
    pub description: String,
    pub requester: String,
    pub channel: ContactChannel,
    pub kind: TicketKind,
    pub priority: Priority,
    pub skills: Vec<SkillRequirement>,
    pub request_id: Option<String>,
    /// The bot creating it, if a bot is.
    pub created_by: Option<BotName>,
}

impl NewTicket {
    pub(super) fn validate(&self) -> Result<(), DeskError> {
        check_title("title", &self.title)?;
        check_text("description", &self.description, MAX_BODY_BYTES)?;
        if self.requester.trim().is_empty() {
            return Err(DeskError::invalid("requester", "a requester is required"));
        }
        check_short_text("requester", &self.requester)?;
        check_skill_list("skills", self.skills.iter().map(|s| &s.tag))?;
        if let Some(id) = &self.request_id {
            check_short_text("request_id", id)?;
        }
        Ok(())
    }
}

/// Filters of ListTickets.
#[derive(Clone, Debug, Default)]
pub struct TicketQuery {
    pub status: Option<TicketStatus>,
    pub owner: Option<ExpertId>,
    pub tag: Option<Tag>,
    /// Only tickets this bot created (what a bot's listing is limited to).
    pub created_by: Option<BotName>,
    /// Tickets whose (latest) vendor has this name.
    pub vendor: Option<String>,
    pub page_size: usize,
    /// The first ticket id to examine.
    pub from: Option<TicketId>,
}

/// One page of ListTickets; `next` is where the following page starts.
#[derive(Clone, Debug)]
pub struct TicketPage {
    pub tickets: Vec<Ticket>,
    pub next: Option<TicketId>,
}

impl Desk {
    /// Creates a ticket and routes it; `false` when `request_id` matched an
    /// earlier create, whose ticket is returned as it is now. The hits are
    /// the published articles suggested for its text (recorded on the
    /// ticket when it is created).
    pub async fn create_ticket(
        &self,
        new: NewTicket,
    ) -> Result<(Ticket, bool, Vec<Hit>), DeskError> {
        self.ready().await?;
        new.validate()?;
        let suggestions = self
            .inner
            .knowledge
            .suggest_for_ticket(&new.title, &new.description)
            .await;
        let key = new
            .request_id
            .as_deref()
            .map(|r| request_key("create", new.created_by.as_ref(), r));
        let (ticket, lsn, created) = {
            let mut state = self.lock();
            if let Some(position) = self.known_request(key.as_deref())? {
                let event = self.event_at(position)?;
                (
                    self.load_ticket(event.ticket_id())?,
                    self.inner.storage.log.written_lsn(),
                    false,
                )
            } else {
                let id = self.inner.storage.log.allocate_ticket_id()?;
                let now = self.now();
                let header = Arc::new(TicketHeader {
                    id,
                    title: new.title,
                    description: new.description,
                    requester: new.requester.clone(),
                    channel: new.channel,
                    kind: new.kind,
                    priority: new.priority,
                    skills: new.skills,
                    created_at: now,
                    created_by: new.created_by,
                });
                let owner = state.best_owner(&header.skills, &[]);
                let clocks = self
                    .inner
                    .options
                    .sla
                    .for_priority(header.priority)
                    .fresh_clocks();
                let suggested: Vec<ArticleId> = suggestions.iter().map(|h| h.id).collect();
                let (blank, moves) =
                    lifecycle::create(header.clone(), owner.as_ref(), clocks, suggested, now);
                let (receipt, written) = self.commit_moves(
                    &mut state,
                    &blank,
                    Some(header),
                    moves,
                    &new.requester,
                    key,
                )?;
                let event = &receipt.events[0];
                tracing::debug!(ticket = %id, owner = ?owner.as_ref().map(ExpertId::as_str), position = event.position, "ticket created");
                let last = receipt.events.last().unwrap_or(event);
                (last.ticket.clone(), written.lsn, true)
            }
        };
        self.durable(lsn).await?;
        Ok((ticket, created, suggestions))
    }

    pub(super) fn known_request(&self, key: Option<&str>) -> Result<Option<u64>, DeskError> {
        match key {
            Some(k) => Ok(self.inner.storage.tickets.idempotent(k)?),
            None => Ok(None),
        }
    }

    pub(super) fn event_at(&self, position: u64) -> Result<Arc<TicketEvent>, DeskError> {
        self.inner.storage.tickets.event(position)?.ok_or_else(|| {
            DeskError::Storage(format!("idempotency record names missing event {position}"))
        })
    }

    pub fn get_ticket(&self, id: TicketId) -> Result<Ticket, DeskError> {
        self.load_ticket(id)
    }

    pub fn list_tickets(&self, query: &TicketQuery) -> Result<TicketPage, DeskError> {
        let page_size = match query.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let mut from = query.from.unwrap_or(TicketId(1));
        let mut tickets = Vec::new();
        let mut examined = 0;
        loop {
            let batch = self.inner.storage.tickets.tickets_from(from, 256)?;
            let Some(last) = batch.last() else {
                return Ok(TicketPage {
                    tickets,
                    next: None,
                });
            };
            from = TicketId(last.id().0 + 1);
            for ticket in batch {
                examined += 1;
                let matches = query.status.is_none_or(|s| ticket.state.status == s)
                    && query
                        .owner
                        .as_ref()
                        .is_none_or(|o| ticket.state.owner.as_ref() == Some(o))
                    && query
                        .tag
                        .as_ref()
                        .is_none_or(|t| ticket.audience().any(|a| a == t))
                    && query
                        .created_by
                        .as_ref()
                        .is_none_or(|b| ticket.header.created_by.as_ref() == Some(b))
                    && query.vendor.as_ref().is_none_or(|name| {
                        ticket
                            .state
                            .vendor
                            .as_ref()
                            .is_some_and(|v| &v.name == name)
                    });
                if matches {
                    tickets.push(ticket.clone());
                }
                if tickets.len() == page_size || examined >= LIST_SCAN_LIMIT {
                    let next = TicketId(ticket.id().0 + 1);
                    return Ok(TicketPage {
                        tickets,
                        next: Some(next),
                    });
                }
            }
        }
    }

    /// Applies one move computed from the ticket as stored, under the lock,
    /// then routes what it freed; waits for durability after unlocking.
    pub(super) async fn change_ticket<F>(
        &self,
        id: TicketId,
        actor: &str,
        idempotency_key: Option<String>,
        decide: F,
    ) -> Result<(Ticket, Vec<Arc<TicketEvent>>), DeskError>
    where
        F: FnOnce(&RoutingState, &Ticket) -> Result<Vec<Move>, DeskError>,
    {
        self.ready().await?;
        let (ticket, events, lsn) = {
            let mut state = self.lock();
            if let Some(position) = self.known_request(idempotency_key.as_deref())? {
                let event = self.event_at(position)?;
                if event.ticket_id() != id {
                    return Err(DeskError::invalid(
                        "request_id",
                        format!("already used for ticket {}", event.ticket_id()),
                    ));
                }
                let ticket = self.load_ticket(id)?;
                (ticket, vec![event], self.inner.storage.log.written_lsn())
            } else {
                let ticket = self.load_ticket(id)?;
                let moves = decide(&state, &ticket)?;
                if moves.is_empty() {
                    (ticket, vec![], 0)
                } else {
                    let (receipt, mut written) = self.commit_moves(
                        &mut state,
                        &ticket,
                        None,
                        moves,
                        actor,
                        idempotency_key,
                    )?;
                    let last = receipt.events.last();
                    let mut after = last.map(|e| e.ticket.clone()).unwrap_or(ticket);
                    let reopened = receipt.events.iter().any(|e| {
                        matches!(
                            e.kind,
                            EventKind::StatusChanged {
                                from: TicketStatus::Resolved,
                                ..
                            }
                        )
                    });
                    let away_owner = after
                        .state
                        .owner
                        .as_ref()
                        .filter(|o| !state.is_online(o) && o.as_str() != actor)
                        .cloned();
                    if after.state.status == TicketStatus::Open {
                        // Unowned now: the next best expert, not the one who let go.
                        let skip = last.and_then(|e| e.departed());
                        let routed = self.route_ticket(&mut state, &after, skip)?;
                        if routed.lsn > 0 {
                            after = self.load_ticket(id)?;
                        }
                        written.add(routed);
                    } else if let (true, Some(_)) = (reopened, away_owner) {
                        // Reopened while its owner is away: someone present takes it.
                        let reason = "offline when the ticket was reopened";
                        let (routed, w) =
                            self.take_from_owner(&mut state, &after, reason, self.now())?;
                        after = routed;
                        written.add(w);
                    }
                    self.route_freed(&mut state, &mut written)?;
                    (after, receipt.events, written.lsn)
                }
            }
        };
        self.durable(lsn).await?;
        Ok((ticket, events))
    }

    pub async fn claim(&self, id: TicketId, expert: &ExpertId) -> Result<Ticket, DeskError> {
        let now = self.now();
        let (ticket, _) = self
            .change_ticket(id, expert.as_str(), None, |state, ticket| {
                let candidate = state.expert(expert)?;
                Ok(vec![lifecycle::claim(ticket, candidate, now)?])
            })
            .await?;
        Ok(ticket)
    }

    pub async fn transfer(
        &self,
        id: TicketId,
        from: &ExpertId,
        to: &ExpertId,
    ) -> Result<Ticket, DeskError> {
        let now = self.now();
        let (ticket, _) = self
            .change_ticket(id, from.as_str(), None, |state, ticket| {
                state.expert(from)?;
                let target = state.expert(to)?;
                Ok(vec![lifecycle::transfer(ticket, from, target, now)?])
            })
            .await?;
        Ok(ticket)
    }

    pub async fn release(&self, id: TicketId, expert: &ExpertId) -> Result<Ticket, DeskError> {
        let now = self.now();
        let (ticket, _) = self
            .change_ticket(id, expert.as_str(), None, |state, ticket| {
                state.expert(expert)?;
                Ok(vec![lifecycle::release(ticket, expert, now)?])
            })
            .await?;
        Ok(ticket)
    }

    pub async fn join(&self, id: TicketId, expert: &ExpertId) -> Result<Ticket, DeskError> {
        let now = self.now();
        let (ticket, _) = self
            .change_ticket(id, expert.as_str(), None, |state, ticket| {
                state.expert(expert)?;
                Ok(lifecycle::join(ticket, expert, now)?.into_iter().collect())
            })
            .await?;
        Ok(ticket)
    }

    pub async fn leave(&self, id: TicketId, expert: &ExpertId) -> Result<Ticket, DeskError> {
        let now = self.now();
        let (ticket, _) = self
            .change_ticket(id, expert.as_str(), None, |state, ticket| {
                state.expert(expert)?;
                Ok(lifecycle::leave(ticket, expert, now)?.into_iter().collect())
            })
            .await?;
        Ok(ticket)
    }

    pub async fn request_help(
        &self,
        id: TicketId,
        expert: &ExpertId,
        skills: Vec<SkillRequirement>,
        note: String,
    ) -> Result<Ticket, DeskError> {
        check_skill_list("skills", skills.iter().map(|s| &s.tag))?;
        check_text("note", &note, MAX_NOTE_BYTES)?;
        let now = self.now();
        let (ticket, _) = self
            .change_ticket(id, expert.as_str(), None, |state, ticket| {
                state.expert(expert)?;
                Ok(vec![lifecycle::request_help(
                    ticket, expert, skills, note, now,
                )?])
            })
            .await?;
        Ok(ticket)
    }

    /// The owner moves the ticket; `vendor` goes with WAITING_VENDOR only,
    /// `knowledge` with RESOLVED only (a captured draft is written before
    /// the resolution is committed, once the resolution is known to be
    /// allowed).
    pub async fn update_status(
        &self,
        id: TicketId,
        expert: &ExpertId,
        status: TicketStatus,
        note: String,
        vendor: Option<VendorRef>,
        knowledge: Option<KnowledgeUse>,
    ) -> Result<Ticket, DeskError> {
        check_text("note", &note, MAX_NOTE_BYTES)?;
        lifecycle::check_vendor(status, vendor.as_ref())?;
        if knowledge.is_some() && status != TicketStatus::Resolved {
            return Err(DeskError::invalid(
                "knowledge",
                "an article is reused or captured by a resolution (TICKET_STATUS_RESOLVED) only",
            ));
        }
        let link = match knowledge {
            None => None,
            Some(KnowledgeUse::Reuse(article)) => {
                self.inner
                    .knowledge
                    .get(article)?
                    .require_published("only a published article can be reused")?;
                Some((article, ArticleLink::Reused))
            }
            Some(KnowledgeUse::Capture { title, body, tags }) => {
                let ticket = self.load_ticket(id)?;
                self.lock().expert(expert)?;
                // Refused now rather than after the draft is written.
                lifecycle::update_status(&ticket, expert, status, note.clone(), None, self.now())?;
                let content = ArticleContent {
                    title: if title.trim().is_empty() {
                        ticket.header.title.clone()
                    } else {
                        title
                    },
                    body: if body.trim().is_empty() {
                        note.clone()
                    } else {
                        body
                    },
                    tags: tags.unwrap_or_else(|| {
                        ticket.header.skills.iter().map(|s| s.tag.clone()).collect()
                    }),
                };
                content.validate().map_err(|e| match e {
                    DeskError::Invalid { field, reason } if field == "body" => DeskError::invalid(
                        "capture_article.body",
                        format!("{reason}: give one, or a status note to capture"),
                    ),
                    DeskError::Invalid { field, reason } => {
                        DeskError::invalid(format!("capture_article.{field}"), reason)
                    }
                    other => other,
                })?;
                let draft = self
                    .inner
                    .knowledge
                    .create(content, expert.as_str().to_owned(), Some(id))
                    .await?;
                Some((draft.id, ArticleLink::Captured))
            }
        };
        let now = self.now();
        let (ticket, _) = self
            .change_ticket(id, expert.as_str(), None, |state, ticket| {
                state.expert(expert)?;
                let resolution =
                    lifecycle::update_status(ticket, expert, status, note, vendor, now)?;
                let linked = link.map(|(article, link)| {
                    lifecycle::annotate(
                        &resolution.state,
                        EventKind::ArticleLinked { article, link },
                    )
                });
                Ok(std::iter::once(resolution).chain(linked).collect())
            })
            .await?;
        Ok(ticket)
    }

    /// The requester's rating (1-5) of the ticket's resolution, once per
    /// resolution; `actor` is who relays it.
    pub async fn rate(
        &self,
        id: TicketId,
        score: u32,
        comment: String,
        actor: &str,
    ) -> Result<Ticket, DeskError> {
        check_text("comment", &comment, MAX_NOTE_BYTES)?;
        let now = self.now();
        let (ticket, _) = self
            .change_ticket(id, actor, None, |_, ticket| {
                Ok(vec![lifecycle::rate(ticket, score, comment, now)?])
            })
            .await?;
        Ok(ticket)
    }

    /// Appends a message by the requester or an expert; idempotent on
    /// `request_id`. Returns the message event.
    pub async fn post_message(
        &self,
        id: TicketId,
        author: &str,
        body: String,
        visibility: Visibility,
        request_id: Option<String>,
        bot: Option<&BotName>,
    ) -> Result<Arc<TicketEvent>, DeskError> {
        if author.is_empty() {
            return Err(DeskError::invalid("author_id", "an author is required"));
        }
        check_short_text("author_id", author)?;
        if body.trim().is_empty() {
            return Err(DeskError::invalid("body", "a message needs a body"));
        }
        check_text("body", &body, MAX_BODY_BYTES)?;
        if let Some(r) = &request_id {
            check_short_text("request_id", r)?;
        }
        let key = request_id.map(|r| request_key("post", bot, &r));
        let now = self.now();
        let (_, events) = self
            .change_ticket(id, author, key, |state, ticket| {
                let role = if ticket.header.requester == author {
                    Author::Requester
                } else {
                    let expert = ExpertId::parse("author_id", author)?;
                    state.expert(&expert)?;
                    Author::Expert
                };
                lifecycle::post_message(ticket, role, body, visibility, now)
            })
            .await?;
        events
            .into_iter()
            .next()
            .ok_or_else(|| DeskError::Storage("message was not recorded".into()))
    }

    /// A requester's view of one ticket, from after `after_seq`, then live,
    /// until `stop` (which must end at shutdown too).
    pub fn watch_ticket(
        &self,
        id: TicketId,
        after_seq: u64,
        stop: CancellationToken,
    ) -> Result<Subscription, DeskError> {
        self.check_running()?;
        self.load_ticket(id)?;
        Ok(self.inner.hub.subscribe(
            self.inner.storage.tickets.clone(),
            Filter::Ticket(id),
            Start::AfterSeq(after_seq),
            stop,
        ))
    }

    /// Every event of the desk after `after_position`, then live (a
    /// supervisor's board).
    pub fn watch_desk(
        &self,
        after_position: u64,
        stop: CancellationToken,
    ) -> Result<Subscription, DeskError> {
        self.check_running()?;
        let last = self.inner.storage.tickets.last_position();
        if after_position > last {
            return Err(DeskError::invalid(
                "after_position",
                format!("{after_position} is beyond the last position, {last}"),
            ));
        }
        Ok(self.inner.hub.subscribe(
            self.inner.storage.tickets.clone(),
            Filter::Desk,
            Start::AfterPosition(after_position),
            stop,
        ))
    }
}
