//! Every text field with a limit of its own, at that limit and one past
//! it, in a request that is otherwise valid: at the limit the call is
//! accepted and the value stored whole; one character (or byte, where the
//! limit is in bytes) more is INVALID_ARGUMENT naming that field, in an
//! error under 2 KiB as sent, and changes nothing (the ticket's version,
//! the number of tickets and experts stay as they were).
//!
//! Character limits are filled with "é" (two bytes each), so a limit
//! counted in bytes by mistake shows; byte limits end with an ASCII byte,
//! so "one more" is exactly one byte.

mod common;

use common::*;
use swarmdesk::domain::model::{
    MAX_BODY_BYTES, MAX_NOTE_BYTES, MAX_SHORT_TEXT_CHARS, MAX_TITLE_CHARS,
};
use swarmdesk::knowledge::MAX_QUERY_CHARS;
use swarmdesk::rpc::pb;
use swarmdesk::rpc::raw::wire_size;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Longest id of an expert (`[A-Za-z0-9][A-Za-z0-9._@-]{0,127}`).
const MAX_EXPERT_ID_CHARS: usize = 128;
/// Longest skill tag (`[a-z0-9][a-z0-9._-]{0,63}`).
const MAX_TAG_CHARS: usize = 64;

/// Makes a value of a given size.
type Filler = fn(usize) -> String;

/// A value of exactly `n` characters, two bytes each.
fn chars(n: usize) -> String {
    "é".repeat(n)
}

/// A value of exactly `n` bytes.
fn bytes(n: usize) -> String {
    let mut text = "é".repeat(n / 2);
    if n % 2 == 1 {
        text.push('x');
    }
    text
}

/// An id-like value of exactly `n` ASCII characters.
fn ascii(n: usize) -> String {
    "a".repeat(n)
}

/// The refusal of a value one past its limit: INVALID_ARGUMENT, small, and
/// naming `field`.
fn assert_names(what: &str, outcome: Result<(), Status>, field: &str) {
    let status = outcome.expect_err(what);
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    let sent = wire_size(&status);
    assert!(sent < 2 * 1024, "{what}: an error of up to {sent} bytes");
    let named: Vec<String> = status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    assert!(
        named
            .iter()
            .any(|f| f == field || f.ends_with(&format!(".{field}"))),
        "{what}: names {named:?}, not {field}: {}",
        status.message()
    );
}

struct Desk {
    c: Clients,
    ticket: String,
}

