//! The scenarios of `swarmdesk bench`, one file each, and what they share:
//! connections, tokens, experts online, the closed loop and its figures.

mod claim_storm;
mod cluster;
mod create;
mod fanout;
mod recovery;
mod slow_reader;

pub(super) use self::claim_storm::claim_storm;
pub(super) use self::cluster::cluster;
pub(super) use self::create::create;
pub(super) use self::fanout::fanout;
pub(super) use self::recovery::recovery;
pub(super) use self::slow_reader::slow_reader;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::transport::Channel;
use tonic::Status;
use tonic_prost::ProstEncoder;

use super::procs::{self, ServerProcess};
use super::{BenchError, Report};
use crate::client::{self, with_token_over, AuthedChannel, ClientTls, Failover};
use crate::rpc::pb;
use crate::rpc::pb::admin_service_client::AdminServiceClient;
use crate::rpc::pb::bench_baseline_client::BenchBaselineClient;
use crate::rpc::pb::expert_service_client::ExpertServiceClient;
use crate::rpc::pb::ticket_service_client::TicketServiceClient;

pub(super) type Call = Arc<
    dyn Fn(AuthedChannel, u64) -> Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>
        + Send
        + Sync,
>;

pub(super) fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s at 3 significant figures.
    Histogram::new_with_bounds(1, 100_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

pub(super) fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// Results of one closed-loop run.
pub(super) struct Load {
    pub(super) ops: u64,
    pub(super) elapsed: Duration,
    pub(super) latency: Histogram<u64>,
}

impl Load {
    fn rps(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `concurrency` workers over `channels`, each calling back-to-back until
/// `duration` has passed. Any error fails the run: a benchmark that drops
/// errors measures nothing.
pub(super) async fn closed_loop(
    channels: &[AuthedChannel],
    concurrency: usize,
    duration: Duration,
    sequence: &Arc<AtomicU64>,
    call: Call,
) -> Result<Load, BenchError> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for w in 0..concurrency {
        let channel = channels[w % channels.len()].clone();
        let call = call.clone();
        let sequence = sequence.clone();
        workers.spawn(async move {
            let mut latency = histogram();
            let mut ops = 0u64;
            while Instant::now() < deadline {
                let seq = sequence.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                call(channel.clone(), seq).await?;
                let _ = latency.record(micros(t0.elapsed()).max(1));
                ops += 1;
            }
            Ok::<_, Status>((ops, latency))
        });
    }
    let mut total = Load {
        ops: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    while let Some(result) = workers.join_next().await {
        let (ops, latency) = result.map_err(|e| BenchError::Failed(e.to_string()))??;
        total.ops += ops;
        let _ = total.latency.add(&latency);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

pub(super) fn create_request(seq: u64, skills: usize) -> pb::CreateTicketRequest {
    pb::CreateTicketRequest {
        title: format!("bench ticket {seq}"),
        description: "x".repeat(256),
        requester: "bench-customer".into(),
        channel: pb::Channel::Chat as i32,
        kind: pb::TicketKind::Incident as i32,
        priority: pb::Priority::P3 as i32,
        skills: vec![pb::SkillRequirement {
            tag: format!("s{}", seq % skills.max(1) as u64),
            min_rank: pb::Rank::L1 as i32,
        }],
        request_id: String::new(),
    }
}

/// What a closed loop calls with the same request: swarmdesk's
/// CreateTicket or one of the baseline's answers to it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Method {
    CreateTicket,
    Echo,
    DurableEcho,
}

pub(super) fn call(method: Method, skills: usize) -> Call {
    Arc::new(move |channel, seq| {
        Box::pin(async move {
            let request = create_request(seq, skills);
            match method {
                Method::CreateTicket => TicketServiceClient::new(channel)
                    .create_ticket(request)
                    .await
                    .map(drop),
                Method::Echo => BenchBaselineClient::new(channel)
                    .echo(request)
                    .await
                    .map(drop),
                Method::DurableEcho => BenchBaselineClient::new(channel)
                    .durable_echo(request)
                    .await
                    .map(drop),
            }
        })
    })
}

pub(super) async fn connections(
    addr: std::net::SocketAddr,
    n: usize,
) -> Result<Vec<Channel>, BenchError> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        channels.push(procs::channel(addr).await?);
    }
    Ok(channels)
}

/// A connection the bench sends calls over: one server's channel, or a
/// [`Failover`] over every node of a `--target` cluster.
pub(super) trait Link {
    fn failover(&self) -> Failover;
}

impl Link for Channel {
    fn failover(&self) -> Failover {
        Failover::single("server", self.clone())
    }
}

impl Link for Failover {
    fn failover(&self) -> Failover {
        self.clone()
    }
}

pub(super) fn authed(link: &impl Link, token: &str) -> Result<AuthedChannel, BenchError> {
    with_token_over(link.failover(), Some(token)).map_err(|e| BenchError::Failed(e.to_string()))
}

/// Each of `links`, sending `token`.
pub(super) fn authed_each(
    links: &[impl Link],
    token: &str,
) -> Result<Vec<AuthedChannel>, BenchError> {
    links.iter().map(|link| authed(link, token)).collect()
}

/// `n` connections, each sending `token`. The baseline gets the same
/// header, unread, so both carry the same bytes.
pub(super) async fn authed_connections(
    addr: std::net::SocketAddr,
    n: usize,
    token: &str,
) -> Result<Vec<AuthedChannel>, BenchError> {
    authed_each(&connections(addr, n).await?, token)
}

/// A swarmdesk server to measure: started on a temporary dir, or
/// `--target` (one URL, or the nodes of a cluster separated by commas).
pub(super) struct Target {
    /// Every URL calls may go to, in the order given.
    urls: String,
    /// An admin token of the server.
    pub(super) token: String,
    pub(super) _process: Option<ServerProcess>,
    pub(super) _dir: Option<tempfile::TempDir>,
}

impl Target {
    /// `n` connections (at least one), each over every URL: a call goes to
    /// the node that answered last and moves on to the next as the CLI's
    /// calls do (`client::Failover`).
    pub(super) fn connections(&self, n: usize) -> Result<Vec<Failover>, BenchError> {
        (0..n.max(1))
            .map(|_| {
                client::servers(&self.urls, &ClientTls::default())
                    .map_err(|e| BenchError::Failed(format!("--target {}: {e}", self.urls)))
            })
            .collect()
    }
}

pub(super) async fn target(existing: Option<&str>) -> Result<Target, BenchError> {
    if let Some(urls) = existing {
        let token = std::env::var("SWARMDESK_TOKEN").map_err(|_| {
            BenchError::Failed("--target needs SWARMDESK_TOKEN set to an admin token".into())
        })?;
        let urls = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                if u.contains("://") {
                    u.to_owned()
                } else {
                    format!("http://{u}")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        let target = Target {
            urls,
            token,
            _process: None,
            _dir: None,
        };
        // Every URL must at least parse: a typo fails here, not mid-run.
        target.connections(1)?;
        return Ok(target);
    }
    let dir = tempfile::tempdir()?;
    let (process, _) = ServerProcess::swarmdesk(dir.path()).await?;
    Ok(Target {
        urls: format!("http://{}", process.addr),
        token: procs::admin_token(dir.path())?,
        _process: Some(process),
        _dir: Some(dir),
    })
}

/// An expert token for each of `experts`, made `parallel` at a time (as
/// every expert's desktop has its own).
pub(super) async fn expert_tokens(
    admin: &AuthedChannel,
    experts: &[String],
) -> Result<Vec<String>, BenchError> {
    let mut set = JoinSet::new();
    let mut tokens = vec![String::new(); experts.len()];
    for (i, id) in experts.iter().enumerate() {
        if set.len() >= 64 {
            if let Some(r) = set.join_next().await {
                let (i, t) = r.map_err(|e| BenchError::Failed(e.to_string()))??;
                tokens[i] = t;
            }
        }
        let mut client = AdminServiceClient::new(admin.clone());
        let request = pb::CreateTokenRequest {
            role: pb::Role::Expert as i32,
            expert_id: id.clone(),
            bot_name: String::new(),
            label: format!("bench {id}"),
        };
        set.spawn(async move {
            let secret = client.create_token(request).await?.into_inner().secret;
            Ok::<_, BenchError>((i, secret))
        });
    }
    while let Some(r) = set.join_next().await {
        let (i, t) = r.map_err(|e| BenchError::Failed(e.to_string()))??;
        tokens[i] = t;
    }
    Ok(tokens)
}

pub(super) async fn register(
    channel: &AuthedChannel,
    id: String,
    skills: Vec<(String, i32)>,
) -> Result<(), BenchError> {
    ExpertServiceClient::new(channel.clone())
        .register_expert(pb::RegisterExpertRequest {
            expert: Some(pb::Expert {
                id,
                display_name: "bench".into(),
                skills: skills
                    .into_iter()
                    .map(|(tag, rank)| pb::Skill { tag, rank })
                    .collect(),
                capacity: 1000,
                ..Default::default()
            }),
        })
        .await?;
    Ok(())
}

/// Registers many experts, `parallel` at a time.
pub(super) async fn register_many(
    channel: &AuthedChannel,
    experts: Vec<(String, Vec<(String, i32)>)>,
) -> Result<(), BenchError> {
    let mut set = JoinSet::new();
    for (id, skills) in experts {
        if set.len() >= 64 {
            if let Some(r) = set.join_next().await {
                r.map_err(|e| BenchError::Failed(e.to_string()))??;
            }
        }
        let channel = channel.clone();
        set.spawn(async move { register(&channel, id, skills).await });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| BenchError::Failed(e.to_string()))??;
    }
    Ok(())
}

/// Receives a stream's messages without decoding them. The harness shares
/// the machine with the server it measures; decoding each of the ~10
/// deliveries of every ticket would mostly measure the harness.
#[derive(Debug, Default)]
pub(super) struct CountOnly;

impl Decoder for CountOnly {
    type Item = usize;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<usize>, Status> {
        let n = src.remaining();
        src.advance(n);
        Ok(Some(n))
    }
}

/// Subscribe, with a protobuf request and undecoded replies.
#[derive(Debug, Default)]
pub(super) struct SubscribeCounting;

impl Codec for SubscribeCounting {
    type Encode = pb::SubscribeRequest;
    type Decode = usize;
    type Encoder = ProstEncoder<pb::SubscribeRequest>;
    type Decoder = CountOnly;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CountOnly
    }
}

pub(super) async fn subscribe_counting(
    channel: AuthedChannel,
    request: pb::SubscribeRequest,
) -> Result<tonic::Streaming<usize>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("subscribe: {e}")))?;
    let path = http::uri::PathAndQuery::from_static("/swarmdesk.v1.ExpertService/Subscribe");
    Ok(grpc
        .server_streaming(tonic::Request::new(request), path, SubscribeCounting)
        .await?
        .into_inner())
}

