//! Reading the state back: every read trait of the store, over sled.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::apply::{number, SledState};
use super::keys::{
    backend, blob_key, counts_key, decode, expert_key, key, request_key, seq_key, u64_at,
    EventRecord, KNOWLEDGE_GENERATION_KEY,
};
use crate::domain::model::Ticket;
use crate::domain::stats::HOUR_MICROS;
use crate::domain::{
    Article, ArticleId, Expert, ExpertId, KnowledgeCounts, Tag, TicketEvent, TicketHeader,
    TicketId, TicketState, TokenRecord, UnixMicros,
};
use crate::store::{ExpertStore, KnowledgeStore, StoreError, TicketStore, TokenStore};

impl SledState {
    pub(super) fn header(&self, id: TicketId) -> Result<Option<Arc<TicketHeader>>, StoreError> {
        match self.tree.get(key(b'h', id.0)).map_err(backend)? {
            Some(bytes) => Ok(Some(Arc::new(decode("ticket header", &bytes)?))),
            None => Ok(None),
        }
    }

    pub(super) fn stored_state(&self, id: TicketId) -> Result<Option<TicketState>, StoreError> {
        match self.tree.get(key(b's', id.0)).map_err(backend)? {
            Some(bytes) => Ok(Some(decode("ticket state", &bytes)?)),
            None => Ok(None),
        }
    }

    pub(super) fn stored_expert(&self, id: &ExpertId) -> Result<Option<Expert>, StoreError> {
        match self.tree.get(expert_key(id)).map_err(backend)? {
            Some(bytes) => Ok(Some(decode("expert", &bytes)?)),
            None => Ok(None),
        }
    }

    pub(super) fn stored_article(&self, id: ArticleId) -> Result<Option<Article>, StoreError> {
        match self.tree.get(key(b'a', id.0)).map_err(backend)? {
            Some(bytes) => Ok(Some(decode("article", &bytes)?)),
            None => Ok(None),
        }
    }

    pub(super) fn generation(&self) -> Result<u64, StoreError> {
        match self.tree.get(KNOWLEDGE_GENERATION_KEY).map_err(backend)? {
            Some(v) => number(&v),
            None => Ok(0),
        }
    }

    pub(super) fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree
            .get(blob_key(name))
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    /// Whether `k` is recorded as an idempotency key (of any kind).
    pub(super) fn has_request(&self, k: &str) -> Result<bool, StoreError> {
        self.tree.contains_key(request_key(k)).map_err(backend)
    }

    fn read_event(
        &self,
        position: u64,
        bytes: &[u8],
        headers: &mut HashMap<TicketId, Arc<TicketHeader>>,
    ) -> Result<Arc<TicketEvent>, StoreError> {
        let record: EventRecord = decode("event", bytes)?;
        let header = match headers.get(&record.ticket) {
            Some(h) => h.clone(),
            None => {
                let h = self.header(record.ticket)?.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "event {position} names ticket {} which has no header",
                        record.ticket
                    ))
                })?;
                headers.insert(record.ticket, h.clone());
                h
            }
        };
        Ok(Arc::new(TicketEvent {
            position,
            at: record.at,
            actor: record.actor,
            kind: record.kind,
            ticket: Ticket {
                header,
                state: record.state,
            },
        }))
    }
}

impl TicketStore for SledState {
    fn last_position(&self) -> u64 {
        self.last_position.load(Ordering::Acquire)
    }

    fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        let Some(state) = self.stored_state(id)? else {
            return Ok(None);
        };
        let header = self
            .header(id)?
            .ok_or_else(|| StoreError::Corrupt(format!("ticket {id} has no header")))?;
        Ok(Some(Ticket { header, state }))
    }

    fn tickets_from(&self, from: TicketId, limit: usize) -> Result<Vec<Ticket>, StoreError> {
        let mut tickets = Vec::new();
        for item in self.tree.range(key(b's', from.0)..key(b's', u64::MAX)) {
            if tickets.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(backend)?;
            let id = TicketId(u64_at(&k, 2)?);
            let header = self
                .header(id)?
                .ok_or_else(|| StoreError::Corrupt(format!("ticket {id} has no header")))?;
            tickets.push(Ticket {
                header,
                state: decode("ticket state", &v)?,
            });
        }
        Ok(tickets)
    }

    fn live_tickets(&self) -> Result<Vec<Ticket>, StoreError> {
        let mut tickets = Vec::new();
        for item in self.tree.scan_prefix(b"l/") {
            let (k, _) = item.map_err(backend)?;
            let id = TicketId(u64_at(&k, 2)?);
            let ticket = self
                .ticket(id)?
                .ok_or_else(|| StoreError::Corrupt(format!("live ticket {id} is not stored")))?;
            tickets.push(ticket);
        }
        Ok(tickets)
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
        let mut headers = HashMap::new();
        let mut events = Vec::new();
        for item in self
            .tree
            .range(key(b'e', after + 1)..=key(b'e', upto))
            .take(limit)
        {
            let (k, v) = item.map_err(backend)?;
            events.push(self.read_event(u64_at(&k, 2)?, &v, &mut headers)?);
        }
        Ok(events)
    }

    fn ticket_events(
        &self,
        ticket: TicketId,
        after_seq: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Arc<TicketEvent>>, StoreError> {
        let mut headers = HashMap::new();
        let mut events = Vec::new();
        let start = seq_key(ticket, after_seq.saturating_add(1));
        let end = seq_key(ticket, u64::MAX);
        for item in self.tree.range(start..end).take(limit) {
            let (_, v) = item.map_err(backend)?;
            let position = number(&v)?;
            if position > upto {
                break;
            }
            let bytes = self
                .tree
                .get(key(b'e', position))
                .map_err(backend)?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("event {position} is indexed but missing"))
                })?;
            events.push(self.read_event(position, &bytes, &mut headers)?);
        }
        Ok(events)
    }

    fn event(&self, position: u64) -> Result<Option<Arc<TicketEvent>>, StoreError> {
        match self.tree.get(key(b'e', position)).map_err(backend)? {
            Some(bytes) => Ok(Some(self.read_event(
                position,
                &bytes,
                &mut HashMap::new(),
            )?)),
            None => Ok(None),
        }
    }

    fn idempotent(&self, k: &str) -> Result<Option<u64>, StoreError> {
        match self.tree.get(request_key(k)).map_err(backend)? {
            Some(v) => Ok(Some(number(&v)?)),
            None => Ok(None),
        }
    }
}

impl ExpertStore for SledState {
    fn experts(&self) -> Result<Vec<Expert>, StoreError> {
        self.tree
            .scan_prefix(b"p/")
            .map(|item| {
                let (_, v) = item.map_err(backend)?;
                decode("expert", &v)
            })
            .collect()
    }

    fn expert(&self, id: &ExpertId) -> Result<Option<Expert>, StoreError> {
        self.stored_expert(id)
    }
}

impl TokenStore for SledState {
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.tree
            .scan_prefix(b"k/")
            .map(|item| {
                let (_, v) = item.map_err(backend)?;
                decode("token", &v)
            })
            .collect()
    }
}

impl KnowledgeStore for SledState {
    fn article(&self, id: ArticleId) -> Result<Option<Article>, StoreError> {
        self.stored_article(id)
    }

    fn articles(&self) -> Result<Vec<Article>, StoreError> {
        self.tree
            .scan_prefix(b"a/")
            .map(|item| {
                let (_, v) = item.map_err(backend)?;
                decode("article", &v)
            })
            .collect()
    }

    fn knowledge_generation(&self) -> Result<u64, StoreError> {
        self.generation()
    }

    fn knowledge_counts(
        &self,
        from: UnixMicros,
        to: UnixMicros,
        tag: Option<&Tag>,
    ) -> Result<KnowledgeCounts, StoreError> {
        let mut total = KnowledgeCounts::default();
        if to <= from {
            return Ok(total);
        }
        let first = from.div_euclid(HOUR_MICROS) * HOUR_MICROS;
        let range = counts_key(tag, first)..counts_key(tag, to);
        for item in self.tree.range(range) {
            let (_, v) = item.map_err(backend)?;
            total.add(decode("knowledge counts", &v)?);
        }
        Ok(total)
    }
}
