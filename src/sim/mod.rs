//! A deterministic simulation of the desk over a log that fails on
//! purpose: a seeded random workload (creates with and without request
//! ids, retried ones, claims, transfers, releases, status moves, posts,
//! presence, streams opened, resumed, stalled and dropped, time moved and
//! deadlines fired) against the in-memory log, with faults drawn from the
//! same seed: another writer appending first (a lost fence), an append
//! lost or stored without an answer, the node crashing at an append
//! (before the entry reached the log, or after it did and before the node
//! applied it), and crashing again in the middle of its recovery (while it
//! acts on the deadlines that passed while it was down).
//!
//! After every step it checks the invariants ([`invariants`]); after every
//! crash, that every acknowledged write survived and every stream resumes
//! with no gap and no duplicate; at the end, that every deadline that came
//! due was recorded, once.
//!
//! Time is a [`ManualClock`] and no timer task runs (deadlines are fired
//! by the workload), so a seed replays exactly; a failing one prints
//! itself.

mod invariants;
mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::AuthLimits;
use crate::desk::{Desk, DeskOptions, DeskParts, ExpertProfile, ExpertStream};
use crate::domain::{DeskError, ExpertId, Rank, Skill, Tag, TicketId};
use crate::hub::Hub;
use crate::store::memory::{Fault, MemoryLog, Stream};
use crate::store::{Storage, TicketStore};
use crate::timers::ManualClock;

/// A small, fast, seeded generator (xorshift64*): the simulation must not
/// depend on a crate's sequence changing between versions.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub steps: usize,
    pub faults: usize,
    pub acknowledged_creates: usize,
    pub refused: usize,
    /// Events the expert streams delivered (each checked against the log).
    pub delivered: usize,
    /// Times the node died and was opened again from the log (at an
    /// append, or in the middle of a recovery).
    pub crashes: usize,
    /// Crashes that hit a recovery's own writes.
    pub crashes_in_recovery: usize,
    /// Service-level breaches recorded (each found to be recorded once).
    pub breaches: usize,
    /// Streams resumed from a position after a drop or a crash.
    pub resumed: usize,
}

impl Report {
    /// Adds another run's counts to these.
    pub fn add(&mut self, other: &Report) {
        self.steps += other.steps;
        self.faults += other.faults;
        self.acknowledged_creates += other.acknowledged_creates;
        self.refused += other.refused;
        self.delivered += other.delivered;
        self.crashes += other.crashes;
        self.crashes_in_recovery += other.crashes_in_recovery;
        self.breaches += other.breaches;
        self.resumed += other.resumed;
    }
}

const EXPERTS: usize = 4;

fn expert_id(n: usize) -> ExpertId {
    ExpertId::parse("sim", &format!("e{n}")).expect("a valid id")
}

fn tag() -> Tag {
    Tag::parse("sim", "net").expect("a valid tag")
}

/// An open stream and what it delivered: `delivered[..checked]` was found
/// to match the log up to position `checked_upto`.
struct Watched {
    stream: ExpertStream,
    delivered: Vec<u64>,
    checked: usize,
    checked_upto: u64,
}

struct World {
    stream: Arc<Stream>,
    log: Arc<MemoryLog>,
    desk: Desk,
    clock: ManualClock,
    /// Open streams, each with the positions it delivered.
    streams: Vec<Option<Watched>>,
    /// Where each expert's last stream stopped: the next may resume there.
    resume_from: Vec<u64>,
    /// The step until which each stream is not read (a stalled client).
    stalled_until: Vec<usize>,
    /// Request ids answered, with the ticket each named.
    answered: BTreeMap<String, TicketId>,
    /// Request ids whose create got no answer (a fault, a crash): a retry
    /// must find the one ticket, or make it.
    unanswered: Vec<String>,
    tickets: Vec<TicketId>,
    /// The node's last applied position when it last acknowledged a
    /// write: everything up to it must survive a crash.
    acknowledged_upto: u64,
    delivered: usize,
    resumed: usize,
}

