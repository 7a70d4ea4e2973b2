//! `swarmdesk` commands about experts: registering, presence, listing,
//! and following an expert's stream.

use clap::Subcommand;

use super::output::Printer;
use super::{parse_skill, CliError};
use crate::client::AuthedChannel;
use crate::domain::Presence;
use crate::rpc::pb;
use crate::rpc::pb::expert_service_client::ExpertServiceClient;

#[derive(Subcommand, Clone, Debug)]
pub enum ExpertCommand {
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
}

pub(super) async fn run(
    command: ExpertCommand,
    channel: AuthedChannel,
    out: Printer,
) -> Result<(), CliError> {
    let mut experts = ExpertServiceClient::new(channel);
    match command {
        ExpertCommand::Register {
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
        ExpertCommand::Experts {
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
        ExpertCommand::Expert { id } => {
            let reply = experts.get_expert(pb::GetExpertRequest { id }).await?;
            out.expert(&reply.into_inner());
        }
        ExpertCommand::Presence { id, presence } => {
            let presence = presence.parse::<Presence>().map_or(0, Presence::number);
            let reply = experts
                .set_presence(pb::SetPresenceRequest {
                    expert_id: id,
                    presence,
                })
                .await?;
            out.expert(&reply.into_inner());
        }
        ExpertCommand::Subscribe {
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
    }
    Ok(())
}
