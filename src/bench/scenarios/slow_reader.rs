//! Whether one stalled stream slows everyone else.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::{BenchError, Plan, Report};
use crate::rpc::pb;
use crate::rpc::pb::expert_service_client::ExpertServiceClient;

use super::*;

/// Create throughput with and without one stream that never reads; then
/// the stalled stream reads everything.
pub(in crate::bench) async fn slow_reader(
    plan: &Plan,
    existing: Option<&str>,
    report: &mut Report,
) -> Result<(), BenchError> {
    let server = target(existing).await?;
    let raw = server.connections(plan.connections)?;
    let sd = authed_each(&raw, &server.token)?;
    let _online = experts_online(&raw, &sd[0], plan.experts, plan.skills).await?;
    let c = 64;
    let sequence = Arc::new(AtomicU64::new(0));
    let slow_id = format!("slow-{}", std::process::id());
    let tags: Vec<String> = (0..plan.skills).map(|s| format!("s{s}")).collect();
    register(
        &sd[0],
        slow_id.clone(),
        tags.iter().map(|t| (t.clone(), 1)).collect(),
    )
    .await?;
    let create = call(Method::CreateTicket, plan.skills);
    // Without, with, then without again: the store grows and the machine
    // drifts during the run, so "with" is compared with the mean of the two
    // runs around it rather than with the one before it.
    let before = closed_loop(&sd, c, plan.measure, &sequence, create.clone()).await?;
    // Its own connection, so the stall is its own.
    let slow_token = expert_tokens(&sd[0], std::slice::from_ref(&slow_id)).await?;
    let slow_channel = authed(&server.connections(1)?[0], &slow_token[0])?;
    let mut stalled = ExpertServiceClient::new(slow_channel)
        .subscribe(pb::SubscribeRequest {
            expert_id: slow_id,
            channels: tags,
            after_position: 0,
        })
        .await?
        .into_inner();
    let with = closed_loop(&sd, c, plan.measure, &sequence, create.clone()).await?;
    let expected = before.ops + with.ops;
    let mut created = 0u64;
    let mut last = 0u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while created < expected && Instant::now() < deadline {
        let Ok(Ok(Some(e))) =
            tokio::time::timeout(Duration::from_secs(30), stalled.message()).await
        else {
            break;
        };
        if e.position <= last {
            return Err(BenchError::Failed(format!(
                "slow reader: position {} after {last}",
                e.position
            )));
        }
        last = e.position;
        if e.event
            .is_some_and(|ev| ev.r#type == pb::TicketEventType::Created as i32)
        {
            created += 1;
        }
    }
    drop(stalled);
    let after = closed_loop(&sd, c, plan.measure, &sequence, create.clone()).await?;
    let without = (before.rps() + after.rps()) / 2.0;
    let ratio = with.rps() / without.max(1e-9);
    report.set("slow_reader_rps_without", without.round());
    report.set("slow_reader_rps_with", with.rps().round());
    report.set("slow_reader_ratio", (ratio * 1000.0).round() / 1000.0);
    report.set("slow_reader_lost", expected.saturating_sub(created));
    report.row(format!(
        "slow reader: {:.0}/s with one stalled stream vs {without:.0}/s without ({:.0} before, {:.0} after; ratio {ratio:.3}); caught up {created}/{expected}",
        with.rps(),
        before.rps(),
        after.rps()
    ));
    Ok(())
}
