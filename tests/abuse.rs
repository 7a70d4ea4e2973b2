//! Limits that hold under abuse: streams per token and per server, the
//! request rate per token, a connection cap, garbage on the wire, and a
//! flood from one principal that leaves another's work flowing.

mod common;

use std::num::NonZeroU32;
use std::time::Duration;

use common::*;
use swarmdesk::auth::AuthLimits;
use swarmdesk::rpc::pb;
use swarmdesk::server::ServerConfig;
use tokio::io::AsyncWriteExt;

use tonic::Code;
use tonic_types::StatusExt;

async fn spawn_with_limits(
    limits: AuthLimits,
    tweak: impl FnOnce(&mut ServerConfig),
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig {
        limits,
        ..ServerConfig::new(dir.path().join("data"))
    };
    tweak(&mut config);
    let mut server = spawn_server_with(config).await;
    server.keep_dir(dir);
    server
}

fn subscribe_request(expert: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        expert_id: expert.into(),
        channels: vec![],
        after_position: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_holds_at_most_sixteen_streams() {
    let server = spawn_server().await;
    server.register("ann", &[("network", L2)], 5).await;
    server.register("bob", &[("network", L2)], 5).await;
    let ann = server.as_token(&server.token(pb::Role::Expert, "ann", "").await);
    let bob = server.as_token(&server.token(pb::Role::Expert, "bob", "").await);
    let ticket = server.create("vpn", &[("network", L1)], P3).await;
    let mut subscriptions = Vec::new();
    for _ in 0..12 {
        subscriptions.push(
            ann.experts
                .clone()
                .subscribe(subscribe_request("ann"))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    // Watches count too.
    let mut watches = Vec::new();
    for _ in 0..4 {
        watches.push(
            ann.tickets
                .clone()
                .watch_ticket(pb::WatchTicketRequest {
                    ticket_id: ticket.id.clone(),
                    after_seq: 0,
                })
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let refused = ann
        .experts
        .clone()
        .subscribe(subscribe_request("ann"))
        .await
        .expect_err("a 17th stream is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("16"), "{refused:?}");
    assert_eq!(
        refused.get_error_details().error_info().unwrap().reason,
        "TOO_MANY_STREAMS"
    );
    // Another token is not affected.
    bob.experts
        .clone()
        .subscribe(subscribe_request("bob"))
        .await
        .unwrap();
    // Closing one frees its place (the server notices the close shortly).
    watches.pop();
    let reopened = tokio::time::timeout(WAIT, async {
        loop {
            match ann
                .experts
                .clone()
                .subscribe(subscribe_request("ann"))
                .await
            {
                Ok(stream) => return stream,
                Err(s) if s.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(s) => panic!("{s:?}"),
            }
        }
    })
    .await;
    assert!(reopened.is_ok(), "a closed stream's place was never freed");
    drop((subscriptions, watches));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_holds_at_most_its_stream_cap() {
    let limits = AuthLimits {
        max_streams: 3,
        ..AuthLimits::default()
    };
    let server = spawn_with_limits(limits, |_| {}).await;
    server.register("ann", &[("network", L2)], 5).await;
    server.register("bob", &[("network", L2)], 5).await;
    let ann = server.as_token(&server.token(pb::Role::Expert, "ann", "").await);
    let bob = server.as_token(&server.token(pb::Role::Expert, "bob", "").await);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            ann.experts
                .clone()
                .subscribe(subscribe_request("ann"))
                .await
                .unwrap(),
        );
    }
    let refused = bob
        .experts
        .clone()
        .subscribe(subscribe_request("bob"))
        .await
        .expect_err("the server is full");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("maximum of 3"), "{refused:?}");
    // Unary calls are not streams: they still work.
    server.expert("bob").await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_is_told_when_to_retry_and_others_are_not_slowed() {
    let limits = AuthLimits {
        requests_per_second: NonZeroU32::new(2).unwrap(),
        request_burst: NonZeroU32::new(5).unwrap(),
        ..AuthLimits::default()
    };
    let server = spawn_with_limits(limits, |_| {}).await;
    let noisy = server.as_token(&server.token(pb::Role::Supervisor, "", "").await);
    let calm = server.as_token(&server.token(pb::Role::Supervisor, "", "").await);
    let list = |c: &Clients| {
        let mut experts = c.experts.clone();
        async move {
            experts
                .list_experts(pb::ListExpertsRequest::default())
                .await
        }
    };
    let mut ok = 0;
    let mut limited = None;
    for _ in 0..20 {
        match list(&noisy).await {
            Ok(_) => ok += 1,
            Err(status) => {
                limited = Some(status);
                break;
            }
        }
    }
    assert!(
        (5..=7).contains(&ok),
        "the burst is 5 (plus refill), got {ok}"
    );
    let limited = limited.expect("the rate limit never answered");
    assert_eq!(limited.code(), Code::ResourceExhausted);
    let details = limited.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "RATE_LIMITED");
    let retry = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a retry hint");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );
    // Another token has its own bucket.
    list(&calm).await.unwrap();
    // After the hint, the noisy token may call again.
    tokio::time::sleep(retry).await;
    list(&noisy).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_for_a_free_place() {
    let server = spawn_with_limits(AuthLimits::default(), |c| c.max_connections = 3).await;
    // The test's own client holds one place; two idle sockets take the rest.
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    // Give the accept loop time to take them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = format!("http://{}", server.addr);
    let token = server.admin_token.clone();
    let waiting = tokio::spawn(async move {
        let channel = swarmdesk::client::connect(&url, &Default::default()).await?;
        let clients = Clients::new(channel, Some(&token));
        clients
            .experts
            .clone()
            .list_experts(pb::ListExpertsRequest::default())
            .await
            .map_err(|s| swarmdesk::client::ClientError::connect("call", &s))
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a fourth connection was served over a cap of 3"
    );
    // The existing connection is unaffected.
    server
        .experts
        .clone()
        .list_experts(pb::ListExpertsRequest::default())
        .await
        .unwrap();
    drop(idle.pop());
    tokio::time::timeout(WAIT, waiting)
        .await
        .expect("a freed place was never given to the waiting client")
        .unwrap()
        .unwrap();
}

/// Bytes that are not HTTP/2, and HTTP/2 frames that are not valid.
async fn send_garbage(addr: std::net::SocketAddr, n: usize) {
    for i in 0..n {
        let Ok(mut socket) = tokio::net::TcpStream::connect(addr).await else {
            continue;
        };
        let bytes: Vec<u8> = if i % 2 == 0 {
            (0..4096u32)
                .map(|b| (b.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect()
        } else {
            // The preface, then a frame whose length runs past its content.
            let mut b = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            b.extend_from_slice(&[0xff, 0xff, 0xff, 0x01, 0x05, 0x00, 0x00, 0x00, 0x01]);
            b.extend_from_slice(&[0xab; 64]);
            b
        };
        let _ = socket.write_all(&bytes).await;
        let _ = socket.flush().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_principal_leaves_another_principals_work_flowing() {
    let server = spawn_server().await;
    server.register("ann", &[("network", L2)], 1000).await;
    server.register("nora", &[("network", L3)], 1000).await;
    let ann = server.as_token(&server.token(pb::Role::Expert, "ann", "").await);
    let nora = server.as_token(&server.token(pb::Role::Expert, "nora", "").await);
    let spam_bot = server.as_token(&server.token(pb::Role::Bot, "", "spam").await);
    let chat = server.as_token(&server.token(pb::Role::Bot, "", "chat").await);

    // The abuser: sixteen streams never read, then as many streams as it
    // can get refused, creates and reads in a loop, and garbage on new
    // connections.
    let mut unread = Vec::new();
    for _ in 0..16 {
        unread.push(
            nora.experts
                .clone()
                .subscribe(subscribe_request("nora"))
                .await
                .unwrap(),
        );
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let mut flood = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let (spam_bot, nora, stop) = (spam_bot.clone(), nora.clone(), stop.clone());
        flood.spawn(async move {
            let mut refused = 0u64;
            while !stop.is_cancelled() {
                let created = spam_bot
                    .tickets
                    .clone()
                    .create_ticket(create_request("spam", &[("network", L1)], P3))
                    .await;
                refused += u64::from(created.is_err());
                let _ = spam_bot
                    .tickets
                    .clone()
                    .list_tickets(pb::ListTicketsRequest::default())
                    .await;
                if worker == 0 {
                    let extra = nora
                        .experts
                        .clone()
                        .subscribe(subscribe_request("nora"))
                        .await;
                    assert_eq!(extra.err().map(|s| s.code()), Some(Code::ResourceExhausted));
                }
            }
            refused
        });
    }
    let addr = server.addr;
    let garbage_stop = stop.clone();
    flood.spawn(async move {
        while !garbage_stop.is_cancelled() {
            send_garbage(addr, 20).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        0
    });

    // The other principals: an expert who reads, and a bot creating tickets.
    let mut swarm = ann
        .experts
        .clone()
        .subscribe(subscribe_request("ann"))
        .await
        .unwrap()
        .into_inner();
    let mut wanted = std::collections::BTreeSet::new();
    for i in 0..20 {
        let ticket = tokio::time::timeout(
            WAIT,
            chat.tickets.clone().create_ticket(create_request(
                &format!("real {i}"),
                &[("network", L1)],
                P2,
            )),
        )
        .await
        .expect("a create by another principal did not complete")
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
        wanted.insert(ticket.id);
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while !wanted.is_empty() {
            let event = next(&mut swarm).await;
            wanted.remove(&event.event.unwrap().ticket_id);
        }
    })
    .await
    .expect("the reading expert did not get every real ticket");
    stop.cancel();
    while let Some(done) = flood.join_next().await {
        done.unwrap();
    }
    // The unread streams are still open, behind, not dropped: the server
    // made them catch up from the store rather than buffer without end.
    drop(unread);
    // And the server still answers.
    server.expert("ann").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_and_frees_its_place() {
    use tokio::io::AsyncReadExt;
    let server = spawn_with_limits(AuthLimits::default(), |c| {
        c.max_connections = 2;
        c.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    // The test's client holds one place; a silent socket takes the other.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // The server speaks first (its HTTP/2 settings), then hangs up.
    let mut heard = Vec::new();
    tokio::time::timeout(WAIT, silent.read_to_end(&mut heard))
        .await
        .expect("a silent connection was kept open")
        .ok();
    // Its place went to a real client.
    let url = format!("http://{}", server.addr);
    let channel = tokio::time::timeout(WAIT, swarmdesk::client::connect(&url, &Default::default()))
        .await
        .unwrap()
        .unwrap();
    Clients::new(channel, Some(&server.admin_token))
        .experts
        .clone()
        .list_experts(pb::ListExpertsRequest::default())
        .await
        .unwrap();
    // The server's own long-lived client, which spoke at once, is unaffected.
    server
        .experts
        .clone()
        .list_experts(pb::ListExpertsRequest::default())
        .await
        .unwrap();
}
