//! Routing state and decisions: who may own what, the one commit path
//! every ticket change takes, and routing waiting tickets to whoever
//! becomes eligible.
use super::deadlines::{follow_clocks, is_urgent, Deadline};
use super::Desk;
use crate::domain::routing::{self, PendingQueue, PendingTicket};
use crate::store::Storage;
use crate::timers::Timers;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::domain::lifecycle::{self, Move};
use crate::domain::{
    DeskError, EventKind, Expert, ExpertId, SkillRequirement, Tag, Ticket, TicketEvent,
    TicketHeader, TicketId, TicketStatus, UnixMicros,
};
use crate::store::{Appended, Change, Commit, Lsn, NewEvent};

/// What routing needs, guarded by the desk's lock.
#[derive(Debug, Default)]
pub(super) struct RoutingState {
    /// Changed through [`RoutingState::put_expert`] only, which keeps
    /// `holders` in step.
    pub(super) experts: BTreeMap<ExpertId, Expert>,
    /// Experts by skill tag they hold (any rank): routing looks at the
    /// holders of a ticket's rarest required tag, not at every expert.
    pub(super) holders: HashMap<Tag, BTreeSet<ExpertId>>,
    /// Open Subscribe streams per expert; online means at least one.
    pub(super) online: HashMap<ExpertId, u32>,
    /// Cluster mode: the experts other nodes report streams of, by node.
    pub(super) remote: HashMap<String, BTreeSet<ExpertId>>,
    pub(super) pending: PendingQueue,
    /// Stamped on an expert when they become an owner: fairness by wait.
    pub(super) assignment_seq: u64,
    /// When each expert's last stream closed (experts offline since the
    /// desk opened are not listed).
    pub(super) offline_since: HashMap<ExpertId, UnixMicros>,
    /// Active P1 and P2 tickets by owner: what an owner's absence risks.
    pub(super) urgent: HashMap<ExpertId, BTreeSet<TicketId>>,
}

impl RoutingState {
    /// The routing state as `storage` holds it: every expert and the live
    /// tickets (those waiting for an owner, and the owners of urgent
    /// ones), not every ticket ever; every live ticket's service-level
    /// deadline is set in `timers`. Returns how many tickets are live.
    pub(super) fn load(
        storage: &Storage,
        timers: &Timers<Deadline>,
    ) -> Result<(Self, usize), DeskError> {
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
            follow_clocks(timers, &ticket);
            state.follow_owner(None, &ticket);
        }
        Ok((state, live))
    }

    pub(super) fn is_online(&self, id: &ExpertId) -> bool {
        self.online.get(id).is_some_and(|n| *n > 0)
            || self.remote.values().any(|experts| experts.contains(id))
    }

    /// Keeps the urgent-ticket index in step with a ticket's change of
    /// owner or status.
    pub(super) fn follow_owner(&mut self, before: Option<&ExpertId>, ticket: &Ticket) {
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
    pub(super) fn put_expert(&mut self, expert: Expert) {
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
    pub(super) fn best_owner(
        &self,
        skills: &[SkillRequirement],
        declined: &[ExpertId],
    ) -> Option<ExpertId> {
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

    pub(super) fn expert(&self, id: &ExpertId) -> Result<&Expert, DeskError> {
        self.experts
            .get(id)
            .ok_or_else(|| DeskError::ExpertNotFound(id.clone()))
    }
}

/// Writes one operation made, to wait for before answering.
#[derive(Debug, Default)]
pub(super) struct Written {
    pub(super) lsn: Lsn,
    /// Experts whose load went down: routing may give them waiting tickets.
    pub(super) freed: Vec<ExpertId>,
}

impl Written {
    pub(super) fn add(&mut self, other: Written) {
        self.lsn = self.lsn.max(other.lsn);
        self.freed.extend(other.freed);
    }
}

impl Desk {
    /// Stores `moves` of `ticket` as one commit, with the experts whose
    /// load or fairness stamp they change, and brings the cache along.
    pub(super) fn commit_moves(
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
        let receipt = self.append(state, Change::Ticket(commit))?;
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
    pub(super) fn route_waiting_to(
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
    pub(super) fn route_ticket(
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
    pub(super) fn route_freed(
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

    /// Records that `ticket` lost its owner and routes it again.
    pub(super) fn take_from_owner(
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
}

/// Counts how the events of a commit gave (or did not give) owners.
pub(super) fn record_routing(events: &[Arc<TicketEvent>]) {
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