impl Desk {
    async fn open(server: &TestServer) -> Desk {
        let c = Clients::new(server.channel.clone(), Some(&server.admin_token));
        server
            .register("owner", &[("net", pb::Rank::L2 as i32)], 50)
            .await;
        let ticket = c
            .tickets
            .clone()
            .create_ticket(create_request("base", &[("net", pb::Rank::L1 as i32)], 2))
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap();
        // Nobody streams, so nobody is routed to: the owner claims it.
        let claimed = c
            .tickets
            .clone()
            .claim_ticket(pb::ClaimTicketRequest {
                ticket_id: ticket.id.clone(),
                expert_id: "owner".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(claimed.owner_id, "owner");
        Desk {
            c,
            ticket: ticket.id,
        }
    }

    async fn version(&self) -> u64 {
        self.ticket_now().await.version
    }

    async fn ticket_now(&self) -> pb::Ticket {
        self.c
            .tickets
            .clone()
            .get_ticket(pb::GetTicketRequest {
                id: self.ticket.clone(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn counts(&self) -> (usize, usize) {
        (
            self.c.all_tickets().await.len(),
            self.c.all_experts().await.len(),
        )
    }

    async fn create(&self, edit: impl FnOnce(&mut pb::CreateTicketRequest)) -> Result<(), Status> {
        let mut request = create_request("a ticket", &[("net", pb::Rank::L1 as i32)], 3);
        edit(&mut request);
        let created = self.c.tickets.clone().create_ticket(request).await?;
        let ticket = created.into_inner().ticket.unwrap();
        // Stored whole.
        let stored = self
            .c
            .tickets
            .clone()
            .get_ticket(pb::GetTicketRequest { id: ticket.id })
            .await?
            .into_inner();
        assert_eq!(stored.title, ticket.title);
        assert_eq!(stored.description, ticket.description);
        assert_eq!(stored.requester, ticket.requester);
        Ok(())
    }

    async fn post(&self, body: String) -> Result<(), Status> {
        let event = self
            .c
            .tickets
            .clone()
            .post_message(pb::PostMessageRequest {
                ticket_id: self.ticket.clone(),
                author_id: "owner".into(),
                body: body.clone(),
                visibility: pb::Visibility::Internal as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        let Some(pb::ticket_event::Payload::Message(posted)) = event.payload else {
            panic!("not a message: {event:?}");
        };
        assert_eq!(posted.body, body, "body not kept whole");
        Ok(())
    }

    async fn note(&self, note: String) -> Result<(), Status> {
        self.c
            .tickets
            .clone()
            .update_status(pb::UpdateStatusRequest {
                ticket_id: self.ticket.clone(),
                expert_id: "owner".into(),
                status: pb::TicketStatus::WaitingCustomer as i32,
                note,
                ..Default::default()
            })
            .await?;
        // Back to work, for the next case.
        self.c
            .tickets
            .clone()
            .update_status(pb::UpdateStatusRequest {
                ticket_id: self.ticket.clone(),
                expert_id: "owner".into(),
                status: pb::TicketStatus::Assigned as i32,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn help(&self, note: String) -> Result<(), Status> {
        self.c
            .tickets
            .clone()
            .request_help(pb::RequestHelpRequest {
                ticket_id: self.ticket.clone(),
                expert_id: "owner".into(),
                skills: vec![pb::SkillRequirement {
                    tag: "db".into(),
                    min_rank: pb::Rank::L1 as i32,
                }],
                note,
            })
            .await
            .map(drop)
    }

    async fn register(&self, id: String, display_name: String, tag: String) -> Result<(), Status> {
        let mut request = register_request(&id, &[(&tag, pb::Rank::L1 as i32)], 1);
        request.expert.as_mut().unwrap().display_name = display_name.clone();
        let expert = self.c.experts.clone().register_expert(request).await?;
        assert_eq!(expert.into_inner().display_name, display_name);
        Ok(())
    }

    async fn article(&self, title: String, body: String) -> Result<(), Status> {
        let article = self
            .c
            .knowledge
            .clone()
            .create_article(pb::CreateArticleRequest {
                title: title.clone(),
                body: body.clone(),
                tags: vec!["net".into()],
            })
            .await?
            .into_inner();
        assert_eq!((article.title, article.body), (title, body));
        Ok(())
    }

    async fn search(&self, text: String) -> Result<(), Status> {
        self.c
            .knowledge
            .clone()
            .search_articles(pb::SearchArticlesRequest {
                query: text,
                ..Default::default()
            })
            .await
            .map(drop)
    }

    async fn rate(&self, ticket: &str, comment: String) -> Result<(), Status> {
        self.c
            .tickets
            .clone()
            .rate_ticket(pb::RateTicketRequest {
                ticket_id: ticket.into(),
                score: 5,
                comment,
            })
            .await
            .map(drop)
    }
}

#[tokio::test]
async fn every_limited_field_takes_its_limit_and_refuses_one_more_naming_itself() {
    let server = spawn_server().await;
    let d = Desk::open(&server).await;

    // Tickets.
    let cases: [(&str, usize, Filler); 5] = [
        ("title", MAX_TITLE_CHARS, chars),
        ("description", MAX_BODY_BYTES, bytes),
        ("requester", MAX_SHORT_TEXT_CHARS, chars),
        ("request_id", MAX_SHORT_TEXT_CHARS, chars),
        ("tag", MAX_TAG_CHARS, ascii),
    ];
    for (field, limit, value) in cases {
        let set = |r: &mut pb::CreateTicketRequest, v: String| match field {
            "title" => r.title = v,
            "description" => r.description = v,
            "requester" => r.requester = v,
            "request_id" => r.request_id = v,
            _ => r.skills[0].tag = v,
        };
        d.create(|r| set(r, value(limit)))
            .await
            .unwrap_or_else(|e| panic!("CreateTicket {field} at its limit {limit}: {e:?}"));
        let before = d.counts().await;
        let what = format!("CreateTicket {field} at {limit} + 1");
        assert_names(&what, d.create(|r| set(r, value(limit + 1))).await, field);
        assert_eq!(d.counts().await, before, "{what} changed something");
    }

    // Writes on a ticket: each refusal leaves its version as it was.
    d.post(bytes(MAX_BODY_BYTES)).await.unwrap();
    let version = d.version().await;
    let outcome = d.post(bytes(MAX_BODY_BYTES + 1)).await;
    assert_names("PostMessage body", outcome, "body");
    d.note(bytes(MAX_NOTE_BYTES)).await.unwrap();
    assert!(d.version().await > version);
    let version = d.version().await;
    assert_names(
        "UpdateStatus note",
        d.note(bytes(MAX_NOTE_BYTES + 1)).await,
        "note",
    );
    d.help(bytes(MAX_NOTE_BYTES)).await.unwrap();
    assert!(d.version().await > version);
    let version = d.version().await;
    assert_names(
        "RequestHelp note",
        d.help(bytes(MAX_NOTE_BYTES + 1)).await,
        "note",
    );
    assert_eq!(
        d.version().await,
        version,
        "a refused write changed the ticket"
    );

    // Experts.
    let name = chars(MAX_SHORT_TEXT_CHARS);
    d.register(
        ascii(MAX_EXPERT_ID_CHARS),
        name.clone(),
        ascii(MAX_TAG_CHARS),
    )
    .await
    .unwrap();
    let before = d.counts().await;
    let cases = [
        (
            "id",
            d.register(ascii(MAX_EXPERT_ID_CHARS + 1), name.clone(), "net".into())
                .await,
        ),
        (
            "display_name",
            d.register("x2".into(), chars(MAX_SHORT_TEXT_CHARS + 1), "net".into())
                .await,
        ),
        (
            "tag",
            d.register("x3".into(), name, ascii(MAX_TAG_CHARS + 1))
                .await,
        ),
    ];
    for (field, outcome) in cases {
        assert_names(&format!("RegisterExpert {field}"), outcome, field);
    }
    assert_eq!(d.counts().await, before, "a refused expert was stored");

    // Knowledge.
    d.article(chars(MAX_TITLE_CHARS), bytes(MAX_BODY_BYTES))
        .await
        .unwrap();
    assert_names(
        "CreateArticle title",
        d.article(chars(MAX_TITLE_CHARS + 1), "b".into()).await,
        "title",
    );
    assert_names(
        "CreateArticle body",
        d.article("t".into(), bytes(MAX_BODY_BYTES + 1)).await,
        "body",
    );
    d.search(chars(MAX_QUERY_CHARS)).await.unwrap();
    assert_names(
        "SearchArticles text",
        d.search(chars(MAX_QUERY_CHARS + 1)).await,
        "query",
    );

    // A rating's comment, on a resolved ticket.
    d.c.tickets
        .clone()
        .update_status(pb::UpdateStatusRequest {
            ticket_id: d.ticket.clone(),
            expert_id: "owner".into(),
            status: pb::TicketStatus::Resolved as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let version = d.version().await;
    assert_names(
        "RateTicket comment",
        d.rate(&d.ticket, bytes(MAX_NOTE_BYTES + 1)).await,
        "comment",
    );
    assert_eq!(
        d.version().await,
        version,
        "a refused rating changed the ticket"
    );
    d.rate(&d.ticket, bytes(MAX_NOTE_BYTES)).await.unwrap();
    assert!(d.version().await > version);
}
