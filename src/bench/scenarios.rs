//! The scenarios of `swarmdesk bench`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::transport::Channel;
use tonic::Status;
use tonic_prost::ProstEncoder;

use super::baseline::NoSink;
use super::procs::{self, ServerProcess};
use super::{progress, BenchError, FanoutSize, Plan, Report};
use crate::client::{with_token, AuthedChannel};
use crate::domain::{
    ContactChannel, EventKind, Expert, ExpertId, Presence, Priority, Rank, Skill, SkillRequirement,
    SlaPolicies, Tag, TicketHeader, TicketKind, TicketState, TicketStatus,
};
use crate::rpc::pb;
use crate::rpc::pb::admin_service_client::AdminServiceClient;
use crate::rpc::pb::bench_baseline_client::BenchBaselineClient;
use crate::rpc::pb::expert_service_client::ExpertServiceClient;
use crate::rpc::pb::ticket_service_client::TicketServiceClient;
use crate::store::sled::{SledConfig, SledStore};
use crate::store::{Change, Commit, Log, NewEvent};

type Call = Arc<
    dyn Fn(AuthedChannel, u64) -> Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>
        + Send
        + Sync,
>;

fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s at 3 significant figures.
    Histogram::new_with_bounds(1, 100_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// Results of one closed-loop run.
struct Load {
    ops: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Load {
    fn rps(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `concurrency` workers over `channels`, each calling back-to-back until
/// `duration` has passed. Any error fails the run: a benchmark that drops
/// errors measures nothing.
async fn closed_loop(
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

fn create_request(seq: u64, skills: usize) -> pb::CreateTicketRequest {
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
enum Method {
    CreateTicket,
    Echo,
    DurableEcho,
}

fn call(method: Method, skills: usize) -> Call {
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

async fn connections(addr: std::net::SocketAddr, n: usize) -> Result<Vec<Channel>, BenchError> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        channels.push(procs::channel(addr).await?);
    }
    Ok(channels)
}

fn authed(channel: &Channel, token: &str) -> Result<AuthedChannel, BenchError> {
    with_token(channel.clone(), Some(token)).map_err(|e| BenchError::Failed(e.to_string()))
}

/// `n` connections, each sending `token`. The baseline gets the same
/// header, unread, so both carry the same bytes.
async fn authed_connections(
    addr: std::net::SocketAddr,
    n: usize,
    token: &str,
) -> Result<Vec<AuthedChannel>, BenchError> {
    connections(addr, n)
        .await?
        .iter()
        .map(|c| authed(c, token))
        .collect()
}

/// A swarmdesk server to measure: started on a temporary dir, or `--target`.
struct Target {
    addr: std::net::SocketAddr,
    /// An admin token of the server.
    token: String,
    _process: Option<ServerProcess>,
    _dir: Option<tempfile::TempDir>,
}

async fn target(existing: Option<&str>) -> Result<Target, BenchError> {
    if let Some(url) = existing {
        let addr = url
            .trim_start_matches("http://")
            .parse()
            .map_err(|e| BenchError::Failed(format!("--target {url}: {e}")))?;
        let token = std::env::var("SWARMDESK_TOKEN").map_err(|_| {
            BenchError::Failed("--target needs SWARMDESK_TOKEN set to an admin token".into())
        })?;
        return Ok(Target {
            addr,
            token,
            _process: None,
            _dir: None,
        });
    }
    let dir = tempfile::tempdir()?;
    let (process, _) = ServerProcess::swarmdesk(dir.path()).await?;
    Ok(Target {
        addr: process.addr,
        token: procs::admin_token(dir.path())?,
        _process: Some(process),
        _dir: Some(dir),
    })
}

/// An expert token for each of `experts`, made `parallel` at a time (as
/// every expert's desktop has its own).
async fn expert_tokens(
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

async fn register(
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
async fn register_many(
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
struct CountOnly;

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
struct SubscribeCounting;

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

async fn subscribe_counting(
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
struct Online {
    _drains: JoinSet<()>,
    delivered: Arc<AtomicU64>,
    /// Streams on each skill channel, when every skill has as many.
    per_skill: Option<u64>,
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
async fn experts_online(
    raw: &[Channel],
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

fn quantiles(h: &Histogram<u64>) -> (u64, u64, u64, u64) {
    (
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
    )
}

fn record_load(report: &mut Report, prefix: &str, c: usize, load: &Load) {
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

/// Create vs the baseline's Echo and DurableEcho, interleaved per
/// concurrency level.
pub(super) async fn create(
    plan: &Plan,
    existing: Option<&str>,
    report: &mut Report,
) -> Result<(), BenchError> {
    let server = target(existing).await?;
    // On the same file system as the server's own temporary data dir.
    let baseline_dir = tempfile::tempdir()?;
    let baseline = ServerProcess::baseline(Some(baseline_dir.path())).await?;
    let raw = connections(server.addr, plan.connections).await?;
    let sd = raw
        .iter()
        .map(|c| authed(c, &server.token))
        .collect::<Result<Vec<_>, _>>()?;
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

/// Create throughput with and without one stream that never reads; then
/// the stalled stream reads everything.
pub(super) async fn slow_reader(
    plan: &Plan,
    existing: Option<&str>,
    report: &mut Report,
) -> Result<(), BenchError> {
    let server = target(existing).await?;
    let raw = connections(server.addr, plan.connections).await?;
    let sd = raw
        .iter()
        .map(|c| authed(c, &server.token))
        .collect::<Result<Vec<_>, _>>()?;
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
    let slow_channel = authed(&procs::channel(server.addr).await?, &slow_token[0])?;
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

/// Many experts claim the same unowned tickets at once.
pub(super) async fn claim_storm(
    plan: &Plan,
    existing: Option<&str>,
    report: &mut Report,
) -> Result<(), BenchError> {
    let server = target(existing).await?;
    let raw = connections(server.addr, plan.connections).await?;
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

/// Latency figures of one fan-out run.
struct Fanout {
    all: Histogram<u64>,
    last: Histogram<u64>,
    /// How long the create (or bare publish) call itself took: the part of
    /// each latency spent before the fan-out began.
    call: Histogram<u64>,
    delivered: u64,
}

/// Receives on every stream, timing each ticket from its send.
async fn measure_fanout<P, PF>(
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
    let mut r = create_request(seq, 1);
    r.title = if seq == WARM_UP {
        WARM_UP_TITLE.to_owned()
    } else {
        format!("fan {seq}")
    };
    r.skills[0].tag = "fanout".into();
    r
}

/// K streams on one channel, against swarmdesk and a bare broadcast.
pub(super) async fn fanout(plan: &Plan, report: &mut Report) -> Result<(), BenchError> {
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
pub(super) async fn recovery(
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
