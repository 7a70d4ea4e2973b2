//! CreateTicket against the bare baseline and the durable floor, at each
//! concurrency, interleaved.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::bench::procs::ServerProcess;
use crate::bench::{progress, BenchError, Plan, Report};

use super::*;

/// Create vs the baseline's Echo and DurableEcho, interleaved per
/// concurrency level.
pub(in crate::bench) async fn create(
    plan: &Plan,
    existing: Option<&str>,
    report: &mut Report,
) -> Result<(), BenchError> {
    let server = target(existing).await?;
    // On the same file system as the server's own temporary data dir.
    let baseline_dir = tempfile::tempdir()?;
    let baseline = ServerProcess::baseline(Some(baseline_dir.path())).await?;
    let raw = server.connections(plan.connections)?;
    let sd = authed_each(&raw, &server.token)?;
    let bare = authed_connections(baseline.addr, plan.connections, &server.token).await?;
    let online = experts_online(&raw, &sd[0], plan.experts, plan.skills).await?;
    progress(format!(
        "{} experts online over {} skills",
        plan.experts, plan.skills
    ));
    let replayed = online.settled().await;
    let sequence = Arc::new(AtomicU64::new(0));
    let mut created = 0;
    for &c in &plan.concurrency {
        for (prefix, channels, method) in [
            ("baseline", &bare, Method::Echo),
            ("durable", &bare, Method::DurableEcho),
            ("create", &sd, Method::CreateTicket),
        ] {
            let load = closed_loop(
                channels,
                c,
                plan.measure,
                &sequence,
                call(method, plan.skills),
            )
            .await?;
            record_load(report, prefix, c, &load);
            if let Method::CreateTicket = method {
                created += load.ops;
            }
        }
    }
    // Every ticket reached every stream on its skill channel.
    if let Some(per_skill) = online.per_skill {
        let expected = created * per_skill;
        let delivered = online.wait_for(replayed + expected).await - replayed;
        report.set("create_deliveries", delivered);
        report.set("create_deliveries_lost", expected.saturating_sub(delivered));
        report.row(format!(
            "create: {created} tickets, {delivered} of {expected} deliveries to their swarms"
        ));
        if delivered != expected {
            return Err(BenchError::Failed(format!(
                "create: the swarms received {delivered} deliveries, expected {expected}"
            )));
        }
    }
    Ok(())
}
