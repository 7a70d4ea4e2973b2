//! Keeps the stats aggregates ([`StatsBook`]) up to date from the event
//! feed, off the write path, and snapshots them to the store.
//!
//! The keeper is one more hub subscriber, of every event: it gets the same
//! gap-free, in-order delivery as a client stream, catching up from the
//! store after a restart from the position its last snapshot covers. A
//! crash loses nothing: the events after the snapshot are recorded again,
//! and the book ignores positions it has already counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::domain::stats::{Bucket, StatsBook};
use crate::domain::{DeskError, Tag, TicketEvent, TicketId, TicketState, TicketStatus, UnixMicros};
use crate::hub::{Filter, Hub, Start};
use crate::store::{BlobStore, TicketStore};

/// Named by the book's layout: a snapshot of another layout is not read
/// (the book is recounted from the event log instead).
const SNAPSHOT_BLOB: &str = "stats-2";
const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);
/// How long a report waits for the keeper to reach the events written
/// before it was asked for.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct StatsKeeper {
    book: Mutex<StatsBook>,
    /// The position of the last event recorded.
    recorded: watch::Sender<u64>,
    tickets: Arc<dyn TicketStore>,
    blobs: Arc<dyn BlobStore>,
}

impl StatsKeeper {
    /// Loads the last snapshot (an unreadable one is rebuilt from the log).
    pub fn open(
        tickets: Arc<dyn TicketStore>,
        blobs: Arc<dyn BlobStore>,
    ) -> Result<Arc<Self>, DeskError> {
        let book = match blobs.blob(SNAPSHOT_BLOB)? {
            Some(bytes) => postcard::from_bytes(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "stats snapshot unreadable; recounting from the event log");
                StatsBook::default()
            }),
            None => StatsBook::default(),
        };
        let (recorded, _) = watch::channel(book.through);
        Ok(Arc::new(StatsKeeper {
            book: Mutex::new(book),
            recorded,
            tickets,
            blobs,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, StatsBook> {
        // The book is changed by whole records only; a panic mid-record
        // at worst miscounts that one event.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows every event from the snapshot's position until `stop`,
    /// snapshotting every half minute.
    pub fn start(
        self: &Arc<Self>,
        hub: &Hub,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let keeper = self.clone();
        let through = self.lock().through;
        let mut feed = hub.subscribe(
            self.tickets.clone(),
            Filter::All,
            Start::AfterPosition(through),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut before: HashMap<TicketId, TicketState> = HashMap::new();
            let mut every = tokio::time::interval(SNAPSHOT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut saved = through;
            loop {
                tokio::select! {
                    delivery = feed.next() => match delivery {
                        Ok(d) => keeper.record(&d.event, &mut before),
                        Err(_) => return,
                    },
                    _ = every.tick() => {
                        saved = keeper.save_if_newer(saved);
                    }
                }
            }
        })
    }

    fn record(&self, event: &TicketEvent, before: &mut HashMap<TicketId, TicketState>) {
        let id = event.ticket_id();
        let previous = if event.seq() <= 1 {
            None
        } else {
            match before.remove(&id) {
                Some(state) => Some(state),
                None => self.state_before(event),
            }
        };
        self.lock().record(event, previous.as_ref());
        let state = &event.ticket.state;
        if !matches!(state.status, TicketStatus::Resolved | TicketStatus::Closed) {
            // Kept while the ticket is live; a reopened one is looked up.
            before.insert(id, state.clone());
        }
        self.recorded.send_replace(event.position);
    }

    /// The ticket's state before `event`, from the store.
    fn state_before(&self, event: &TicketEvent) -> Option<TicketState> {
        let seq = event.seq();
        match self.tickets.ticket_events(
            event.ticket_id(),
            seq.saturating_sub(2),
            event.position,
            1,
        ) {
            Ok(found) => found
                .into_iter()
                .next()
                .filter(|e| e.seq() == seq - 1)
                .map(|e| e.ticket.state.clone()),
            Err(e) => {
                tracing::warn!(error = %e, ticket = %event.ticket_id(), "cannot read a ticket's earlier state for stats");
                None
            }
        }
    }

    /// Stores a snapshot if events were recorded since `saved`; returns
    /// the position the stored snapshot covers.
    fn save_if_newer(&self, saved: u64) -> u64 {
        let (bytes, through) = {
            let book = self.lock();
            if book.through <= saved {
                return saved;
            }
            (postcard::to_allocvec(&*book), book.through)
        };
        match bytes.map_err(|e| e.to_string()).and_then(|b| {
            self.blobs
                .put_blob(SNAPSHOT_BLOB, &b)
                .map(drop)
                .map_err(|e| e.to_string())
        }) {
            Ok(_) => through,
            Err(e) => {
                tracing::warn!(error = %e, "cannot store the stats snapshot");
                saved
            }
        }
    }

    /// Stores a snapshot now (at shutdown, before the store closes).
    pub fn save(&self) {
        self.save_if_newer(0);
    }

    /// The figures for `[from, to)`, once every event up to `upto` (what
    /// was written when the report was asked for) is counted.
    pub async fn report(
        &self,
        from: UnixMicros,
        to: UnixMicros,
        tag: Option<&Tag>,
        upto: u64,
    ) -> Result<Bucket, DeskError> {
        let mut recorded = self.recorded.subscribe();
        let caught_up =
            tokio::time::timeout(CATCH_UP_WAIT, recorded.wait_for(|p| *p >= upto)).await;
        if !matches!(caught_up, Ok(Ok(_))) {
            let at = *self.recorded.borrow();
            return Err(DeskError::CatchingUp(format!(
                "stats are catching up with the event log (at {at} of {upto}); retry shortly"
            )));
        }
        Ok(self.lock().report(from, to, tag))
    }
}
