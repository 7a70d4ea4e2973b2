//! Who may do what: every RPC against every role, bots and internal notes,
//! revocation, bad tokens, secrets kept out of logs, TLS and mutual TLS,
//! and the caps that keep one abusive client from hurting the others.

mod common;

use std::collections::BTreeMap;

use common::*;
use swarmdesk::rpc::pb;
use tonic::{Code, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Admin,
    Supervisor,
    /// An expert token acting as its own expert.
    ExpertSelf,
    /// An expert token naming another expert.
    ExpertOther,
    /// A bot on a ticket it created.
    BotOwn,
    /// A bot on a ticket another bot created.
    BotOther,
    Anonymous,
}

const EVERYONE: [Who; 7] = [
    Who::Admin,
    Who::Supervisor,
    Who::ExpertSelf,
    Who::ExpertOther,
    Who::BotOwn,
    Who::BotOther,
    Who::Anonymous,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rpc {
    CreateTicket,
    GetTicket,
    ListTickets,
    PostMessage,
    ClaimTicket,
    TransferTicket,
    ReleaseTicket,
    JoinSwarm,
    LeaveSwarm,
    RequestHelp,
    UpdateStatus,
    WatchTicket,
    RegisterExpert,
    GetExpert,
    ListExperts,
    Backup,
    CreateToken,
    ListTokens,
    RevokeToken,
    // Last: they bring an expert online, after which new tickets are routed.
    Subscribe,
    SetPresence,
}

const EVERY_RPC: [Rpc; 21] = [
    Rpc::CreateTicket,
    Rpc::GetTicket,
    Rpc::ListTickets,
    Rpc::PostMessage,
    Rpc::ClaimTicket,
    Rpc::TransferTicket,
    Rpc::ReleaseTicket,
    Rpc::JoinSwarm,
    Rpc::LeaveSwarm,
    Rpc::RequestHelp,
    Rpc::UpdateStatus,
    Rpc::WatchTicket,
    Rpc::RegisterExpert,
    Rpc::GetExpert,
    Rpc::ListExperts,
    Rpc::Backup,
    Rpc::CreateToken,
    Rpc::ListTokens,
    Rpc::RevokeToken,
    Rpc::Subscribe,
    Rpc::SetPresence,
];

/// The rule of issue #4, written out independently of the server's table.
fn allowed(rpc: Rpc, who: Who) -> bool {
    use Rpc::*;
    use Who::*;
    match who {
        Admin => true,
        Anonymous => false,
        Supervisor => matches!(
            rpc,
            GetTicket
                | ListTickets
                | WatchTicket
                | TransferTicket
                | ReleaseTicket
                | GetExpert
                | ListExperts
        ),
        ExpertSelf => matches!(
            rpc,
            GetTicket
                | ListTickets
                | WatchTicket
                | PostMessage
                | ClaimTicket
                | TransferTicket
                | ReleaseTicket
                | JoinSwarm
                | LeaveSwarm
                | RequestHelp
                | UpdateStatus
                | GetExpert
                | ListExperts
                | Subscribe
                | SetPresence
        ),
        // Reads name no expert, so naming another expert changes nothing there.
        ExpertOther => matches!(
            rpc,
            GetTicket | ListTickets | WatchTicket | GetExpert | ListExperts
        ),
        BotOwn => matches!(
            rpc,
            CreateTicket | GetTicket | ListTickets | WatchTicket | PostMessage
        ),
        BotOther => matches!(rpc, CreateTicket | ListTickets),
    }
}

/// A server with experts ann and bob (both offline, so new tickets stay
/// unowned) and a client per role.
struct Matrix {
    server: TestServer,
    clients: BTreeMap<Who, Clients>,
    /// The other bot, whose tickets `BotOther` cases are about.
    mail_bot: Clients,
}

impl Matrix {
    async fn new() -> Matrix {
        let server = spawn_server().await;
        server.register("ann", &[("network", L2)], 200).await;
        server.register("bob", &[("network", L2)], 200).await;
        let supervisor = server.token(pb::Role::Supervisor, "", "").await;
        let ann = server.token(pb::Role::Expert, "ann", "").await;
        let chat = server.token(pb::Role::Bot, "", "chat").await;
        let mail = server.token(pb::Role::Bot, "", "mail").await;
        let mut clients = BTreeMap::new();
        clients.insert(Who::Admin, server.as_token(&server.admin_token));
        clients.insert(Who::Supervisor, server.as_token(&supervisor));
        clients.insert(Who::ExpertSelf, server.as_token(&ann));
        clients.insert(Who::ExpertOther, server.as_token(&ann));
        clients.insert(Who::BotOwn, server.as_token(&chat));
        clients.insert(Who::BotOther, server.as_token(&chat));
        clients.insert(Who::Anonymous, Clients::new(server.channel.clone(), None));
        let mail_bot = server.as_token(&mail);
        Matrix {
            server,
            clients,
            mail_bot,
        }
    }

    fn admin(&self) -> Clients {
        self.clients[&Who::Admin].clone()
    }

    /// A fresh unowned ticket, created by the bot the case is about.
    async fn ticket(&self, who: Who) -> pb::Ticket {
        let creator = match who {
            Who::BotOwn => self.clients[&Who::BotOwn].clone(),
            Who::BotOther => self.mail_bot.clone(),
            _ => self.admin(),
        };
        let ticket = creator
            .tickets
            .clone()
            .create_ticket(create_request("vpn down", &[("network", L1)], P3))
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap();
        assert_eq!(ticket.owner_id, "", "nobody is online to be routed to");
        ticket
    }

    async fn claim_for(&self, ticket: &str, expert: &str) {
        self.server.claim(ticket, expert).await.unwrap();
    }

    async fn join_for(&self, ticket: &str, expert: &str) {
        self.admin()
            .tickets
            .join_swarm(pb::JoinSwarmRequest {
                ticket_id: ticket.into(),
                expert_id: expert.into(),
            })
            .await
            .unwrap();
    }

    /// Sets up what `rpc` needs to succeed, calls it as `who`, and returns
    /// the outcome, and the ticket it was about as it was just before the
    /// call and just after.
    async fn call(
        &self,
        rpc: Rpc,
        who: Who,
    ) -> (Result<(), Status>, Option<(pb::Ticket, pb::Ticket)>) {
        let c = self.clients[&who].clone();
        // The expert the call acts as; `ExpertOther` names bob with ann's token.
        let actor = if who == Who::ExpertOther {
            "bob"
        } else {
            "ann"
        };
        let other = if actor == "ann" { "bob" } else { "ann" };
        let needs_ticket = rpc <= Rpc::WatchTicket && rpc != Rpc::CreateTicket;
        let ticket = if needs_ticket {
            Some(self.ticket(who).await.id)
        } else {
            None
        };
        let id = ticket.clone().unwrap_or_default();
        match rpc {
            Rpc::TransferTicket | Rpc::ReleaseTicket | Rpc::UpdateStatus => {
                self.claim_for(&id, actor).await
            }
            Rpc::LeaveSwarm | Rpc::RequestHelp => self.join_for(&id, actor).await,
            _ => {}
        }
        let before = match &ticket {
            Some(id) => Some(self.server.get(id).await),
            None => None,
        };
        let mut tickets = c.tickets.clone();
        let mut experts = c.experts.clone();
        let mut admin = c.admin.clone();
        let result = match rpc {
            Rpc::CreateTicket => tickets
                .create_ticket(create_request("printer", &[("network", L1)], P3))
                .await
                .map(drop),
            Rpc::GetTicket => tickets
                .get_ticket(pb::GetTicketRequest { id })
                .await
                .map(drop),
            Rpc::ListTickets => tickets
                .list_tickets(pb::ListTicketsRequest::default())
                .await
                .map(drop),
            Rpc::PostMessage => {
                let author = if matches!(who, Who::BotOwn | Who::BotOther) {
                    "customer-1"
                } else {
                    actor
                };
                tickets
                    .post_message(pb::PostMessageRequest {
                        ticket_id: id,
                        author_id: author.into(),
                        body: "any news?".into(),
                        visibility: pb::Visibility::Public as i32,
                        request_id: String::new(),
                    })
                    .await
                    .map(drop)
            }
            Rpc::ClaimTicket => tickets
                .claim_ticket(pb::ClaimTicketRequest {
                    ticket_id: id,
                    expert_id: actor.into(),
                })
                .await
                .map(drop),
            Rpc::TransferTicket => tickets
                .transfer_ticket(pb::TransferTicketRequest {
                    ticket_id: id,
                    from_expert_id: actor.into(),
                    to_expert_id: other.into(),
                })
                .await
                .map(drop),
            Rpc::ReleaseTicket => tickets
                .release_ticket(pb::ReleaseTicketRequest {
                    ticket_id: id,
                    expert_id: actor.into(),
                })
                .await
                .map(drop),
            Rpc::JoinSwarm => tickets
                .join_swarm(pb::JoinSwarmRequest {
                    ticket_id: id,
                    expert_id: actor.into(),
                })
                .await
                .map(drop),
            Rpc::LeaveSwarm => tickets
                .leave_swarm(pb::LeaveSwarmRequest {
                    ticket_id: id,
                    expert_id: actor.into(),
                })
                .await
                .map(drop),
            Rpc::RequestHelp => tickets
                .request_help(pb::RequestHelpRequest {
                    ticket_id: id,
                    expert_id: actor.into(),
                    skills: vec![pb::SkillRequirement {
                        tag: "database".into(),
                        min_rank: L1,
                    }],
                    note: "db side?".into(),
                })
                .await
                .map(drop),
            Rpc::UpdateStatus => tickets
                .update_status(pb::UpdateStatusRequest {
                    ticket_id: id,
                    expert_id: actor.into(),
                    status: pb::TicketStatus::WaitingCustomer as i32,
                    note: String::new(),
                })
                .await
                .map(drop),
            Rpc::WatchTicket => tickets
                .watch_ticket(pb::WatchTicketRequest {
                    ticket_id: id,
                    after_seq: 0,
                })
                .await
                .map(drop),
            Rpc::RegisterExpert => experts
                .register_expert(pb::RegisterExpertRequest {
                    expert: Some(pb::Expert {
                        id: "newcomer".into(),
                        display_name: "New".into(),
                        skills: vec![pb::Skill {
                            tag: "printers".into(),
                            rank: L1,
                        }],
                        capacity: 3,
                        ..Default::default()
                    }),
                })
                .await
                .map(drop),
            Rpc::GetExpert => experts
                .get_expert(pb::GetExpertRequest { id: "bob".into() })
                .await
                .map(drop),
            Rpc::ListExperts => experts
                .list_experts(pb::ListExpertsRequest::default())
                .await
                .map(drop),
            Rpc::Subscribe => experts
                .subscribe(pb::SubscribeRequest {
                    expert_id: actor.into(),
                    channels: vec![],
                    after_position: 0,
                })
                .await
                .map(drop),
            Rpc::SetPresence => experts
                .set_presence(pb::SetPresenceRequest {
                    expert_id: actor.into(),
                    presence: pb::Presence::Away as i32,
                })
                .await
                .map(drop),
            Rpc::Backup => admin.backup(pb::BackupRequest {}).await.map(drop),
            Rpc::CreateToken => admin
                .create_token(pb::CreateTokenRequest {
                    role: pb::Role::Bot as i32,
                    expert_id: String::new(),
                    bot_name: "sms".into(),
                    label: "sms relay".into(),
                })
                .await
                .map(drop),
            Rpc::ListTokens => admin
                .list_tokens(pb::ListTokensRequest::default())
                .await
                .map(drop),
            Rpc::RevokeToken => {
                let (victim, _) = self.server.new_token(pb::Role::Supervisor, "", "").await;
                admin
                    .revoke_token(pb::RevokeTokenRequest { id: victim })
                    .await
                    .map(drop)
            }
        };
        let around = match (before, ticket) {
            (Some(before), Some(id)) => Some((before, self.server.get(&id).await)),
            _ => None,
        };
        (result, around)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_against_every_role() {
    let matrix = Matrix::new().await;
    let mut failures = Vec::new();
    for rpc in EVERY_RPC {
        for who in EVERYONE {
            let (result, ticket) = matrix.call(rpc, who).await;
            let expected = if who == Who::Anonymous {
                Err(Code::Unauthenticated)
            } else if allowed(rpc, who) {
                Ok(())
            } else {
                Err(Code::PermissionDenied)
            };
            let got = result.as_ref().map(|_| ()).map_err(Status::code);
            if got != expected {
                failures.push(format!(
                    "{rpc:?} as {who:?}: expected {expected:?}, got {:?}",
                    result.map_err(|s| format!("{:?}: {}", s.code(), s.message()))
                ));
                continue;
            }
            // A refusal changes nothing.
            if let (Err(_), Some((before, after))) = (expected, &ticket) {
                assert_eq!(
                    before, after,
                    "{rpc:?} as {who:?} was refused yet changed the ticket"
                );
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
