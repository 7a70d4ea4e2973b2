//! Who may do what: every RPC against every role, bots and internal notes,
//! revocation, bad tokens, secrets kept out of logs, TLS and mutual TLS,
//! and the caps that keep one abusive client from hurting the others.
//!
//! Long on purpose: the role table is restated here whole, apart from the
//! code it checks, so that a change to the rights shows up as a failure.

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
    RateTicket,
    ReportActivity,
    WatchTicket,
    RegisterExpert,
    GetExpert,
    ListExperts,
    Backup,
    CreateToken,
    ListTokens,
    RevokeToken,
    GetStats,
    CreateArticle,
    UpdateArticle,
    GetArticle,
    PublishArticle,
    ArchiveArticle,
    SearchArticles,
    SuggestArticles,
    RecordDeflection,
    WatchDesk,
    WhoAmI,
    // Last: they bring an expert online, after which new tickets are routed.
    Subscribe,
    SetPresence,
}

const EVERY_RPC: [Rpc; 34] = [
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
    Rpc::RateTicket,
    Rpc::ReportActivity,
    Rpc::WatchTicket,
    Rpc::RegisterExpert,
    Rpc::GetExpert,
    Rpc::ListExperts,
    Rpc::Backup,
    Rpc::CreateToken,
    Rpc::ListTokens,
    Rpc::RevokeToken,
    Rpc::GetStats,
    Rpc::CreateArticle,
    Rpc::UpdateArticle,
    Rpc::GetArticle,
    Rpc::PublishArticle,
    Rpc::ArchiveArticle,
    Rpc::SearchArticles,
    Rpc::SuggestArticles,
    Rpc::RecordDeflection,
    Rpc::WatchDesk,
    Rpc::WhoAmI,
    Rpc::Subscribe,
    Rpc::SetPresence,
];

