//! The in-memory backend: a log shared like a replicated one, and states
//! that apply it. Nothing survives the process; what survives a node's
//! restart is what reached the [`Stream`], which the nodes share.
//!
//! The log is fenced the way a JetStream stream is: every append names the
//! sequence it expects to be the last, and the stream refuses it if
//! another writer got there first. So two [`MemoryLog`]s over one stream
//! behave like two nodes that each believe they write: the one behind is
//! refused with [`StoreError::Fenced`] until it catches up. The contract
//! suite runs against it beside sled, and the desk's tests use it for
//! what sled cannot show (a lost fence).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    check_version, Appended, BlobStore, Change, Commit, DurableFuture, Entry, EventSink,
    ExpertStore, KnowledgeStore, Log, Lsn, PairSink, Snapshot, State, StoreError, TicketStore,
    TokenStore,
};
use crate::domain::model::Ticket;
use crate::domain::stats::HOUR_MICROS;
use crate::domain::{
    Article, ArticleId, Expert, ExpertId, KnowledgeCounts, Tag, TicketEvent, TicketHeader,
    TicketId, TicketState, TicketStatus, TokenRecord, UnixMicros,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shared log: every entry ever appended, in order; sequence n is
/// `entries[n - 1]`. An append is durable once it is here.
#[derive(Debug, Default)]
pub struct Stream {
    entries: Mutex<Vec<Entry>>,
}

impl Stream {
    pub fn new() -> Arc<Self> {
        Arc::new(Stream::default())
    }

    /// The sequence of the last entry (0: empty).
    pub fn last_sequence(&self) -> u64 {
        lock(&self.entries).len() as u64
    }

    /// The entries after sequence `after`, in order.
    pub fn entries_after(&self, after: u64) -> Vec<Entry> {
        let entries = lock(&self.entries);
        let from = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(entries.len());
        entries[from..].to_vec()
    }
}

/// Tickets by id: the header and the current state.
type Tickets = BTreeMap<TicketId, (Arc<TicketHeader>, TicketState)>;

#[derive(Debug, Default)]
struct Tables {
    tickets: Tickets,
    events: BTreeMap<u64, Arc<TicketEvent>>,
    /// A ticket's events: (ticket, seq) to position.
    by_ticket: BTreeMap<(TicketId, u64), u64>,
    live: BTreeSet<TicketId>,
    experts: BTreeMap<ExpertId, Expert>,
    tokens: BTreeMap<String, TokenRecord>,
    articles: BTreeMap<ArticleId, Article>,
    generation: u64,
    counts: BTreeMap<(Option<Tag>, UnixMicros), KnowledgeCounts>,
    requests: HashMap<String, u64>,
}

/// A state in memory; applies entries with the same checks as sled's.
#[derive(Debug, Default)]
pub struct MemoryState {
    tables: Mutex<Tables>,
}

fn is_live(status: TicketStatus) -> bool {
    !matches!(status, TicketStatus::Resolved | TicketStatus::Closed)
}

fn check_expert(tables: &Tables, expert: &Expert) -> Result<(), StoreError> {
    let stored = tables.experts.get(&expert.id).map_or(0, |e| e.version);
    check_version(
        format_args!("expert {}", expert.id),
        stored,
        expert.version.saturating_sub(1),
    )
}

impl MemoryState {
    fn tables(&self) -> MutexGuard<'_, Tables> {
        lock(&self.tables)
    }

    fn apply_commit(
        tables: &mut Tables,
        first: u64,
        commit: Commit,
    ) -> Result<Vec<Arc<TicketEvent>>, StoreError> {
        let id = commit.ticket;
        let expected_first = tables.events.keys().next_back().map_or(0, |p| *p) + 1;
        if first != expected_first {
            return Err(StoreError::Corrupt(format!(
                "an entry for ticket {id} starts at position {first}, but the next position is {expected_first}"
            )));
        }
        let stored = tables.tickets.get(&id);
        let stored_version = stored.map_or(0, |(_, s)| s.version);
        check_version(
            format_args!("ticket {id}"),
            stored_version,
            commit.expected_version,
        )?;
        let header = match (&commit.header, stored) {
            (Some(h), None) => h.clone(),
            (None, Some((h, _))) => h.clone(),
            _ => {
                return Err(StoreError::Conflict(format!(
                    "ticket {id}: a header comes with, and only with, a new ticket"
                )))
            }
        };
        for expert in &commit.experts {
            check_expert(tables, expert)?;
        }
        if commit.events.is_empty() {
            return Err(StoreError::Backend(
                "a commit needs at least one event".into(),
            ));
        }
        let mut events = Vec::with_capacity(commit.events.len());
        for (i, new) in commit.events.into_iter().enumerate() {
            let position = first + i as u64;
            tables.by_ticket.insert((id, new.state.version), position);
            let event = Arc::new(TicketEvent {
                position,
                at: new.at,
                actor: new.actor,
                kind: new.kind,
                ticket: Ticket {
                    header: header.clone(),
                    state: new.state,
                },
            });
            tables.events.insert(position, event.clone());
            events.push(event);
        }
        if let Some(last) = events.last() {
            let state = last.ticket.state.clone();
            if is_live(state.status) {
                tables.live.insert(id);
            } else {
                tables.live.remove(&id);
            }
            tables.tickets.insert(id, (header, state));
        }
        for expert in commit.experts {
            tables.experts.insert(expert.id.clone(), expert);
        }
        if let Some(k) = commit.idempotency_key {
            tables.requests.insert(k, first);
        }
        Ok(events)
    }
}

