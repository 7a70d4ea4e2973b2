//! Start-up after kill -9 on a big store: time to SERVING and memory.

use std::sync::Arc;

use crate::bench::procs::ServerProcess;
use crate::bench::{progress, BenchError, Plan, Report};
use crate::domain::{
    ContactChannel, EventKind, Expert, ExpertId, Presence, Priority, Rank, Skill, SkillRequirement,
    SlaPolicies, Tag, TicketHeader, TicketKind, TicketState, TicketStatus,
};
use crate::store::sled::{SledConfig, SledStore};
use crate::store::NoSink;
use crate::store::{Change, Commit, Log, NewEvent};

/// Writes `total` tickets straight into a store, all closed but the last
/// `open`, which wait for an owner.
fn build_store(path: &std::path::Path, total: usize, open: usize) -> Result<(), BenchError> {
    let failed = |e: crate::store::StoreError| BenchError::Failed(e.to_string());
    let store = SledStore::open(&SledConfig::new(path), Arc::new(NoSink)).map_err(failed)?;
    let tag = Tag::parse("tag", "s0").map_err(|e| BenchError::Failed(e.to_string()))?;
    let owners: Vec<ExpertId> = (0..100)
        .map(|i| ExpertId::parse("id", &format!("e{i:04}")))
        .collect::<Result<_, _>>()
        .map_err(|e| BenchError::Failed(e.to_string()))?;
    for owner in &owners {
        store
            .append(Change::Expert(Expert {
                id: owner.clone(),
                display_name: "bench".into(),
                skills: vec![Skill {
                    tag: tag.clone(),
                    rank: Rank::L2,
                }],
                capacity: 1000,
                presence: Presence::Available,
                owned_open: 0,
                last_assigned_seq: 0,
                channels: None,
                version: 1,
            }))
            .map_err(failed)?;
    }
    for i in 0..total {
        let id = store.allocate_ticket_id().map_err(failed)?;
        let header = Arc::new(TicketHeader {
            id,
            title: format!("recovery ticket {i}"),
            description: "x".repeat(200),
            requester: "bench-customer".into(),
            channel: ContactChannel::Email,
            kind: TicketKind::Question,
            priority: Priority::P3,
            skills: vec![SkillRequirement {
                tag: tag.clone(),
                min_rank: Rank::L1,
            }],
            created_at: 0,
            created_by: None,
        });
        let still_open = i >= total - open;
        let created = TicketState {
            status: if still_open {
                TicketStatus::Open
            } else {
                TicketStatus::Assigned
            },
            owner: (!still_open).then(|| owners[i % owners.len()].clone()),
            version: 1,
            ..TicketState::blank(
                0,
                SlaPolicies::default()
                    .for_priority(Priority::P3)
                    .fresh_clocks(),
            )
        };
        let mut events = vec![NewEvent {
            at: 0,
            actor: "bench-customer".into(),
            kind: EventKind::Created,
            state: created.clone(),
        }];
        if !still_open {
            events.push(NewEvent {
                at: 0,
                actor: owners[i % owners.len()].to_string(),
                kind: EventKind::StatusChanged {
                    from: TicketStatus::Assigned,
                    to: TicketStatus::Closed,
                    note: String::new(),
                },
                state: TicketState {
                    status: TicketStatus::Closed,
                    version: 2,
                    ..created
                },
            });
        }
        store
            .append(Change::Ticket(Commit {
                ticket: id,
                header: Some(header),
                expected_version: 0,
                events,
                experts: vec![],
                idempotency_key: None,
            }))
            .map_err(failed)?;
        if (i + 1) % 100_000 == 0 {
            progress(format!("recovery store: {} tickets written", i + 1));
        }
    }
    store.close().map_err(failed)?;
    Ok(())
}

/// Time from start to SERVING on a big store after a kill -9, and RSS.
pub(in crate::bench) async fn recovery(
    plan: &Plan,
    existing: Option<&std::path::Path>,
    report: &mut Report,
) -> Result<(), BenchError> {
    let dir = tempfile::tempdir()?;
    let path = match existing {
        Some(p) => p.to_path_buf(),
        None => {
            let path = dir.path().join("data");
            let (total, open) = (plan.recovery_tickets, plan.recovery_open);
            progress(format!("building a store of {total} tickets ({open} open)"));
            let build_path = path.clone();
            tokio::task::spawn_blocking(move || build_store(&build_path, total, open))
                .await
                .map_err(|e| BenchError::Failed(e.to_string()))??;
            path
        }
    };
    let (first, clean) = ServerProcess::swarmdesk(&path).await?;
    first.kill()?;
    let (second, after_crash) = ServerProcess::swarmdesk(&path).await?;
    let rss = second.rss_bytes().unwrap_or(0);
    report.set("recovery_ms", after_crash.as_millis() as u64);
    report.set("recovery_clean_start_ms", clean.as_millis() as u64);
    report.set("recovery_rss_bytes", rss);
    report.set("recovery_tickets", plan.recovery_tickets as u64);
    report.row(format!(
        "recovery: {} tickets ({} open): SERVING {} ms after kill -9 (first start {} ms), RSS {} MiB",
        plan.recovery_tickets,
        plan.recovery_open,
        after_crash.as_millis(),
        clean.as_millis(),
        rss / (1024 * 1024)
    ));
    drop(second);
    Ok(())
}
