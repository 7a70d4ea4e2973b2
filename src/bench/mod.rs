//! `swarmdesk bench`: measures swarmdesk beside a bare tonic baseline run in
//! the same harness, and reports ratios (absolute figures drift on a shared
//! machine; ratios hold).
//!
//! Scenarios (each selectable with `--scenario`):
//! - `create`: closed-loop CreateTicket at each concurrency over a few
//!   HTTP/2 connections, with experts online over several skills, against
//!   the baseline's no-op Echo with the same messages, interleaved per level,
//!   and its DurableEcho (one key through the same sled store and group
//!   commit): the floor durability puts under any server on this disk.
//! - `fanout`: K streams on one channel, tickets at a fixed rate; latency
//!   from create to receipt (all deliveries, and the last subscriber of each
//!   ticket), loss, server RSS per idle stream; beside a bare broadcast.
//! - `recovery`: a store of N tickets (1% open) built directly, a server
//!   started on it and killed, then the time from start to SERVING and RSS.
//! - `slow-reader`: create throughput with one stalled stream vs without;
//!   the stalled stream then reads everything, losing nothing.
//! - `claim-storm`: unowned tickets claimed by many experts at once.
//! - `cluster` (run only when named): its own 3 NATS servers and 3 nodes;
//!   create through the writer and through a follower beside the bare
//!   JetStream publish floor and one node alone (the ceiling on a shared
//!   machine), creates per log message, create → last subscriber on a
//!   follower vs the writer, failover time over several kills of the
//!   writer, and the cost of `sync_interval: always`.
//!
//! Progress goes to stderr, a table and one final JSON line to stdout.

pub mod baseline;
mod procs;
mod scenarios;

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("connect: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("rpc: {}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("{0}")]
    Failed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    Create,
    Fanout,
    Recovery,
    SlowReader,
    ClaimStorm,
    /// Its own 3 NATS servers and 3 nodes; not in the default set.
    Cluster,
}

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Scenarios to run (repeatable); all when none is given.
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Every scenario at small sizes, in well under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Tiny sizes for CI: checks loss and single ownership, never speed.
    #[arg(long, conflicts_with = "quick")]
    pub smoke: bool,
    /// Target a running server instead of starting one (create, slow-reader
    /// and claim-storm only): a URL, or a cluster's nodes separated by
    /// commas, which the bench fails over between as the CLI does.
    #[arg(long)]
    pub target: Option<String>,
    /// Use this existing store for the recovery scenario instead of building one.
    #[arg(long)]
    pub store: Option<std::path::PathBuf>,
    /// Seconds per create measurement (default: 5; quick 1; smoke 0.3).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Create concurrency levels to run (repeatable; default 1, 16, 64, 256).
    #[arg(long = "concurrency")]
    pub concurrency: Vec<usize>,
    /// Experts online during create and slow-reader (default 100).
    #[arg(long)]
    pub experts: Option<usize>,
    /// Skills the experts and tickets spread over (default 10).
    #[arg(long)]
    pub skills: Option<usize>,
    /// Fan-out sizes to run, by label (repeatable: `1k`, `10k`; default both).
    #[arg(long = "fanout-size")]
    pub fanout_sizes: Vec<String>,
}

/// One fan-out run: `tickets` created at the plan's rate to `streams`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FanoutSize {
    /// Names the JSON keys (`fanout_ratio_1k`).
    pub(crate) label: &'static str,
    pub(crate) streams: usize,
    pub(crate) tickets: usize,
}

const fn fanout_size(label: &'static str, streams: usize, tickets: usize) -> FanoutSize {
    FanoutSize {
        label,
        streams,
        tickets,
    }
}

/// Sizes of one run.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) measure: Duration,
    pub(crate) concurrency: Vec<usize>,
    pub(crate) connections: usize,
    pub(crate) experts: usize,
    pub(crate) skills: usize,
    pub(crate) fanout: Vec<FanoutSize>,
    pub(crate) fanout_rate: f64,
    pub(crate) recovery_tickets: usize,
    pub(crate) recovery_open: usize,
    pub(crate) storm_tickets: usize,
    pub(crate) storm_experts: usize,
    pub(crate) cluster_concurrency: usize,
    pub(crate) cluster_kills: usize,
    /// Streams on the writer, then on a follower, and the tickets timed to
    /// their last subscriber.
    pub(crate) cluster_streams: FanoutSize,
}

