//! The desk's ephemeral side, never stored: collision detection (who is
//! viewing or typing on a ticket) and the expert changes a supervisor's
//! board follows. Both reach open streams through small per-stream
//! channels; a full channel drops a frame, which is harmless because each
//! frame is the whole current state of what it is about.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Desk, Inner};
use crate::domain::activity::{Activity, ActivityBoard, ExpertActivity};
use crate::domain::{DeskError, ExpertId, TicketId};

/// Frames buffered per stream.
const FEED_BUFFER: usize = 64;
/// How often lapsed activity is looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Who is active on a ticket now, with their display names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketActivityView {
    pub ticket: TicketId,
    pub experts: Vec<(ExpertActivity, String)>,
}

type Listeners = HashMap<ExpertId, Vec<(u64, mpsc::Sender<TicketActivityView>)>>;

#[derive(Debug)]
pub(super) struct Live {
    board: Mutex<ActivityBoard>,
    listeners: Mutex<Listeners>,
    next_listener: AtomicU64,
    experts: broadcast::Sender<ExpertId>,
    /// Counts the changes of who has a stream open on this node.
    pub(super) local_presence: watch::Sender<u64>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            board: Mutex::default(),
            listeners: Mutex::default(),
            next_listener: AtomicU64::new(1),
            experts: broadcast::channel(1024).0,
            local_presence: watch::channel(0).0,
        }
    }
}

/// Neither lock guards an invariant a panic could half-break.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An expert's feed of activity frames, for one stream; dropping it
/// closes the feed, and the expert's last feed ends all their activity.
#[derive(Debug)]
pub struct ActivityFeed {
    pub frames: mpsc::Receiver<TicketActivityView>,
    desk: Weak<Inner>,
    expert: ExpertId,
    id: u64,
}

impl Drop for ActivityFeed {
    fn drop(&mut self) {
        let Some(inner) = self.desk.upgrade() else {
            return;
        };
        let desk = Desk { inner };
        let last = {
            let mut listeners = lock(&desk.inner.live.listeners);
            let Some(feeds) = listeners.get_mut(&self.expert) else {
                return;
            };
            feeds.retain(|(id, _)| *id != self.id);
            let last = feeds.is_empty();
            if last {
                listeners.remove(&self.expert);
            }
            last
        };
        if last {
            let changed = lock(&desk.inner.live.board).leave_all(&self.expert);
            for ticket in changed {
                desk.activity_changed(ticket);
            }
        }
    }
}

impl Desk {
    /// Records what `expert` is doing on `ticket` and tells everyone
    /// active on it; the ticket's activity after the report.
    pub fn report_activity(
        &self,
        expert: &ExpertId,
        ticket: TicketId,
        activity: Activity,
    ) -> Result<TicketActivityView, DeskError> {
        self.check_running()?;
        self.lock().expert(expert)?;
        self.load_ticket(ticket)?;
        let now = self.now();
        let changed = lock(&self.inner.live.board).report(expert, ticket, activity, now);
        let view = self.activity_view(ticket);
        if changed {
            self.send_activity(&view);
        }
        Ok(view)
    }

    /// Opens a feed of the activity frames for `expert`'s tickets.
    pub fn activity_feed(&self, expert: &ExpertId) -> ActivityFeed {
        let (tx, frames) = mpsc::channel(FEED_BUFFER);
        let id = self
            .inner
            .live
            .next_listener
            .fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.live.listeners)
            .entry(expert.clone())
            .or_default()
            .push((id, tx));
        ActivityFeed {
            frames,
            desk: std::sync::Arc::downgrade(&self.inner),
            expert: expert.clone(),
            id,
        }
    }

    /// The experts whose online state or presence changes from now on.
    pub fn expert_changes(&self) -> broadcast::Receiver<ExpertId> {
        self.inner.live.experts.subscribe()
    }

    /// Tells the boards that `expert` changed (none listening is fine).
    pub(super) fn expert_changed(&self, expert: &ExpertId) {
        let _ = self.inner.live.experts.send(expert.clone());
    }

    fn activity_view(&self, ticket: TicketId) -> TicketActivityView {
        let shown = lock(&self.inner.live.board).shown(ticket);
        let state = self.lock();
        let experts = shown
            .into_iter()
            .map(|activity| {
                let name = state
                    .expert(&activity.expert)
                    .map(|e| e.display_name.clone())
                    .unwrap_or_default();
                (activity, name)
            })
            .collect();
        TicketActivityView { ticket, experts }
    }

    fn activity_changed(&self, ticket: TicketId) {
        let view = self.activity_view(ticket);
        self.send_activity(&view);
    }

    /// To every feed of every expert active on the ticket.
    fn send_activity(&self, view: &TicketActivityView) {
        let mut listeners = lock(&self.inner.live.listeners);
        for (activity, _) in &view.experts {
            if let Some(feeds) = listeners.get_mut(&activity.expert) {
                for (_, tx) in feeds.iter() {
                    let _ = tx.try_send(view.clone());
                }
            }
        }
    }

    /// Ends lapsed activity, once a second, until `stop`. Holds the desk
    /// weakly.
    pub(super) fn start_activity_sweep(&self, stop: CancellationToken) {
        let weak = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => {}
                }
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                Desk { inner }.expire_activity();
            }
        });
    }

    /// Ends what lapsed by the desk's clock and tells those still on it.
    pub(crate) fn expire_activity(&self) {
        let changed = {
            let mut board = lock(&self.inner.live.board);
            if board.is_empty() {
                return;
            }
            board.expire(self.now())
        };
        for ticket in changed {
            self.activity_changed(ticket);
        }
    }
}
