//! Live fan-out of durable events to open streams, and the cursor that turns
//! a store replay plus the live feed into one gap-free stream.
//!
//! # Delivery contract
//! A subscription delivers, in position order, with no gap and no duplicate,
//! every event its filter accepts after its starting point: first a replay
//! from the store, then live. Only durable events are ever delivered, so a
//! position a client has seen survives any crash.
//!
//! The hub never blocks a producer: events go to each subscriber's bounded
//! buffer with `try_send`. A subscriber whose buffer is full is dropped from
//! the hub (its sender is dropped); its cursor drains what it has, sees the
//! feed end, registers again and catches up from the store by position. A
//! slow reader therefore costs only its own store reads, never the others'
//! latency or the writers' throughput.
//!
//! Registration and publishing exclude each other (one `RwLock`), and the hub
//! records the last position it published: a new subscriber replays the
//! store up to that watermark and takes everything after it live.
//!
//! The hub keeps the most recent events it published ([`RECENT_EVENTS`]) in
//! memory, so a stream that fell behind by less than that replays from
//! memory: no store read, no decoding, and the events are shared with every
//! other stream catching up. Without it, a burst that overflowed many
//! streams at once made each of them read and decode the same stretch of
//! the log, which cost more than the burst itself.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::event::{public_view, swarm_reason};
use crate::domain::{
    DeskError, EventKind, ExpertId, Skill, SwarmReason, Tag, TicketEvent, TicketId, Viewer,
};
use crate::store::{EventSink, TicketStore};

/// Events read from the store per replay step.
const REPLAY_PAGE: usize = 256;
/// Events taken from memory per replay step (no I/O: bigger steps).
const RECENT_PAGE: usize = 1024;
/// Published events kept in memory for streams catching up: a few seconds
/// of a busy hour.
pub const RECENT_EVENTS: usize = 32_768;
/// And at most about this many bytes of them (descriptions and messages
/// may be up to 64 KiB each).
pub const RECENT_BYTES: usize = 64 * 1024 * 1024;

/// Roughly what keeping `event` in memory costs, erring high (a header
/// shared by several events is counted with each).
fn approx_size(event: &TicketEvent) -> usize {
    let header = &event.ticket.header;
    let text = match &event.kind {
        EventKind::Message { body, .. } => body.len(),
        EventKind::StatusChanged { note, .. } | EventKind::HelpRequested { note, .. } => note.len(),
        EventKind::Rated { comment, .. } => comment.len(),
        _ => 0,
    };
    512 + header.title.len() + header.description.len() + text
}

/// The latest published events, contiguous in position, oldest first.
#[derive(Debug, Default)]
struct Recent {
    events: VecDeque<Arc<TicketEvent>>,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
}

impl Recent {
    fn clear(&mut self) {
        self.events.clear();
        self.bytes = 0;
    }

    fn push(&mut self, event: &Arc<TicketEvent>) {
        if self.capacity == 0 {
            return;
        }
        if self
            .events
            .back()
            .is_some_and(|last| event.position != last.position + 1)
        {
            // Never leave a hole: a hole would be a gap in someone's replay.
            self.clear();
        }
        self.bytes += approx_size(event);
        self.events.push_back(event.clone());
        while self.events.len() > self.capacity
            || (self.bytes > self.max_bytes && self.events.len() > 1)
        {
            if let Some(old) = self.events.pop_front() {
                self.bytes = self.bytes.saturating_sub(approx_size(&old));
            }
        }
    }