fn open(stream: &Arc<Stream>, clock: &ManualClock) -> Result<(Desk, Arc<MemoryLog>), String> {
    // Four events per stream before it is dropped from the live feed and
    // has to catch up from the state: the path of a slow reader.
    let hub = Hub::new(4);
    let log = Arc::new(
        MemoryLog::open(stream.clone(), Arc::new(hub.clone())).map_err(|e| e.to_string())?,
    );
    let storage = Storage::new(log.clone(), log.state().clone());
    let options = DeskOptions {
        clock: Arc::new(clock.clone()),
        ..DeskOptions::default()
    };
    let parts =
        DeskParts::open(&storage, AuthLimits::default(), &options).map_err(|e| e.to_string())?;
    let desk = Desk::open(storage, hub, parts, options).map_err(|e| e.to_string())?;
    Ok((desk, log))
}

/// Runs `steps` steps of the workload of `seed`; an error names the step
/// and the invariant it broke.
pub async fn run(seed: u64, steps: usize) -> Result<Report, String> {
    let mut rng = Rng::new(seed);
    let stream = Stream::new();
    let clock = ManualClock::starting_at(1_800_000_000_000_000);
    let (desk, log) = open(&stream, &clock)?;
    let mut world = World {
        stream,
        log,
        desk,
        clock,
        streams: (0..EXPERTS).map(|_| None).collect(),
        resume_from: vec![0; EXPERTS],
        stalled_until: vec![0; EXPERTS],
        answered: BTreeMap::new(),
        unanswered: Vec::new(),
        tickets: Vec::new(),
        acknowledged_upto: 0,
        delivered: 0,
        resumed: 0,
    };
    for n in 0..EXPERTS {
        let rank = [Rank::L1, Rank::L2, Rank::L3][n % 3];
        world
            .desk
            .register_expert(ExpertProfile {
                id: expert_id(n),
                display_name: format!("Expert {n}"),
                skills: vec![Skill { tag: tag(), rank }],
                capacity: 3,
            })
            .await
            .map_err(|e| format!("register: {e}"))?;
    }
    let mut report = Report::default();
    for step in 0..steps {
        let fail = |what: String| format!("seed {seed} step {step}: {what}");
        if rng.chance(10) {
            workload::inject(&mut world, &mut rng).await.map_err(fail)?;
            report.faults += 1;
        }
        let met_before = world.log.faults_met();
        let outcome = workload::act(&mut world, &mut rng).await;
        // A log error must come from a fault this very step met: each
        // fault costs at most one operation, the next one catches up.
        let met = world.log.faults_met() > met_before;
        match outcome {
            Ok(created) => {
                report.acknowledged_creates += usize::from(created);
                world.acknowledged_upto = world.log.state().last_position();
            }
            Err(
                e @ (DeskError::NotWriter(_)
                | DeskError::OutcomeUnknown(_)
                | DeskError::CatchingUp(_)
                | DeskError::ShuttingDown),
            ) => {
                if !met {
                    return Err(fail(format!("a log error with no fault met: {e}")));
                }
                report.refused += 1;
            }
            Err(e @ DeskError::Storage(_)) => return Err(fail(e.to_string())),
            Err(_) => report.refused += 1,
        }
        if world.log.crashed() {
            restart(&mut world, &mut rng, &mut report)
                .await
                .map_err(fail)?;
        }
        invariants::check(&world).map_err(fail)?;
        // Streams are read now and then, not every step, so that they
        // fall behind their four-event buffers and catch up; now and then
        // one stalls for a long while.
        for n in 0..EXPERTS {
            if step >= world.stalled_until[n] && rng.chance(20) {
                invariants::check_stream(&mut world, n)
                    .await
                    .map_err(fail)?;
            }
        }
        if rng.chance(2) {
            let n = rng.below(EXPERTS);
            world.stalled_until[n] = step + rng.below(200);
        }
        report.steps += 1;
    }
    let fail = |what: String| format!("seed {seed} at the end: {what}");
    settle_deadlines(&mut world, &mut rng, &mut report)
        .await
        .map_err(fail)?;
    report.breaches = invariants::check(&world).map_err(fail)?;
    invariants::no_deadline_missed(&world).map_err(fail)?;
    report.delivered = world.delivered;
    report.resumed = world.resumed;
    // A restart from the log alone keeps every acknowledged write.
    let before = acknowledged_events(&world)?;
    world.streams.clear();
    let (restarted, log) = open(&world.stream, &world.clock)?;
    invariants::acknowledged_survived(&world, &log, &before).map_err(fail)?;
    drop(restarted);
    Ok(report)
}

