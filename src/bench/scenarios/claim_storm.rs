//! Many experts claiming the same tickets at once: one owner each.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;

use crate::bench::{BenchError, Plan, Report};
use crate::rpc::pb;
use crate::rpc::pb::ticket_service_client::TicketServiceClient;

use super::*;

/// Many experts claim the same unowned tickets at once.
pub(in crate::bench) async fn claim_storm(
    plan: &Plan,
    existing: Option<&str>,
    report: &mut Report,
) -> Result<(), BenchError> {
    let server = target(existing).await?;
    let raw = server.connections(plan.connections)?;
    let admin = authed(&raw[0], &server.token)?;
    let tag = format!("storm{}", std::process::id());
    let experts: Vec<String> = (0..plan.storm_experts)
        .map(|i| format!("{tag}-{i:03}"))
        .collect();
    register_many(
        &admin,
        experts
            .iter()
            .map(|id| (id.clone(), vec![(tag.clone(), 3)]))
            .collect(),
    )
    .await?;
    // Each expert claims with its own token, as its desktop would.
    let tokens = expert_tokens(&admin, &experts).await?;
    // Nobody with this skill is online: every ticket stays unowned.
    let mut ids = Vec::new();
    let mut tickets = TicketServiceClient::new(admin.clone());
    for i in 0..plan.storm_tickets {
        let mut request = create_request(i as u64, 1);
        request.skills[0].tag = tag.clone();
        let t = tickets.create_ticket(request).await?.into_inner();
        let t = t
            .ticket
            .ok_or_else(|| BenchError::Failed("no ticket".into()))?;
        if !t.owner_id.is_empty() {
            return Err(BenchError::Failed(format!(
                "{} was assigned: {}",
                t.id, t.owner_id
            )));
        }
        ids.push(t.id);
    }
    let ids = Arc::new(ids);
    let wins: Arc<Vec<AtomicU32>> = Arc::new((0..ids.len()).map(|_| AtomicU32::new(0)).collect());
    let winner: Arc<Vec<std::sync::Mutex<String>>> = Arc::new(
        (0..ids.len())
            .map(|_| std::sync::Mutex::new(String::new()))
            .collect(),
    );
    let attempts = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for (w, (expert, token)) in experts.iter().zip(&tokens).enumerate() {
        let (ids, wins, winner, attempts) =
            (ids.clone(), wins.clone(), winner.clone(), attempts.clone());
        let channel = authed(&raw[w % raw.len()], token)?;
        let expert = expert.clone();
        set.spawn(async move {
            let mut client = TicketServiceClient::new(channel);
            let n = ids.len();
            // Each claimer starts elsewhere, so claims collide everywhere.
            for k in 0..n {
                let i = (k + w * n / 64 + w) % n;
                attempts.fetch_add(1, Ordering::Relaxed);
                match client
                    .claim_ticket(pb::ClaimTicketRequest {
                        ticket_id: ids[i].clone(),
                        expert_id: expert.clone(),
                    })
                    .await
                {
                    Ok(_) => {
                        wins[i].fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut slot) = winner[i].lock() {
                            *slot = expert.clone();
                        }
                    }
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
                    Err(s) => return Err(s),
                }
            }
            Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| BenchError::Failed(e.to_string()))??;
    }
    let elapsed = started.elapsed();
    let mut double = 0u64;
    for (i, id) in ids.iter().enumerate() {
        let t = tickets
            .get_ticket(pb::GetTicketRequest { id: id.clone() })
            .await?
            .into_inner();
        let claimed_by = winner[i].lock().map(|w| w.clone()).unwrap_or_default();
        if wins[i].load(Ordering::Relaxed) != 1 || t.owner_id != claimed_by {
            double += 1;
        }
    }
    let rate = attempts.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64();
    report.set("double_owners", double);
    report.set("claims_per_s", rate.round());
    report.row(format!(
        "claim storm: {} experts x {} tickets, {rate:.0} claims/s, tickets without exactly one owner: {double}",
        plan.storm_experts, plan.storm_tickets
    ));
    Ok(())
}
