//! Group commit: one thread makes batches of appends durable together.
//!
//! Request handlers never flush. Appends write their keys, take an lsn and
//! wait; the committer thread runs one blocking `flush()` plus an
//! `fdatasync` of sled's log file for everything written before it began,
//! then wakes those writers and hands the batch's events to the sink.
//! Two sled 0.34 facts shape this: concurrent `flush_async` calls can park
//! every sled-io thread forever (sled issues #1308, #1241, #1357, fixed
//! only on its unreleased main branch), and `flush` makes the log stable
//! with `sync_file_range`, which leaves the disk's write cache unflushed
//! (sled issue #1452), so a power loss could lose a flushed write. One
//! flusher avoids the first; the fdatasync fixes the second, at almost no
//! cost once a batch holds many writes.

use std::fs::File;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::apply::lock;
use super::keys::{backend, disk, in_dir};
use crate::domain::TicketEvent;
use crate::store::{EventSink, Lsn, StoreError};

#[derive(Clone, Debug, Default)]
pub(super) struct Durable {
    pub(super) lsn: Lsn,
    /// Why writes are refused, once a write or a flush failed.
    pub(super) failed: Option<StoreError>,
}

/// What appends hand the committer: writes done, events to publish.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) written: Lsn,
    pub(super) events: Vec<Arc<TicketEvent>>,
    pub(super) closing: bool,
    /// The committer sleeps on `wake`. Writers notify only then: a notify
    /// is a system call even when nobody waits, once per commit.
    pub(super) idle: bool,
}

pub(super) struct Committer {
    pub(super) tree: sled::Db,
    /// The data dir, named by errors about its disk.
    pub(super) path: std::path::PathBuf,
    /// sled's log file, for the fdatasync that `flush` leaves out.
    pub(super) log_file: File,
    /// Writes not yet durable; the committer waits on `wake`.
    pub(super) pending: Mutex<Pending>,
    pub(super) wake: Condvar,
    pub(super) durable: watch::Sender<Durable>,
    pub(super) sink: Arc<dyn EventSink>,
}

impl Committer {
    /// Hands the committer the append `lsn` and the events it made.
    pub(super) fn written(&self, lsn: Lsn, events: Vec<Arc<TicketEvent>>) {
        let mut pending = lock(&self.pending);
        pending.written = lsn;
        pending.events.extend(events);
        let idle = std::mem::take(&mut pending.idle);
        drop(pending);
        if idle {
            self.wake.notify_one();
        }
    }

    pub(super) fn failed(&self) -> Option<StoreError> {
        self.durable.borrow().failed.clone()
    }

    /// Refuses every later write until a restart (whose repair finishes or
    /// drops a commit cut short); the first failure is the one kept.
    pub(super) fn fail(&self, error: StoreError) {
        let error = in_dir(error, &self.path);
        self.durable.send_modify(|d| {
            d.failed.get_or_insert(error);
        });
    }

    pub(super) fn begin_close(&self) {
        lock(&self.pending).closing = true;
        self.wake.notify_one();
    }
}

/// While writes keep arriving, the committer waits this long at a time
/// before flushing, up to [`GATHER_MAX`]: under concurrency one flush then
/// covers many writers. Each flush costs sled a log-buffer seal, a write
/// handed to its I/O thread pool (which wakes every idle I/O thread) and
/// an fdatasync; at 64 concurrent creates flushes covered 2-3 writes each
/// and that cost was a quarter of the server's CPU. A lone writer (the
/// last batch had one write) is flushed at once, so C = 1 pays nothing.
const GATHER_STEP: Duration = Duration::from_micros(100);
const GATHER_MAX: Duration = Duration::from_micros(400);

pub(super) fn run_committer(shared: &Committer) {
    let mut durable_lsn: Lsn = 0;
    let mut last_batch: Lsn = 0;
    loop {
        {
            let mut pending = lock(&shared.pending);
            while pending.written == durable_lsn && !pending.closing {
                pending.idle = true;
                pending = shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }
        if last_batch > 1 {
            let started = Instant::now();
            let mut seen = lock(&shared.pending).written;
            while started.elapsed() < GATHER_MAX {
                std::thread::sleep(GATHER_STEP);
                let now = lock(&shared.pending);
                if now.written == seen || now.closing {
                    break;
                }
                seen = now.written;
            }
        }
        let (target, events, closing) = {
            let mut pending = lock(&shared.pending);
            (
                pending.written,
                std::mem::take(&mut pending.events),
                pending.closing,
            )
        };
        if target > durable_lsn {
            let started = Instant::now();
            let synced = shared
                .tree
                .flush()
                .map_err(backend)
                .and_then(|_| shared.log_file.sync_data().map_err(|e| disk(&e, "")));
            if let Err(error) = synced {
                let error = in_dir(error, &shared.path);
                tracing::error!(%error, "store flush failed; refusing further writes");
                shared.fail(error);
                return;
            }
            crate::metrics::metrics()
                .store_flush_seconds
                .observe(started.elapsed().as_secs_f64());
            last_batch = target - durable_lsn;
            durable_lsn = target;
            shared.durable.send_modify(|d| d.lsn = target);
            if !events.is_empty() {
                // A panicking sink must not take the committer with it: every
                // later writer would wait for durability forever.
                let published = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    shared.sink.publish(&events)
                }));
                if published.is_err() {
                    tracing::error!(
                        first = events[0].position,
                        count = events.len(),
                        "event sink panicked; these events are in the store but were not streamed live"
                    );
                }
            }
        }
        if closing && lock(&shared.pending).written == durable_lsn {
            return;
        }
    }
}