/// The events the node had applied when it last acknowledged a write.
fn acknowledged_events(world: &World) -> Result<Vec<Arc<crate::domain::TicketEvent>>, String> {
    world
        .log
        .state()
        .events_between(0, world.acknowledged_upto, 1_000_000)
        .map_err(|e| e.to_string())
}

/// The node died at an append: what its streams delivered is read and
/// checked (the clients got it), the node is opened again from the log
/// alone, every acknowledged write is checked to be there, the streams
/// resume from where they stopped, and the deadlines that passed while it
/// was down are acted on, which may crash it again (a crash in the middle
/// of recovery), and so on.
async fn restart(world: &mut World, rng: &mut Rng, report: &mut Report) -> Result<(), String> {
    loop {
        report.crashes += 1;
        let mut reopen = vec![false; EXPERTS];
        for (n, again) in reopen.iter_mut().enumerate() {
            invariants::check_stream(world, n).await?;
            if let Some(watched) = world.streams[n].take() {
                world.resume_from[n] = watched.checked_upto;
                *again = true;
            }
        }
        let before = acknowledged_events(world)?;
        let (desk, log) = open(&world.stream, &world.clock)?;
        invariants::acknowledged_survived(world, &log, &before)?;
        world.desk = desk;
        world.log = log;
        for (n, again) in reopen.into_iter().enumerate() {
            if again {
                let after = world.resume_from[n];
                workload::watch(world, n, after)
                    .await
                    .map_err(|e| format!("e{n} cannot resume after {after}: {e}"))?;
            }
        }
        // The recovery's own writes: deadlines that passed while the node
        // was down (breaches, owners gone too long). Now and then the node
        // dies in the middle of them.
        if rng.chance(30) {
            for _ in 0..rng.below(3) {
                world.log.inject(Fault::Pass);
            }
            world.log.inject(Fault::Crash {
                stored: rng.chance(50),
            });
        }
        world.desk.fire_due();
        if !world.log.crashed() {
            return Ok(());
        }
        report.crashes_in_recovery += 1;
    }
}

/// Moves time on, an hour at a time, until no deadline is left to act on
/// and no fault is queued, catching up and restarting as needed.
async fn settle_deadlines(
    world: &mut World,
    rng: &mut Rng,
    report: &mut Report,
) -> Result<(), String> {
    for _ in 0..500 {
        world.clock.advance(Duration::from_secs(3600));
        match world.desk.ready().await {
            Ok(()) => {}
            Err(DeskError::NotWriter(_) | DeskError::OutcomeUnknown(_)) => continue,
            Err(e) => return Err(format!("catching up: {e}")),
        }
        let pending = world.log.pending_faults();
        let fired = world.desk.fire_due();
        if world.log.crashed() {
            restart(world, rng, report).await?;
            continue;
        }
        // Let a catch-up the timers started run.
        tokio::task::yield_now().await;
        if fired == 0 && pending == 0 && !world.desk.is_stale() {
            return Ok(());
        }
    }
    Err("deadlines kept firing".into())
}

/// Subscribes expert `n`'s stream after `after`, with no channels of its
/// own.
async fn subscribe(desk: &Desk, n: usize, after: u64) -> Result<ExpertStream, DeskError> {
    desk.subscribe(&expert_id(n), vec![], after, CancellationToken::new())
        .await
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_few_hundred_seeds_keep_every_invariant() {
        let mut total = super::Report::default();
        for seed in 0..200 {
            match super::run(seed, 150).await {
                Ok(report) => total.add(&report),
                Err(e) => panic!("{e}\n(replay: swarmdesk::sim::run({seed}, 150))"),
            }
        }
        eprintln!("{total:?}");
        assert_eq!(total.steps, 200 * 150);
        // The run must have met each kind of trouble it is meant to.
        assert!(total.faults > 1_000, "{total:?}");
        assert!(total.acknowledged_creates > 3_000, "{total:?}");
        assert!(total.delivered > 10_000, "{total:?}");
        assert!(total.crashes > 100, "{total:?}");
        assert!(total.crashes_in_recovery > 5, "{total:?}");
        assert!(total.breaches > 1_000, "{total:?}");
        assert!(total.resumed > 500, "{total:?}");
    }
}
