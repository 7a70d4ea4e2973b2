//! `swarmdesk` commands about tickets: create, read, follow, and every
//! move of one.

use clap::Subcommand;

use super::output::Printer;
use super::{parse_requirement, update_status, CliError};
use crate::client::AuthedChannel;
use crate::domain::{ContactChannel, Priority, TicketKind, TicketStatus};
use crate::rpc::pb;
use crate::rpc::pb::ticket_service_client::TicketServiceClient;

#[derive(Subcommand, Clone, Debug)]
pub enum TicketCommand {
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
    /// Rate a resolved ticket for its requester (1-5), once per resolution.
    Rate {
        ticket: String,
        #[arg(value_parser = clap::value_parser!(u32).range(1..=5))]
        score: u32,
        #[arg(long, default_value = "")]
        comment: String,
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

pub(super) async fn run(
    command: TicketCommand,
    channel: AuthedChannel,
    out: Printer,
) -> Result<(), CliError> {
    let mut tickets = TicketServiceClient::new(channel.clone());
    match command {
        TicketCommand::Create {
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
        TicketCommand::List {
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
        TicketCommand::Show { id } => {
            let reply = tickets.get_ticket(pb::GetTicketRequest { id }).await?;
            out.ticket_detail(&reply.into_inner());
        }
        TicketCommand::Watch {
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
        TicketCommand::Claim { ticket, expert } => {
            let reply = tickets
                .claim_ticket(pb::ClaimTicketRequest {
                    ticket_id: ticket,
                    expert_id: expert,
                })
                .await?;
            out.ticket(&reply.into_inner());
        }
        TicketCommand::Join { ticket, expert } => {
            let reply = tickets
                .join_swarm(pb::JoinSwarmRequest {
                    ticket_id: ticket,
                    expert_id: expert,
                })
                .await?;
            out.ticket(&reply.into_inner());
        }
        TicketCommand::Leave { ticket, expert } => {
            let reply = tickets
                .leave_swarm(pb::LeaveSwarmRequest {
                    ticket_id: ticket,
                    expert_id: expert,
                })
                .await?;
            out.ticket(&reply.into_inner());
        }
        TicketCommand::Post {
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
        TicketCommand::Transfer { ticket, from, to } => {
            let reply = tickets
                .transfer_ticket(pb::TransferTicketRequest {
                    ticket_id: ticket,
                    from_expert_id: from,
                    to_expert_id: to,
                })
                .await?;
            out.ticket(&reply.into_inner());
        }
        TicketCommand::Release { ticket, expert } => {
            let reply = tickets
                .release_ticket(pb::ReleaseTicketRequest {
                    ticket_id: ticket,
                    expert_id: expert,
                })
                .await?;
            out.ticket(&reply.into_inner());
        }
        TicketCommand::Resolve {
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
        TicketCommand::Status {
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
        TicketCommand::Rate {
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
        TicketCommand::AskHelp {
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
