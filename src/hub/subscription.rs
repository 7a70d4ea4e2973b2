//! One open stream: the cursor that turns a replay from the store plus the
//! hub's live feed into one gap-free stream (the contract is in the
//! parent module's doc).

use super::*;

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
pub(super) struct Cursor {
    pub(super) position: u64,
    pub(super) seq: u64,
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
    pub(super) hub: Hub,
    pub(super) store: Arc<dyn TicketStore>,
    pub(super) filter: Filter,
    pub(super) cursor: Cursor,
    /// Replay from the store runs up to here; live takes over after.
    pub(super) upto: u64,
    pub(super) live: Option<(Registration, mpsc::Receiver<Delivery>)>,
    pub(super) backlog: VecDeque<Delivery>,
    pub(super) shutdown: CancellationToken,
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
            Filter::Expert(_) | Filter::All | Filter::Desk => {
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
                    Filter::Expert(_) | Filter::All | Filter::Desk => {
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