/// Experts online, their streams drained in the background (dropping
/// `drains` ends them), with the count of deliveries they received.
pub(super) struct Online {
    pub(super) _drains: JoinSet<()>,
    pub(super) delivered: Arc<AtomicU64>,
    /// Streams on each skill channel, when every skill has as many.
    pub(super) per_skill: Option<u64>,
}

impl Online {
    /// Deliveries so far, once the streams' replays of earlier tickets
    /// (a --target server's) have stopped coming.
    async fn settled(&self) -> u64 {
        let mut last = self.delivered.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.delivered.load(Ordering::Relaxed);
            if now == last {
                return now;
            }
            last = now;
        }
    }

    /// Waits (up to a minute) until the streams have received `expected`
    /// deliveries; returns how many they got.
    async fn wait_for(&self, expected: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.delivered.load(Ordering::Relaxed);
            if got >= expected || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// E experts over S skills, each subscribed, their streams drained in the
/// background.
pub(super) async fn experts_online(
    raw: &[impl Link],
    admin: &AuthedChannel,
    experts: usize,
    skills: usize,
) -> Result<Online, BenchError> {
    let roster: Vec<(String, Vec<(String, i32)>)> = (0..experts)
        .map(|i| {
            let rank = 1 + (i / skills.max(1)) % 3;
            (
                format!("e{i:04}"),
                vec![(format!("s{}", i % skills.max(1)), rank as i32)],
            )
        })
        .collect();
    register_many(admin, roster.clone()).await?;
    let ids: Vec<String> = roster.iter().map(|(id, _)| id.clone()).collect();
    let tokens = expert_tokens(admin, &ids).await?;
    let mut drains = JoinSet::new();
    let delivered = Arc::new(AtomicU64::new(0));
    for (i, (id, token)) in ids.into_iter().zip(tokens).enumerate() {
        let request = pb::SubscribeRequest {
            expert_id: id,
            channels: vec![],
            after_position: 0,
        };
        let mut stream = subscribe_counting(authed(&raw[i % raw.len()], &token)?, request).await?;
        let delivered = delivered.clone();
        drains.spawn(async move {
            while let Ok(Some(_)) = stream.message().await {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let skills = skills.max(1);
    Ok(Online {
        _drains: drains,
        delivered,
        per_skill: experts
            .is_multiple_of(skills)
            .then_some((experts / skills) as u64),
    })
}

pub(super) fn quantiles(h: &Histogram<u64>) -> (u64, u64, u64, u64) {
    (
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
    )
}

pub(super) fn record_load(report: &mut Report, prefix: &str, c: usize, load: &Load) {
    let (p50, p99, p999, _) = quantiles(&load.latency);
    report.set(format!("{prefix}_rps_c{c}"), load.rps().round());
    report.set(format!("{prefix}_p50_us_c{c}"), p50);
    report.set(format!("{prefix}_p99_us_c{c}"), p99);
    report.set(format!("{prefix}_p999_us_c{c}"), p999);
    report.row(format!(
        "{prefix:<8} c={c:<4} {:>9.0}/s  p50 {p50:>7}µs  p99 {p99:>7}µs  p999 {p999:>7}µs",
        load.rps()
    ));
}
