//! Deadlines in memory, and the task that fires them.
//!
//! What a deadline means lives elsewhere (the ticket's stored clocks, an
//! expert's presence); this only remembers when to look again. The desk
//! fills it from the store at start-up and on every change, and the firing
//! side re-checks the stored state, so a deadline fired twice by accident
//! still changes things once.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::domain::UnixMicros;

/// The longest the timer task sleeps before looking at the clock again, so
/// a wall clock that jumps is noticed within it.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// A wait for a clock to reach a time.
pub type ClockSleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Wall-clock time for the desk; tests substitute one that follows tokio's
/// paused time, or one they move by hand ([`ManualClock`]).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now_micros(&self) -> UnixMicros;

    /// Resolves once the clock reads `at` or later; a wall clock may
    /// resolve early or late when it jumps (the timer task looks again).
    fn sleep_until(&self, at: UnixMicros) -> ClockSleep {
        let wait = u64::try_from(at.saturating_sub(self.now_micros())).unwrap_or(0);
        Box::pin(tokio::time::sleep(Duration::from_micros(wait)))
    }
}

/// A clock that moves only when told to: the test (or simulator) that holds
/// it decides when deadlines come, with no real waiting and no race with a
/// loaded machine. Clones share one time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<watch::Sender<UnixMicros>>,
}

impl ManualClock {
    pub fn starting_at(start_micros: UnixMicros) -> Self {
        ManualClock {
            now: Arc::new(watch::Sender::new(start_micros)),
        }
    }

    /// Moves the clock forward by `by`, waking whatever waits for a time
    /// it passes.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.now.send_modify(|now| *now = now.saturating_add(by));
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> UnixMicros {
        *self.now.borrow()
    }

    fn sleep_until(&self, at: UnixMicros) -> ClockSleep {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as any clone of the clock: if every
            // clone is gone, nothing will ever come due.
            if now.wait_for(|now| *now >= at).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> UnixMicros {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
    }
}

/// Wall-clock time that moves with tokio's clock: with paused time
/// (`tokio::time::pause`), it moves only when a test advances it.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    start_micros: UnixMicros,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(start_micros: UnixMicros) -> Self {
        TokioClock {
            start_micros,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_micros(&self) -> UnixMicros {
        self.start_micros + self.start.elapsed().as_micros() as i64
    }
}

#[derive(Debug)]
struct Schedule<K> {
    by_time: BTreeSet<(UnixMicros, K)>,
    by_key: HashMap<K, UnixMicros>,
}

/// Keys with a due time each; setting a key again moves it.
#[derive(Debug)]
pub struct Timers<K> {
    schedule: Mutex<Schedule<K>>,
    changed: Notify,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            schedule: Mutex::new(Schedule {
                by_time: BTreeSet::new(),
                by_key: HashMap::new(),
            }),
            changed: Notify::new(),
        }
    }
}

impl<K: Ord + std::hash::Hash + Clone> Timers<K> {
    fn lock(&self) -> MutexGuard<'_, Schedule<K>> {
        // Two maps kept in step by every method; a panic cannot leave one
        // updated without the other except by a missing key, which only
        // delays a deadline until the next change sets it again.
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets (or moves) `key` to fire at `at`.
    pub fn set(&self, key: K, at: UnixMicros) {
        let mut s = self.lock();
        if s.by_key.get(&key) == Some(&at) {
            return;
        }
        if let Some(old) = s.by_key.insert(key.clone(), at) {
            s.by_time.remove(&(old, key.clone()));
        }
        let earliest = s.by_time.first().is_none_or(|(first, _)| at < *first);
        s.by_time.insert((at, key));
        drop(s);
        if earliest {
            // A stored permit: the task sees it even if it is not waiting yet.
            self.changed.notify_one();
        }
    }

    pub fn cancel(&self, key: &K) {
        let mut s = self.lock();
        if let Some(at) = s.by_key.remove(key) {
            s.by_time.remove(&(at, key.clone()));
        }
    }