impl State for MemoryState {
    fn apply(&self, entry: Entry) -> Result<Vec<Arc<TicketEvent>>, StoreError> {
        let mut tables = self.tables();
        match entry.change {
            Change::Ticket(commit) => Self::apply_commit(&mut tables, entry.first_position, commit),
            Change::Expert(expert) => {
                check_expert(&tables, &expert)?;
                tables.experts.insert(expert.id.clone(), expert);
                Ok(Vec::new())
            }
            Change::Token(token) => {
                tables.tokens.insert(token.id.as_str().to_owned(), token);
                Ok(Vec::new())
            }
            Change::Article(article) => {
                let stored = tables.articles.get(&article.id).map_or(0, |a| a.version);
                check_version(
                    format_args!("article {}", article.id),
                    stored,
                    article.version.saturating_sub(1),
                )?;
                tables.generation += 1;
                tables.articles.insert(article.id, article);
                Ok(Vec::new())
            }
            Change::KnowledgeCounts { hour, counts, once } => {
                if let Some(k) = once {
                    tables.requests.insert(k, 0);
                }
                for (tag, add) in counts {
                    tables.counts.entry((tag, hour)).or_default().add(add);
                }
                Ok(Vec::new())
            }
        }
    }
}

impl TicketStore for MemoryState {
    fn last_position(&self) -> u64 {
        self.tables().events.keys().next_back().map_or(0, |p| *p)
    }

    fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        Ok(self
            .tables()
            .tickets
            .get(&id)
            .map(|(header, state)| Ticket {
                header: header.clone(),
                state: state.clone(),
            }))
    }

    fn tickets_from(&self, from: TicketId, limit: usize) -> Result<Vec<Ticket>, StoreError> {
        Ok(self
            .tables()
            .tickets
            .range(from..)
            .take(limit)
            .map(|(_, (header, state))| Ticket {
                header: header.clone(),
                state: state.clone(),
            })
            .collect())
    }

    fn live_tickets(&self) -> Result<Vec<Ticket>, StoreError> {
        let tables = self.tables();
        Ok(tables
            .live
            .iter()
            .filter_map(|id| tables.tickets.get(id))
            .map(|(header, state)| Ticket {
                header: header.clone(),
                state: state.clone(),
            })
            .collect())
    }

    fn events_between(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Arc<TicketEvent>>, StoreError> {
        if after >= upto {
            return Ok(Vec::new());
        }
        Ok(self
            .tables()
            .events
            .range(after + 1..=upto)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }

    fn ticket_events(
        &self,
        ticket: TicketId,
        after_seq: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Arc<TicketEvent>>, StoreError> {
        let tables = self.tables();
        let mut events = Vec::new();
        for (_, position) in tables
            .by_ticket
            .range((ticket, after_seq.saturating_add(1))..=(ticket, u64::MAX))
            .take(limit)
        {
            if *position > upto {
                break;
            }
            let event = tables.events.get(position).ok_or_else(|| {
                StoreError::Corrupt(format!("event {position} is indexed but missing"))
            })?;
            events.push(event.clone());
        }
        Ok(events)
    }

    fn event(&self, position: u64) -> Result<Option<Arc<TicketEvent>>, StoreError> {
        Ok(self.tables().events.get(&position).cloned())
    }

    fn idempotent(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.tables().requests.get(key).copied())
    }
}

impl ExpertStore for MemoryState {
    fn experts(&self) -> Result<Vec<Expert>, StoreError> {
        Ok(self.tables().experts.values().cloned().collect())
    }

    fn expert(&self, id: &ExpertId) -> Result<Option<Expert>, StoreError> {
        Ok(self.tables().experts.get(id).cloned())
    }
}

impl TokenStore for MemoryState {
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self.tables().tokens.values().cloned().collect())
    }
}

impl KnowledgeStore for MemoryState {
    fn article(&self, id: ArticleId) -> Result<Option<Article>, StoreError> {
        Ok(self.tables().articles.get(&id).cloned())
    }

    fn articles(&self) -> Result<Vec<Article>, StoreError> {
        Ok(self.tables().articles.values().cloned().collect())
    }

    fn knowledge_generation(&self) -> Result<u64, StoreError> {
        Ok(self.tables().generation)
    }

    fn knowledge_counts(
        &self,
        from: UnixMicros,
        to: UnixMicros,
        tag: Option<&Tag>,
    ) -> Result<KnowledgeCounts, StoreError> {
        let mut total = KnowledgeCounts::default();
        let first = from.div_euclid(HOUR_MICROS) * HOUR_MICROS;
        let tag = tag.cloned();
        for ((t, hour), counts) in &self.tables().counts {
            if *t == tag && *hour >= first && *hour < to {
                total.add(*counts);
            }
        }
        Ok(total)
    }
}

/// A fault met by the next append (faults queue up, one per append), as
/// a network log would give them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Refused as if another writer had appended first; nothing stored.
    Fence,
    /// Timed out before reaching the stream; nothing stored.
    TimeoutLost,
    /// Timed out after reaching the stream: stored, but this writer does
    /// not know it (nor applies it) until it catches up.
    TimeoutStored,
    /// The node dies at this append: with `stored`, after the entry
    /// reached the stream and before the node applied it or answered;
    /// without, before it reached the stream. The log refuses everything
    /// after ([`MemoryLog::crashed`]); the node is opened again from the
    /// stream.
    Crash { stored: bool },
    /// No fault: this append goes through (so that a queued fault meets a
    /// later append, such as the third write of a recovery).
    Pass,
}

/// What one writer knows of the stream.
#[derive(Debug)]
struct Writer {
    /// The last sequence this writer applied: what its appends expect.
    applied: u64,
    next_ticket: u64,
    next_article: u64,
    closed: bool,
    crashed: bool,
    /// Appends refused by the fence or by an injected fault.
    faults_met: u64,
}

