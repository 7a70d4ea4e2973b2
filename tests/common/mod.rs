//! Starts the real server on an ephemeral port with a temporary data dir,
//! and small helpers for talking to it.
#![allow(dead_code, unreachable_pub)]

pub mod certs;
pub mod cluster;
pub mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

use swarmdesk::client::{with_token, AuthedChannel, ClientTls};
use swarmdesk::rpc::pb;
use swarmdesk::rpc::pb::admin_service_client::AdminServiceClient;
use swarmdesk::rpc::pb::expert_service_client::ExpertServiceClient;
use swarmdesk::rpc::pb::knowledge_service_client::KnowledgeServiceClient;
use swarmdesk::rpc::pb::stats_service_client::StatsServiceClient;
use swarmdesk::rpc::pb::ticket_service_client::TicketServiceClient;
use swarmdesk::server::{self, ServerConfig};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Streaming;

/// How long any single wait in a test may take before it fails loudly.
pub const WAIT: Duration = Duration::from_secs(20);

/// The three services, as one token.
#[derive(Clone)]
pub struct Clients {
    pub tickets: TicketServiceClient<AuthedChannel>,
    pub experts: ExpertServiceClient<AuthedChannel>,
    pub admin: AdminServiceClient<AuthedChannel>,
    pub stats: StatsServiceClient<AuthedChannel>,
    pub knowledge: KnowledgeServiceClient<AuthedChannel>,
}

impl Clients {
    /// Every ticket (up to 500), in creation order.
    pub async fn all_tickets(&self) -> Vec<pb::Ticket> {
        self.tickets
            .clone()
            .list_tickets(pb::ListTicketsRequest {
                page_size: 500,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tickets
    }

    /// Every expert (up to 500), in id order.
    pub async fn all_experts(&self) -> Vec<pb::Expert> {
        self.experts
            .clone()
            .list_experts(pb::ListExpertsRequest {
                page_size: 500,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .experts
    }

    pub fn new(channel: Channel, token: Option<&str>) -> Clients {
        let channel = with_token(channel, token).unwrap();
        Clients {
            tickets: TicketServiceClient::new(channel.clone()),
            experts: ExpertServiceClient::new(channel.clone()),
            stats: StatsServiceClient::new(channel.clone()),
            knowledge: KnowledgeServiceClient::new(channel.clone()),
            admin: AdminServiceClient::new(channel),
        }
    }
}

/// The first admin token a server wrote into its data dir.
pub fn admin_token(data_dir: &Path) -> String {
    swarmdesk::client::token_from_data_dir(data_dir).expect("the server wrote admin.token")
}

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    /// As the first admin.
    pub tickets: TicketServiceClient<AuthedChannel>,
    pub experts: ExpertServiceClient<AuthedChannel>,
    pub admin: AdminServiceClient<AuthedChannel>,
    pub admin_token: String,
    /// A connection without a token.
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), server::ServerError>>>,
    pub data_dir: PathBuf,
    _dir: Option<TempDir>,
}

pub async fn spawn_server() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let mut server = spawn_server_with(ServerConfig::new(&path)).await;
    server._dir = Some(dir);
    server
}

pub async fn spawn_server_with(config: ServerConfig) -> TestServer {
    spawn_server_over(config, ClientTls::default()).await
}

/// A server with `config`, its clients connecting with `tls` (https://
/// when `config` serves TLS).
pub async fn spawn_server_over(config: ServerConfig, tls: ClientTls) -> TestServer {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // With authentication off the server needs, and writes, no token.
    let auth_on = config.auth == swarmdesk::rpc::gate::AuthMode::On;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let data_dir = config.data_dir.clone();
    let handle = tokio::spawn(server::run(listener, config, async {
        let _ = rx.await;
    }));
    let channel = connect_to(&format!("{scheme}://{addr}"), &tls).await;
    let admin_token = if auth_on {
        admin_token(&data_dir)
    } else {
        String::new()
    };
    let clients = Clients::new(
        channel.clone(),
        (!admin_token.is_empty()).then_some(admin_token.as_str()),
    );
    TestServer {
        addr,
        tickets: clients.tickets,
        experts: clients.experts,
        admin: clients.admin,
        admin_token,
        channel,
        shutdown: Some(tx),
        handle: Some(handle),
        data_dir,
        _dir: None,
    }
}

/// A channel to the server at `addr` once its health says SERVING (the API
/// answers UNAVAILABLE while the store is still being opened).
pub async fn connect(addr: std::net::SocketAddr) -> Channel {
    connect_to(&format!("http://{addr}"), &ClientTls::default()).await
}

/// [`connect`] to any URL, with TLS settings.
pub async fn connect_to(url: &str, tls: &ClientTls) -> Channel {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let endpoint = swarmdesk::client::endpoint(url, tls).unwrap();
    for _ in 0..800 {
        if let Ok(channel) = endpoint.connect().await {
            let status = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| r.into_inner().status);
            if matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
                return channel;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server at {url} never became SERVING");
}

impl TestServer {
    /// Shuts the server down cleanly and keeps its data dir for a restart.
    pub async fn stop(mut self) -> Option<TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(WAIT, handle)
                .await
                .expect("server did not stop in time")
                .unwrap()
                .unwrap();
        }
        self._dir.take()
    }