impl Plan {
    fn new(args: &BenchArgs) -> Self {
        let full = Plan {
            measure: Duration::from_secs(5),
            concurrency: vec![1, 16, 64, 256],
            connections: 4,
            experts: 100,
            skills: 10,
            // A p99 over 100 tickets is their second-highest value; at 1k
            // streams 300 tickets cost seconds and make it the third of 300.
            fanout: vec![
                fanout_size("1k", 1_000, 300),
                fanout_size("10k", 10_000, 100),
            ],
            fanout_rate: 20.0,
            recovery_tickets: 1_000_000,
            recovery_open: 10_000,
            storm_tickets: 1_000,
            storm_experts: 64,
            cluster_concurrency: 64,
            cluster_kills: 5,
            cluster_streams: fanout_size("cluster", 200, 200),
        };
        let mut plan = if args.smoke {
            Plan {
                measure: Duration::from_millis(300),
                concurrency: vec![1, 16],
                experts: 10,
                fanout: vec![fanout_size("1k", 20, 10), fanout_size("10k", 50, 10)],
                fanout_rate: 50.0,
                recovery_tickets: 2_000,
                recovery_open: 20,
                storm_tickets: 50,
                storm_experts: 8,
                cluster_concurrency: 8,
                cluster_kills: 1,
                cluster_streams: fanout_size("cluster", 5, 10),
                ..full
            }
        } else if args.quick {
            Plan {
                measure: Duration::from_secs(1),
                fanout: vec![fanout_size("1k", 100, 30), fanout_size("10k", 1_000, 30)],
                fanout_rate: 30.0,
                recovery_tickets: 50_000,
                recovery_open: 500,
                storm_tickets: 300,
                ..full
            }
        } else {
            full
        };
        if let Some(seconds) = args.seconds {
            plan.measure = Duration::from_secs_f64(seconds.max(0.1));
        }
        if !args.concurrency.is_empty() {
            plan.concurrency = args.concurrency.iter().map(|&c| c.max(1)).collect();
        }
        if let Some(experts) = args.experts {
            plan.experts = experts;
        }
        if let Some(skills) = args.skills {
            plan.skills = skills.max(1);
        }
        if !args.fanout_sizes.is_empty() {
            plan.fanout
                .retain(|size| args.fanout_sizes.iter().any(|s| s == size.label));
        }
        plan
    }
}

/// Every figure of a run, by its JSON key.
#[derive(Debug, Default)]
pub(crate) struct Report {
    figures: BTreeMap<String, Value>,
    rows: Vec<String>,
}

impl Report {
    pub(crate) fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.figures.insert(key.into(), value.into());
    }

    pub(crate) fn get_f64(&self, key: &str) -> Option<f64> {
        self.figures.get(key).and_then(Value::as_f64)
    }

    /// A line of the human-readable table.
    pub(crate) fn row(&mut self, line: String) {
        eprintln!("  {line}");
        self.rows.push(line);
    }

    fn ratio(&mut self, key: &str, numerator: &str, denominator: &str) {
        if let (Some(n), Some(d)) = (self.get_f64(numerator), self.get_f64(denominator)) {
            if d > 0.0 {
                self.set(key, (n / d * 1000.0).round() / 1000.0);
            }
        }
    }
}

/// The create scenario's (series, against) pairs, reported as ratios of
/// throughput at each concurrency and of p50 at C = 1.
const CREATE_RATIOS: [(&str, &str); 3] = [
    ("create", "baseline"),
    ("durable", "baseline"),
    ("create", "durable"),
];

/// The keys scripts can rely on; null where a scenario did not run.
const REQUIRED_KEYS: &[&str] = &[
    "create_rps_c64",
    "baseline_rps_c64",
    "create_baseline_ratio_c64",
    "create_p50_us_c1",
    "baseline_p50_us_c1",
    "fanout_last_p99_us_1k",
    "bare_fanout_last_p99_us_1k",
    "fanout_ratio_1k",
    "fanout_ratio_10k",
    "fanout_lost",
    "rss_per_stream_bytes",
    "recovery_ms",
    "slow_reader_ratio",
    "double_owners",
];

