//! Bad input gets a precise status naming the problem, and changes nothing.

mod common;

use common::*;
use swarmdesk::rpc::pb;
use tonic::Code;
use tonic_types::StatusExt;

fn expect(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, mention: &str) {
    match result {
        Ok(v) => panic!("expected {code:?} mentioning {mention:?}, got Ok({v:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(mention),
                "message {:?} should mention {mention:?}",
                status.message()
            );
        }
    }
}

#[tokio::test]
async fn bad_tickets_are_refused_with_the_field_named_and_nothing_stored() {
    let server = spawn_server().await;
    let mut tickets = server.tickets.clone();
    let base = || create_request("fine title", &[("network", L1)], P3);
    let cases: Vec<(pb::CreateTicketRequest, Code, &str)> = vec![
        (
            pb::CreateTicketRequest {
                title: String::new(),
                ..base()
            },
            Code::InvalidArgument,
            "title",
        ),
        (
            pb::CreateTicketRequest {
                title: "   ".into(),
                ..base()
            },
            Code::InvalidArgument,
            "title",
        ),
        (
            pb::CreateTicketRequest {
                title: "t".repeat(201),
                ..base()
            },
            Code::InvalidArgument,
            "title",
        ),
        (
            pb::CreateTicketRequest {
                description: "d".repeat(64 * 1024 + 1),
                ..base()
            },
            Code::InvalidArgument,
            "description",
        ),
        (
            pb::CreateTicketRequest {
                requester: String::new(),
                ..base()
            },
            Code::InvalidArgument,
            "requester",
        ),
        (
            pb::CreateTicketRequest {
                priority: 9,
                ..base()
            },
            Code::InvalidArgument,
            "priority",
        ),
        (
            pb::CreateTicketRequest {
                channel: 99,
                ..base()
            },
            Code::InvalidArgument,
            "channel",
        ),
        (
            pb::CreateTicketRequest { kind: -1, ..base() },
            Code::InvalidArgument,
            "kind",
        ),
        (
            create_request("t", &[("Network", L1)], P3),
            Code::InvalidArgument,
            "skills[0].tag",
        ),
        (
            create_request("t", &[("net", L1), ("bad tag", L1)], P3),
            Code::InvalidArgument,
            "skills[1].tag",
        ),
        (
            create_request("t", &[(&"x".repeat(65), L1)], P3),
            Code::InvalidArgument,
            "skills[0].tag",
        ),
        (
            create_request("t", &[("net", 7)], P3),
            Code::InvalidArgument,
            "skills[0].min_rank",
        ),
        (
            create_request("t", &[("net", L1), ("net", L2)], P3),
            Code::InvalidArgument,
            "named twice",
        ),
        (
            pb::CreateTicketRequest {
                skills: (0..17)
                    .map(|i| pb::SkillRequirement {
                        tag: format!("t{i}"),
                        min_rank: L1,
                    })
                    .collect(),
                ..base()
            },
            Code::InvalidArgument,
            "at most 16",
        ),
    ];
    for (request, code, mention) in cases {
        expect(tickets.create_ticket(request).await, code, mention);
    }
    // Over gRPC's message size limit: refused before any work.
    let huge = pb::CreateTicketRequest {
        description: "d".repeat(2 * 1024 * 1024),
        ..base()
    };
    let status = tickets.create_ticket(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Just over the limit: gRPC's code, the limit named, a stable reason.
    let over = pb::CreateTicketRequest {
        description: "d".repeat(1024 * 1024 + 100),
        ..base()
    };
    let status = tickets.create_ticket(over).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("the limit is: 1048576 bytes"),
        "{status:?}"
    );
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "MESSAGE_TOO_LARGE");
    let page = tickets
        .list_tickets(pb::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        page.tickets.is_empty(),
        "nothing was stored: {:?}",
        page.tickets
    );
    // And the server still works.
    server
        .create("fine after all", &[("network", L1)], P3)
        .await;
}