    /// Up to `limit` events with `after < position <= upto`, if memory
    /// holds every one of them.
    fn between(&self, after: u64, upto: u64, limit: usize) -> Option<Vec<Arc<TicketEvent>>> {
        let first = self.events.front()?.position;
        let last = self.events.back()?.position;
        if after.saturating_add(1) < first || upto > last {
            return None;
        }
        if after >= upto {
            return Some(Vec::new());
        }
        let start = usize::try_from(after + 1 - first).ok()?;
        Some(
            self.events
                .range(start..)
                .take_while(|e| e.position <= upto)
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

/// What a subscription wants to see.
#[derive(Clone, Debug)]
pub enum Filter {
    /// An expert's swarm stream.
    Expert(Viewer),
    /// A requester's view of one ticket.
    Ticket(TicketId),
    /// Every event, as stored: for the server's own consumers (stats).
    All,
    /// Every event, as stored, for a client (a supervisor's WatchDesk).
    Desk,
}

impl Filter {
    /// Whether a client holds the subscription (what `open_streams` counts).
    fn is_client(&self) -> bool {
        !matches!(self, Filter::All)
    }

    /// The event as this subscriber sees it, with why, or `None`. Expert
    /// streams see the same event, so they share `encoded`.
    fn admit(&self, event: &Arc<TicketEvent>, encoded: &EncodedOnce) -> Option<Delivery> {
        match self {
            Filter::Expert(viewer) => swarm_reason(event, viewer).map(|reason| Delivery {
                event: event.clone(),
                reason: Some(reason),
                encoded: encoded.clone(),
            }),
            Filter::Ticket(id) if *id == event.ticket_id() => {
                public_view(event).map(|view| Delivery {
                    event: match view {
                        Cow::Borrowed(_) => event.clone(),
                        Cow::Owned(redacted) => Arc::new(redacted),
                    },
                    reason: None,
                    encoded: EncodedOnce::default(),
                })
            }
            Filter::Ticket(_) => None,
            Filter::All | Filter::Desk => Some(Delivery {
                event: event.clone(),
                reason: None,
                encoded: encoded.clone(),
            }),
        }
    }
}

/// One event on one stream.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub event: Arc<TicketEvent>,
    /// Set on expert streams.
    pub reason: Option<SwarmReason>,
    /// The event's wire encoding, made by the first stream that sends it
    /// and shared by the expert streams the live fan-out gave it to.
    pub encoded: EncodedOnce,
}

/// A slot for an event's encoding, filled once.
pub type EncodedOnce = Arc<OnceLock<bytes::Bytes>>;

type SubId = u64;

#[derive(Debug)]
struct Subscriber {
    filter: Filter,
    tx: mpsc::Sender<Delivery>,
}

#[derive(Debug, Default)]
struct Index {
    subscribers: HashMap<SubId, Subscriber>,
    by_tag: HashMap<Tag, HashSet<SubId>>,
    by_expert: HashMap<ExpertId, HashSet<SubId>>,
    by_ticket: HashMap<TicketId, HashSet<SubId>>,
    all: HashSet<SubId>,
}

fn unlink<K: std::hash::Hash + Eq>(map: &mut HashMap<K, HashSet<SubId>>, key: &K, id: SubId) {
    if let Some(set) = map.get_mut(key) {
        set.remove(&id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl Index {
    fn insert(&mut self, id: SubId, subscriber: Subscriber) {
        match &subscriber.filter {
            Filter::Expert(viewer) => {
                for tag in &viewer.channels {
                    self.by_tag.entry(tag.clone()).or_default().insert(id);
                }
                self.by_expert
                    .entry(viewer.expert.clone())
                    .or_default()
                    .insert(id);
            }
            Filter::Ticket(ticket) => {
                self.by_ticket.entry(*ticket).or_default().insert(id);
            }
            Filter::All | Filter::Desk => {
                self.all.insert(id);
            }
        }
        self.subscribers.insert(id, subscriber);
    }

    fn remove(&mut self, id: SubId) {
        let Some(subscriber) = self.subscribers.remove(&id) else {
            return;
        };
        match &subscriber.filter {
            Filter::Expert(viewer) => {
                for tag in &viewer.channels {
                    unlink(&mut self.by_tag, tag, id);
                }
                unlink(&mut self.by_expert, &viewer.expert, id);
            }
            Filter::Ticket(ticket) => unlink(&mut self.by_ticket, ticket, id),
            Filter::All | Filter::Desk => {
                self.all.remove(&id);
            }
        }
    }

    /// Subscribers that may care about `event`; the filter decides.
    fn candidates(&self, event: &TicketEvent, into: &mut Vec<SubId>) {
        into.clear();
        for tag in event.tags() {
            if let Some(set) = self.by_tag.get(tag) {
                into.extend(set);
            }
        }
        for expert in event.named_experts() {
            if let Some(set) = self.by_expert.get(expert) {
                into.extend(set);
            }
        }
        if let Some(set) = self.by_ticket.get(&event.ticket_id()) {
            into.extend(set);
        }
        into.extend(&self.all);
        into.sort_unstable();
        into.dedup();
    }
}

#[derive(Debug)]
struct Shared {
    index: RwLock<Index>,
    /// The last position published; read under the index lock.
    published: AtomicU64,
    next_id: AtomicU64,
    buffer: usize,
    recent: RwLock<Recent>,
}

/// The fan-out point. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Hub {
    shared: Arc<Shared>,
}

impl Hub {
    /// `buffer` is each subscriber's live buffer, in events.
    pub fn new(buffer: usize) -> Self {
        Self::with_recent(buffer, RECENT_EVENTS)
    }

    /// Keeping `recent` published events in memory for catching up.
    pub fn with_recent(buffer: usize, recent: usize) -> Self {
        Hub {
            shared: Arc::new(Shared {
                index: RwLock::new(Index::default()),
                published: AtomicU64::new(0),
                next_id: AtomicU64::new(1),
                buffer: buffer.max(1),
                recent: RwLock::new(Recent {
                    capacity: recent,
                    max_bytes: RECENT_BYTES,
                    ..Recent::default()
                }),
            }),
        }
    }

    /// Sets the watermark once the store is open: everything up to it is in
    /// the store already.
    pub fn start_at(&self, position: u64) {
        let _index = self.write();
        self.recent_mut().clear();
        self.shared.published.store(position, Ordering::Release);
    }

    fn recent_mut(&self) -> RwLockWriteGuard<'_, Recent> {
        // Whole pushes only; at worst a panic leaves fewer events in memory.
        self.shared
            .recent
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Published events `after < position <= upto` from memory, up to
    /// `limit`; `None` when memory no longer holds all of them.
    fn recent_between(&self, after: u64, upto: u64, limit: usize) -> Option<Vec<Arc<TicketEvent>>> {
        self.shared
            .recent
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .between(after, upto, limit)
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        // The index holds no invariant a panic could half-break beyond a
        // missing subscriber, which its own cursor recovers from.
        self.shared
            .index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.shared
            .index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a live feed; returns it with the watermark to replay up to.
    fn register(&self, filter: Filter) -> (Registration, mpsc::Receiver<Delivery>, u64) {
        let (tx, rx) = mpsc::channel(self.shared.buffer);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut index = self.write();
        index.insert(id, Subscriber { filter, tx });
        let watermark = self.shared.published.load(Ordering::Acquire);
        drop(index);
        let registration = Registration {
            hub: self.clone(),
            id,
        };
        (registration, rx, watermark)
    }

    /// The last position handed to subscribers (every event up to it is durable).
    pub fn published(&self) -> u64 {
        self.shared.published.load(Ordering::Acquire)
    }

    /// Open subscriptions, for tests and metrics.
    pub fn subscriber_count(&self) -> usize {
        self.read().subscribers.len()
    }

    /// Gives live expert subscriptions of `expert` their new skills (used
    /// for the OFFER decision).
    pub fn update_skills(&self, expert: &ExpertId, skills: &[Skill]) {
        let mut index = self.write();
        let ids: Vec<SubId> = index
            .by_expert
            .get(expert)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            if let Some(Subscriber {
                filter: Filter::Expert(viewer),
                ..
            }) = index.subscribers.get_mut(&id)
            {
                if &viewer.expert == expert {
                    viewer.skills = skills.to_vec();
                }
            }
        }
    }

    /// Opens a subscription: registers now (so everything after this call
    /// is caught), replays the store from `start`, then goes live.
    pub fn subscribe(
        &self,
        store: Arc<dyn TicketStore>,
        filter: Filter,
        start: Start,
        shutdown: CancellationToken,
    ) -> Subscription {
        let (registration, rx, upto) = self.register(filter.clone());
        if filter.is_client() {
            crate::metrics::metrics().open_streams.inc();
        }
        Subscription {
            hub: self.clone(),
            store,
            filter,
            cursor: start.into(),
            upto,
            live: Some((registration, rx)),
            backlog: VecDeque::new(),
            shutdown,
        }
    }
}

impl EventSink for Hub {
    fn publish(&self, events: &[Arc<TicketEvent>]) {
        let delivered =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.deliver(events)));
        if delivered.is_err() {
            // Some subscribers may have missed events: drop every live feed,
            // so each cursor catches up from the store, where all of them are.
            tracing::error!("fan-out panicked; every stream resyncs from the store");
            let mut index = self.write();
            *index = Index::default();
            self.recent_mut().clear();
            if let Some(last) = events.last() {
                self.shared
                    .published
                    .store(last.position, Ordering::Release);
            }
        }
    }
}

impl Hub {
    fn deliver(&self, events: &[Arc<TicketEvent>]) {
        let mut dropped: Vec<SubId> = Vec::new();
        {
            // Before the watermark moves: a replay up to it finds them.
            let mut recent = self.recent_mut();
            for event in events {
                recent.push(event);
            }
        }
        {
            let index = self.read();
            let mut candidates = Vec::new();
            for event in events {
                index.candidates(event, &mut candidates);
                let encoded = EncodedOnce::default();
                for id in &candidates {
                    if dropped.contains(id) {
                        // Once one event is missed, sending later ones would
                        // open a gap: the subscriber resyncs from the store.
                        continue;
                    }
                    let Some(subscriber) = index.subscribers.get(id) else {
                        continue;
                    };
                    if let Some(delivery) = subscriber.filter.admit(event, &encoded) {
                        if subscriber.tx.try_send(delivery).is_err() {
                            dropped.push(*id);
                        }
                    }
                }
            }
            if let Some(last) = events.last() {
                self.shared
                    .published
                    .store(last.position, Ordering::Release);
            }
        }
        if !dropped.is_empty() {
            crate::metrics::metrics()
                .stream_resyncs
                .inc_by(dropped.len() as u64);
            let mut index = self.write();
            for id in dropped {
                index.remove(id);
            }
        }
    }
}

/// Unregisters a live feed when dropped.
#[derive(Debug)]
struct Registration {
    hub: Hub,
    id: SubId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.write().remove(self.id);
    }
}

mod subscription;
#[cfg(test)]
mod tests;

pub use self::subscription::{Start, StreamEnd, Subscription};
