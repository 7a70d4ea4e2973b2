//! The real binary: a clean restart and a kill -9 keep every acknowledged
//! ticket, event, assignment, expert and channel membership, with the same
//! positions.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::*;
use common::*;
use swarmdesk::client::AuthedChannel;
use swarmdesk::rpc::pb;
use swarmdesk::rpc::pb::expert_service_client::ExpertServiceClient;
use swarmdesk::rpc::pb::ticket_service_client::TicketServiceClient;

async fn clients(
    addr: SocketAddr,
    data_dir: &std::path::Path,
) -> (
    TicketServiceClient<AuthedChannel>,
    ExpertServiceClient<AuthedChannel>,
) {
    let c = Clients::new(connect(addr).await, Some(&admin_token(data_dir)));
    (c.tickets, c.experts)
}

async fn register(experts: &mut ExpertServiceClient<AuthedChannel>, id: &str, tag: &str) {
    experts
        .register_expert(pb::RegisterExpertRequest {
            expert: Some(pb::Expert {
                id: id.into(),
                display_name: id.into(),
                skills: vec![pb::Skill {
                    tag: tag.into(),
                    rank: L2,
                }],
                capacity: 1000,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

/// Every ticket and event as the server reports them now.
async fn snapshot(
    tickets: &mut TicketServiceClient<AuthedChannel>,
    experts: &mut ExpertServiceClient<AuthedChannel>,
    expert: &str,
    expected_events: usize,
) -> (Vec<pb::Ticket>, Vec<(u64, String, u64)>, pb::Expert) {
    let page = tickets
        .list_tickets(pb::ListTicketsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut stream = experts
        .subscribe(pb::SubscribeRequest {
            expert_id: expert.into(),
            channels: vec![],
            after_position: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    for _ in 0..expected_events {
        let e = next(&mut stream).await;
        let event = e.event.unwrap();
        events.push((e.position, event.ticket_id, event.ticket_seq));
    }
    let who = experts
        .get_expert(pb::GetExpertRequest { id: expert.into() })
        .await
        .unwrap()
        .into_inner();
    (page.tickets, events, who)
}

#[tokio::test]
async fn clean_restart_of_the_binary_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let (mut tickets, mut experts) = clients(server.addr, dir.path()).await;
    register(&mut experts, "ann", "network").await;
    let mut ann = experts
        .subscribe(pb::SubscribeRequest {
            expert_id: "ann".into(),
            channels: vec!["network".into(), "office".into()],
            after_position: 0,
        })
        .await
        .unwrap()
        .into_inner();
    for i in 0..5 {
        tickets
            .create_ticket(create_request(&format!("t{i}"), &[("network", L1)], P2))
            .await
            .unwrap();
        next(&mut ann).await;
    }
    let before = snapshot(&mut tickets, &mut experts, "ann", 5).await;
    assert!(before.0.iter().all(|t| t.owner_id == "ann"));

    sigterm(&server.child);
    // The open stream ends with UNAVAILABLE naming where to resume.
    let end = tokio::time::timeout(WAIT, ann.message())
        .await
        .expect("stream did not end on shutdown");
    let status = end.expect_err("stream should end with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status
            .metadata()
            .get(swarmdesk::rpc::LAST_POSITION_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let mut server = server;
    let exit = wait_exit(&mut server.child).await;
    assert!(exit.success(), "clean shutdown exits 0: {exit:?}");

    let server = start(dir.path());
    let (mut tickets, mut experts) = clients(server.addr, dir.path()).await;
    let after = snapshot(&mut tickets, &mut experts, "ann", 5).await;
    assert_eq!(before.0, after.0, "tickets");
    assert_eq!(before.1, after.1, "events and their positions");
    assert_eq!(after.2.owned_open, 5);
    assert_eq!(
        after.2.channels,
        vec!["network".to_owned(), "office".to_owned()]
    );
    let mut server = server;
    sigterm(&server.child);
    wait_exit(&mut server.child).await;
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let (tickets, mut experts) = clients(server.addr, dir.path()).await;
    register(&mut experts, "ann", "network").await;
    let _ann = experts
        .subscribe(pb::SubscribeRequest {
            expert_id: "ann".into(),
            channels: vec![],
            after_position: 0,
        })
        .await
        .unwrap()
        .into_inner();

    // 16 writers create tickets as fast as they can; the server is killed
    // mid-flight. Whatever was acknowledged must be there afterwards.
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut writers = Vec::new();
    for w in 0..16 {
        let mut client = tickets.clone();
        let acked = acked_tx.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let mut request = create_request(&format!("w{w}-{i}"), &[("network", L1)], P3);
                request.request_id = format!("w{w}-{i}");
                match client.create_ticket(request).await {
                    Ok(reply) => {
                        let t = reply.into_inner().ticket.unwrap();
                        let _ = acked.send((t.id, t.title, t.owner_id));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    drop(acked_tx);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let mut acknowledged = Vec::new();
    while let Some(a) = acked_rx.recv().await {
        acknowledged.push(a);
    }
    assert!(
        acknowledged.len() > 50,
        "too few writes to mean anything: {}",
        acknowledged.len()
    );

    let server = start(dir.path());
    let (mut tickets, mut experts) = clients(server.addr, dir.path()).await;
    for (id, title, owner) in &acknowledged {
        let t = tickets
            .get_ticket(pb::GetTicketRequest { id: id.clone() })
            .await
            .unwrap_or_else(|s| panic!("acknowledged ticket {id} lost: {s:?}"))
            .into_inner();
        assert_eq!(&t.title, title);
        assert_eq!(&t.owner_id, owner, "assignment of {id}");
    }
    // The expert's load matches what survived (no half-applied commit).
    let ann = experts
        .get_expert(pb::GetExpertRequest { id: "ann".into() })
        .await
        .unwrap()
        .into_inner();
    let mut owned = 0;
    let mut token = String::new();
    loop {
        let page = tickets
            .list_tickets(pb::ListTicketsRequest {
                owner_id: "ann".into(),
                page_size: 500,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        owned += page.tickets.len() as u32;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(ann.owned_open, owned);
    let acknowledged_to_ann = acknowledged.iter().filter(|(_, _, o)| o == "ann").count();
    assert!(owned as usize >= acknowledged_to_ann);
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path());
    let _ = clients(first.addr, dir.path()).await;
    let second = Command::new(binary())
        .args(["serve", "--listen", &free_port().to_string(), "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("in use"), "{stderr}");
    drop(first);
}