    /// Deletes `dir` only when this server is dropped.
    pub fn keep_dir(&mut self, dir: TempDir) {
        self._dir = Some(dir);
    }

    /// Stops and starts again on the same data dir.
    pub async fn restart(self) -> TestServer {
        let config = ServerConfig::new(&self.data_dir);
        self.restart_with(config).await
    }

    /// Stops and starts again on the same data dir with `config` (its
    /// data dir is replaced by this server's).
    pub async fn restart_with(self, config: ServerConfig) -> TestServer {
        let path = self.data_dir.clone();
        let dir = self.stop().await;
        let mut server = spawn_server_with(ServerConfig {
            data_dir: path,
            ..config
        })
        .await;
        server._dir = dir;
        server
    }

    /// A channel that calls as `token`, for any service's client.
    pub fn channel_for(&self, token: &str) -> AuthedChannel {
        with_token(self.channel.clone(), Some(token)).unwrap()
    }

    /// A channel that calls as the admin.
    pub fn admin_channel(&self) -> AuthedChannel {
        self.channel_for(&self.admin_token)
    }

    /// Clients that call as `token`.
    pub fn as_token(&self, token: &str) -> Clients {
        Clients::new(self.channel.clone(), Some(token))
    }

    /// Creates a token (as the admin) and returns its secret.
    pub async fn token(&self, role: pb::Role, expert: &str, bot: &str) -> String {
        self.new_token(role, expert, bot).await.1
    }