/// The rule of issue #4, written out independently of the server's table.
fn allowed(rpc: Rpc, who: Who) -> bool {
    use Rpc::*;
    use Who::*;
    if rpc == WhoAmI {
        return who != Anonymous;
    }
    match who {
        Admin => true,
        Anonymous => false,
        Supervisor => matches!(
            rpc,
            WatchDesk
                | GetTicket
                | ListTickets
                | WatchTicket
                | TransferTicket
                | ReleaseTicket
                | GetExpert
                | ListExperts
                | GetStats
                | GetArticle
                | PublishArticle
                | ArchiveArticle
                | SearchArticles
                | SuggestArticles
        ),
        ExpertSelf => matches!(
            rpc,
            ReportActivity
                | GetTicket
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
                | GetStats
                | CreateArticle
                | UpdateArticle
                | GetArticle
                | PublishArticle
                | ArchiveArticle
                | SearchArticles
                | SuggestArticles
        ),
        // Reads name no expert, so naming another expert changes nothing
        // there; nor do knowledge calls, which name no expert at all (ann
        // ranks L2 in the articles' tag, so she may publish them).
        ExpertOther => matches!(
            rpc,
            GetTicket
                | ListTickets
                | WatchTicket
                | GetExpert
                | ListExperts
                | GetStats
                | CreateArticle
                | UpdateArticle
                | GetArticle
                | PublishArticle
                | ArchiveArticle
                | SearchArticles
                | SuggestArticles
        ),
        // Rating is the customer's, through the bot that relays them; so
        // is self-service (published articles, suggestions, deflections).
        BotOwn => matches!(
            rpc,
            CreateTicket
                | GetTicket
                | ListTickets
                | WatchTicket
                | PostMessage
                | RateTicket
                | GetArticle
                | SuggestArticles
                | RecordDeflection
        ),
        BotOther => matches!(
            rpc,
            CreateTicket | ListTickets | GetArticle | SuggestArticles | RecordDeflection
        ),
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

    /// A fresh article on network (published if `published`), by the admin.
    async fn article(&self, published: bool) -> pb::Article {
        let mut kb = self.admin().knowledge;
        let article = kb
            .create_article(pb::CreateArticleRequest {
                title: "VPN drops".into(),
                body: "Reconnect the VPN.".into(),
                tags: vec!["network".into()],
            })
            .await
            .unwrap()
            .into_inner();
        if !published {
            return article;
        }
        kb.publish_article(pb::PublishArticleRequest {
            id: article.id,
            expected_version: 0,
        })
        .await
        .unwrap()
        .into_inner()
    }

    async fn get_article(&self, id: &str) -> pb::Article {
        self.admin()
            .knowledge
            .get_article(pb::GetArticleRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner()
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
    ) -> (
        Result<(), Status>,
        Option<(pb::Ticket, pb::Ticket)>,
        Option<(pb::Article, pb::Article)>,
    ) {
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
            Rpc::RateTicket => {
                self.claim_for(&id, "ann").await;
                let resolved = pb::TicketStatus::Resolved;
                self.server.set_status(&id, "ann", resolved).await.unwrap();
            }
            _ => {}
        }
        let before = match &ticket {
            Some(id) => Some(self.server.get(id).await),
            None => None,
        };
        let article = match rpc {
            Rpc::UpdateArticle | Rpc::PublishArticle | Rpc::ArchiveArticle => {
                Some(self.article(false).await)
            }
            Rpc::GetArticle | Rpc::RecordDeflection => Some(self.article(true).await),
            _ => None,
        };
        let article_id = article.as_ref().map(|a| a.id.clone()).unwrap_or_default();
        let mut kb = c.knowledge.clone();
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
                    vendor: None,
                    knowledge: None,
                })
                .await
                .map(drop),
            Rpc::GetStats => c
                .stats
                .clone()
                .get_stats(pb::GetStatsRequest::default())
                .await
                .map(drop),
            Rpc::RateTicket => tickets
                .rate_ticket(pb::RateTicketRequest {
                    ticket_id: id,
                    score: 5,
                    comment: "great".into(),
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
            Rpc::ReportActivity => tickets
                .report_activity(pb::ReportActivityRequest {
                    expert_id: actor.into(),
                    ticket_id: id,
                    activity: pb::Activity::Viewing as i32,
                })
                .await
                .map(drop),
            Rpc::WatchDesk => tickets
                .watch_desk(pb::WatchDeskRequest { after_position: 0 })
                .await
                .map(drop),
            Rpc::WhoAmI => admin.who_am_i(pb::WhoAmIRequest {}).await.map(drop),
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
            Rpc::CreateArticle => kb
                .create_article(pb::CreateArticleRequest {
                    title: "Printer jam".into(),
                    body: "Open tray two.".into(),
                    tags: vec!["network".into()],
                })
                .await
                .map(drop),
            Rpc::UpdateArticle => kb
                .update_article(pb::UpdateArticleRequest {
                    id: article_id.clone(),
                    body: Some("Restart, then reconnect.".into()),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::GetArticle => kb
                .get_article(pb::GetArticleRequest {
                    id: article_id.clone(),
                })
                .await
                .map(drop),
            Rpc::PublishArticle => kb
                .publish_article(pb::PublishArticleRequest {
                    id: article_id.clone(),
                    expected_version: 0,
                })
                .await
                .map(drop),
            Rpc::ArchiveArticle => kb
                .archive_article(pb::ArchiveArticleRequest {
                    id: article_id.clone(),
                    expected_version: 0,
                })
                .await
                .map(drop),
            Rpc::SearchArticles => kb
                .search_articles(pb::SearchArticlesRequest {
                    query: "vpn".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::SuggestArticles => kb
                .suggest_articles(pb::SuggestArticlesRequest {
                    text: "my vpn drops".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::RecordDeflection => kb
                .record_deflection(pb::RecordDeflectionRequest {
                    article_id: article_id.clone(),
                    request_id: String::new(),
                })
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
        let article_around = match article {
            Some(before) => {
                let after = self.get_article(&before.id).await;
                Some((before, after))
            }
            None => None,
        };
        (result, around, article_around)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_against_every_role() {
    let matrix = Matrix::new().await;
    let mut failures = Vec::new();
    for rpc in EVERY_RPC {
        for who in EVERYONE {
            let (result, ticket, article) = matrix.call(rpc, who).await;
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
            if let (Err(_), Some((before, after))) = (expected, &article) {
                assert_eq!(
                    before, after,
                    "{rpc:?} as {who:?} was refused yet changed the article"
                );
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Reads a requester's watch until a public message with `body`, returning
/// every event seen on the way.
async fn watch_until(
    stream: &mut tonic::Streaming<pb::TicketEvent>,
    body: &str,
) -> Vec<pb::TicketEvent> {
    let mut seen = Vec::new();
    loop {
        let event = next(stream).await;
        let done = matches!(
            &event.payload,
            Some(pb::ticket_event::Payload::Message(m)) if m.body == body
        );
        seen.push(event);
        if done {
            return seen;
        }
    }
}

fn internal_in(events: &[pb::TicketEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| format!("{e:?}").contains("secret"))
        .map(|e| format!("{e:?}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_never_sees_internal_notes_nor_other_bots_tickets() {
    let server = spawn_server().await;
    server.register("ann", &[("network", L2)], 10).await;
    let ann = server.as_token(&server.token(pb::Role::Expert, "ann", "").await);
    let _online = ann
        .experts
        .clone()
        .subscribe(pb::SubscribeRequest {
            expert_id: "ann".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let chat = server.as_token(&server.token(pb::Role::Bot, "", "chat").await);
    let mail = server.as_token(&server.token(pb::Role::Bot, "", "mail").await);
    let create = |bot: &Clients, title: &str| {
        let mut tickets = bot.tickets.clone();
        let request = create_request(title, &[("network", L1)], P2);
        async move {
            tickets
                .create_ticket(request)
                .await
                .unwrap()
                .into_inner()
                .ticket
                .unwrap()
        }
    };
    let own = create(&chat, "vpn").await;
    assert_eq!(own.created_by, "chat");
    assert_eq!(own.owner_id, "ann", "routed to the one expert online");
    let others = create(&mail, "mail outage").await;
    let staff = server.create("internal", &[("network", L1)], P3).await;

    let post = |author: &str, body: &str, visibility: pb::Visibility| {
        let mut tickets = ann.tickets.clone();
        let request = pb::PostMessageRequest {
            ticket_id: own.id.clone(),
            author_id: author.into(),
            body: body.into(),
            visibility: visibility as i32,
            request_id: String::new(),
        };
        async move { tickets.post_message(request).await.map(|r| r.into_inner()) }
    };
    post(
        "ann",
        "secret: the customer's VPN is on our blocklist",
        pb::Visibility::Internal,
    )
    .await
    .unwrap();
    post("ann", "we are on it", pb::Visibility::Public)
        .await
        .unwrap();

    // WatchTicket, from the start and live.
    let mut watch = chat
        .tickets
        .clone()
        .watch_ticket(pb::WatchTicketRequest {
            ticket_id: own.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let history = watch_until(&mut watch, "we are on it").await;
    assert!(history.len() >= 2, "created and the public reply at least");
    assert_eq!(internal_in(&history), Vec::<String>::new());
    post("ann", "secret: second note", pb::Visibility::Internal)
        .await
        .unwrap();
    post("ann", "fixed, please retry", pb::Visibility::Public)
        .await
        .unwrap();
    let live = watch_until(&mut watch, "fixed, please retry").await;
    assert_eq!(internal_in(&live), Vec::<String>::new());
    // The stream skipped the notes, it did not lose the public events: the
    // public reply comes right after what the bot saw before.
    assert_eq!(live.len(), 1, "{live:?}");

    // GetTicket: the ticket, which holds no messages.
    let got = chat
        .tickets
        .clone()
        .get_ticket(pb::GetTicketRequest { id: own.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.id, own.id);
    assert!(!format!("{got:?}").contains("secret"));

    // ListTickets: only the bot's own, whatever the filters say.
    let listed = chat
        .tickets
        .clone()
        .list_tickets(pb::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tickets;
    let ids: Vec<_> = listed.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [own.id.as_str()]);
    let by_tag = chat
        .tickets
        .clone()
        .list_tickets(pb::ListTicketsRequest {
            tag: "network".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tickets;
    assert_eq!(by_tag.len(), 1);
    let all = server
        .tickets
        .clone()
        .list_tickets(pb::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tickets;
    assert_eq!(
        all.len(),
        3,
        "the admin sees {own:?}, {others:?} and {staff:?}"
    );

    // Subscribe: not for bots, under any expert's name.
    let subscribed = chat
        .experts
        .clone()
        .subscribe(pb::SubscribeRequest {
            expert_id: "ann".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        subscribed.err().map(|s| s.code()),
        Some(Code::PermissionDenied)
    );

    // PostMessage: as the requester, PUBLIC only, on its own tickets.
    let mut bot_tickets = chat.tickets.clone();
    let mut bot_post = async |id: &str, author: &str, visibility: pb::Visibility| {
        bot_tickets
            .post_message(pb::PostMessageRequest {
                ticket_id: id.into(),
                author_id: author.into(),
                body: "hello".into(),
                visibility: visibility as i32,
                request_id: String::new(),
            })
            .await
            .map(|r| r.into_inner())
    };
    let refused = [
        bot_post(&own.id, "customer-1", pb::Visibility::Internal).await,
        bot_post(&own.id, "ann", pb::Visibility::Public).await,
        bot_post(&others.id, "customer-1", pb::Visibility::Public).await,
    ];
    for r in refused {
        assert_eq!(r.err().map(|s| s.code()), Some(Code::PermissionDenied));
    }
    let ok = bot_post(&own.id, "customer-1", pb::Visibility::Public)
        .await
        .unwrap();
    assert_eq!(ok.ticket_id, own.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_does_not_tell_a_bot_whether_a_ticket_exists() {
    let server = spawn_server().await;
    let chat = server.as_token(&server.token(pb::Role::Bot, "", "chat").await);
    let theirs = server
        .create("someone else's", &[("network", L1)], P3)
        .await;
    let missing = "T-999999".to_owned();
    let mut answers = Vec::new();
    for id in [&theirs.id, &missing] {
        let get = chat
            .tickets
            .clone()
            .get_ticket(pb::GetTicketRequest { id: id.clone() })
            .await
            .unwrap_err();
        let watch = chat
            .tickets
            .clone()
            .watch_ticket(pb::WatchTicketRequest {
                ticket_id: id.clone(),
                after_seq: 0,
            })
            .await
            .err()
            .unwrap();
        let post = chat
            .tickets
            .clone()
            .post_message(pb::PostMessageRequest {
                ticket_id: id.clone(),
                author_id: "customer-1".into(),
                body: "hi".into(),
                visibility: pb::Visibility::Public as i32,
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        answers.push(
            [get, watch, post]
                .iter()
                .map(|s| (s.code(), s.message().replace(id.as_str(), "<id>")))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(answers[0][0].0, Code::PermissionDenied);
    assert_eq!(
        answers[0], answers[1],
        "an existing ticket answers like a missing one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_per_bot() {
    let server = spawn_server().await;
    let chat = server.as_token(&server.token(pb::Role::Bot, "", "chat").await);
    let mail = server.as_token(&server.token(pb::Role::Bot, "", "mail").await);
    let create = async |bot: &Clients| {
        let mut request = create_request("dup", &[("network", L1)], P3);
        request.request_id = "msg-1".into();
        let r = bot
            .tickets
            .clone()
            .create_ticket(request)
            .await
            .unwrap()
            .into_inner();
        (r.ticket.unwrap().id, r.created)
    };
    let (first, created) = create(&chat).await;
    assert!(created);
    let (again, created) = create(&chat).await;
    assert_eq!(
        (again, created),
        (first.clone(), false),
        "a retry by the same bot"
    );
    let (other, created) = create(&mail).await;
    assert!(created, "another bot's request id is its own");
    assert_ne!(other, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_ends_its_streams_at_once() {
    let server = spawn_server().await;
    server.register("ann", &[("network", L2)], 10).await;
    let (ann_id, ann_secret) = server.new_token(pb::Role::Expert, "ann", "").await;
    let ann = server.as_token(&ann_secret);
    let chat = server.as_token(&server.token(pb::Role::Bot, "", "chat").await);
    let mut swarm = ann
        .experts
        .clone()
        .subscribe(pb::SubscribeRequest {
            expert_id: "ann".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ticket = chat
        .tickets
        .clone()
        .create_ticket(create_request("vpn", &[("network", L1)], P2))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(summary(&next(&mut swarm).await).0, ticket.id);
    let mut watch = chat
        .tickets
        .clone()
        .watch_ticket(pb::WatchTicketRequest {
            ticket_id: ticket.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    next(&mut watch).await;

    let revoked = server.revoke(&ann_id).await;
    assert!(revoked.revoked_at.is_some());

    // The live stream ends with UNAUTHENTICATED (after anything already queued).
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match swarm.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the revoked stream did not end");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    // Every later call with it is refused, streams included.
    let call = ann
        .experts
        .clone()
        .get_expert(pb::GetExpertRequest { id: "ann".into() })
        .await
        .unwrap_err();
    assert_eq!(call.code(), Code::Unauthenticated);
    let again = ann
        .experts
        .clone()
        .subscribe(pb::SubscribeRequest {
            expert_id: "ann".into(),
            ..Default::default()
        })
        .await
        .err()
        .unwrap();
    assert_eq!(again.code(), Code::Unauthenticated);

    // Another principal's stream is untouched.
    server
        .post(
            &ticket.id,
            "customer-1",
            "still there?",
            pb::Visibility::Public,
        )
        .await
        .unwrap();
    watch_until(&mut watch, "still there?").await;

    // Listed as revoked only when asked; never with a secret.
    let listed = |include_revoked| {
        let mut admin = server.admin.clone();
        async move {
            admin
                .list_tokens(pb::ListTokensRequest { include_revoked })
                .await
                .unwrap()
                .into_inner()
                .tokens
        }
    };
    assert!(!listed(false).await.iter().any(|t| t.id == ann_id));
    let all = listed(true).await;
    let entry = all.iter().find(|t| t.id == ann_id).unwrap();
    assert!(entry.revoked_at.is_some());
    assert!(entry.last_used_at.is_some(), "ann's token was used");
    assert!(!format!("{all:?}").contains(&ann_secret[5..]));
}

/// A client that sends `authorization` exactly as given (or not at all).
fn raw_auth_client(
    channel: tonic::transport::Channel,
    value: Option<String>,
) -> pb::expert_service_client::ExpertServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl tonic::service::Interceptor,
    >,
> {
    pb::expert_service_client::ExpertServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            if let Some(value) = &value {
                request
                    .metadata_mut()
                    .insert("authorization", value.parse().unwrap());
            }
            Ok(request)
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_malformed_unknown_and_revoked_tokens_are_refused() {
    let server = spawn_server().await;
    let (revoked_id, revoked) = server.new_token(pb::Role::Supervisor, "", "").await;
    server.revoke(&revoked_id).await;
    let hex = "0123456789abcdef".repeat(4);
    let unknown = format!("swd1_{hex}");
    let admin_hex = &server.admin_token["swd1_".len()..];
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("empty bearer", Some("Bearer ".into())),
        (
            "other scheme",
            Some(format!("Basic {}", server.admin_token)),
        ),
        ("no scheme", Some(server.admin_token.clone())),
        ("garbage", Some("Bearer hunter2-not-a-token".into())),
        ("old format", Some(format!("Bearer swd0_{admin_hex}"))),
        (
            "truncated",
            Some(format!("Bearer {}", &server.admin_token[..40])),
        ),
        ("unknown", Some(format!("Bearer {unknown}"))),
        ("revoked", Some(format!("Bearer {revoked}"))),
    ];
    for (name, value) in cases {
        let status = raw_auth_client(server.channel.clone(), value.clone())
            .list_experts(pb::ListExpertsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        if let Some(value) = value {
            let secret = value
                .trim_start_matches("Bearer ")
                .trim_start_matches("Basic ");
            if secret.len() > 8 {
                assert!(
                    !status.message().contains(secret),
                    "{name} echoed: {status:?}"
                );
            }
        }
    }
    // The same client with the right token works, and a lower-case scheme too.
    let ok = raw_auth_client(
        server.channel.clone(),
        Some(format!("bearer {}", server.admin_token)),
    )
    .list_experts(pb::ListExpertsRequest::default())
    .await;
    assert!(ok.is_ok(), "{ok:?}");
}

/// Runs the real binary with every log on, makes calls with good, bad and
/// new tokens, and looks for any of them in what it logged.
async fn secrets_in_logs(level: &str) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let data = dir.path().join("data");
    let mut process = process::start_with(&data, |command| {
        command
            .env("RUST_LOG", level)
            .env_remove("SWARMDESK_LOG_LEVEL")
            .args(["--log-format", "json"])
            .stdout(log.try_clone().unwrap())
            .stderr(log);
    });
    let channel = connect(process.addr).await;
    let admin_token = admin_token(&data);
    let admin = Clients::new(channel.clone(), Some(&admin_token));
    let created = admin
        .admin
        .clone()
        .create_token(pb::CreateTokenRequest {
            role: pb::Role::Bot as i32,
            bot_name: "chat".into(),
            label: "chat relay".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bot = Clients::new(channel.clone(), Some(&created.secret));
    bot.tickets
        .clone()
        .create_ticket(create_request("vpn", &[("network", L1)], P2))
        .await
        .unwrap();
    let wrong = format!("swd1_{}", "fe".repeat(32));
    let refused = Clients::new(channel.clone(), Some(&wrong))
        .tickets
        .clone()
        .list_tickets(pb::ListTicketsRequest::default())
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    admin
        .admin
        .clone()
        .revoke_token(pb::RevokeTokenRequest {
            id: created.token.unwrap().id,
        })
        .await
        .unwrap();
    process::sigterm(&process.child);
    let status = process::wait_exit(&mut process.child).await;
    assert!(status.success());
    let logged = std::fs::read_to_string(&log_path).unwrap();
    let leaked = [&admin_token, &created.secret, &wrong]
        .into_iter()
        .flat_map(|token| [token.clone(), token["swd1_".len()..].to_owned()])
        .filter(|secret| logged.contains(secret.as_str()))
        .collect();
    (logged, leaked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_secrets_never_appear_in_the_log() {
    // trace: every crate's every line, h2's and tonic's included.
    let (logged, leaked) = secrets_in_logs("trace").await;
    // The log did record the calls, with the principal's label.
    assert!(logged.contains("chat relay"), "{logged}");
    assert!(logged.contains("token revoked"), "{logged}");
    assert_eq!(leaked, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_writes_an_admin_token_only_its_owner_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let server = spawn_server().await;
    let file = server.data_dir.join("admin.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let first = std::fs::read_to_string(&file).unwrap();
    assert!(first.trim().starts_with("swd1_"));

    // A restart keeps it: the store has a live admin token.
    let server = server.restart().await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first);
    let tokens = server
        .admin
        .clone()
        .list_tokens(pb::ListTokensRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].role, pb::Role::Admin as i32);

    // With every admin token revoked, the next start makes a new one, so
    // the desk cannot be locked out of for good.
    let id = tokens[0].id.clone();
    server.revoke(&id).await;
    let server = server.restart().await;
    let second = std::fs::read_to_string(&file).unwrap();
    assert_ne!(second, first);
    assert_eq!(server.admin_token, second.trim());
    server
        .experts
        .clone()
        .list_experts(pb::ListExpertsRequest::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_tokens_with_the_admin_token_file_or_a_given_token() {
    let server = spawn_server().await;
    server.register("ann", &[("network", L2)], 5).await;
    let url = format!("http://{}", server.addr);
    let data_dir = server.data_dir.display().to_string();
    let args = |rest: &[&str]| -> Vec<String> {
        let mut args = vec!["--data-dir".to_owned(), data_dir.clone()];
        args.extend(rest.iter().map(|s| (*s).to_owned()));
        args.extend(["--server".to_owned(), url.clone()]);
        args
    };
    // No --token, no SWARMDESK_TOKEN: <data-dir>/admin.token is used.
    let (ok, stdout, stderr) = run_cli(
        args(&[
            "token",
            "create",
            "--role",
            "expert",
            "--expert",
            "ann",
            "--label",
            "ann laptop",
            "--json",
        ]),
        None,
    )
    .await;
    assert!(ok, "{stderr}");
    let created: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["role"], "expert");
    assert_eq!(created["expert_id"], "ann");
    // The new token works, as ann only.
    let ann = server.as_token(&secret);
    assert!(ann
        .experts
        .clone()
        .subscribe(subscribe_as("ann"))
        .await
        .is_ok());

    let (ok, stdout, stderr) = run_cli(args(&["token", "list"]), None).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("ann laptop") && stdout.contains(&id),
        "{stdout}"
    );
    assert!(!stdout.contains(&secret[5..]), "list never shows a secret");

    // A given token wins over the file: ann's may not list tokens...
    let (ok, _, stderr) = run_cli(args(&["token", "list"]), Some(secret.clone())).await;
    assert!(!ok);
    assert!(
        stderr.contains("PermissionDenied") || stderr.contains("may not"),
        "{stderr}"
    );
    // ...and --token wins over SWARMDESK_TOKEN.
    let with_flag = args(&["token", "list", "--token", &server.admin_token]);
    let (ok, _, stderr) = run_cli(with_flag, Some(secret.clone())).await;
    assert!(ok, "{stderr}");

    let (ok, stdout, stderr) = run_cli(args(&["token", "revoke", &id]), None).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("revoked="), "{stdout}");
    let refused = ann
        .experts
        .clone()
        .get_expert(pb::GetExpertRequest { id: "ann".into() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

fn subscribe_as(expert: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        expert_id: expert.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_off_serves_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let port = process::free_port().port();
    let (ok, _, stderr) = run_cli(
        vec![
            "serve".into(),
            "--auth".into(),
            "off".into(),
            "--listen".into(),
            format!("0.0.0.0:{port}"),
            "--data-dir".into(),
            dir.path().join("open").display().to_string(),
        ],
        None,
    )
    .await;
    assert!(!ok, "auth off on every interface must not start");
    assert!(stderr.contains("loopback"), "{stderr}");

    // On loopback it runs, warns, and every caller is an admin.
    let config = swarmdesk::server::ServerConfig {
        auth: swarmdesk::rpc::gate::AuthMode::Off,
        ..swarmdesk::server::ServerConfig::new(dir.path().join("local"))
    };
    let server = spawn_server_with(config).await;
    let anonymous = Clients::new(server.channel.clone(), None);
    let listed = anonymous
        .admin
        .clone()
        .list_tokens(pb::ListTokensRequest::default())
        .await;
    assert!(listed.is_ok(), "{listed:?}");
}
