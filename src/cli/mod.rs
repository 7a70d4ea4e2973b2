//! The `swarmdesk` command's client subcommands: one call each against a
//! running server, printed for a person (default) or as JSON lines (--json).

mod cluster;
mod experts;
mod humane;
mod knowledge;
mod output;
mod tickets;

pub use self::experts::ExpertCommand;
pub use self::knowledge::ArticleCommand;
pub use self::tickets::TicketCommand;

use std::time::Duration;

use clap::{Args, Subcommand};

use crate::client::AuthedChannel;
use crate::domain::{Rank, TicketStatus};
use crate::rpc::pb;
use crate::rpc::pb::admin_service_client::AdminServiceClient;
use crate::rpc::pb::expert_service_client::ExpertServiceClient;
use crate::rpc::pb::stats_service_client::StatsServiceClient;
use crate::rpc::pb::ticket_service_client::TicketServiceClient;
use output::Printer;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Where the server is and how to print.
#[derive(Args, Clone, Debug)]
pub struct ClientOptions {
    /// The server's URL; or several, comma-separated (a cluster's nodes):
    /// a call moves on to the next when one cannot take it, retrying only
    /// what is safe to do twice (reads, and writes with a request id).
    #[arg(
        long,
        global = true,
        env = "SWARMDESK_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Print one JSON object per line instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Bearer token. Without it (and SWARMDESK_TOKEN), the admin token the
    /// server wrote to <data dir>/admin.token is used when readable.
    #[arg(long, global = true, env = "SWARMDESK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The server's data dir, to find admin.token in (local use only).
    #[arg(
        long = "data-dir",
        id = "client_data_dir",
        value_name = "DIR",
        env = "SWARMDESK_DATA_DIR",
        default_value = "./swarmdesk-data"
    )]
    pub data_dir: std::path::PathBuf,
    /// PEM CA certificate to trust for an https:// server (default: the
    /// system's roots).
    #[arg(long, global = true, env = "SWARMDESK_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate, for servers that require mutual TLS.
    #[arg(long, global = true, env = "SWARMDESK_CLIENT_CERT")]
    pub cert: Option<std::path::PathBuf>,
    /// PEM key of --cert.
    #[arg(long, global = true, env = "SWARMDESK_CLIENT_KEY")]
    pub key: Option<std::path::PathBuf>,
}

impl ClientOptions {
    /// --token, else SWARMDESK_TOKEN (both read by clap), else the data
    /// dir's admin.token.
    fn token(&self) -> Option<String> {
        self.token
            .clone()
            .or_else(|| crate::client::token_from_data_dir(&self.data_dir))
    }

