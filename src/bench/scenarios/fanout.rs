//! One ticket to every stream of a channel: the last subscriber's latency.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tonic::Status;

use crate::bench::procs::{self, ServerProcess};
use crate::bench::{progress, BenchError, FanoutSize, Plan, Report};
use crate::rpc::pb;
use crate::rpc::pb::bench_baseline_client::BenchBaselineClient;
use crate::rpc::pb::expert_service_client::ExpertServiceClient;
use crate::rpc::pb::ticket_service_client::TicketServiceClient;

use super::*;

/// Latency figures of one fan-out run.
pub(super) struct Fanout {
    all: Histogram<u64>,
    pub(super) last: Histogram<u64>,
    /// How long the create (or bare publish) call itself took: the part of
    /// each latency spent before the fan-out began.
    call: Histogram<u64>,
    pub(super) delivered: u64,
}

/// Receives on every stream, timing each ticket from its send.
pub(super) async fn measure_fanout<P, PF>(
    streams: Vec<tonic::Streaming<pb::SwarmEvent>>,
    tickets: usize,
    rate: f64,
    publish: P,
) -> Result<Fanout, BenchError>
where
    P: Fn(u64) -> PF,
    PF: Future<Output = Result<(), Status>>,
{
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..tickets).map(|_| AtomicU64::new(0)).collect());
    let last: Arc<Vec<AtomicU64>> = Arc::new((0..tickets).map(|_| AtomicU64::new(0)).collect());
    let warmed = Arc::new(AtomicU64::new(0));
    let stream_count = streams.len() as u64;
    let mut receivers = JoinSet::new();
    for mut stream in streams {
        let (sent, last, warmed) = (sent.clone(), last.clone(), warmed.clone());
        receivers.spawn(async move {
            let mut latency = histogram();
            let mut got = 0u64;
            while got < tickets as u64 {
                let Ok(Ok(Some(e))) =
                    tokio::time::timeout(Duration::from_secs(30), stream.message()).await
                else {
                    break;
                };
                let now = micros(base.elapsed());
                let title = e.event.as_ref().and_then(|ev| ev.ticket.as_ref());
                let title = title.map_or("", |t| t.title.as_str());
                if title == WARM_UP_TITLE {
                    warmed.fetch_add(1, Ordering::Release);
                    continue;
                }
                let Some(seq) = title
                    .strip_prefix("fan ")
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| *n < tickets)
                else {
                    continue;
                };
                let took = now.saturating_sub(sent[seq].load(Ordering::Acquire)).max(1);
                let _ = latency.record(took);
                last[seq].fetch_max(took, Ordering::AcqRel);
                got += 1;
            }
            (got, latency)
        });
    }
    // One ticket first, not measured, on both sides alike: the first
    // delivery on a fresh server and fresh streams is a cold start (20-40
    // ms on either side), and with 100 tickets a p99 is the second-highest
    // value, so one cold start would decide it.
    publish(WARM_UP).await?;
    let warm_up_deadline = Instant::now() + Duration::from_secs(30);
    while warmed.load(Ordering::Acquire) < stream_count {
        if Instant::now() > warm_up_deadline {
            return Err(BenchError::Failed(format!(
                "fan-out: the warm-up ticket reached {} of {stream_count} streams in 30 s",
                warmed.load(Ordering::Acquire)
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut tick = tokio::time::interval(interval);
    let mut call = histogram();
    for (seq, slot) in sent.iter().enumerate() {
        tick.tick().await;
        let started = micros(base.elapsed());
        slot.store(started, Ordering::Release);
        publish(seq as u64).await?;
        let _ = call.record(micros(base.elapsed()).saturating_sub(started).max(1));
    }
    let mut result = Fanout {
        all: histogram(),
        last: histogram(),
        call,
        delivered: 0,
    };
    while let Some(r) = receivers.join_next().await {
        let (got, latency) = r.map_err(|e| BenchError::Failed(e.to_string()))?;
        result.delivered += got;
        let _ = result.all.add(&latency);
    }
    for l in last.iter() {
        let v = l.load(Ordering::Acquire);
        if v > 0 {
            let _ = result.last.record(v);
        }
    }
    Ok(result)
}

/// The `seq` of the fan-out's unmeasured first ticket, and its title.
const WARM_UP: u64 = u64::MAX;
const WARM_UP_TITLE: &str = "fan warm-up";

fn fan_request(seq: u64) -> pb::CreateTicketRequest {
    fan_request_on(seq, "fanout")
}

/// A fan-out ticket for the channel `tag`.
pub(super) fn fan_request_on(seq: u64, tag: &str) -> pb::CreateTicketRequest {
    let mut r = create_request(seq, 1);
    r.title = if seq == WARM_UP {
        WARM_UP_TITLE.to_owned()
    } else {
        format!("fan {seq}")
    };
    r.skills[0].tag = tag.into();
    r
}

/// K streams on one channel, against swarmdesk and a bare broadcast.
pub(in crate::bench) async fn fanout(plan: &Plan, report: &mut Report) -> Result<(), BenchError> {
    let mut total_lost = 0u64;
    for &FanoutSize {
        label,
        streams: k,
        tickets,
    } in &plan.fanout
    {
        let dir = tempfile::tempdir()?;
        let (server, _) = ServerProcess::swarmdesk(dir.path()).await?;
        let per_connection = 100;
        let conns = connections(server.addr, k.div_ceil(per_connection)).await?;
        let admin = authed(&conns[0], &procs::admin_token(dir.path())?)?;
        let ids: Vec<String> = (0..k).map(|i| format!("fan-{i:05}")).collect();
        register_many(
            &admin,
            ids.iter()
                .map(|id| (id.clone(), vec![("fanout".to_owned(), 1)]))
                .collect(),
        )
        .await?;
        let tokens = expert_tokens(&admin, &ids).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_before = server.rss_bytes();
        let mut streams = Vec::with_capacity(k);
        for i in 0..k {
            let s = ExpertServiceClient::new(authed(&conns[i / per_connection], &tokens[i])?)
                .subscribe(pb::SubscribeRequest {
                    expert_id: format!("fan-{i:05}"),
                    channels: vec!["fanout".into()],
                    after_position: 0,
                })
                .await?
                .into_inner();
            streams.push(s);
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let rss_after = server.rss_bytes();
        if let (Some(before), Some(after)) = (rss_before, rss_after) {
            let per_stream = after.saturating_sub(before) / k as u64;
            report.set(format!("rss_per_stream_bytes_{label}"), per_stream);
            report.set("rss_per_stream_bytes", per_stream);
        }
        progress(format!("fanout {label}: {k} streams open"));
        let client = TicketServiceClient::new(admin.clone());
        let sd = measure_fanout(streams, tickets, plan.fanout_rate, |seq| {
            let mut client = client.clone();
            async move { client.create_ticket(fan_request(seq)).await.map(drop) }
        })
        .await?;
        drop(server);

        let baseline = ServerProcess::baseline(None).await?;
        let bconns = connections(baseline.addr, k.div_ceil(per_connection)).await?;
        let mut bstreams = Vec::with_capacity(k);
        for i in 0..k {
            bstreams.push(
                BenchBaselineClient::new(authed(&bconns[i / per_connection], &tokens[i])?)
                    .listen(pb::ListenRequest {})
                    .await?
                    .into_inner(),
            );
        }
        let bclient = BenchBaselineClient::new(authed(&bconns[0], &tokens[0])?);
        let bare = measure_fanout(bstreams, tickets, plan.fanout_rate, |seq| {
            let mut client = bclient.clone();
            async move { client.publish(fan_request(seq)).await.map(drop) }
        })
        .await?;

        let expected = (k * tickets) as u64;
        let lost = expected.saturating_sub(sd.delivered);
        total_lost += lost;
        let (a50, a99, _, amax) = quantiles(&sd.all);
        let (l50, l99, _, lmax) = quantiles(&sd.last);
        let (_, b99, _, _) = quantiles(&bare.all);
        let (bl50, bl99, _, blmax) = quantiles(&bare.last);
        report.set(format!("fanout_all_p50_us_{label}"), a50);
        report.set(format!("fanout_all_p99_us_{label}"), a99);
        report.set(format!("fanout_all_max_us_{label}"), amax);
        report.set(format!("fanout_last_p50_us_{label}"), l50);
        report.set(format!("fanout_last_p99_us_{label}"), l99);
        report.set(format!("fanout_last_max_us_{label}"), lmax);
        report.set(format!("bare_fanout_all_p99_us_{label}"), b99);
        report.set(format!("bare_fanout_last_p50_us_{label}"), bl50);
        report.set(format!("bare_fanout_last_p99_us_{label}"), bl99);
        report.set(format!("bare_fanout_last_max_us_{label}"), blmax);
        report.set(format!("fanout_streams_{label}"), k as u64);
        let (call50, _, _, _) = quantiles(&sd.call);
        let (bcall50, _, _, _) = quantiles(&bare.call);
        report.set(format!("fanout_create_p50_us_{label}"), call50);
        report.set(format!("bare_fanout_publish_p50_us_{label}"), bcall50);
        report.row(format!(
            "fanout {label} ({k} streams): last-subscriber p50 {l50}µs p99 {l99}µs max {lmax}µs | bare p50 {bl50}µs p99 {bl99}µs max {blmax}µs | delivered {}/{expected} | call p50 {call50}µs, bare {bcall50}µs",
            sd.delivered
        ));
    }
    report.set("fanout_lost", total_lost);
    Ok(())
}
