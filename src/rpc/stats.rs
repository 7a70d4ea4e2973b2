//! StatsService: convert, ask the desk, convert back.

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::gate::{authorize, principal_label};
use super::pb::{self, stats_service_server::StatsService};
use super::{convert, DeskCell};
use crate::domain::stats::{HOUR_MICROS, SATISFIED_SCORE};
use crate::domain::{Operation, SlaTarget, Tag};

/// The CSAT goal: this share of ratings satisfied (4 or 5).
const SATISFIED_GOAL: f64 = 0.9;
/// The range when a request gives no `from`.
const DEFAULT_RANGE_MICROS: i64 = 30 * 24 * HOUR_MICROS;

#[derive(Clone, Debug)]
pub struct StatsApi {
    desk: DeskCell,
}

impl StatsApi {
    pub fn new(desk: DeskCell) -> Self {
        StatsApi { desk }
    }
}

#[tonic::async_trait]
impl StatsService for StatsApi {
    #[instrument(skip_all, fields(principal = principal_label(&request)))]
    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        authorize(&request, Operation::GetStats)?;
        let r = request.into_inner();
        let desk = super::ready_desk(&self.desk)?;
        let to = match &r.to {
            Some(t) => convert::micros("to", t)?,
            None => desk.now(),
        };
        let from = match &r.from {
            Some(t) => convert::micros("from", t)?,
            None => to - DEFAULT_RANGE_MICROS,
        };
        let tag = if r.tag.is_empty() {
            None
        } else {
            Some(Tag::parse("tag", &r.tag)?)
        };
        let (b, k) = desk.stats(from, to, tag.as_ref()).await?;
        let summary = |i: usize| pb::DurationSummary {
            count: b.times[i].count(),
            median: b.times[i].quantile(0.5).map(convert::duration),
            p90: b.times[i].quantile(0.9).map(convert::duration),
        };
        let share = |part: u64, whole: u64| {
            if whole == 0 {
                0.0
            } else {
                part as f64 / whole as f64
            }
        };
        let satisfied_share = share(b.satisfied, b.ratings);
        Ok(Response::new(pb::Stats {
            from: convert::timestamp(from),
            to: convert::timestamp(to),
            tag: r.tag,
            created: b.created,
            resolved: b.resolved,
            time_to_own: Some(summary(0)),
            time_to_first_response: Some(summary(1)),
            time_to_resolve: Some(summary(2)),
            sla: SlaTarget::ALL
                .iter()
                .zip(b.attainment.iter())
                .map(|(target, a)| pb::TargetAttainment {
                    target: target.number(),
                    met: a.met,
                    breached: a.breached,
                    attainment: share(a.met, a.met + a.breached),
                })
                .collect(),
            ratings: b.ratings,
            csat_average: share(b.rating_sum, b.ratings),
            satisfied_share,
            satisfied_goal: SATISFIED_GOAL,
            satisfied_goal_met: b.ratings > 0 && satisfied_share >= SATISFIED_GOAL,
            experts: b
                .experts
                .iter()
                .map(|(id, c)| pb::ExpertContribution {
                    expert_id: id.to_string(),
                    resolved_as_owner: c.resolved_as_owner,
                    swarms_joined: c.swarms_joined,
                    internal_notes: c.internal_notes,
                    helped_others_resolve: c.helped_others_resolve,
                    articles_reused: c.articles_reused,
                    articles_captured: c.articles_captured,
                })
                .collect(),
            knowledge: Some(pb::KnowledgeStats {
                articles_suggested: b.suggested_on_tickets + k.suggested,
                suggested_on_tickets: b.suggested_on_tickets,
                deflections: k.deflected,
                reused: b.reused,
                captured: b.captured,
                link_rate: share(b.reused + b.captured, b.resolved),
            }),
        }))
    }
}

// Scores count as satisfied from this one up; the proto says "4 or 5".
const _: () = assert!(SATISFIED_SCORE == 4);
