//! The knowledge base on the real server: full-text ranking, suggestions
//! on new tickets and before them, deflections, reuse and capture on
//! resolution, their counts in GetStats, the rules of articles, and the
//! search index rebuilt from the store.
//!
//! One service end to end, in one file: its tests share one set-up of
//! articles and experts.

mod common;

use common::*;
use swarmdesk::rpc::pb;
use swarmdesk::rpc::pb::knowledge_service_client::KnowledgeServiceClient;
use swarmdesk::rpc::pb::stats_service_client::StatsServiceClient;
use tonic::Code;
use tonic_types::StatusExt;

type Kb = KnowledgeServiceClient<swarmdesk::client::AuthedChannel>;

fn kb(server: &TestServer) -> Kb {
    KnowledgeServiceClient::new(server.admin_channel())
}

async fn write(kb: &Kb, title: &str, body: &str, tags: &[&str]) -> pb::Article {
    kb.clone()
        .create_article(pb::CreateArticleRequest {
            title: title.into(),
            body: body.into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn publish(kb: &Kb, id: &str) -> pb::Article {
    kb.clone()
        .publish_article(pb::PublishArticleRequest {
            id: id.into(),
            expected_version: 0,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn search(kb: &Kb, query: &str, states: &[pb::ArticleState]) -> Vec<pb::ArticleHit> {
    kb.clone()
        .search_articles(pb::SearchArticlesRequest {
            query: query.into(),
            tags: vec![],
            states: states.iter().map(|s| *s as i32).collect(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .hits
}

fn ids(hits: &[pb::ArticleHit]) -> Vec<&str> {
    hits.iter().map(|h| h.article_id.as_str()).collect()
}

/// Four articles on neighbouring subjects, three published: KB-1 printer,
/// KB-2 VPN drops on sleep, KB-3 password reset, KB-4 (draft) VPN certs.
async fn library(kb: &Kb) {
    let printer = write(
        kb,
        "Printer shows a paper jam",
        "Open tray two, remove the jammed sheet and close the tray.",
        &["hardware"],
    )
    .await;
    let vpn = write(
        kb,
        "VPN disconnects when the laptop sleeps",
        "The VPN client drops its tunnel when the laptop goes to sleep. Turn off \
         power saving for the wireless adapter, then reconnect the VPN.",
        &["network", "vpn"],
    )
    .await;
    let password = write(
        kb,
        "Resetting a forgotten password",
        "Use the self-service portal to reset the password; the link expires in an hour.",
        &["accounts"],
    )
    .await;
    write(
        kb,
        "Renewing VPN certificates",
        "Draft: how the VPN certificates are renewed every year.",
        &["vpn"],
    )
    .await;
    for a in [printer, vpn, password] {
        assert_eq!(
            publish(kb, &a.id).await.state,
            pb::ArticleState::Published as i32
        );
    }
}

#[tokio::test]
async fn search_ranks_the_clearly_matching_article_first() {
    let server = spawn_server().await;
    let kb = kb(&server);
    library(&kb).await;
    let published = [pb::ArticleState::Published];
    let hits = search(
        &kb,
        "my vpn keeps disconnecting whenever my laptop sleeps",
        &[],
    )
    .await;
    assert_eq!(ids(&hits)[0], "KB-2", "{hits:?}");
    assert!(hits[0].score > 0.0);
    assert!(hits[0].snippet.contains("VPN"), "{}", hits[0].snippet);
    assert!(
        !ids(&hits).contains(&"KB-4"),
        "drafts are not searched unless asked for"
    );
    assert_eq!(
        ids(&search(&kb, "forgot my password", &published).await),
        ["KB-3"]
    );
    let with_drafts = search(
        &kb,
        "vpn certificates",
        &[pb::ArticleState::Draft, pb::ArticleState::Published],
    )
    .await;
    assert_eq!(ids(&with_drafts)[0], "KB-4", "{with_drafts:?}");
    // Tags narrow; an empty query lists what they let through.
    let hardware = kb
        .clone()
        .search_articles(pb::SearchArticlesRequest {
            query: String::new(),
            tags: vec!["hardware".into()],
            states: vec![],
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(ids(&hardware), ["KB-1"]);
    // An edit is searchable as soon as it is answered.
    kb.clone()
        .update_article(pb::UpdateArticleRequest {
            id: "KB-1".into(),
            title: Some("Scanner shows a paper jam".into()),
            body: None,
            tags: None,
            expected_version: 2,
        })
        .await
        .unwrap();
    assert_eq!(ids(&search(&kb, "scanner", &published).await), ["KB-1"]);
    assert!(search(&kb, "printer", &published).await.is_empty());
    // Bots offer articles through SuggestArticles (counted), not search.
    let bot = server.token(pb::Role::Bot, "", "chat").await;
    let refused = server
        .as_token(&bot)
        .knowledge
        .search_articles(pb::SearchArticlesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

async fn stats_now(server: &TestServer, tag: &str) -> pb::Stats {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    StatsServiceClient::new(server.admin_channel())
        .get_stats(pb::GetStatsRequest {
            from: at(now - 3600),
            to: at(now + 3600),
            tag: tag.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

fn resolve_with(
    ticket: &str,
    expert: &str,
    note: &str,
    knowledge: pb::update_status_request::Knowledge,
) -> pb::UpdateStatusRequest {
    pb::UpdateStatusRequest {
        ticket_id: ticket.into(),
        expert_id: expert.into(),
        status: pb::TicketStatus::Resolved as i32,
        note: note.into(),
        vendor: None,
        knowledge: Some(knowledge),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggestions_deflections_reuse_and_capture_are_counted() {
    let server = spawn_server().await;
    let kb = kb(&server);
    library(&kb).await;
    server.register("ann", &[("network", L2)], 5).await;
    let mut ann_stream = server.subscribe("ann").await;
    let bot = server.token(pb::Role::Bot, "", "chat").await;
    let relay = server.as_token(&bot);

    // A new ticket comes back with the matching articles, best first, and
    // the swarm sees what the customer was offered.
    let created = relay
        .tickets
        .clone()
        .create_ticket(pb::CreateTicketRequest {
            title: "VPN keeps disconnecting".into(),
            description: "every time my laptop sleeps the vpn drops".into(),
            ..create_request("x", &[("network", L1)], P3)
        })
        .await
        .unwrap()
        .into_inner();
    let vpn_ticket = created.ticket.unwrap();
    assert_eq!(vpn_ticket.owner_id, "ann");
    let offered = ids(&created.suggestions);
    assert!(!offered.is_empty() && offered.len() <= 3, "{offered:?}");
    assert_eq!(offered[0], "KB-2");
    assert!(!offered.contains(&"KB-4"), "a draft is never suggested");
    let suggested = next_where(&mut ann_stream, |e| {
        summary(e).2 == pb::TicketEventType::ArticlesSuggested
    })
    .await;
    match suggested.event.unwrap().payload {
        Some(pb::ticket_event::Payload::ArticlesSuggested(s)) => {
            assert_eq!(s.article_ids, offered)
        }
        other => panic!("unexpected payload {other:?}"),
    }
    let on_tickets = offered.len() as u64;

    // A ticket whose words match nothing is offered nothing.
    let plain = relay
        .tickets
        .clone()
        .create_ticket(create_request("zzz qqq", &[("network", L1)], P3))
        .await
        .unwrap()
        .into_inner();
    assert!(plain.suggestions.is_empty(), "{:?}", plain.suggestions);

    // Self-service before any ticket: suggested, then deflected once.
    let before = relay
        .knowledge
        .clone()
        .suggest_articles(pb::SuggestArticlesRequest {
            text: "how do I reset my password".into(),
            tags: vec![],
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .suggestions;
    assert_eq!(ids(&before), ["KB-3"]);
    let deflect = |request_id: &str| pb::RecordDeflectionRequest {
        article_id: "KB-3".into(),
        request_id: request_id.into(),
    };
    let mut relay_kb = relay.knowledge.clone();
    assert!(
        relay_kb
            .record_deflection(deflect("d-1"))
            .await
            .unwrap()
            .into_inner()
            .recorded
    );
    assert!(
        !relay_kb
            .record_deflection(deflect("d-1"))
            .await
            .unwrap()
            .into_inner()
            .recorded,
        "a retried deflection counts once"
    );
    let draft_deflection = relay_kb
        .record_deflection(pb::RecordDeflectionRequest {
            article_id: "KB-4".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(draft_deflection.code(), Code::FailedPrecondition);

    // Resolutions: one reuses KB-2, one captures a new draft.
    let mut tickets = server.tickets.clone();
    let reuse = pb::update_status_request::Knowledge::ReuseArticleId("KB-2".into());
    tickets
        .update_status(resolve_with(
            &vpn_ticket.id,
            "ann",
            "power saving off",
            reuse,
        ))
        .await
        .unwrap();
    let linked = next_where(&mut ann_stream, |e| {
        summary(e).2 == pb::TicketEventType::ArticleLinked
    })
    .await;
    match linked.event.unwrap().payload {
        Some(pb::ticket_event::Payload::ArticleLinked(l)) => {
            assert_eq!(l.article_id, "KB-2");
            assert_eq!(l.link, pb::ArticleLink::Reused as i32);
        }
        other => panic!("unexpected payload {other:?}"),
    }
    let other = plain.ticket.unwrap();
    let capture =
        pb::update_status_request::Knowledge::CaptureArticle(pb::ArticleCapture::default());
    let resolved = tickets
        .update_status(resolve_with(
            &other.id,
            "ann",
            "Cleared the DNS cache on the router.",
            capture,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.status, pb::TicketStatus::Resolved as i32);
    let draft = kb
        .clone()
        .get_article(pb::GetArticleRequest { id: "KB-5".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(draft.state, pb::ArticleState::Draft as i32);
    assert_eq!(draft.title, "zzz qqq", "the ticket's title");
    assert_eq!(
        draft.body, "Cleared the DNS cache on the router.",
        "the resolution note"
    );
    assert_eq!(draft.tags, ["network"], "the ticket's skills");
    assert_eq!(
        (draft.author.as_str(), draft.source_ticket_id.as_str()),
        ("ann", other.id.as_str())
    );

    // Every use counted, overall and by tag, and per expert.
    let check = |s: &pb::Stats| {
        let k = s.knowledge.unwrap();
        assert_eq!(k.suggested_on_tickets, on_tickets);
        assert_eq!(k.articles_suggested, on_tickets + 1);
        assert_eq!((k.deflections, k.reused, k.captured), (1, 1, 1));
        assert!((k.link_rate - 1.0).abs() < 1e-9, "{k:?}");
        let ann = s.experts.iter().find(|e| e.expert_id == "ann").unwrap();
        assert_eq!((ann.articles_reused, ann.articles_captured), (1, 1));
    };
    check(&stats_now(&server, "").await);
    let accounts = stats_now(&server, "accounts").await.knowledge.unwrap();
    assert_eq!((accounts.articles_suggested, accounts.deflections), (1, 1));
    assert_eq!((accounts.reused, accounts.captured), (0, 0));
    let network = stats_now(&server, "network").await.knowledge.unwrap();
    assert_eq!(
        (network.reused, network.captured, network.deflections),
        (1, 1, 0)
    );

    // All of it survives a restart.
    let server = server.restart().await;
    check(&stats_now(&server, "").await);
    let hits = search(
        &KnowledgeServiceClient::new(server.admin_channel()),
        "sleeps",
        &[],
    )
    .await;
    assert_eq!(ids(&hits), ["KB-2"]);
}

#[tokio::test]
async fn article_rules_and_errors() {
    let server = spawn_server().await;
    let kb = kb(&server);
    let a = write(&kb, "VPN drops", "Reconnect.", &["vpn"]).await;
    assert_eq!(
        (a.id.as_str(), a.version, a.author.as_str()),
        ("KB-1", 1, "admin")
    );
    let mut admin_kb = kb.clone();

    // Stale versions are refused with both versions named.
    let stale = admin_kb
        .update_article(pb::UpdateArticleRequest {
            id: a.id.clone(),
            title: Some("x".into()),
            body: None,
            tags: None,
            expected_version: 7,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let info = stale.get_details_error_info().unwrap();
    assert_eq!(info.reason, "VERSION_MISMATCH");
    assert_eq!(
        info.metadata.get("stored_version").map(String::as_str),
        Some("1")
    );

    // Bad input names the field and changes nothing.
    for (request, field) in [
        (
            pb::CreateArticleRequest {
                title: " ".into(),
                body: "b".into(),
                tags: vec![],
            },
            "title",
        ),
        (
            pb::CreateArticleRequest {
                title: "t".into(),
                body: String::new(),
                tags: vec![],
            },
            "body",
        ),
        (
            pb::CreateArticleRequest {
                title: "t".into(),
                body: "b".into(),
                tags: vec!["Not A Tag".into()],
            },
            "tags",
        ),
        (
            pb::CreateArticleRequest {
                title: "t".into(),
                body: "b".into(),
                tags: vec!["sev1".into()],
            },
            "tags",
        ),
    ] {
        let status = admin_kb.create_article(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let bad = status.get_details_bad_request().unwrap();
        assert!(bad.field_violations[0].field.starts_with(field), "{bad:?}");
    }
    let missing = admin_kb
        .get_article(pb::GetArticleRequest { id: "KB-2".into() })
        .await
        .unwrap_err();
    assert_eq!(
        missing.code(),
        Code::NotFound,
        "no article was stored by the refusals"
    );
    let malformed = admin_kb
        .get_article(pb::GetArticleRequest { id: "T-1".into() })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);

    // Publishing takes rank L2 in one of the article's tags.
    server.register("junior", &[("vpn", L1)], 5).await;
    server.register("senior", &[("vpn", L2)], 5).await;
    let junior = server.token(pb::Role::Expert, "junior", "").await;
    let senior = server.token(pb::Role::Expert, "senior", "").await;
    let refused = server
        .as_token(&junior)
        .knowledge
        .publish_article(pb::PublishArticleRequest {
            id: a.id.clone(),
            expected_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let written = write(
        &server.as_token(&junior).knowledge,
        "Junior's note",
        "Body.",
        &["vpn"],
    )
    .await;
    assert_eq!(written.author, "junior", "experts write drafts");
    let published = publish(&server.as_token(&senior).knowledge, &a.id).await;
    assert_eq!(
        (published.state, published.version),
        (pb::ArticleState::Published as i32, 2)
    );
    assert!(published.published_at.is_some());
    assert_eq!(
        publish(&kb, &a.id).await.version,
        2,
        "publishing again changes nothing"
    );

    // Bots read published articles only, and a draft reads as missing.
    let bot = server.token(pb::Role::Bot, "", "chat").await;
    let mut bot_kb = server.as_token(&bot).knowledge;
    assert!(bot_kb
        .get_article(pb::GetArticleRequest { id: a.id.clone() })
        .await
        .is_ok());
    let hidden = bot_kb
        .get_article(pb::GetArticleRequest {
            id: written.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);

    // An archived article is read-only until published again.
    let archived = admin_kb
        .archive_article(pb::ArchiveArticleRequest {
            id: a.id.clone(),
            expected_version: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(archived.state, pb::ArticleState::Archived as i32);
    let frozen = admin_kb
        .update_article(pb::UpdateArticleRequest {
            id: a.id.clone(),
            title: None,
            body: Some("new".into()),
            tags: None,
            expected_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(frozen.code(), Code::FailedPrecondition);
    assert_eq!(
        frozen.get_details_error_info().unwrap().reason,
        "ARTICLE_STATE"
    );

    // Knowledge goes with a resolution only, and reuses published articles
    // only; a refused resolution changes nothing.
    server.register("ann", &[("vpn", L2)], 5).await;
    let t = server.create("vpn", &[("vpn", L1)], P3).await;
    server.claim(&t.id, "ann").await.unwrap();
    let before = server.get(&t.id).await;
    let mut tickets = server.tickets.clone();
    let reuse = |id: &str| pb::update_status_request::Knowledge::ReuseArticleId(id.into());
    let not_resolving = tickets
        .update_status(pb::UpdateStatusRequest {
            status: pb::TicketStatus::WaitingCustomer as i32,
            ..resolve_with(&t.id, "ann", "", reuse("KB-1"))
        })
        .await
        .unwrap_err();
    assert_eq!(not_resolving.code(), Code::InvalidArgument);
    let archived_reuse = tickets
        .update_status(resolve_with(&t.id, "ann", "", reuse("KB-1")))
        .await
        .unwrap_err();
    assert_eq!(
        archived_reuse.code(),
        Code::FailedPrecondition,
        "{archived_reuse:?}"
    );
    let unknown = tickets
        .update_status(resolve_with(&t.id, "ann", "", reuse("KB-99")))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let no_body = tickets
        .update_status(resolve_with(
            &t.id,
            "ann",
            "",
            pb::update_status_request::Knowledge::CaptureArticle(pb::ArticleCapture::default()),
        ))
        .await
        .unwrap_err();
    assert_eq!(no_body.code(), Code::InvalidArgument);
    assert!(
        no_body.message().contains("capture_article.body"),
        "{no_body:?}"
    );
    assert_eq!(
        server.get(&t.id).await,
        before,
        "refusals changed the ticket"
    );
    let capture_by_other = tickets
        .update_status(resolve_with(
            &t.id,
            "senior",
            "fixed",
            pb::update_status_request::Knowledge::CaptureArticle(pb::ArticleCapture::default()),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        capture_by_other.code(),
        Code::FailedPrecondition,
        "only the owner resolves"
    );
    let drafts = search(&kb, "", &[pb::ArticleState::Draft]).await;
    assert_eq!(
        ids(&drafts),
        ["KB-2"],
        "no draft was captured by refused resolutions"
    );
}

#[tokio::test]
async fn the_index_is_rebuilt_when_missing_or_stale() {
    let server = spawn_server().await;
    library(&kb(&server)).await;
    let data_dir = server.data_dir.clone();
    let index = data_dir.join(swarmdesk::server::KNOWLEDGE_INDEX_DIR);
    assert!(
        index.join("meta.json").exists(),
        "the index lives under the data dir"
    );
    let dir = server.stop().await.unwrap();
    std::fs::remove_dir_all(&index).unwrap();
    let mut server = spawn_server_with(swarmdesk::server::ServerConfig::new(&data_dir)).await;
    server.keep_dir(dir);
    let found = search(&kb(&server), "paper jam", &[]).await;
    assert_eq!(ids(&found), ["KB-1"], "rebuilt from the store");
    let dir = server.stop().await.unwrap();
    std::fs::write(index.join("meta.json"), b"{ garbage").unwrap();
    let mut server = spawn_server_with(swarmdesk::server::ServerConfig::new(&data_dir)).await;
    server.keep_dir(dir);
    let found = search(&kb(&server), "password", &[]).await;
    assert_eq!(ids(&found), ["KB-3"], "an unreadable index is rebuilt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_writes_searches_and_captures() {
    let server = spawn_server().await;
    let url = format!("http://{}", server.addr);
    let token = Some(server.admin_token.clone());
    let cli = |args: &[&str]| {
        let mut all = vec!["--server".to_owned(), url.clone(), "--json".to_owned()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        run_cli(all, token.clone())
    };
    let (ok, out, err) = cli(&[
        "article",
        "create",
        "--title",
        "Outlook will not start",
        "--body",
        "Start Outlook in safe mode and disable the add-ins.",
        "--tag",
        "office",
    ])
    .await;
    assert!(ok, "{err}");
    let article: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(article["id"], "KB-1");
    assert_eq!(article["state"], "draft");
    let (ok, _, err) = cli(&["article", "publish", "KB-1"]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&["article", "search", "outlook does not start"]).await;
    assert!(ok, "{err}");
    let hit: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (hit["article_id"].as_str(), hit["state"].as_str()),
        (Some("KB-1"), Some("published"))
    );

    server.register("ann", &[("office", L2)], 5).await;
    let _online = server.subscribe("ann").await;
    let t = server
        .create("printer offline", &[("office", L1)], P3)
        .await;
    assert_eq!(t.owner_id, "ann");
    let (ok, _, err) = cli(&[
        "resolve",
        &t.id,
        "ann",
        "--note",
        "Re-added the printer.",
        "--capture",
        "--capture-title",
        "Printer shows offline",
    ])
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&["article", "show", "KB-2"]).await;
    assert!(ok, "{err}");
    let draft: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(draft["title"], "Printer shows offline");
    assert_eq!(draft["body"], "Re-added the printer.");
    assert_eq!(draft["source_ticket_id"], t.id.as_str());
    let (ok, out, err) = cli(&["stats", "--last", "1h"]).await;
    assert!(ok, "{err}");
    let stats: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(stats["knowledge"]["captured"], 1);
}
