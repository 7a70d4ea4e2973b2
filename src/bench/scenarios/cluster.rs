//! `--scenario cluster`: three NATS servers (JetStream, R3) and three nodes
//! of its own, measured beside the bare JetStream floor in the same run:
//! async-nats publishing the same payload size to an R3 stream at the same
//! concurrency, each publish awaiting its ack. Then the writer is killed
//! several times, and the time from each kill to the first acknowledged
//! create through another node is the failover time. All of it once with
//! JetStream's default fsync interval and once with `sync_interval: always`.
//! First, before any NATS runs, one node of the embedded default is
//! measured at the same concurrency: the most a cluster sharing this
//! machine could hope for.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::bench::procs::ServerProcess;
use crate::bench::{progress, BenchError, FanoutSize, Plan, Report};
use crate::client::{with_token_over, Failover};
use crate::nats_process::{self, NatsCluster, NatsOptions};

use super::*;

fn failed(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Failed(format!("{what}: {e}"))
}

async fn nats_client(urls: &[String]) -> Result<async_nats::Client, BenchError> {
    let addrs: Vec<async_nats::ServerAddr> = urls
        .iter()
        .map(|u| u.parse().map_err(|e| failed("a NATS URL", e)))
        .collect::<Result<_, _>>()?;
    async_nats::connect(addrs)
        .await
        .map_err(|e| failed("connecting to NATS", e))
}

