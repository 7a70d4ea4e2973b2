//! The desk: every operation of the API, carried out against the store and
//! the hub with the domain's rules.
//!
//! Concurrency: one `std::sync::Mutex` over the routing state (experts,
//! who is online, tickets waiting for an owner) serialises decisions that
//! read and change it, so a ticket can never get two owners nor an expert
//! more tickets than their capacity. It is held only while deciding and
//! applying a commit (microseconds), never across an await: durability is
//! awaited after it is released, so one flush covers many writers. Every
//! ownership change is also a compare-and-swap on the stored version, which
//! is what will keep the single-owner rule across nodes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::{AuthLimits, TokenRegistry};
use crate::domain::knowledge::KnowledgeUse;
use crate::domain::lifecycle::{self, Author, Move};
use crate::domain::routing::{self, PendingQueue, PendingTicket};
use crate::domain::stats::Bucket;
use crate::domain::{
    check_short_text, check_skill_list, check_text, check_title, ArticleContent, ArticleLink,
    BotName, ContactChannel, DeskError, EventKind, Expert, ExpertId, KnowledgeCounts, NamedSwarm,
    Presence, Priority, Skill, SkillRequirement, SlaPolicies, SlaTarget, Tag, Ticket, TicketEvent,
    TicketHeader, TicketId, TicketKind, TicketState, TicketStatus, UnixMicros, VendorRef, Viewer,
    Visibility, DEFAULT_CAPACITY, MAX_BODY_BYTES, MAX_CAPACITY, MAX_CHANNELS, MAX_NOTE_BYTES,
};
use crate::hub::{Filter, Hub, Start, Subscription};
use crate::knowledge::index::Hit;
use crate::knowledge::KnowledgeBase;
use crate::stats::StatsKeeper;
use crate::store::{Appended, Change, Commit, Lsn, NewEvent, Storage, StoreError};
use crate::timers::{Clock, SystemClock, Timers};

/// Most tickets one ListTickets call examines, so a rare filter over a big
/// store answers with a short page and a token instead of scanning it all.
const LIST_SCAN_LIMIT: usize = 10_000;
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 500;

impl From<StoreError> for DeskError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => DeskError::Conflict(what),
            StoreError::Fenced(what) => DeskError::NotWriter(what),
            StoreError::Timeout(what) => DeskError::OutcomeUnknown(what),
            StoreError::Unavailable(what) => DeskError::StorageUnavailable(what),
            StoreError::Closed => DeskError::ShuttingDown,
            other @ (StoreError::Corrupt(_) | StoreError::Backend(_)) => {
                DeskError::Storage(other.to_string())
            }
        }
    }
}

/// The idempotency key of a request id. Each bot has its own namespace, so
/// one bot can neither replay nor probe another's request ids (bot names
/// have no ':', so the two forms never collide).
fn request_key(operation: &str, bot: Option<&BotName>, request_id: &str) -> String {
    match bot {
        Some(bot) => format!("{operation}@{bot}:{request_id}"),
        None => format!("{operation}:{request_id}"),
    }
}

/// What the desk runs by besides its store.
#[derive(Clone, Debug)]
pub struct DeskOptions {
    /// Service levels per priority.
    pub sla: SlaPolicies,
    /// How long the owner of an active P1 or P2 ticket may be offline
    /// before the ticket goes back to routing.
    pub owner_grace: Duration,
    pub clock: Arc<dyn Clock>,
    /// Where the knowledge base's search index lives; `None`: in memory
    /// (rebuilt from the store at every start).
    pub knowledge_index: Option<PathBuf>,
}

impl Default for DeskOptions {
    fn default() -> Self {
        DeskOptions {
            sla: SlaPolicies::default(),
            owner_grace: Duration::from_secs(600),
            clock: Arc::new(SystemClock),
            knowledge_index: None,
        }
    }
}

