//! The `swarmdesk` command's client subcommands: one call each against a
//! running server, printed for a person (default) or as JSON lines (--json).

mod output;

use std::time::Duration;

use clap::{Args, Subcommand};

use crate::client::AuthedChannel;
use crate::domain::{
    ArticleState, ContactChannel, Presence, Priority, Rank, TicketKind, TicketStatus,
};
use crate::rpc::pb;
use crate::rpc::pb::admin_service_client::AdminServiceClient;
use crate::rpc::pb::expert_service_client::ExpertServiceClient;
use crate::rpc::pb::knowledge_service_client::KnowledgeServiceClient;
use crate::rpc::pb::stats_service_client::StatsServiceClient;
use crate::rpc::pb::ticket_service_client::TicketServiceClient;
use output::Printer;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Where the server is and how to print.
#[derive(Args, Clone, Debug)]
pub struct ClientOptions {
    /// The server's URL.
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
    /// Register an expert, or update their name, skills and capacity.
    Register {
        id: String,
        #[arg(long, default_value = "")]
        name: String,
        /// tag:rank, repeatable (e.g. --skill network:l3 --skill office:l1).
        #[arg(long = "skill", value_parser = parse_skill)]
        skills: Vec<pb::Skill>,
        /// Most open tickets owned at once (0: the default, 5).
        #[arg(long, default_value_t = 0)]
        capacity: u32,
    },
    /// List experts.
    Experts {
        #[arg(long, default_value_t = 0)]
        page_size: u32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Show one expert.
    Expert { id: String },
    /// Set an expert available or away.
    Presence {
        id: String,
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(["available", "away"]))]
        presence: String,
    },
    /// Create a ticket; it is routed to an owner at once if one is eligible.
    Create {
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        requester: String,
        /// tag or tag:min_rank, repeatable.
        #[arg(long = "skill", value_parser = parse_requirement)]
        skills: Vec<pb::SkillRequirement>,
        /// p1 (critical) to p4.
        #[arg(long, default_value = "p3")]
        priority: Priority,
        /// incident, service-request, change-request or question.
        #[arg(long, default_value = "incident")]
        kind: TicketKind,
        /// chat, email, phone, portal, social or api.
        #[arg(long, default_value = "api")]
        channel: ContactChannel,
        /// Makes retries safe: the same id returns the first ticket.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// List tickets in creation order.
    List {
        #[arg(long)]
        status: Option<TicketStatus>,
        #[arg(long, default_value = "")]
        owner: String,
        #[arg(long, default_value = "")]
        tag: String,
        /// Tickets whose (latest) vendor has this name.
        #[arg(long, default_value = "")]
        vendor: String,
        #[arg(long, default_value_t = 0)]
        page_size: u32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Show one ticket.
    Show { id: String },
    /// Follow an expert's stream, one line per event, until interrupted.
    Subscribe {
        expert: String,
        /// Skill channels (replaces the persisted set); none: the persisted set.
        #[arg(long = "channel")]
        channels: Vec<String>,
        /// Resume after this position (printed with every event).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Stop after this many events (0: never).
        #[arg(long, default_value_t = 0)]
        limit: u64,
    },
    /// Follow a ticket's public events, as a chat bot does.
    Watch {
        ticket: String,
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
        /// Stop after this many events (0: never).
        #[arg(long, default_value_t = 0)]
        limit: u64,
    },
    /// Take an unowned ticket.
    Claim { ticket: String, expert: String },
    /// Join a ticket's swarm as a collaborator.
    Join { ticket: String, expert: String },
    /// Leave a ticket's swarm.
    Leave { ticket: String, expert: String },
    /// Post a message (public unless --internal).
    Post {
        ticket: String,
        /// An expert id, or the ticket's requester.
        #[arg(long)]
        author: String,
        #[arg(long)]
        body: String,
        /// Visible to the swarm only.
        #[arg(long)]
        internal: bool,
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Hand an owned ticket to another expert.
    Transfer {
        ticket: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// Give up an owned ticket; routing runs again.
    Release { ticket: String, expert: String },
    /// Mark an owned ticket resolved, optionally linking knowledge.
    Resolve {
        ticket: String,
        expert: String,
        #[arg(long, default_value = "")]
        note: String,
        /// Reuse: this published article (KB-<n>) solved it.
        #[arg(long, value_name = "ARTICLE", conflicts_with = "capture")]
        reuse: Option<String>,
        /// Capture: write a draft article from this resolution (title:
        /// the ticket's unless --capture-title; body: --note unless
        /// --capture-body; tags: the ticket's skills).
        #[arg(long)]
        capture: bool,
        #[arg(long, default_value = "", requires = "capture")]
        capture_title: String,
        #[arg(long, default_value = "", requires = "capture")]
        capture_body: String,
    },
    /// Move an owned ticket to any status (waiting-customer, closed, ...);
    /// waiting-vendor needs --vendor and --vendor-ref.
    Status {
        ticket: String,
        expert: String,
        status: TicketStatus,
        #[arg(long, default_value = "")]
        note: String,
        /// The vendor's name (waiting-vendor only).
        #[arg(long, requires = "vendor_ref")]
        vendor: Option<String>,
        /// The vendor's reference for the case (waiting-vendor only).
        #[arg(long, requires = "vendor")]
        vendor_ref: Option<String>,
    },
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
    /// Rate a resolved ticket for its requester (1-5), once per resolution.
    Rate {
        ticket: String,
        #[arg(value_parser = clap::value_parser!(u32).range(1..=5))]
        score: u32,
        #[arg(long, default_value = "")]
        comment: String,
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
    /// Check the server's health (grpc.health.v1); fails unless SERVING.
    Health {
        /// A service, e.g. swarmdesk.v1.TicketService; empty: the whole server.
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Widen a ticket's swarm to more skill channels.
    AskHelp {
        ticket: String,
        expert: String,
        /// tag or tag:min_rank, repeatable.
        #[arg(long = "skill", value_parser = parse_requirement, required = true)]
        skills: Vec<pb::SkillRequirement>,
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Subcommand, Clone, Debug)]
pub enum ArticleCommand {
    /// Write a new draft.
    Create {
        #[arg(long)]
        title: String,
        #[arg(long)]
        body: String,
        /// Skill tag, repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Change an article; what is not given stays.
    Update {
        id: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        body: Option<String>,
        /// Replaces every tag (repeatable).
        #[arg(long = "tag")]
        tags: Option<Vec<String>>,
        /// Refuse unless the article is still at this version.
        #[arg(long, default_value_t = 0)]
        expected_version: u64,
    },
    /// Show one article.
    Show { id: String },
    /// Offer it to customers and agents.
    Publish {
        id: String,
        #[arg(long, default_value_t = 0)]
        expected_version: u64,
    },
    /// Withdraw it (kept, read-only).
    Archive {
        id: String,
        #[arg(long, default_value_t = 0)]
        expected_version: u64,
    },
    /// Full-text search, best first.
    Search {
        query: String,
        /// Only articles with one of these tags (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// draft, published or archived (repeatable); default published.
        #[arg(long = "state")]
        states: Vec<ArticleState>,
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// What a bot would offer a customer for these words (counted).
    Suggest {
        text: String,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Record that an article solved a customer's problem without a ticket.
    Deflect {
        id: String,
        #[arg(long, default_value = "")]
        request_id: String,
    },
}

async fn run_article(
    channel: AuthedChannel,
    out: Printer,
    action: ArticleCommand,
) -> Result<(), CliError> {
    let mut kb = KnowledgeServiceClient::new(channel);
    let article = match action {
        ArticleCommand::Create { title, body, tags } => {
            kb.create_article(pb::CreateArticleRequest { title, body, tags })
                .await?
        }
        ArticleCommand::Update {
            id,
            title,
            body,
            tags,
            expected_version,
        } => {
            let request = pb::UpdateArticleRequest {
                id,
                title,
                body,
                tags: tags.map(|tags| pb::TagList { tags }),
                expected_version,
            };
            kb.update_article(request).await?
        }
        ArticleCommand::Show { id } => kb.get_article(pb::GetArticleRequest { id }).await?,
        ArticleCommand::Publish {
            id,
            expected_version,
        } => {
            kb.publish_article(pb::PublishArticleRequest {
                id,
                expected_version,
            })
            .await?
        }
        ArticleCommand::Archive {
            id,
            expected_version,
        } => {
            kb.archive_article(pb::ArchiveArticleRequest {
                id,
                expected_version,
            })
            .await?
        }
        ArticleCommand::Search {
            query,
            tags,
            states,
            limit,
        } => {
            let request = pb::SearchArticlesRequest {
                query,
                tags,
                states: states.into_iter().map(ArticleState::number).collect(),
                limit,
            };
            let reply = kb.search_articles(request).await?.into_inner();
            reply.hits.iter().for_each(|h| out.hit(h));
            return Ok(());
        }
        ArticleCommand::Suggest { text, tags, limit } => {
            let request = pb::SuggestArticlesRequest { text, tags, limit };
            let reply = kb.suggest_articles(request).await?.into_inner();
            reply.suggestions.iter().for_each(|h| out.hit(h));
            return Ok(());
        }
        ArticleCommand::Deflect { id, request_id } => {
            let request = pb::RecordDeflectionRequest {
                article_id: id.clone(),
                request_id,
            };
            let recorded = kb.record_deflection(request).await?.into_inner().recorded;
            out.deflection(&id, recorded);
            return Ok(());
        }
    };
    out.article(&article.into_inner());
    Ok(())
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
    let endpoint = crate::client::endpoint(&options.server, &options.tls())?
        .connect_timeout(Duration::from_secs(5));
    let plain = endpoint
        .connect()
        .await
        .map_err(|source| crate::client::ClientError::connect(&options.server, &source))?;
    let channel = crate::client::with_token(plain.clone(), options.token().as_deref())?;
    let mut tickets = TicketServiceClient::new(channel.clone());
    let mut experts = ExpertServiceClient::new(channel.clone());
    let out = Printer { json: options.json };
    match command {
        ClientCommand::Register {
            id,
            name,
            skills,
            capacity,
        } => {
            let expert = pb::Expert {
                id,
                display_name: name,
                skills,
                capacity,
                ..Default::default()
            };
            let reply = experts
                .register_expert(pb::RegisterExpertRequest {
                    expert: Some(expert),
                })
                .await?;
            out.expert(&reply.into_inner());
        }
        ClientCommand::Experts {
            page_size,
            page_token,
        } => {
            let reply = experts
                .list_experts(pb::ListExpertsRequest {
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            reply.experts.iter().for_each(|e| out.expert(e));
            out.next_page(&reply.next_page_token);
        }
        ClientCommand::Expert { id } => {
            let reply = experts.get_expert(pb::GetExpertRequest { id }).await?;
            out.expert(&reply.into_inner());
        }
        ClientCommand::Presence { id, presence } => {
            let presence = presence.parse::<Presence>().map_or(0, Presence::number);
            let reply = experts
                .set_presence(pb::SetPresenceRequest {
                    expert_id: id,
                    presence,
                })
                .await?;
            out.expert(&reply.into_inner());
        }
        ClientCommand::Create {
            title,
            description,
            requester,
            skills,
            priority,
            kind,
            channel,
            request_id,
        } => {
            let reply = tickets
                .create_ticket(pb::CreateTicketRequest {
                    title,
                    description,
                    requester,
                    channel: channel.number(),
                    kind: kind.number(),
                    priority: priority.number(),
                    skills,
                    request_id,
                })
                .await?
                .into_inner();
            if let Some(ticket) = &reply.ticket {
                out.ticket(ticket);
            }
            reply.suggestions.iter().for_each(|h| out.hit(h));
        }
        ClientCommand::List {
            status,
            owner,
            tag,
            vendor,
            page_size,
            page_token,
        } => {
            let reply = tickets
                .list_tickets(pb::ListTicketsRequest {
                    status: status.map_or(0, TicketStatus::number),
                    owner_id: owner,
                    tag,
                    vendor,
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            reply.tickets.iter().for_each(|t| out.ticket(t));
            out.next_page(&reply.next_page_token);
        }
        ClientCommand::Show { id } => {
            let reply = tickets.get_ticket(pb::GetTicketRequest { id }).await?;
            out.ticket_detail(&reply.into_inner());
        }
        ClientCommand::Subscribe {
            expert,
            channels,
            after,
            limit,
        } => {
            let mut stream = experts
                .subscribe(pb::SubscribeRequest {
                    expert_id: expert,
                    channels,
                    after_position: after,
                })
                .await?
                .into_inner();
            let mut seen = 0;
            while let Some(event) = stream.message().await? {
                out.swarm_event(&event);
                seen += 1;
                if seen == limit {
                    break;
                }
            }
        }
        ClientCommand::Watch {
            ticket,
            after_seq,
            limit,
        } => {
            let mut stream = tickets
                .watch_ticket(pb::WatchTicketRequest {
                    ticket_id: ticket,
                    after_seq,
                })
                .await?
                .into_inner();
            let mut seen = 0;
            while let Some(event) = stream.message().await? {
                out.event(&event, None);
                seen += 1;
                if seen == limit {
                    break;
                }
            }
        }
        ClientCommand::Claim { ticket, expert } => {
            let reply = tickets
                .claim_ticket(pb::ClaimTicketRequest {
                    ticket_id: ticket,
                    expert_id: expert,
                })
                .await?;
            out.ticket(&reply.into_inner());
        }
        ClientCommand::Join { ticket, expert } => {
            let reply = tickets
                .join_swarm(pb::JoinSwarmRequest {
                    ticket_id: ticket,
                    expert_id: expert,
                })
                .await?;
            out.ticket(&reply.into_inner());
        }
        ClientCommand::Leave { ticket, expert } => {
            let reply = tickets
                .leave_swarm(pb::LeaveSwarmRequest {
                    ticket_id: ticket,
                    expert_id: expert,
                })
                .await?;
            out.ticket(&reply.into_inner());
        }
        ClientCommand::Post {
            ticket,
            author,
            body,
            internal,
            request_id,
        } => {
            let visibility = if internal {
                pb::Visibility::Internal
            } else {
                pb::Visibility::Public
            };
            let reply = tickets
                .post_message(pb::PostMessageRequest {
                    ticket_id: ticket,
                    author_id: author,
                    body,
                    visibility: visibility as i32,
                    request_id,
                })
                .await?;
            out.event(&reply.into_inner(), None);
        }
        ClientCommand::Transfer { ticket, from, to } => {
            let reply = tickets
                .transfer_ticket(pb::TransferTicketRequest {
                    ticket_id: ticket,
                    from_expert_id: from,
                    to_expert_id: to,
                })
                .await?;
            out.ticket(&reply.into_inner());
        }
        ClientCommand::Release { ticket, expert } => {
            let reply = tickets
                .release_ticket(pb::ReleaseTicketRequest {
                    ticket_id: ticket,
                    expert_id: expert,
                })
                .await?;
            out.ticket(&reply.into_inner());
        }
        ClientCommand::Resolve {
            ticket,
            expert,
            note,
            reuse,
            capture,
            capture_title,
            capture_body,
        } => {
            use pb::update_status_request::Knowledge;
            let knowledge = match (reuse, capture) {
                (Some(article), _) => Some(Knowledge::ReuseArticleId(article)),
                (None, true) => Some(Knowledge::CaptureArticle(pb::ArticleCapture {
                    title: capture_title,
                    body: capture_body,
                    tags: Vec::new(),
                })),
                (None, false) => None,
            };
            let resolved = TicketStatus::Resolved;
            let reply = update_status(
                &mut tickets,
                ticket,
                expert,
                resolved,
                note,
                None,
                knowledge,
            );
            out.ticket(&reply.await?);
        }
        ClientCommand::Status {
            ticket,
            expert,
            status,
            note,
            vendor,
            vendor_ref,
        } => {
            let vendor = vendor
                .zip(vendor_ref)
                .map(|(name, reference)| pb::Vendor { name, reference });
            let reply = update_status(&mut tickets, ticket, expert, status, note, vendor, None);
            out.ticket(&reply.await?);
        }
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
        ClientCommand::Rate {
            ticket,
            score,
            comment,
        } => {
            let request = pb::RateTicketRequest {
                ticket_id: ticket,
                score,
                comment,
            };
            out.ticket(&tickets.rate_ticket(request).await?.into_inner());
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
        ClientCommand::Article { action } => run_article(channel, out, action).await?,
        ClientCommand::Health { service } => {
            use tonic_health::pb::health_check_response::ServingStatus;
            let status = HealthClient::new(plain)
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
        ClientCommand::AskHelp {
            ticket,
            expert,
            skills,
            note,
        } => {
            let reply = tickets
                .request_help(pb::RequestHelpRequest {
                    ticket_id: ticket,
                    expert_id: expert,
                    skills,
                    note,
                })
                .await?;
            out.ticket(&reply.into_inner());
        }
    }
    Ok(())
}