/// Publishes of `size` bytes to a fresh R3 stream from `concurrency`
/// tasks, each awaiting its ack, for `duration`.
async fn floor(
    urls: &[String],
    concurrency: usize,
    duration: Duration,
    size: usize,
) -> Result<(u64, Duration, Histogram<u64>), BenchError> {
    let js = jetstream::new(nats_client(urls).await?);
    crate::store::jetstream::until_jetstream_answers("the floor's stream", || {
        js.get_or_create_stream(jetstream::stream::Config {
            name: "BENCH_FLOOR".into(),
            subjects: vec!["bench.floor".into()],
            num_replicas: 3,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
    })
    .await
    .map_err(|e| failed("creating the floor's stream", e))?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (js, payload) = (js.clone(), payload.clone());
        tasks.spawn(async move {
            let mut latency = histogram();
            let mut ops = 0u64;
            while Instant::now() < end {
                let t0 = Instant::now();
                js.publish("bench.floor", payload.clone())
                    .await
                    .map_err(|e| failed("publishing", e))?
                    .await
                    .map_err(|e| failed("publish ack", e))?;
                let _ = latency.record(micros(t0.elapsed()).max(1));
                ops += 1;
            }
            Ok::<_, BenchError>((ops, latency))
        });
    }
    let (mut ops, mut latency) = (0, histogram());
    while let Some(done) = tasks.join_next().await {
        let (n, l) = done.map_err(|e| failed("floor task", e))??;
        ops += n;
        let _ = latency.add(&l);
    }
    Ok((ops, started.elapsed(), latency))
}

/// The log stream's (messages, bytes) now.
async fn log_state(urls: &[String], stream: &str) -> Result<(u64, u64), BenchError> {
    let info = jetstream::new(nats_client(urls).await?)
        .get_stream(stream)
        .await
        .map_err(|e| failed("the log's stream", e))?
        .get_info()
        .await
        .map_err(|e| failed("the log's stream", e))?;
    Ok((info.state.messages, info.state.bytes))
}

async fn start_nodes(
    dir: &Path,
    urls: &[String],
    name: &str,
) -> Result<(Vec<ServerProcess>, String), BenchError> {
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(ServerProcess::cluster_node(&dir.join(id), urls, id, name).await?);
        if id == "a" {
            let deadline = Instant::now() + Duration::from_secs(60);
            while crate::client::token_from_data_dir(&dir.join("a")).is_none() {
                if Instant::now() > deadline {
                    let state = nodes[0].state();
                    return Err(BenchError::Failed(format!(
                        "the first node never wrote admin.token in 60 s: {state} (its warnings, if any, are above)"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    for node in &nodes {
        node.serving().await?;
    }
    Ok((nodes, super::super::procs::admin_token(&dir.join("a"))?))
}

fn addr(nodes: &[Option<ServerProcess>], i: usize) -> Result<std::net::SocketAddr, BenchError> {
    nodes[i]
        .as_ref()
        .map(|n| n.addr)
        .ok_or_else(|| BenchError::Failed(format!("node {i} is down")))
}

/// The index of the node the cluster says writes.
async fn writer_of(nodes: &[Option<ServerProcess>], token: &str) -> Result<usize, BenchError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for node in nodes.iter().flatten() {
            let Ok(channel) = procs::channel(node.addr).await else {
                continue;
            };
            let mut admin = AdminServiceClient::new(authed(&channel, token)?);
            if let Ok(status) = admin.cluster_status(pb::ClusterStatusRequest {}).await {
                let writer = status.into_inner().writer;
                if let Some(i) = ["a", "b", "c"].iter().position(|id| *id == writer) {
                    if nodes[i].is_some() {
                        return Ok(i);
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::Failed("the cluster has no writer".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Create → last subscriber, for streams on the writer and then for
/// streams on a follower (each set on a channel of its own), tickets
/// created through the writer at the fan-out rate: what applying the log
/// on a follower adds to a subscriber's wait.
async fn stream_latency(
    plan: &Plan,
    nodes: &[Option<ServerProcess>],
    writer: usize,
    follower: usize,
    token: &str,
    report: &mut Report,
) -> Result<(), BenchError> {
    let FanoutSize {
        streams: k,
        tickets,
        ..
    } = plan.cluster_streams;
    let creator =
        TicketServiceClient::new(authed(&procs::channel(addr(nodes, writer)?).await?, token)?);
    for (label, node) in [("writer", writer), ("follower", follower)] {
        let tag = format!("streams-{label}");
        let conns = connections(addr(nodes, node)?, k.div_ceil(100)).await?;
        let admin = authed(&conns[0], token)?;
        let ids: Vec<String> = (0..k).map(|i| format!("{tag}-{i:04}")).collect();
        register_many(
            &admin,
            ids.iter()
                .map(|id| (id.clone(), vec![(tag.clone(), 1)]))
                .collect(),
        )
        .await?;
        let tokens = expert_tokens(&admin, &ids).await?;
        let mut streams = Vec::with_capacity(k);
        for (i, id) in ids.iter().enumerate() {
            let stream = ExpertServiceClient::new(authed(&conns[i / 100], &tokens[i])?)
                .subscribe(pb::SubscribeRequest {
                    expert_id: id.clone(),
                    channels: vec![tag.clone()],
                    after_position: 0,
                })
                .await?
                .into_inner();
            streams.push(stream);
        }
        let measured = super::fanout::measure_fanout(streams, tickets, plan.fanout_rate, |seq| {
            let mut client = creator.clone();
            let request = super::fanout::fan_request_on(seq, &tag);
            async move { client.create_ticket(request).await.map(drop) }
        })
        .await?;
        let lost = (k * tickets) as u64 - measured.delivered.min((k * tickets) as u64);
        if lost > 0 {
            return Err(BenchError::Failed(format!(
                "cluster streams on the {label}: {lost} deliveries lost"
            )));
        }
        let (p50, p99, _, _) = quantiles(&measured.last);
        report.set(format!("cluster_streams_{label}_last_p50_us"), p50);
        report.set(format!("cluster_streams_{label}_last_p99_us"), p99);
        report.row(format!(
            "cluster: {k} streams on the {label}, {tickets} tickets created on the writer: last subscriber p50 {p50} µs, p99 {p99} µs"
        ));
    }
    report.ratio(
        "cluster_streams_follower_writer_p99_ratio",
        "cluster_streams_follower_last_p99_us",
        "cluster_streams_writer_last_p99_us",
    );
    Ok(())
}

/// Create on one node of the embedded default (sled, no NATS running), at
/// the cluster's concurrency: what one process does with the machine to
/// itself. The writer of a cluster does that node's work for each create
/// (check, route, apply to its replica, stream) and publishes too, while two
/// followers apply every entry again and three NATS servers replicate it,
/// so on a machine the cluster shares this bounds what it can reach.
async fn single_node(plan: &Plan, c: usize, report: &mut Report) -> Result<(), BenchError> {
    progress("cluster: one node of the embedded default, for comparison");
    let server = target(None).await?;
    let channels = authed_each(&server.connections(plan.connections)?, &server.token)?;
    let sequence = Arc::new(AtomicU64::new(0));
    let load = closed_loop(
        &channels,
        c,
        plan.measure,
        &sequence,
        call(Method::CreateTicket, plan.skills),
    )
    .await?;
    record_load(report, "cluster_single_node", c, &load);
    Ok(())
}

pub(in crate::bench) async fn cluster(plan: &Plan, report: &mut Report) -> Result<(), BenchError> {
    let binary = nats_process::binary();
    nats_process::binary_version(&binary).map_err(BenchError::Failed)?;
    let c = plan.cluster_concurrency;
    single_node(plan, c, report).await?;
    for sync_always in [false, true] {
        let mode = if sync_always {
            "sync_always"
        } else {
            "sync_default"
        };
        progress(format!("cluster: NATS with {mode}"));
        let dir = tempfile::tempdir()?;
        let nats = NatsCluster::start(
            &binary,
            &dir.path().join("nats"),
            3,
            &NatsOptions { sync_always },
        )
        .map_err(BenchError::Failed)?;
        let urls = nats.urls();
        let name = "bench";
        let (nodes, token) = start_nodes(dir.path(), &urls, name).await?;
        let mut nodes: Vec<Option<ServerProcess>> = nodes.into_iter().map(Some).collect();
        let writer = writer_of(&nodes, &token).await?;
        let follower = (writer + 1) % 3;
        let writer_channels =
            authed_connections(addr(&nodes, writer)?, plan.connections, &token).await?;
        let follower_channels =
            authed_connections(addr(&nodes, follower)?, plan.connections, &token).await?;
        let sequence = Arc::new(AtomicU64::new(0));
        let stream = format!("{}_LOG", name.to_uppercase());

        let before = log_state(&urls, &stream).await?;
        let load = closed_loop(
            &writer_channels,
            c,
            plan.measure,
            &sequence,
            call(Method::CreateTicket, plan.skills),
        )
        .await?;
        let after = log_state(&urls, &stream).await?;
        record_load(report, &format!("cluster_{mode}_writer"), c, &load);
        let messages = after.0.saturating_sub(before.0).max(1);
        let entry_bytes = (after.1.saturating_sub(before.1) / load.ops.max(1)).max(64) as usize;
        let batch = load.ops as f64 / messages as f64;
        report.set(
            format!("cluster_{mode}_batch_entries_c{c}"),
            (batch * 10.0).round() / 10.0,
        );

        let load = closed_loop(
            &follower_channels,
            c,
            plan.measure,
            &sequence,
            call(Method::CreateTicket, plan.skills),
        )
        .await?;
        record_load(report, &format!("cluster_{mode}_follower"), c, &load);

        if !sync_always {
            stream_latency(plan, &nodes, writer, follower, &token, report).await?;
        }

        let (ops, elapsed, latency) = floor(&urls, c, plan.measure, entry_bytes).await?;
        let floor_load = Load {
            ops,
            elapsed,
            latency,
        };
        record_load(report, &format!("cluster_{mode}_floor"), c, &floor_load);
        // The single node ran without NATS, once; each mode's floor is
        // set against it.
        for (series, rps) in [
            ("writer", format!("cluster_{mode}_writer_rps_c{c}")),
            ("follower", format!("cluster_{mode}_follower_rps_c{c}")),
            ("single_node", format!("cluster_single_node_rps_c{c}")),
        ] {
            report.ratio(
                &format!("cluster_{mode}_{series}_floor_ratio_c{c}"),
                &rps,
                &format!("cluster_{mode}_floor_rps_c{c}"),
            );
        }
        report.row(format!(
            "cluster ({mode}): create via writer {:.0}/s, via follower {:.0}/s, one node alone {:.0}/s, bare JetStream {:.0}/s ({entry_bytes} B), {batch:.1} creates per log message",
            report.get_f64(&format!("cluster_{mode}_writer_rps_c{c}")).unwrap_or(0.0),
            report.get_f64(&format!("cluster_{mode}_follower_rps_c{c}")).unwrap_or(0.0),
            report.get_f64(&format!("cluster_single_node_rps_c{c}")).unwrap_or(0.0),
            report.get_f64(&format!("cluster_{mode}_floor_rps_c{c}")).unwrap_or(0.0),
        ));

        if sync_always {
            continue;
        }
        // Failover: kill the writer, time the first create acknowledged
        // through another node, start the dead one again.
        let mut times = Vec::new();
        for kill in 0..plan.cluster_kills {
            let writer = writer_of(&nodes, &token).await?;
            // A client of every node, as clients of a cluster are, that
            // was talking to the writer: its calls move on by themselves.
            let mut servers = Vec::new();
            for i in [writer, (writer + 1) % 3, (writer + 2) % 3] {
                let at = addr(&nodes, i)?;
                servers.push((format!("http://{at}"), procs::channel(at).await?));
            }
            let channel = with_token_over(Failover::new(servers), Some(&token))
                .map_err(|e| failed("client", e))?;
            if let Some(node) = nodes[writer].take() {
                node.kill()?;
            }
            let killed = Instant::now();
            let mut n = 0u64;
            loop {
                n += 1;
                let mut request = create_request(1_000_000 + kill as u64 * 10_000 + n, plan.skills);
                request.request_id = format!("failover-{kill}-{n}");
                let mut tickets = TicketServiceClient::new(channel.clone());
                match tokio::time::timeout(Duration::from_secs(5), tickets.create_ticket(request))
                    .await
                {
                    Ok(Ok(_)) => break,
                    _ if killed.elapsed() > Duration::from_secs(60) => {
                        return Err(BenchError::Failed(
                            "no create acknowledged 60 s after the kill".into(),
                        ))
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            times.push(killed.elapsed());
            let id = ["a", "b", "c"][writer];
            let node = ServerProcess::cluster_node(&dir.path().join(id), &urls, id, name).await?;
            node.serving().await?;
            nodes[writer] = Some(node);
        }
        times.sort();
        if let (Some(median), Some(max)) = (times.get(times.len() / 2), times.last()) {
            report.set("cluster_failover_median_ms", median.as_millis() as u64);
            report.set("cluster_failover_max_ms", max.as_millis() as u64);
            report.set("cluster_failover_kills", times.len() as u64);
            report.row(format!(
                "cluster failover over {} kills of the writer: median {} ms, max {} ms",
                times.len(),
                median.as_millis(),
                max.as_millis()
            ));
        }
    }
    report.ratio(
        &format!("cluster_sync_always_cost_ratio_c{c}"),
        &format!("cluster_sync_always_writer_rps_c{c}"),
        &format!("cluster_sync_default_writer_rps_c{c}"),
    );
    Ok(())
}