#[tokio::test]
async fn bad_experts_and_subscriptions_are_refused() {
    let server = spawn_server().await;
    let mut experts = server.experts.clone();
    let expert = |id: &str, skills: Vec<pb::Skill>, capacity: u32| pb::RegisterExpertRequest {
        expert: Some(pb::Expert {
            id: id.into(),
            display_name: "X".into(),
            skills,
            capacity,
            ..Default::default()
        }),
    };
    let skill = |tag: &str, rank: i32| pb::Skill {
        tag: tag.into(),
        rank,
    };
    expect(
        experts
            .register_expert(pb::RegisterExpertRequest { expert: None })
            .await,
        Code::InvalidArgument,
        "expert",
    );
    expect(
        experts.register_expert(expert("", vec![], 0)).await,
        Code::InvalidArgument,
        "expert.id",
    );
    expect(
        experts
            .register_expert(expert("has space", vec![], 0))
            .await,
        Code::InvalidArgument,
        "expert.id",
    );
    expect(
        experts
            .register_expert(expert("ann", vec![skill("net", 0)], 0))
            .await,
        Code::InvalidArgument,
        "expert.skills[0].rank",
    );
    expect(
        experts
            .register_expert(expert("ann", vec![skill("net", 4)], 0))
            .await,
        Code::InvalidArgument,
        "expert.skills[0].rank",
    );
    expect(
        experts.register_expert(expert("ann", vec![], 1001)).await,
        Code::InvalidArgument,
        "expert.capacity",
    );
    expect(
        experts
            .get_expert(pb::GetExpertRequest { id: "ann".into() })
            .await,
        Code::NotFound,
        "ann",
    );
    // Capacity 0 means the default.
    let ann = experts
        .register_expert(expert("ann", vec![skill("net", L2)], 0))
        .await
        .unwrap();
    assert_eq!(ann.into_inner().capacity, 5);
    expect(
        server.subscribe_with("ann", &["NET"], 0).await,
        Code::InvalidArgument,
        "channels[0]",
    );
    expect(
        server.subscribe_with("nobody", &[], 0).await,
        Code::NotFound,
        "nobody",
    );
    expect(
        server.subscribe_with("ann", &[], 1_000_000).await,
        Code::InvalidArgument,
        "after_position",
    );
    expect(
        experts
            .set_presence(pb::SetPresenceRequest {
                expert_id: "ann".into(),
                presence: 0,
            })
            .await,
        Code::InvalidArgument,
        "presence",
    );
    expect(
        experts
            .list_experts(pb::ListExpertsRequest {
                page_size: 10,
                page_token: "???".into(),
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );
    // None of it changed ann.
    let ann = server.expert("ann").await;
    assert_eq!(ann.channels, Vec::<String>::new());
    assert_eq!(ann.presence, pb::Presence::Available as i32);
}

#[tokio::test]
async fn bad_ticket_operations_are_refused_and_change_nothing() {
    let server = spawn_server().await;
    server.register("ann", &[("net", L2)], 5).await;
    let t = server.create("unowned", &[("net", L1)], P3).await;
    let mut tickets = server.tickets.clone();

    expect(
        tickets
            .get_ticket(pb::GetTicketRequest { id: "T-999".into() })
            .await,
        Code::NotFound,
        "T-999",
    );
    expect(
        tickets
            .get_ticket(pb::GetTicketRequest { id: "999".into() })
            .await,
        Code::InvalidArgument,
        "id",
    );
    expect(server.claim("T-999", "ann").await, Code::NotFound, "T-999");
    expect(
        server.claim(&t.id, "nobody").await,
        Code::NotFound,
        "nobody",
    );
    expect(
        server.claim(&t.id, "").await,
        Code::InvalidArgument,
        "expert_id",
    );
    expect(
        server
            .set_status(&t.id, "ann", pb::TicketStatus::Resolved)
            .await,
        Code::FailedPrecondition,
        "not owned",
    );
    expect(
        server
            .set_status(&t.id, "ann", pb::TicketStatus::Unspecified)
            .await,
        Code::InvalidArgument,
        "status",
    );
    expect(
        tickets
            .update_status(pb::UpdateStatusRequest {
                ticket_id: t.id.clone(),
                expert_id: "ann".into(),
                status: 42,
                note: String::new(),
                vendor: None,
                knowledge: None,
            })
            .await,
        Code::InvalidArgument,
        "status",
    );
    expect(
        server
            .post(&t.id, "ann", "x", pb::Visibility::Unspecified)
            .await,
        Code::InvalidArgument,
        "visibility",
    );
    expect(
        server
            .post(&t.id, "ann", "  ", pb::Visibility::Public)
            .await,
        Code::InvalidArgument,
        "body",
    );
    expect(
        server
            .post(&t.id, "stranger", "hi", pb::Visibility::Public)
            .await,
        Code::NotFound,
        "stranger",
    );
    expect(
        tickets
            .request_help(pb::RequestHelpRequest {
                ticket_id: t.id.clone(),
                expert_id: "ann".into(),
                skills: vec![pb::SkillRequirement {
                    tag: "db".into(),
                    min_rank: L1,
                }],
                note: String::new(),
            })
            .await,
        Code::PermissionDenied,
        "owner or a swarm member",
    );
    expect(
        tickets
            .list_tickets(pb::ListTicketsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );
    expect(
        tickets
            .list_tickets(pb::ListTicketsRequest {
                status: 17,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "status",
    );
    expect(
        tickets
            .watch_ticket(pb::WatchTicketRequest {
                ticket_id: "T-999".into(),
                after_seq: 0,
            })
            .await,
        Code::NotFound,
        "T-999",
    );
    // Ranks: ann holds net:L2, the ticket below needs L3.
    let senior = server.create("senior only", &[("net", L3)], P3).await;
    expect(
        server.claim(&senior.id, "ann").await,
        Code::PermissionDenied,
        "net",
    );

    let after = server.get(&t.id).await;
    assert_eq!(after.version, 1, "nothing was recorded on the ticket");
    assert_eq!(after.status, pb::TicketStatus::Open as i32);
}

#[tokio::test]
async fn errors_carry_rich_details_for_programs() {
    use tonic_types::StatusExt;
    let server = spawn_server().await;
    let mut tickets = server.tickets.clone();
    let status = tickets
        .create_ticket(pb::CreateTicketRequest {
            title: String::new(),
            ..create_request("x", &[("network", L1)], P3)
        })
        .await
        .unwrap_err();
    let bad = status
        .get_details_bad_request()
        .expect("BadRequest details");
    assert_eq!(bad.field_violations.len(), 1);
    assert_eq!(bad.field_violations[0].field, "title");

    server.register("ann", &[("network", L2)], 5).await;
    server.register("bob", &[("network", L2)], 5).await;
    let t = server.create("dns", &[("network", L1)], P3).await;
    server.claim(&t.id, "ann").await.unwrap();
    let status = server.claim(&t.id, "bob").await.unwrap_err();
    assert!(
        status.message().contains("already owned by ann"),
        "{status:?}"
    );
    let info = status.get_details_error_info().expect("ErrorInfo details");
    assert_eq!(info.reason, "ALREADY_OWNED");
    assert_eq!(info.domain, swarmdesk::rpc::ERROR_DOMAIN);
    assert_eq!(
        info.metadata.get("owner_id").map(String::as_str),
        Some("ann")
    );
    assert_eq!(info.metadata.get("ticket_id"), Some(&t.id));
}