    /// Revokes a token (as the admin); returns its record.
    pub async fn revoke(&self, id: &str) -> pb::Token {
        self.admin
            .clone()
            .revoke_token(pb::RevokeTokenRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner()
    }

    /// Creates a token (as the admin) and returns its id and secret.
    pub async fn new_token(&self, role: pb::Role, expert: &str, bot: &str) -> (String, String) {
        let created = self
            .admin
            .clone()
            .create_token(pb::CreateTokenRequest {
                role: role as i32,
                expert_id: expert.into(),
                bot_name: bot.into(),
                label: format!("test {role:?} {expert}{bot}"),
            })
            .await
            .unwrap()
            .into_inner();
        (created.token.unwrap().id, created.secret)
    }

    pub async fn register(&self, id: &str, skills: &[(&str, i32)], capacity: u32) -> pb::Expert {
        self.experts
            .clone()
            .register_expert(register_request(id, skills, capacity))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn subscribe(&self, expert: &str) -> Streaming<pb::SwarmEvent> {
        self.subscribe_with(expert, &[], 0).await.unwrap()
    }

    pub async fn subscribe_with(
        &self,
        expert: &str,
        channels: &[&str],
        after: u64,
    ) -> Result<Streaming<pb::SwarmEvent>, tonic::Status> {
        self.experts
            .clone()
            .subscribe(pb::SubscribeRequest {
                expert_id: expert.into(),
                channels: channels.iter().map(|c| (*c).to_owned()).collect(),
                after_position: after,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn create(&self, title: &str, skills: &[(&str, i32)], priority: i32) -> pb::Ticket {
        self.try_create(title, skills, priority).await.unwrap()
    }

    pub async fn try_create(
        &self,
        title: &str,
        skills: &[(&str, i32)],
        priority: i32,
    ) -> Result<pb::Ticket, tonic::Status> {
        self.tickets
            .clone()
            .create_ticket(create_request(title, skills, priority))
            .await
            .map(|r| r.into_inner().ticket.unwrap())
    }

    pub async fn get(&self, id: &str) -> pb::Ticket {
        self.tickets
            .clone()
            .get_ticket(pb::GetTicketRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn expert(&self, id: &str) -> pb::Expert {
        self.experts
            .clone()
            .get_expert(pb::GetExpertRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn claim(&self, ticket: &str, expert: &str) -> Result<pb::Ticket, tonic::Status> {
        self.tickets
            .clone()
            .claim_ticket(pb::ClaimTicketRequest {
                ticket_id: ticket.into(),
                expert_id: expert.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Moves a ticket; WAITING_VENDOR names vendor "acme", case "CASE-1".
    pub async fn set_status(
        &self,
        ticket: &str,
        expert: &str,
        status: pb::TicketStatus,
    ) -> Result<pb::Ticket, tonic::Status> {
        let vendor = (status == pb::TicketStatus::WaitingVendor).then(|| pb::Vendor {
            name: "acme".into(),
            reference: "CASE-1".into(),
        });
        self.set_status_with(ticket, expert, status, vendor).await
    }

    pub async fn set_status_with(
        &self,
        ticket: &str,
        expert: &str,
        status: pb::TicketStatus,
        vendor: Option<pb::Vendor>,
    ) -> Result<pb::Ticket, tonic::Status> {
        self.tickets
            .clone()
            .update_status(pb::UpdateStatusRequest {
                ticket_id: ticket.into(),
                expert_id: expert.into(),
                status: status as i32,
                note: String::new(),
                vendor,
                knowledge: None,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn post(
        &self,
        ticket: &str,
        author: &str,
        body: &str,
        visibility: pb::Visibility,
    ) -> Result<pb::TicketEvent, tonic::Status> {
        self.tickets
            .clone()
            .post_message(pb::PostMessageRequest {
                ticket_id: ticket.into(),
                author_id: author.into(),
                body: body.into(),
                visibility: visibility as i32,
                request_id: String::new(),
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

/// An expert `id` (display name in capitals) with `skills` as (tag, rank).
pub fn register_request(
    id: &str,
    skills: &[(&str, i32)],
    capacity: u32,
) -> pb::RegisterExpertRequest {
    pb::RegisterExpertRequest {
        expert: Some(pb::Expert {
            id: id.into(),
            display_name: id.to_uppercase(),
            skills: skills
                .iter()
                .map(|(t, r)| pb::Skill {
                    tag: (*t).into(),
                    rank: *r,
                })
                .collect(),
            capacity,
            ..Default::default()
        }),
    }
}

pub fn create_request(
    title: &str,
    skills: &[(&str, i32)],
    priority: i32,
) -> pb::CreateTicketRequest {
    pb::CreateTicketRequest {
        title: title.into(),
        description: format!("{title}: details"),
        requester: "customer-1".into(),
        channel: pb::Channel::Chat as i32,
        kind: pb::TicketKind::Incident as i32,
        priority,
        skills: skills
            .iter()
            .map(|(t, r)| pb::SkillRequirement {
                tag: (*t).into(),
                min_rank: *r,
            })
            .collect(),
        request_id: String::new(),
    }
}

pub const L1: i32 = pb::Rank::L1 as i32;
pub const L2: i32 = pb::Rank::L2 as i32;
pub const L3: i32 = pb::Rank::L3 as i32;
pub const P1: i32 = pb::Priority::P1 as i32;
pub const P2: i32 = pb::Priority::P2 as i32;
pub const P3: i32 = pb::Priority::P3 as i32;
pub const P4: i32 = pb::Priority::P4 as i32;

/// The next message of a stream, failing the test if none comes in time.
pub async fn next<T>(stream: &mut Streaming<T>) -> T {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("timed out waiting for a stream message")
        .expect("stream failed")
        .expect("stream ended")
}

/// The next message of a stream that `wanted` accepts, skipping others.
pub async fn next_where<T>(stream: &mut Streaming<T>, wanted: impl Fn(&T) -> bool) -> T {
    loop {
        let message = next(stream).await;
        if wanted(&message) {
            return message;
        }
    }
}

/// Whether a stream stays silent for `quiet`.
pub async fn silent_for<T>(stream: &mut Streaming<T>, quiet: Duration) -> bool {
    tokio::time::timeout(quiet, stream.message()).await.is_err()
}

/// (ticket id, reason, event type) of a swarm event, for compact asserts.
pub fn summary(e: &pb::SwarmEvent) -> (String, pb::SwarmEventReason, pb::TicketEventType) {
    let event = e.event.as_ref().unwrap();
    (
        event.ticket_id.clone(),
        pb::SwarmEventReason::try_from(e.reason).unwrap(),
        pb::TicketEventType::try_from(event.r#type).unwrap(),
    )
}

/// The path of the swarmdesk binary cargo built for these tests.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_swarmdesk"))
}

/// Runs the swarmdesk binary (off the async workers, so an in-process
/// server keeps running) with `args` and, if given, SWARMDESK_TOKEN; no
/// other SWARMDESK_TOKEN or SWARMDESK_DATA_DIR leaks in from the test's
/// environment. Returns (success, stdout, stderr).
pub async fn run_cli(args: Vec<String>, token: Option<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(binary());
        command
            .args(&args)
            .env_remove("SWARMDESK_TOKEN")
            .env_remove("SWARMDESK_DATA_DIR");
        if let Some(token) = token {
            command.env("SWARMDESK_TOKEN", token);
        }
        let out = command.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}