pub(crate) fn progress(message: impl AsRef<str>) {
    eprintln!("[bench] {}", message.as_ref());
}

/// Runs the chosen scenarios; fails if any delivery was lost or any ticket
/// got two owners.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let plan = Plan::new(&args);
    let mut chosen = args.scenarios.clone();
    if chosen.is_empty() {
        chosen = vec![
            Scenario::Create,
            Scenario::SlowReader,
            Scenario::ClaimStorm,
            Scenario::Fanout,
            Scenario::Recovery,
        ];
    }
    chosen.dedup();
    let mut report = Report::default();
    report.set(
        "mode",
        if args.smoke {
            "smoke"
        } else if args.quick {
            "quick"
        } else {
            "full"
        },
    );
    report.set(
        "cores",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    for scenario in chosen {
        progress(format!("scenario {scenario:?}"));
        match scenario {
            Scenario::Create => {
                scenarios::create(&plan, args.target.as_deref(), &mut report).await?
            }
            Scenario::SlowReader => {
                scenarios::slow_reader(&plan, args.target.as_deref(), &mut report).await?
            }
            Scenario::ClaimStorm => {
                scenarios::claim_storm(&plan, args.target.as_deref(), &mut report).await?
            }
            Scenario::Fanout => scenarios::fanout(&plan, &mut report).await?,
            Scenario::Cluster => scenarios::cluster(&plan, &mut report).await?,
            Scenario::Recovery => {
                scenarios::recovery(&plan, args.store.as_deref(), &mut report).await?
            }
        }
    }
    for (series, against) in CREATE_RATIOS {
        for c in &plan.concurrency {
            report.ratio(
                &format!("{series}_{against}_ratio_c{c}"),
                &format!("{series}_rps_c{c}"),
                &format!("{against}_rps_c{c}"),
            );
        }
        report.ratio(
            &format!("{series}_{against}_p50_ratio_c1"),
            &format!("{series}_p50_us_c1"),
            &format!("{against}_p50_us_c1"),
        );
    }
    for FanoutSize { label, .. } in &plan.fanout {
        report.ratio(
            &format!("fanout_ratio_{label}"),
            &format!("fanout_last_p99_us_{label}"),
            &format!("bare_fanout_last_p99_us_{label}"),
        );
    }
    for key in REQUIRED_KEYS {
        report
            .figures
            .entry((*key).to_owned())
            .or_insert(Value::Null);
    }
    let mode = report.figures.get("mode").unwrap_or(&Value::Null);
    println!("swarmdesk bench ({mode}):");
    for line in &report.rows {
        println!("  {line}");
    }
    let summary: Vec<String> = [
        ("create/baseline rps at c64", "create_baseline_ratio_c64"),
        ("create/baseline p50 at c1", "create_baseline_p50_ratio_c1"),
        (
            "durable floor/baseline rps c64",
            "durable_baseline_ratio_c64",
        ),
        (
            "durable floor/baseline p50 c1",
            "durable_baseline_p50_ratio_c1",
        ),
        ("fanout last-p99 vs bare, 1k", "fanout_ratio_1k"),
        ("fanout last-p99 vs bare, 10k", "fanout_ratio_10k"),
        ("slow reader throughput ratio", "slow_reader_ratio"),
        ("recovery ms", "recovery_ms"),
        ("rss per idle stream (bytes)", "rss_per_stream_bytes"),
        ("double owners", "double_owners"),
        ("fanout lost", "fanout_lost"),
    ]
    .iter()
    .map(|(label, key)| {
        let value = report.figures.get(*key).unwrap_or(&Value::Null);
        format!("  {label:<32} {value}")
    })
    .collect();
    println!("{}", summary.join("\n"));
    println!("{}", json!(report.figures));
    let count = |key: &str| report.figures.get(key).and_then(Value::as_u64).unwrap_or(0);
    let lost = count("fanout_lost");
    let double = count("double_owners");
    let slow_lost = count("slow_reader_lost");
    if lost > 0 || double > 0 || slow_lost > 0 {
        return Err(BenchError::Failed(format!(
            "correctness failure: fanout_lost={lost} double_owners={double} slow_reader_lost={slow_lost}"
        )));
    }
    Ok(())
}