    /// Removes and returns every key due at `now`, earliest first.
    pub fn take_due(&self, now: UnixMicros) -> Vec<K> {
        let mut s = self.lock();
        let mut due = Vec::new();
        while let Some((at, _)) = s.by_time.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = s.by_time.pop_first() {
                s.by_key.remove(&key);
                due.push(key);
            }
        }
        due
    }

    /// When the earliest key is due.
    pub fn next_due(&self) -> Option<UnixMicros> {
        self.lock().by_time.first().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands due keys to `fire` as their times come, until `stop`.
    pub async fn run(
        &self,
        clock: &dyn Clock,
        stop: &CancellationToken,
        mut fire: impl FnMut(Vec<K>),
    ) {
        loop {
            let now = clock.now_micros();
            let due = self.take_due(now);
            if !due.is_empty() {
                fire(due);
                continue;
            }
            let longest = now.saturating_add(MAX_SLEEP.as_micros() as i64);
            let until = self.next_due().map_or(longest, |at| at.min(longest));
            tokio::select! {
                _ = clock.sleep_until(until) => {}
                _ = self.changed.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const SEC: i64 = 1_000_000;

    /// What fired, with the clock's time when it did.
    type Fired = Arc<Mutex<Vec<(i64, &'static str)>>>;

    /// Runs the timer task in the background, recording what fired when.
    fn start<C: Clock + Clone>(
        timers: &Arc<Timers<&'static str>>,
        clock: C,
    ) -> (Fired, CancellationToken) {
        let fired = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (t, f, s) = (timers.clone(), fired.clone(), stop.clone());
        tokio::spawn(async move {
            t.run(&clock, &s, |keys| {
                let now = clock.now_micros();
                f.lock().unwrap().extend(keys.into_iter().map(|k| (now, k)));
            })
            .await;
        });
        (fired, stop)
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_deadline_fires_once_at_its_time() {
        let clock = TokioClock::starting_at(0);
        let timers = Arc::new(Timers::default());
        timers.set("own", 300 * SEC);
        timers.set("resolve", 4 * 3600 * SEC);
        timers.set("response", 900 * SEC);
        let (fired, stop) = start(&timers, clock);
        tokio::time::sleep(Duration::from_secs(299)).await;
        settle().await;
        assert!(fired.lock().unwrap().is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(fired.lock().unwrap().clone(), vec![(300 * SEC, "own")]);
        tokio::time::sleep(Duration::from_secs(5 * 3600)).await;
        settle().await;
        let names: Vec<_> = fired.lock().unwrap().iter().map(|(_, k)| *k).collect();
        assert_eq!(names, vec!["own", "response", "resolve"]);
        assert!(timers.is_empty());
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn moving_or_cancelling_a_key_changes_when_it_fires() {
        let clock = TokioClock::starting_at(1_000 * SEC);
        let timers = Arc::new(Timers::default());
        let (fired, stop) = start(&timers, clock);
        settle().await;
        // Set while the task sleeps with nothing due: it wakes for it.
        timers.set("a", 1_010 * SEC);
        timers.set("b", 1_020 * SEC);
        timers.set("a", 1_030 * SEC);
        timers.cancel(&"b");
        tokio::time::sleep(Duration::from_secs(25)).await;
        settle().await;
        assert!(fired.lock().unwrap().is_empty());
        tokio::time::sleep(Duration::from_secs(10)).await;
        settle().await;
        assert_eq!(fired.lock().unwrap().clone(), vec![(1_030 * SEC, "a")]);
        // A deadline already past fires at once.
        timers.set("late", 0);
        settle().await;
        assert_eq!(fired.lock().unwrap().len(), 2);
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_manual_clock_fires_deadlines_only_when_moved_past_them() {
        let clock = ManualClock::starting_at(0);
        let timers = Arc::new(Timers::default());
        timers.set("own", 3_600 * SEC);
        let (fired, stop) = start(&timers, clock.clone());
        // Real (here: tokio's) time passing does not move it.
        tokio::time::sleep(Duration::from_secs(7_200)).await;
        settle().await;
        assert!(fired.lock().unwrap().is_empty());
        clock.advance(Duration::from_secs(3_599));
        settle().await;
        assert!(fired.lock().unwrap().is_empty());
        clock.advance(Duration::from_secs(1));
        settle().await;
        assert_eq!(fired.lock().unwrap().clone(), vec![(3_600 * SEC, "own")]);
        stop.cancel();
    }
}