    fn tls(&self) -> crate::client::ClientTls {
        crate::client::ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// A skill as `tag:rank` (rank l1, l2 or l3), e.g. `network:l3`.
fn parse_skill(raw: &str) -> Result<pb::Skill, String> {
    let (tag, rank) = raw
        .split_once(':')
        .ok_or_else(|| format!("{raw:?}: expected tag:rank, e.g. network:l2"))?;
    let rank: Rank = rank.parse()?;
    Ok(pb::Skill {
        tag: tag.to_owned(),
        rank: rank.number(),
    })
}

/// A requirement as `tag` or `tag:min_rank`, e.g. `network:l2`.
fn parse_requirement(raw: &str) -> Result<pb::SkillRequirement, String> {
    let (tag, min_rank) = match raw.split_once(':') {
        Some((tag, rank)) => (tag, rank.parse::<Rank>()?.number()),
        None => (raw, 0),
    };
    Ok(pb::SkillRequirement {
        tag: tag.to_owned(),
        min_rank,
    })
}

#[derive(Subcommand, Clone, Debug)]
pub enum ClientCommand {
    #[command(flatten)]
    Experts(ExpertCommand),
    #[command(flatten)]
    Tickets(TicketCommand),
    /// Figures for a time range: tickets, times to each target, SLA
    /// attainment, CSAT and each expert's contributions.
    Stats {
        /// Start, RFC 3339 (e.g. 2026-11-01T00:00:00Z); default: --last before --to.
        #[arg(long, value_parser = parse_time, conflicts_with = "last")]
        from: Option<prost_types::Timestamp>,
        /// End, RFC 3339; default: now.
        #[arg(long, value_parser = parse_time)]
        to: Option<prost_types::Timestamp>,
        /// The range as a length before --to, e.g. 7days or 12h.
        #[arg(long, value_parser = humantime::parse_duration)]
        last: Option<std::time::Duration>,
        /// Only tickets requiring this skill tag.
        #[arg(long, default_value = "")]
        tag: String,
    },
    /// Take an online backup of the whole store into FILE (written whole or
    /// not at all); `swarmdesk restore` turns it back into a data dir.
    Backup {
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// The knowledge base: write, publish, archive and search articles,
    /// suggest them to customers and record deflections.
    Article {
        #[command(subcommand)]
        action: ArticleCommand,
    },
    /// Create, list and revoke tokens (admin only).
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Cluster mode: the nodes, the writer and the log.
    Cluster {
        #[command(subcommand)]
        action: ClusterCommand,
    },
    /// Check the server's health (grpc.health.v1); fails unless SERVING.
    Health {
        /// A service, e.g. swarmdesk.v1.TicketService; empty: the whole server.
        #[arg(long, default_value = "")]
        service: String,
    },
}

#[derive(Subcommand, Clone, Debug)]
pub enum ClusterCommand {
    /// Each node (address, role, applied sequence, lag, last heartbeat),
    /// the writer, the log's last sequence and its replicas' health.
    Status,
}

#[derive(Subcommand, Clone, Debug)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once, never stored.
    Create {
        /// admin, supervisor, expert or bot.
        #[arg(long)]
        role: crate::domain::Role,
        /// The expert an expert token acts as.
        #[arg(long, default_value = "")]
        expert: String,
        /// The bot a bot token is (its tokens share its tickets).
        #[arg(long, default_value = "")]
        bot: String,
        /// What the token is for, e.g. "ann's laptop".
        #[arg(long)]
        label: String,
    },
    /// List tokens (never their secrets).
    List {
        /// Include revoked tokens.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token at once; its open streams end.
    Revoke { id: String },
}

fn parse_time(raw: &str) -> Result<prost_types::Timestamp, String> {
    let t: jiff::Timestamp = raw
        .parse()
        .map_err(|e| format!("{raw:?} is not an RFC 3339 time: {e}"))?;
    Ok(prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Connect(#[from] crate::client::ClientError),
    #[error("{}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("not serving: {0}")]
    NotServing(String),
    #[error("backup: {0}")]
    Backup(String),
}

async fn update_status(
    tickets: &mut TicketServiceClient<AuthedChannel>,
    ticket: String,
    expert: String,
    status: TicketStatus,
    note: String,
    vendor: Option<pb::Vendor>,
    knowledge: Option<pb::update_status_request::Knowledge>,
) -> Result<pb::Ticket, tonic::Status> {
    let request = pb::UpdateStatusRequest {
        ticket_id: ticket,
        expert_id: expert,
        status: status.number(),
        note,
        vendor,
        knowledge,
    };
    Ok(tickets.update_status(request).await?.into_inner())
}

/// Streams a backup into `<out>.partial`, checks it whole, then renames it:
/// `out` is either a complete, verified backup or absent.
async fn backup(channel: AuthedChannel, out: &std::path::Path) -> Result<u64, CliError> {
    use std::io::Write;
    let failed = |e: &dyn std::fmt::Display| CliError::Backup(e.to_string());
    let partial = out.with_extension("partial");
    let mut stream = AdminServiceClient::new(channel)
        .backup(pb::BackupRequest {})
        .await?
        .into_inner();
    let written = async {
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(&partial).map_err(|e| failed(&e))?);
        while let Some(chunk) = stream.message().await? {
            file.write_all(&chunk.data).map_err(|e| failed(&e))?;
        }
        let file = file.into_inner().map_err(|e| failed(&e))?;
        file.sync_all().map_err(|e| failed(&e))?;
        let check = std::fs::File::open(&partial).map_err(|e| failed(&e))?;
        let pairs =
            crate::backup::read_backup(std::io::BufReader::new(check)).map_err(|e| failed(&e))?;
        std::fs::rename(&partial, out).map_err(|e| failed(&e))?;
        Ok::<u64, CliError>(pairs.len() as u64)
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Runs one client command.
pub async fn run(options: &ClientOptions, command: ClientCommand) -> Result<(), CliError> {
    let servers = if options.server.contains(',') {
        crate::client::servers(&options.server, &options.tls())?
    } else {
        // One server: connected now, so that an unreachable one is said
        // plainly before anything else.
        let endpoint = crate::client::endpoint(&options.server, &options.tls())?
            .connect_timeout(Duration::from_secs(5));
        let plain = endpoint
            .connect()
            .await
            .map_err(|source| crate::client::ClientError::connect(&options.server, &source))?;
        crate::client::Failover::single(&options.server, plain)
    };
    let channel = crate::client::with_token_over(servers.clone(), options.token().as_deref())?;
    let _tickets = TicketServiceClient::new(channel.clone());
    let _experts = ExpertServiceClient::new(channel.clone());
    let out = Printer { json: options.json };
    match command {
        ClientCommand::Experts(command) => experts::run(command, channel, out).await?,
        ClientCommand::Tickets(command) => tickets::run(command, channel, out).await?,
        ClientCommand::Stats {
            from,
            to,
            last,
            tag,
        } => {
            let to = to.unwrap_or_else(|| {
                let now = jiff::Timestamp::now();
                prost_types::Timestamp {
                    seconds: now.as_second(),
                    nanos: now.subsec_nanosecond(),
                }
            });
            let from = from.or_else(|| {
                last.map(|d| prost_types::Timestamp {
                    seconds: to.seconds - d.as_secs() as i64,
                    nanos: to.nanos,
                })
            });
            let request = pb::GetStatsRequest {
                from,
                to: Some(to),
                tag,
            };
            let stats = StatsServiceClient::new(channel)
                .get_stats(request)
                .await?
                .into_inner();
            out.stats(&stats);
        }
        ClientCommand::Backup { out } => {
            let count = backup(channel, &out).await?;
            if options.json {
                println!(
                    "{}",
                    serde_json::json!({ "file": out.display().to_string(), "pairs": count })
                );
            } else {
                println!("backup written to {} ({count} records)", out.display());
            }
        }
        ClientCommand::Article { action } => knowledge::run(channel, out, action).await?,
        ClientCommand::Token { action } => {
            let mut admin = AdminServiceClient::new(channel);
            match action {
                TokenCommand::Create {
                    role,
                    expert,
                    bot,
                    label,
                } => {
                    let reply = admin
                        .create_token(pb::CreateTokenRequest {
                            role: role.number(),
                            expert_id: expert,
                            bot_name: bot,
                            label,
                        })
                        .await?
                        .into_inner();
                    if let Some(token) = &reply.token {
                        out.new_token(token, &reply.secret);
                    }
                }
                TokenCommand::List { all } => {
                    let reply = admin
                        .list_tokens(pb::ListTokensRequest {
                            include_revoked: all,
                        })
                        .await?
                        .into_inner();
                    for token in &reply.tokens {
                        out.token(token);
                    }
                }
                TokenCommand::Revoke { id } => {
                    let token = admin
                        .revoke_token(pb::RevokeTokenRequest { id })
                        .await?
                        .into_inner();
                    out.token(&token);
                }
            }
        }
        ClientCommand::Cluster {
            action: ClusterCommand::Status,
        } => {
            let status = AdminServiceClient::new(channel)
                .cluster_status(pb::ClusterStatusRequest {})
                .await?
                .into_inner();
            out.cluster_status(&status);
        }
        ClientCommand::Health { service } => {
            use tonic_health::pb::health_check_response::ServingStatus;
            let status = HealthClient::new(servers)
                .check(HealthCheckRequest {
                    service: service.clone(),
                })
                .await?
                .into_inner()
                .status();
            let name = if service.is_empty() {
                "server"
            } else {
                &service
            };
            if options.json {
                println!(
                    "{}",
                    serde_json::json!({ "service": name, "status": status.as_str_name() })
                );
            } else {
                println!("{name}: {}", status.as_str_name());
            }
            if status != ServingStatus::Serving {
                return Err(CliError::NotServing(status.as_str_name().to_owned()));
            }
        }
    }
    Ok(())
}
