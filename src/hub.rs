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
            Filter::All => Some(Delivery {
                event: event.clone(),
                reason: None,
                encoded: EncodedOnce::default(),
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
            Filter::All => {
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
            Filter::All => {
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

/// Where a subscription starts.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// Events with a position after this one.
    AfterPosition(u64),
    /// Events of the filter's ticket with a ticket_seq after this one.
    AfterSeq(u64),
}

/// How far a subscription has got: everything at or before it is handled.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    position: u64,
    seq: u64,
}

impl From<Start> for Cursor {
    fn from(start: Start) -> Self {
        match start {
            Start::AfterPosition(position) => Cursor { position, seq: 0 },
            Start::AfterSeq(seq) => Cursor { position: 0, seq },
        }
    }
}

/// Why a subscription ended without the client going away.
#[derive(Debug)]
pub enum StreamEnd {
    /// The server is shutting down; resume after `last_position`.
    ShuttingDown {
        last_position: u64,
    },
    Failed(DeskError),
}

/// One open stream: a replay from the store, then the live feed, with a
/// resync from the store whenever the hub dropped it for being slow.
#[derive(Debug)]
pub struct Subscription {
    hub: Hub,
    store: Arc<dyn TicketStore>,
    filter: Filter,
    cursor: Cursor,
    /// Replay from the store runs up to here; live takes over after.
    upto: u64,
    live: Option<(Registration, mpsc::Receiver<Delivery>)>,
    backlog: VecDeque<Delivery>,
    shutdown: CancellationToken,
}

impl Subscription {
    /// The position of the last event delivered or skipped.
    pub fn last_position(&self) -> u64 {
        self.cursor.position
    }

    fn accept(&mut self, event: &TicketEvent) -> bool {
        let fresh = event.position > self.cursor.position
            && (!matches!(self.filter, Filter::Ticket(_)) || event.seq() > self.cursor.seq);
        if fresh {
            self.cursor.position = event.position;
            self.cursor.seq = event.seq();
        }
        fresh
    }

    /// Reads the next page of the replay into the backlog; false when the
    /// replay has reached the watermark.
    fn replay_page(&mut self) -> Result<bool, DeskError> {
        let pages = &crate::metrics::metrics().replay_pages;
        let in_memory = match &self.filter {
            Filter::Expert(_) | Filter::All => {
                self.hub
                    .recent_between(self.cursor.position, self.upto, RECENT_PAGE)
            }
            // By ticket sequence: the store's per-ticket index is the way.
            Filter::Ticket(_) => None,
        };
        let page = match in_memory {
            Some(page) => {
                pages.with_label_values(&["memory"]).inc();
                page
            }
            None => {
                pages.with_label_values(&["store"]).inc();
                match &self.filter {
                    Filter::Expert(_) | Filter::All => {
                        self.store
                            .events_between(self.cursor.position, self.upto, REPLAY_PAGE)
                    }
                    Filter::Ticket(id) => {
                        self.store
                            .ticket_events(*id, self.cursor.seq, self.upto, REPLAY_PAGE)
                    }
                }
                .map_err(|e| DeskError::Storage(e.to_string()))?
            }
        };
        if page.is_empty() {
            // Nothing more of ours up to the watermark: live continues from it.
            self.cursor.position = self.cursor.position.max(self.upto);
            return Ok(false);
        }
        for event in &page {
            if self.accept(event) {
                if let Some(delivery) = self.filter.admit(event, &EncodedOnce::default()) {
                    self.backlog.push_back(delivery);
                }
            }
        }
        Ok(true)
    }

    /// The next delivery, or why the stream ends.
    pub async fn next(&mut self) -> Result<Delivery, StreamEnd> {
        loop {
            if self.shutdown.is_cancelled() {
                return Err(self.ending());
            }
            if let Some(delivery) = self.backlog.pop_front() {
                self.observe_lag(&delivery);
                return Ok(delivery);
            }
            if self.cursor.position < self.upto {
                if self.replay_page().map_err(StreamEnd::Failed)? {
                    // Let other tasks run between pages of a long catch-up.
                    tokio::task::yield_now().await;
                }
                continue;
            }
            let received = match &mut self.live {
                Some((_, rx)) => tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => return Err(self.ending()),
                    received = rx.recv() => received,
                },
                None => None,
            };
            match received {
                Some(delivery) => {
                    if self.accept(&delivery.event) {
                        self.observe_lag(&delivery);
                        return Ok(delivery);
                    }
                }
                None => {
                    // The hub dropped us for falling behind: register again
                    // and catch up from the store.
                    tracing::debug!(
                        position = self.cursor.position,
                        "stream resyncing from the store"
                    );
                    self.live = None;
                    let (registration, rx, upto) = self.hub.register(self.filter.clone());
                    self.live = Some((registration, rx));
                    self.upto = upto;
                }
            }
        }
    }

    fn observe_lag(&self, delivery: &Delivery) {
        let lag = self.hub.published().saturating_sub(delivery.event.position);
        crate::metrics::metrics().stream_lag.observe(lag as f64);
    }

    fn ending(&self) -> StreamEnd {
        StreamEnd::ShuttingDown {
            last_position: self.cursor.position,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.filter.is_client() {
            crate::metrics::metrics().open_streams.dec();
        }
    }
}

impl AsMut<Subscription> for Subscription {
    fn as_mut(&mut self) -> &mut Subscription {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::model::*;
    use crate::domain::EventKind;
    use crate::store::sled::{SledConfig, SledStore};
    use crate::store::{Change, Commit, Log, NewEvent};

    fn tag(s: &str) -> Tag {
        Tag::parse("t", s).unwrap()
    }

    /// Stores one new ticket tagged `tag_name`; returns its creation position.
    async fn create(store: &SledStore, tag_name: &str) -> u64 {
        let id = store.allocate_ticket_id().unwrap();
        let receipt = store
            .append(Change::Ticket(Commit {
                ticket: id,
                header: Some(Arc::new(TicketHeader {
                    id,
                    title: "t".into(),
                    description: String::new(),
                    requester: "c".into(),
                    channel: ContactChannel::Api,
                    kind: TicketKind::Question,
                    priority: Priority::P3,
                    skills: vec![SkillRequirement {
                        tag: tag(tag_name),
                        min_rank: Rank::L1,
                    }],
                    created_at: 0,
                    created_by: None,
                })),
                expected_version: 0,
                events: vec![NewEvent {
                    at: 0,
                    actor: "c".into(),
                    kind: EventKind::Created,
                    state: TicketState {
                        version: 1,
                        ..TicketState::blank(0, crate::domain::SlaClocks::untracked())
                    },
                }],
                experts: vec![],
                idempotency_key: None,
            }))
            .unwrap();
        store.wait_durable(receipt.lsn).await.unwrap();
        receipt.events[0].position
    }

    fn viewer(channel: &str) -> Filter {
        Filter::Expert(Viewer {
            expert: ExpertId::parse("e", "ann").unwrap(),
            channels: [tag(channel)].into_iter().collect(),
            skills: vec![],
        })
    }

    async fn next_position(sub: &mut Subscription) -> u64 {
        tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("subscription stalled")
            .expect("subscription ended")
            .event
            .position
    }

    #[tokio::test]
    async fn a_stalled_subscriber_is_dropped_and_catches_up_without_loss() {
        // From recent events in memory, and (none kept) from the store.
        for recent in [RECENT_EVENTS, 0] {
            stalled_subscriber_catches_up(Hub::with_recent(2, recent)).await;
        }
    }

    #[test]
    fn recent_events_answer_only_ranges_they_hold_whole() {
        let event = |position| {
            Arc::new(TicketEvent {
                position,
                at: 0,
                actor: "c".into(),
                kind: EventKind::Created,
                ticket: Ticket {
                    header: Arc::new(TicketHeader {
                        id: TicketId(position),
                        title: "t".into(),
                        description: String::new(),
                        requester: "c".into(),
                        channel: ContactChannel::Api,
                        kind: TicketKind::Question,
                        priority: Priority::P3,
                        skills: vec![],
                        created_at: 0,
                        created_by: None,
                    }),
                    state: TicketState::blank(0, crate::domain::SlaClocks::untracked()),
                },
            })
        };
        let positions = |events: Option<Vec<Arc<TicketEvent>>>| {
            events.map(|e| e.iter().map(|e| e.position).collect::<Vec<_>>())
        };
        let mut recent = Recent {
            capacity: 4,
            max_bytes: RECENT_BYTES,
            ..Recent::default()
        };
        assert_eq!(
            positions(recent.between(0, 0, 10)),
            None,
            "empty holds nothing"
        );
        for p in 1..=6 {
            recent.push(&event(p));
        }
        // Holds 3..=6.
        assert_eq!(positions(recent.between(2, 6, 10)), Some(vec![3, 4, 5, 6]));
        assert_eq!(positions(recent.between(3, 5, 10)), Some(vec![4, 5]));
        assert_eq!(positions(recent.between(2, 6, 2)), Some(vec![3, 4]));
        assert_eq!(positions(recent.between(6, 6, 10)), Some(vec![]));
        assert_eq!(positions(recent.between(1, 6, 10)), None, "2 is gone");
        assert_eq!(
            positions(recent.between(4, 7, 10)),
            None,
            "7 is not there yet"
        );
        // A hole (never expected) empties memory rather than hide a gap.
        recent.push(&event(9));
        assert_eq!(positions(recent.between(5, 9, 10)), None);
        assert_eq!(positions(recent.between(8, 9, 10)), Some(vec![9]));
        // Big events are bounded by bytes as well as by count.
        let mut recent = Recent {
            capacity: 100,
            max_bytes: 3 * 1024,
            ..Recent::default()
        };
        for p in 1..=10 {
            let mut big = (*event(p)).clone();
            let mut header = (*big.ticket.header).clone();
            header.description = "x".repeat(500);
            big.ticket.header = Arc::new(header);
            recent.push(&Arc::new(big));
        }
        assert_eq!(positions(recent.between(7, 10, 10)), Some(vec![8, 9, 10]));
        assert_eq!(positions(recent.between(6, 10, 10)), None, "only three fit");
    }

    async fn stalled_subscriber_catches_up(hub: Hub) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(SledStore::open(&SledConfig::new(dir.path()), Arc::new(hub.clone())).unwrap());
        let before = create(&store, "net").await;
        let mut sub = hub.subscribe(
            store.state().clone(),
            viewer("net"),
            Start::AfterPosition(0),
            CancellationToken::new(),
        );
        let mut expected = vec![before];
        for i in 0..20 {
            // Every third ticket is on another channel and must be skipped.
            let channel = if i % 3 == 0 { "office" } else { "net" };
            let position = create(&store, channel).await;
            if channel == "net" {
                expected.push(position);
            }
        }
        // The buffer of 2 overflowed long ago: the hub dropped the feed.
        assert_eq!(hub.subscriber_count(), 0);
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            got.push(next_position(&mut sub).await);
        }
        assert_eq!(got, expected);
        // Re-registered, and live again.
        assert_eq!(hub.subscriber_count(), 1);
        let live = create(&store, "net").await;
        assert_eq!(next_position(&mut sub).await, live);
    }

    #[tokio::test]
    async fn shutdown_ends_a_subscription_with_its_last_position() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::new(16);
        let store =
            Arc::new(SledStore::open(&SledConfig::new(dir.path()), Arc::new(hub.clone())).unwrap());
        let token = CancellationToken::new();
        let mut sub = hub.subscribe(
            store.state().clone(),
            viewer("net"),
            Start::AfterPosition(0),
            token.clone(),
        );
        let p = create(&store, "net").await;
        assert_eq!(next_position(&mut sub).await, p);
        token.cancel();
        match sub.next().await {
            Err(StreamEnd::ShuttingDown { last_position }) => assert_eq!(last_position, p),
            other => panic!("expected a shutdown end, got {other:?}"),
        }
        drop(sub);
        assert_eq!(hub.subscriber_count(), 0, "dropping unregisters");
    }
}
