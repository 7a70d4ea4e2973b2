//! Online backup, restore into an empty dir, identical state; a damaged
//! backup is refused and leaves nothing behind.

mod common;

use common::*;
use swarmdesk::rpc::pb;
use swarmdesk::server::ServerConfig;

async fn backup(server: &TestServer, file: &std::path::Path) -> (bool, String, String) {
    let url = format!("http://{}", server.addr);
    let args = vec![
        "backup".into(),
        "--server".into(),
        url,
        "--out".into(),
        file.display().to_string(),
    ];
    run_cli(args, Some(server.admin_token.clone())).await
}

async fn restore(file: &std::path::Path, target: &std::path::Path) -> (bool, String, String) {
    let args = vec![
        "restore".into(),
        "--from".into(),
        file.display().to_string(),
        "--data-dir".into(),
        target.display().to_string(),
    ];
    run_cli(args, None).await
}

/// Everything a client can see of the state.
async fn state_of(
    server: &TestServer,
    expert: &str,
    events: usize,
) -> (
    Vec<pb::Ticket>,
    Vec<(u64, String, u64, i32)>,
    Vec<pb::Expert>,
    Vec<pb::Token>,
) {
    let tickets = server
        .tickets
        .clone()
        .list_tickets(pb::ListTicketsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tickets;
    let mut experts = server
        .experts
        .clone()
        .list_experts(pb::ListExpertsRequest {
            page_size: 500,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .experts;
    for e in &mut experts {
        e.online = false; // being online is not stored state
    }
    let mut stream = server.subscribe_with(expert, &[], 0).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..events {
        let e = next(&mut stream).await;
        seen.push((
            e.position,
            e.event.as_ref().unwrap().ticket_id.clone(),
            e.event.as_ref().unwrap().ticket_seq,
            e.reason,
        ));
    }
    let mut tokens = server
        .admin
        .clone()
        .list_tokens(pb::ListTokensRequest {
            include_revoked: true,
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    for t in &mut tokens {
        t.last_used_at = None; // kept in memory, stored once a minute
    }
    (tickets, seen, experts, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_restore_gives_an_identical_server() {
    let server = spawn_server().await;
    server.register("ann", &[("network", L2)], 5).await;
    server
        .register("bob", &[("network", L3), ("database", L1)], 5)
        .await;
    let _bob = server
        .subscribe_with("bob", &["network", "database"], 0)
        .await
        .unwrap();
    let t = server.create("vpn", &[("network", L1)], P2).await;
    server.create("db", &[("database", L2)], P3).await;
    server
        .post(&t.id, "customer-1", "help", pb::Visibility::Public)
        .await
        .unwrap();
    server
        .post(&t.id, "bob", "on it", pb::Visibility::Internal)
        .await
        .unwrap();
    server.token(pb::Role::Expert, "ann", "").await;
    let (revoked_id, revoked) = server.new_token(pb::Role::Bot, "", "chat").await;
    server.revoke(&revoked_id).await;
    let before = state_of(&server, "bob", 4).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("swarmdesk.backup");
    let (ok, stdout, stderr) = backup(&server, &file).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("backup written"), "{stdout}");
    let admin_token_file = server.data_dir.join("admin.token");
    let kept_admin_token = dir.path().join("admin.token.kept");
    std::fs::copy(&admin_token_file, &kept_admin_token).unwrap();
    drop(server.stop().await);

    let restored_dir = dir.path().join("restored");
    let (ok, _, stderr) = restore(&file, &restored_dir).await;
    assert!(ok, "{stderr}");
    // Restoring over a store is refused.
    let (ok, _, stderr) = restore(&file, &restored_dir).await;
    assert!(!ok);
    assert!(stderr.contains("not empty"), "{stderr}");

    // Secrets are not in a backup, only their hashes: the admin keeps
    // using the token they had.
    std::fs::copy(&kept_admin_token, restored_dir.join("admin.token")).unwrap();
    let restored = spawn_server_with(ServerConfig::new(&restored_dir)).await;
    let after = state_of(&restored, "bob", 4).await;
    assert_eq!(before.0, after.0, "tickets");
    assert_eq!(before.1, after.1, "events with their positions");
    assert_eq!(before.2, after.2, "experts, loads and channel memberships");
    assert_eq!(before.3.len(), 3, "admin, ann and the revoked bot");
    assert_eq!(before.3, after.3, "tokens, revoked ones included");
    assert!(
        restored
            .as_token(&revoked)
            .tickets
            .list_tickets(pb::ListTicketsRequest::default())
            .await
            .is_err(),
        "a revoked token stays revoked after restore"
    );
    drop(restored.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_is_refused_and_leaves_nothing() {
    let server = spawn_server().await;
    server.register("ann", &[("network", L2)], 5).await;
    server.create("vpn", &[("network", L1)], P2).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b");
    let (ok, _, stderr) = backup(&server, &file).await;
    assert!(ok, "{stderr}");
    let good = std::fs::read(&file).unwrap();
    for (name, bytes) in [
        ("truncated", good[..good.len() - 7].to_vec()),
        ("corrupted", {
            let mut b = good.clone();
            let mid = b.len() / 2;
            b[mid] ^= 0xff;
            b
        }),
    ] {
        let damaged = dir.path().join(name);
        std::fs::write(&damaged, bytes).unwrap();
        let target = dir.path().join(format!("{name}-data"));
        let (ok, _, stderr) = restore(&damaged, &target).await;
        assert!(!ok, "{name} accepted");
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(!target.exists(), "{name}: nothing may be left behind");
    }
}