/// One node's log over a shared [`Stream`], applying to its own state.
pub struct MemoryLog {
    stream: Arc<Stream>,
    state: Arc<MemoryState>,
    writer: Mutex<Writer>,
    faults: Mutex<std::collections::VecDeque<Fault>>,
    blobs: Mutex<BTreeMap<String, Vec<u8>>>,
    sink: Arc<dyn EventSink>,
}

impl std::fmt::Debug for MemoryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLog")
            .field("writer", &*lock(&self.writer))
            .field("stream_last", &self.stream.last_sequence())
            .finish_non_exhaustive()
    }
}

impl MemoryLog {
    /// A node over `stream`: a fresh state with every entry applied (a
    /// restart keeps what reached the stream, nothing else).
    pub fn open(stream: Arc<Stream>, sink: Arc<dyn EventSink>) -> Result<Self, StoreError> {
        let log = MemoryLog {
            stream,
            state: Arc::new(MemoryState::default()),
            writer: Mutex::new(Writer {
                applied: 0,
                next_ticket: 1,
                next_article: 1,
                closed: false,
                crashed: false,
                faults_met: 0,
            }),
            faults: Mutex::new(std::collections::VecDeque::new()),
            blobs: Mutex::new(BTreeMap::new()),
            sink,
        };
        // Not streamed: a restarted node's hub starts after what it holds.
        log.apply_entries(false)?;
        Ok(log)
    }

    pub fn state(&self) -> &Arc<MemoryState> {
        &self.state
    }

    /// The last sequence this node applied (its state is the log's prefix
    /// up to it).
    pub fn applied(&self) -> u64 {
        lock(&self.writer).applied
    }

    /// Makes a coming append meet `fault` (after those already queued).
    pub fn inject(&self, fault: Fault) {
        lock(&self.faults).push_back(fault);
    }

    /// Faults queued and not yet met by an append.
    pub fn pending_faults(&self) -> usize {
        lock(&self.faults).len()
    }

    /// How many appends the fence or an injected fault refused.
    pub fn faults_met(&self) -> u64 {
        lock(&self.writer).faults_met
    }

    /// Whether the node died at an append ([`Fault::Crash`]).
    pub fn crashed(&self) -> bool {
        lock(&self.writer).crashed
    }

    /// Applies the entries other writers appended since this one last
    /// did, handing their events to the sink if `stream`; returns the last
    /// sequence applied.
    fn apply_entries(&self, stream: bool) -> Result<u64, StoreError> {
        let mut writer = lock(&self.writer);
        for entry in self.stream.entries_after(writer.applied) {
            let events = self.apply_one(&mut writer, entry)?;
            if stream && !events.is_empty() {
                self.sink.publish(&events);
            }
        }
        Ok(writer.applied)
    }

    fn apply_one(
        &self,
        writer: &mut Writer,
        entry: Entry,
    ) -> Result<Vec<Arc<TicketEvent>>, StoreError> {
        match &entry.change {
            Change::Ticket(commit) => {
                writer.next_ticket = writer.next_ticket.max(commit.ticket.0 + 1);
            }
            Change::Article(article) => {
                writer.next_article = writer.next_article.max(article.id.0 + 1);
            }
            _ => {}
        }
        let events = self.state.apply(entry)?;
        writer.applied += 1;
        Ok(events)
    }
}

impl Log for MemoryLog {
    fn allocate_ticket_id(&self) -> Result<TicketId, StoreError> {
        let mut writer = lock(&self.writer);
        let id = writer.next_ticket;
        writer.next_ticket += 1;
        Ok(TicketId(id))
    }

    fn allocate_article_id(&self) -> Result<ArticleId, StoreError> {
        let mut writer = lock(&self.writer);
        let id = writer.next_article;
        writer.next_article += 1;
        Ok(ArticleId(id))
    }