/// Something the desk must look at again at a given time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Deadline {
    /// The earliest pending service-level deadline of a ticket.
    Sla(TicketId),
    /// An owner of urgent tickets who is offline: their grace runs out.
    OwnerAway(ExpertId),
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Whether losing its owner's presence costs a ticket its owner.
fn is_urgent(priority: Priority) -> bool {
    priority <= Priority::P2
}

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
    fn validate(&self) -> Result<(), DeskError> {
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

/// An expert as RegisterExpert gives it.
#[derive(Clone, Debug)]
pub struct ExpertProfile {
    pub id: ExpertId,
    pub display_name: String,
    pub skills: Vec<Skill>,
    /// 0 means [`DEFAULT_CAPACITY`].
    pub capacity: u32,
}

/// An expert with what only the running server knows.
#[derive(Clone, Debug)]
pub struct ExpertView {
    pub expert: Expert,
    pub online: bool,
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

/// What routing needs, guarded by the desk's lock.
#[derive(Debug, Default)]
struct RoutingState {
    /// Changed through [`RoutingState::put_expert`] only, which keeps
    /// `holders` in step.
    experts: BTreeMap<ExpertId, Expert>,
    /// Experts by skill tag they hold (any rank): routing looks at the
    /// holders of a ticket's rarest required tag, not at every expert.
    holders: HashMap<Tag, BTreeSet<ExpertId>>,
    /// Open Subscribe streams per expert; online means at least one.
    online: HashMap<ExpertId, u32>,
    pending: PendingQueue,
    /// Stamped on an expert when they become an owner: fairness by wait.
    assignment_seq: u64,
    /// When each expert's last stream closed (experts offline since the
    /// desk opened are not listed).
    offline_since: HashMap<ExpertId, UnixMicros>,
    /// Active P1 and P2 tickets by owner: what an owner's absence risks.
    urgent: HashMap<ExpertId, BTreeSet<TicketId>>,
}

impl RoutingState {
    fn is_online(&self, id: &ExpertId) -> bool {
        self.online.get(id).is_some_and(|n| *n > 0)
    }

    /// Keeps the urgent-ticket index in step with a ticket's change of
    /// owner or status.
    fn follow_owner(&mut self, before: Option<&ExpertId>, ticket: &Ticket) {
        let id = ticket.id();
        if let Some(owner) = before {
            if let Some(set) = self.urgent.get_mut(owner) {
                set.remove(&id);
                if set.is_empty() {
                    self.urgent.remove(owner);
                }
            }
        }
        if let Some(owner) = &ticket.state.owner {
            if is_urgent(ticket.header.priority) && ticket.state.status.is_active() {
                self.urgent.entry(owner.clone()).or_default().insert(id);
            }
        }
    }

    /// Stores `expert` in the cache, and in the index of its skills.
    fn put_expert(&mut self, expert: Expert) {
        if let Some(old) = self.experts.get(&expert.id) {
            if old.skills != expert.skills {
                for skill in &old.skills {
                    if let Some(set) = self.holders.get_mut(&skill.tag) {
                        set.remove(&expert.id);
                        if set.is_empty() {
                            self.holders.remove(&skill.tag);
                        }
                    }
                }
            }
        }
        for skill in &expert.skills {
            self.holders
                .entry(skill.tag.clone())
                .or_default()
                .insert(expert.id.clone());
        }
        self.experts.insert(expert.id.clone(), expert);
    }

    /// Whom routing would pick now for these requirements. An eligible
    /// expert holds every required tag, so the holders of the rarest one
    /// are all the candidates there are (every expert, for none).
    fn best_owner(&self, skills: &[SkillRequirement], declined: &[ExpertId]) -> Option<ExpertId> {
        let mut rarest: Option<&BTreeSet<ExpertId>> = None;
        for required in skills {
            let holders = self.holders.get(&required.tag)?;
            if rarest.is_none_or(|r| holders.len() < r.len()) {
                rarest = Some(holders);
            }
        }
        let candidates: Box<dyn Iterator<Item = &Expert>> = match rarest {
            Some(ids) => Box::new(ids.iter().filter_map(|id| self.experts.get(id))),
            None => Box::new(self.experts.values()),
        };
        routing::choose_owner(
            candidates.map(|e| (e, self.is_online(&e.id))),
            skills,
            declined,
        )
        .map(|e| e.id.clone())
    }

    fn expert(&self, id: &ExpertId) -> Result<&Expert, DeskError> {
        self.experts
            .get(id)
            .ok_or_else(|| DeskError::ExpertNotFound(id.clone()))
    }
}

#[derive(Debug)]
struct Inner {
    storage: Storage,
    hub: Hub,
    routing: Mutex<RoutingState>,
    shutdown: CancellationToken,
    tokens: TokenRegistry,
    options: DeskOptions,
    timers: Arc<Timers<Deadline>>,
    /// Experts not seen online since the desk opened count as offline from here.
    opened_at: UnixMicros,
    stats: Arc<StatsKeeper>,
    knowledge: KnowledgeBase,
}

/// Sets a ticket's service-level timer to its earliest pending deadline.
fn follow_clocks(timers: &Timers<Deadline>, ticket: &Ticket) {
    let key = Deadline::Sla(ticket.id());
    match ticket.state.sla.pending().map(|(_, due)| due).min() {
        Some(due) => timers.set(key, due),
        None => timers.cancel(&key),
    }
}

/// The swarmdesk service. Cheap to clone; every clone is the same desk.
#[derive(Clone, Debug)]
pub struct Desk {
    inner: Arc<Inner>,
}

/// Writes one operation made, to wait for before answering.
#[derive(Debug, Default)]
struct Written {
    lsn: Lsn,
    /// Experts whose load went down: routing may give them waiting tickets.
    freed: Vec<ExpertId>,
}

impl Written {
    fn add(&mut self, other: Written) {
        self.lsn = self.lsn.max(other.lsn);
        self.freed.extend(other.freed);
    }
}

impl Desk {
    /// Loads the routing state (every expert, the tickets waiting for an
    /// owner: not every ticket ever) from an open store.
    /// Every deadline of the live tickets is set again: one that passed
    /// while the server was down fires once the timers run.
    pub fn open(
        storage: Storage,
        hub: Hub,
        limits: AuthLimits,
        options: DeskOptions,
    ) -> Result<Self, DeskError> {
        let shutdown = CancellationToken::new();
        let tokens = TokenRegistry::open(&storage, limits, shutdown.clone())?;
        let timers = Arc::new(Timers::default());
        let opened_at = options.clock.now_micros();
        let mut state = RoutingState::default();
        for expert in storage.experts.experts()? {
            state.assignment_seq = state.assignment_seq.max(expert.last_assigned_seq);
            state.put_expert(expert);
        }
        let mut live = 0usize;
        for ticket in storage.tickets.live_tickets()? {
            live += 1;
            if ticket.state.status == TicketStatus::Open {
                state.pending.insert(
                    ticket.id(),
                    ticket.header.priority,
                    PendingTicket {
                        skills: ticket.header.skills.clone(),
                        declined: ticket.state.declined.clone(),
                    },
                );
            }
            follow_clocks(&timers, &ticket);
            state.follow_owner(None, &ticket);
        }
        let grace = micros(options.owner_grace);
        for owner in state.urgent.keys() {
            timers.set(Deadline::OwnerAway(owner.clone()), opened_at + grace);
        }
        crate::metrics::metrics()
            .tickets_waiting
            .set(state.pending.len() as i64);
        tracing::info!(
            experts = state.experts.len(),
            live_tickets = live,
            waiting_tickets = state.pending.len(),
            deadlines = timers.len(),
            last_position = storage.tickets.last_position(),
            "desk loaded"
        );
        hub.start_at(storage.tickets.last_position());
        let stats = StatsKeeper::open(storage.tickets.clone(), storage.blobs.clone())?;
        let knowledge = KnowledgeBase::open(
            &storage,
            options.knowledge_index.as_deref(),
            options.clock.clone(),
        )?;
        Ok(Desk {
            inner: Arc::new(Inner {
                storage,
                hub,
                routing: Mutex::new(state),
                shutdown,
                tokens,
                options,
                timers,
                opened_at,
                stats,
                knowledge,
            }),
        })
    }

    /// The desk's clock (event times, service levels).
    pub fn now(&self) -> UnixMicros {
        self.inner.options.clock.now_micros()
    }

    /// Starts the background work, until `stop`: deadlines and stats.
    pub fn start_background(&self, stop: CancellationToken) {
        self.start_timers(stop.clone());
        self.inner.stats.start(&self.inner.hub, stop);
    }

    /// The stats for `[from, to)`, counting every event written before
    /// the call, with the uses of knowledge outside tickets.
    pub async fn stats(
        &self,
        from: UnixMicros,
        to: UnixMicros,
        tag: Option<&Tag>,
    ) -> Result<(Bucket, KnowledgeCounts), DeskError> {
        if from >= to {
            return Err(DeskError::invalid("from", "must be before to"));
        }
        // Everything a read could already show, not only what has been
        // streamed: a ticket's breach is visible before its event is durable.
        let upto = self.inner.storage.tickets.last_position();
        let tickets = self.inner.stats.report(from, to, tag, upto).await?;
        let knowledge = self.inner.knowledge.counts(from, to, tag)?;
        Ok((tickets, knowledge))
    }

    /// Snapshots the stats (before the store closes).
    pub fn save_stats(&self) {
        self.inner.stats.save();
    }

    /// Runs the deadlines (service levels, owners' grace) until `stop`.
    /// The task holds the desk weakly: dropping every desk ends it too.
    fn start_timers(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let timers = self.inner.timers.clone();
        let clock = self.inner.options.clock.clone();
        tokio::spawn(async move {
            timers
                .run(clock.as_ref(), &stop, |due| {
                    if let Some(inner) = weak.upgrade() {
                        Desk { inner }.fire(due);
                    }
                })
                .await;
        })
    }

    /// Acts on deadlines that came due; one that fails is tried again a
    /// second later (what it would change is re-checked then).
    fn fire(&self, due: Vec<Deadline>) {
        for deadline in due {
            let done = match &deadline {
                Deadline::Sla(id) => self.fire_sla(*id),
                Deadline::OwnerAway(expert) => self.fire_owner_away(expert),
            };
            if let Err(e) = done {
                tracing::warn!(?deadline, error = %e, "deadline could not be acted on; retrying");
                self.inner.timers.set(deadline, self.now() + 1_000_000);
            }
        }
    }

    /// Records every breached target of one ticket, in one commit.
    fn fire_sla(&self, id: TicketId) -> Result<(), DeskError> {
        if self.inner.shutdown.is_cancelled() {
            return Ok(());
        }
        let mut state = self.lock();
        let now = self.now();
        let ticket = self.load_ticket(id)?;
        let mut current = ticket.clone();
        let mut moves = Vec::new();
        for target in SlaTarget::ALL {
            if let Some(m) = lifecycle::breach(&current, *target, now) {
                tracing::warn!(ticket = %id, target = %target, "service level breached");
                current.state = m.state.clone();
                moves.push(m);
            }
        }
        if moves.is_empty() {
            follow_clocks(&self.inner.timers, &ticket);
            return Ok(());
        }
        self.commit_moves(&mut state, &ticket, None, moves, "sla", None)?;
        Ok(())
    }

    /// Takes the active P1 and P2 tickets of an owner whose grace ran out
    /// back to routing.
    fn fire_owner_away(&self, expert: &ExpertId) -> Result<(), DeskError> {
        if self.inner.shutdown.is_cancelled() {
            return Ok(());
        }
        let mut state = self.lock();
        if state.is_online(expert) {
            return Ok(());
        }
        let now = self.now();
        if self.absence_deadline(&state, expert) > now {
            self.watch_absence(&state, expert);
            return Ok(());
        }
        let grace = self.inner.options.owner_grace;
        let owned: Vec<TicketId> = state
            .urgent
            .get(expert)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        let reason = format!(
            "offline for more than {}",
            humantime::format_duration(grace)
        );
        for id in owned {
            let ticket = self.load_ticket(id)?;
            self.take_from_owner(&mut state, &ticket, &reason, now)?;
        }
        Ok(())
    }

    /// Records that `ticket` lost its owner and routes it again.
    fn take_from_owner(
        &self,
        state: &mut RoutingState,
        ticket: &Ticket,
        reason: &str,
        now: UnixMicros,
    ) -> Result<(Ticket, Written), DeskError> {
        let change = lifecycle::owner_lost(ticket, reason, now)?;
        let (receipt, mut written) =
            self.commit_moves(state, ticket, None, vec![change], "routing", None)?;
        let lost = receipt
            .events
            .last()
            .map(|e| e.ticket.clone())
            .ok_or_else(|| DeskError::Storage("an owner loss with no event".into()))?;
        tracing::warn!(ticket = %ticket.id(), owner = ?ticket.state.owner.as_ref().map(ExpertId::as_str), reason, "owner lost");
        let routed = self.route_ticket(state, &lost, None)?;
        let after = if routed.lsn > 0 {
            self.load_ticket(ticket.id())?
        } else {
            lost
        };
        written.add(routed);
        Ok((after, written))
    }

    /// Called when an expert's last stream closes.
    fn went_offline(&self, state: &mut RoutingState, expert: &ExpertId) {
        let now = self.now();
        state.offline_since.insert(expert.clone(), now);
        if state.urgent.contains_key(expert) {
            self.watch_absence(state, expert);
        }
    }

    /// Sets the grace timer of an offline owner of urgent tickets.
    fn watch_absence(&self, state: &RoutingState, expert: &ExpertId) {
        let at = self.absence_deadline(state, expert);
        self.inner
            .timers
            .set(Deadline::OwnerAway(expert.clone()), at);
    }

    /// When an offline expert's grace runs out (offline since the desk
    /// opened, unless seen online since).
    fn absence_deadline(&self, state: &RoutingState, expert: &ExpertId) -> UnixMicros {
        let since = state
            .offline_since
            .get(expert)
            .copied()
            .unwrap_or(self.inner.opened_at);
        since + micros(self.inner.options.owner_grace)
    }

    pub fn knowledge(&self) -> &KnowledgeBase {
        &self.inner.knowledge
    }

    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    pub fn tokens(&self) -> &TokenRegistry {
        &self.inner.tokens
    }

    /// Ends every open stream (with its last position) and refuses new work.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    fn lock(&self) -> MutexGuard<'_, RoutingState> {
        // Every change under this lock is applied to the store before the
        // cached state; a panic can at worst leave the cache one write
        // behind the store, never ahead of it.
        self.inner
            .routing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_running(&self) -> Result<(), DeskError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(DeskError::ShuttingDown);
        }
        Ok(())
    }

    /// Stores an expert alone (compare-and-swap on its version).
    fn append_expert(&self, expert: &Expert) -> Result<Lsn, DeskError> {
        Ok(self
            .inner
            .storage
            .log
            .append(Change::Expert(expert.clone()))?
            .lsn)
    }

    async fn durable(&self, lsn: Lsn) -> Result<(), DeskError> {
        if lsn > 0 {
            self.inner.storage.log.wait_durable(lsn).await?;
        }
        Ok(())
    }

    fn load_ticket(&self, id: TicketId) -> Result<Ticket, DeskError> {
        self.inner
            .storage
            .tickets
            .ticket(id)?
            .ok_or(DeskError::TicketNotFound(id))
    }

    /// Stores `moves` of `ticket` as one commit, with the experts whose
    /// load or fairness stamp they change, and brings the cache along.
    fn commit_moves(
        &self,
        state: &mut RoutingState,
        ticket: &Ticket,
        header: Option<Arc<TicketHeader>>,
        mut moves: Vec<Move>,
        actor: &str,
        idempotency_key: Option<String>,
    ) -> Result<(Appended, Written), DeskError> {
        let at = self.now();
        let policy = self.inner.options.sla.for_priority(ticket.header.priority);
        let mut previous = &ticket.state;
        for m in &mut moves {
            policy.track(previous, &mut m.state, at);
            previous = &m.state;
        }
        let before = &ticket.state;
        let after = moves
            .last()
            .map(|m| m.state.clone())
            .ok_or_else(|| DeskError::Storage("a change with no event".into()))?;
        let mut experts: Vec<Expert> = Vec::new();
        let mut freed = Vec::new();
        for (id, delta) in lifecycle::ownership_delta(before, &after) {
            let mut expert = state.expert(&id)?.clone();
            expert.owned_open = expert.owned_open.saturating_add_signed(delta);
            if delta < 0 {
                freed.push(id.clone());
            }
            if delta > 0 && before.owner.as_ref() != Some(&id) {
                state.assignment_seq += 1;
                expert.last_assigned_seq = state.assignment_seq;
            }
            expert.version += 1;
            experts.push(expert);
        }
        let commit = Commit {
            ticket: ticket.id(),
            header,
            expected_version: before.version,
            events: moves
                .into_iter()
                .map(|m| NewEvent {
                    at,
                    actor: actor.to_owned(),
                    kind: m.kind,
                    state: m.state,
                })
                .collect(),
            experts: experts.clone(),
            idempotency_key,
        };
        let receipt = self.inner.storage.log.append(Change::Ticket(commit))?;
        for expert in experts {
            state.put_expert(expert);
        }
        if after.status == TicketStatus::Open {
            state.pending.insert(
                ticket.id(),
                ticket.header.priority,
                PendingTicket {
                    skills: ticket.header.skills.clone(),
                    declined: after.declined.clone(),
                },
            );
        } else {
            state.pending.remove(ticket.id());
        }
        if let Some(last) = receipt.events.last() {
            follow_clocks(&self.inner.timers, &last.ticket);
            state.follow_owner(before.owner.as_ref(), &last.ticket);
            if let Some(owner) = &last.ticket.state.owner {
                if !state.is_online(owner) && state.urgent.contains_key(owner) {
                    self.watch_absence(state, owner);
                }
            }
        }
        record_routing(&receipt.events);
        crate::metrics::metrics()
            .tickets_waiting
            .set(state.pending.len() as i64);
        let written = Written {
            lsn: receipt.lsn,
            freed,
        };
        Ok((receipt, written))
    }

    /// Gives waiting tickets to `expert` while they are eligible, highest
    /// priority first, then oldest. Only this expert's eligibility changed,
    /// so nobody else could have taken these tickets before.
    fn route_waiting_to(
        &self,
        state: &mut RoutingState,
        expert: &ExpertId,
    ) -> Result<Written, DeskError> {
        let mut written = Written::default();
        loop {
            let Some(candidate) = state.experts.get(expert) else {
                return Ok(written);
            };
            if !state.is_online(expert) {
                return Ok(written);
            }
            let Some(id) = state.pending.first_for(candidate) else {
                return Ok(written);
            };
            let ticket = self.load_ticket(id)?;
            let change = lifecycle::assign(&ticket, expert, self.now())?;
            let (receipt, w) =
                self.commit_moves(state, &ticket, None, vec![change], "routing", None)?;
            tracing::debug!(ticket = %id, owner = %expert, position = receipt.events[0].position, "waiting ticket assigned");
            written.add(w);
        }
    }

    /// Routes one unowned ticket to the best eligible expert, if any, other
    /// than those who declined it and `skip` (who just let go of it).
    fn route_ticket(
        &self,
        state: &mut RoutingState,
        ticket: &Ticket,
        skip: Option<&ExpertId>,
    ) -> Result<Written, DeskError> {
        let mut passed_over = ticket.state.declined.clone();
        passed_over.extend(skip.cloned());
        let Some(owner) = state.best_owner(&ticket.header.skills, &passed_over) else {
            return Ok(Written::default());
        };
        let change = lifecycle::assign(ticket, &owner, self.now())?;
        let (_, written) = self.commit_moves(state, ticket, None, vec![change], "routing", None)?;
        Ok(written)
    }

    /// Runs routing for every expert whose load went down.
    fn route_freed(
        &self,
        state: &mut RoutingState,
        written: &mut Written,
    ) -> Result<(), DeskError> {
        while let Some(expert) = written.freed.pop() {
            let more = self.route_waiting_to(state, &expert)?;
            written.add(more);
        }
        Ok(())
    }

    // ---- tickets ----

    /// Creates a ticket and routes it; `false` when `request_id` matched an
    /// earlier create, whose ticket is returned as it is now. The hits are
    /// the published articles suggested for its text (recorded on the
    /// ticket when it is created).
    pub async fn create_ticket(
        &self,
        new: NewTicket,
    ) -> Result<(Ticket, bool, Vec<Hit>), DeskError> {
        self.check_running()?;
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
                let policy = self.inner.options.sla.for_priority(header.priority);
                let blank = Ticket {
                    header: header.clone(),
                    state: TicketState::blank(now, policy.fresh_clocks()),
                };
                let mut first = blank.state.clone();
                first.version = 1;
                if let Some(owner) = &owner {
                    first.status = TicketStatus::Assigned;
                    first.owner = Some(owner.clone());
                    first.owned_since = Some(now);
                }
                if header.priority == Priority::P1 {
                    first.escalated.push(NamedSwarm::Sev1.tag());
                }
                let mut moves = vec![];
                if !suggestions.is_empty() {
                    let articles = suggestions.iter().map(|h| h.id).collect();
                    moves.push(lifecycle::annotate(
                        &first,
                        EventKind::ArticlesSuggested { articles },
                    ));
                }
                moves.insert(
                    0,
                    Move {
                        state: first,
                        kind: EventKind::Created,
                    },
                );
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

    fn known_request(&self, key: Option<&str>) -> Result<Option<u64>, DeskError> {
        match key {
            Some(k) => Ok(self.inner.storage.tickets.idempotent(k)?),
            None => Ok(None),
        }
    }

    fn event_at(&self, position: u64) -> Result<Arc<TicketEvent>, DeskError> {
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
    async fn change_ticket<F>(
        &self,
        id: TicketId,
        actor: &str,
        idempotency_key: Option<String>,
        decide: F,
    ) -> Result<(Ticket, Vec<Arc<TicketEvent>>), DeskError>
    where
        F: FnOnce(&RoutingState, &Ticket) -> Result<Vec<Move>, DeskError>,
    {
        self.check_running()?;
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

    // ---- experts ----

    /// Creates an expert, or updates name, skills and capacity of one,
    /// keeping their load, presence and channels.
    pub async fn register_expert(&self, profile: ExpertProfile) -> Result<ExpertView, DeskError> {
        self.check_running()?;
        check_short_text("expert.display_name", &profile.display_name)?;
        check_skill_list("expert.skills", profile.skills.iter().map(|s| &s.tag))?;
        if profile.capacity > MAX_CAPACITY {
            return Err(DeskError::invalid(
                "expert.capacity",
                format!("{} is over the limit of {MAX_CAPACITY}", profile.capacity),
            ));
        }
        let capacity = match profile.capacity {
            0 => DEFAULT_CAPACITY,
            n => n,
        };
        let (view, lsn) = {
            let mut state = self.lock();
            let expert = match state.experts.get(&profile.id) {
                Some(existing) => Expert {
                    display_name: profile.display_name,
                    skills: profile.skills,
                    capacity,
                    version: existing.version + 1,
                    ..existing.clone()
                },
                None => Expert {
                    id: profile.id.clone(),
                    display_name: profile.display_name,
                    skills: profile.skills,
                    capacity,
                    presence: Presence::Available,
                    owned_open: 0,
                    last_assigned_seq: 0,
                    channels: None,
                    version: 1,
                },
            };
            let mut lsn = self.append_expert(&expert)?;
            self.inner.hub.update_skills(&expert.id, &expert.skills);
            state.put_expert(expert.clone());
            // New skills or room may open waiting tickets to them.
            let routed = self.route_waiting_to(&mut state, &profile.id)?;
            lsn = lsn.max(routed.lsn);
            let expert = state.expert(&profile.id)?.clone();
            let online = state.is_online(&expert.id);
            (ExpertView { expert, online }, lsn)
        };
        self.durable(lsn).await?;
        Ok(view)
    }

    pub fn get_expert(&self, id: &ExpertId) -> Result<ExpertView, DeskError> {
        let state = self.lock();
        let expert = state.expert(id)?.clone();
        let online = state.is_online(id);
        Ok(ExpertView { expert, online })
    }

    /// Experts in id order, starting at `from`; the next page's start.
    pub fn list_experts(
        &self,
        from: Option<&ExpertId>,
        page_size: usize,
    ) -> (Vec<ExpertView>, Option<ExpertId>) {
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let state = self.lock();
        let mut iter = match from {
            Some(from) => state.experts.range(from.clone()..),
            None => state.experts.range(..),
        };
        let page: Vec<ExpertView> = iter
            .by_ref()
            .take(page_size)
            .map(|(id, e)| ExpertView {
                expert: e.clone(),
                online: state.is_online(id),
            })
            .collect();
        let next = iter.next().map(|(id, _)| id.clone());
        (page, next)
    }

    pub async fn set_presence(
        &self,
        id: &ExpertId,
        presence: Presence,
    ) -> Result<ExpertView, DeskError> {
        self.check_running()?;
        let (view, lsn) = {
            let mut state = self.lock();
            let mut expert = state.expert(id)?.clone();
            let mut lsn = 0;
            if expert.presence != presence {
                expert.presence = presence;
                expert.version += 1;
                lsn = self.append_expert(&expert)?;
                state.put_expert(expert);
            }
            if presence == Presence::Available {
                lsn = lsn.max(self.route_waiting_to(&mut state, id)?.lsn);
            }
            let expert = state.expert(id)?.clone();
            let online = state.is_online(id);
            (ExpertView { expert, online }, lsn)
        };
        self.durable(lsn).await?;
        Ok(view)
    }

    /// Opens an expert's stream. Non-empty `channels` replace their persisted
    /// channel set; empty ones use it (or their skill tags). The expert is
    /// online, and routing runs for them, from here until the stream drops
    /// or `stop` (which must end at shutdown too) fires.
    pub async fn subscribe(
        &self,
        id: &ExpertId,
        channels: Vec<Tag>,
        after_position: u64,
        stop: CancellationToken,
    ) -> Result<ExpertStream, DeskError> {
        self.check_running()?;
        if channels.len() > MAX_CHANNELS {
            return Err(DeskError::invalid(
                "channels",
                format!("at most {MAX_CHANNELS} channels, got {}", channels.len()),
            ));
        }
        // Written, not only streamed: PostMessage answers with its event's
        // position before the committer hands the event to the hub. A start
        // beyond what the hub has published is safe: live events up to it
        // are skipped as already seen.
        let last = self.inner.storage.tickets.last_position();
        if after_position > last {
            return Err(DeskError::invalid(
                "after_position",
                format!("{after_position} is beyond the last position, {last}"),
            ));
        }
        let (subscription, presence_routed, lsn) = {
            let mut state = self.lock();
            let mut expert = state.expert(id)?.clone();
            let mut lsn = 0;
            if !channels.is_empty() {
                let mut wanted = channels;
                wanted.sort();
                wanted.dedup();
                if expert.channels.as_ref() != Some(&wanted) {
                    expert.channels = Some(wanted);
                    expert.version += 1;
                    lsn = self.append_expert(&expert)?;
                    state.put_expert(expert.clone());
                }
            }
            let viewer = Viewer {
                expert: id.clone(),
                channels: expert.effective_channels().into_iter().collect(),
                skills: expert.skills.clone(),
            };
            let subscription = self.inner.hub.subscribe(
                self.inner.storage.tickets.clone(),
                Filter::Expert(viewer),
                Start::AfterPosition(after_position),
                stop,
            );
            *state.online.entry(id.clone()).or_insert(0) += 1;
            state.offline_since.remove(id);
            self.inner.timers.cancel(&Deadline::OwnerAway(id.clone()));
            let routed = self.route_waiting_to(&mut state, id);
            (subscription, routed, lsn)
        };
        // Created after the lock is released: the guard's Drop takes it.
        let presence = OnlineGuard {
            desk: self.clone(),
            expert: id.clone(),
        };
        let lsn = lsn.max(presence_routed?.lsn);
        self.durable(lsn).await?;
        Ok(ExpertStream {
            subscription,
            _online: presence,
        })
    }
}

/// Counts how the events of a commit gave (or did not give) owners.
fn record_routing(events: &[Arc<TicketEvent>]) {
    for event in events {
        let outcome = match &event.kind {
            EventKind::Created if event.ticket.state.owner.is_some() => "assigned_at_create",
            EventKind::Created => "offered",
            EventKind::Assigned { .. } => "assigned_later",
            EventKind::Claimed { .. } => "claimed",
            EventKind::Transferred { .. } => "transferred",
            _ => continue,
        };
        crate::metrics::metrics()
            .routing
            .with_label_values(&[outcome])
            .inc();
    }
}

/// Counts an expert online while a stream of theirs is open.
#[derive(Debug)]
struct OnlineGuard {
    desk: Desk,
    expert: ExpertId,
}

impl Drop for OnlineGuard {
    fn drop(&mut self) {
        let mut state = self.desk.lock();
        if let Some(n) = state.online.get_mut(&self.expert) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.online.remove(&self.expert);
                self.desk.went_offline(&mut state, &self.expert);
            }
        }
    }
}

/// An expert's open stream; dropping it takes them offline.
#[derive(Debug)]
pub struct ExpertStream {
    pub subscription: Subscription,
    _online: OnlineGuard,
}

impl AsMut<Subscription> for ExpertStream {
    fn as_mut(&mut self) -> &mut Subscription {
        &mut self.subscription
    }
}