    fn append(&self, change: Change) -> Result<Appended, StoreError> {
        let mut writer = lock(&self.writer);
        if writer.closed {
            return Err(StoreError::Closed);
        }
        if let Change::KnowledgeCounts { once: Some(k), .. } = &change {
            if self.state.idempotent(k)?.is_some() {
                return Ok(Appended::default());
            }
        }
        // Held from the fence check to the push, so nobody appends between.
        let mut entries = lock(&self.stream.entries);
        let last = entries.len() as u64;
        if last != writer.applied {
            writer.faults_met += 1;
            return Err(StoreError::Fenced(format!(
                "expected the log to end at sequence {}, it ends at {last}",
                writer.applied
            )));
        }
        let first_position = match change {
            Change::Ticket(_) => self.state.last_position() + 1,
            _ => 0,
        };
        let entry = Entry {
            first_position,
            change,
        };
        let fault = lock(&self.faults).pop_front();
        if !matches!(fault, None | Some(Fault::Pass)) {
            writer.faults_met += 1;
        }
        match fault {
            None => {}
            Some(Fault::Fence) => {
                return Err(StoreError::Fenced(
                    "injected: another writer appended".into(),
                ))
            }
            Some(Fault::TimeoutLost) => {
                return Err(StoreError::Timeout("injected: lost on the way".into()))
            }
            Some(Fault::TimeoutStored) => {
                entries.push(entry);
                return Err(StoreError::Timeout(
                    "injected: stored, unacknowledged".into(),
                ));
            }
            Some(Fault::Crash { stored }) => {
                if stored {
                    entries.push(entry);
                }
                writer.closed = true;
                writer.crashed = true;
                return Err(StoreError::Closed);
            }
            Some(Fault::Pass) => {}
        }
        // The state checks a change before changing anything, so a refused
        // one reaches neither the state nor the log.
        let is_article = matches!(entry.change, Change::Article(_));
        let events = self.state.apply(entry.clone())?;
        entries.push(entry);
        drop(entries);
        writer.applied += 1;
        let generation = if is_article {
            self.state.knowledge_generation()?
        } else {
            0
        };
        if !events.is_empty() {
            self.sink.publish(&events);
        }
        Ok(Appended {
            lsn: writer.applied,
            events,
            generation,
            recorded: true,
        })
    }

    fn wait_durable(&self, lsn: Lsn) -> DurableFuture {
        // Durable once in the stream, which append did before answering.
        let appended = lock(&self.writer).applied;
        Box::pin(async move {
            if lsn <= appended {
                Ok(())
            } else {
                Err(StoreError::Backend(format!(
                    "lsn {lsn} was never appended (last {appended})"
                )))
            }
        })
    }

    fn written_lsn(&self) -> Lsn {
        lock(&self.writer).applied
    }

    fn catch_up(&self) -> Result<(), StoreError> {
        self.apply_entries(true).map(drop)
    }

    fn failure(&self) -> Option<StoreError> {
        None
    }

    fn close(&self) -> Result<(), StoreError> {
        lock(&self.writer).closed = true;
        Ok(())
    }
}

impl BlobStore for MemoryLog {
    fn put_blob(&self, name: &str, value: &[u8]) -> Result<DurableFuture, StoreError> {
        lock(&self.blobs).insert(name.to_owned(), value.to_vec());
        Ok(Box::pin(async { Ok(()) }))
    }

    fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.blobs).get(name).cloned())
    }
}

impl Snapshot for MemoryLog {
    /// The entries of the log, each as one pair (sequence, postcard bytes):
    /// a memory state has no layout of its own worth copying.
    fn export(&self, each: &mut PairSink<'_>) -> Result<u64, StoreError> {
        let entries = self.stream.entries_after(0);
        for (i, entry) in entries.iter().enumerate() {
            let bytes = postcard::to_allocvec(entry)
                .map_err(|e| StoreError::Backend(format!("encode: {e}")))?;
            each(&(i as u64 + 1).to_be_bytes(), &bytes)
                .map_err(|e| StoreError::Backend(format!("export: {e}")))?;
        }
        Ok(entries.len() as u64)
    }
}
