//! TLS and mutual TLS with certificates made for the test (rcgen): the
//! right CA connects, no CA or plaintext is refused, and a server asking
//! for client certificates refuses a client without one.

mod common;

use common::certs::Authority;
use common::*;
use rcgen::ExtendedKeyUsagePurpose;
use swarmdesk::client::ClientTls;
use swarmdesk::rpc::pb;
use swarmdesk::rpc::pb::expert_service_client::ExpertServiceClient;
use swarmdesk::server::{ServerConfig, TlsFiles};

struct Fixture {
    _dir: tempfile::TempDir,
    ca: Authority,
    /// Trusted by nobody.
    stranger: Authority,
    server: TestServer,
    url: String,
}

async fn tls_server(mutual: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(dir.path(), "desk");
    let stranger = Authority::new(dir.path(), "stranger");
    let (cert, key) = ca.leaf("server", ExtendedKeyUsagePurpose::ServerAuth);
    let config = ServerConfig {
        tls: Some(TlsFiles {
            cert,
            key,
            client_ca: mutual.then(|| ca.ca.clone()),
        }),
        ..ServerConfig::new(dir.path().join("data"))
    };
    let client_tls = ClientTls {
        ca: Some(ca.ca.clone()),
        ..Default::default()
    };
    let client_tls = if mutual {
        let (cert, key) = ca.leaf("probe", ExtendedKeyUsagePurpose::ClientAuth);
        ClientTls {
            cert: Some(cert),
            key: Some(key),
            ..client_tls
        }
    } else {
        client_tls
    };
    let server = spawn_server_over(config, client_tls).await;
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    Fixture {
        _dir: dir,
        ca,
        stranger,
        server,
        url,
    }
}

/// ListExperts over a new connection made with `tls`: Ok, or the error
/// from connecting or from the call.
async fn list_experts(fixture: &Fixture, url: &str, tls: &ClientTls) -> Result<usize, String> {
    let channel = swarmdesk::client::connect(url, tls)
        .await
        .map_err(|e| e.to_string())?;
    let channel =
        swarmdesk::client::with_token(channel, Some(&fixture.server.admin_token)).unwrap();
    ExpertServiceClient::new(channel)
        .list_experts(pb::ListExpertsRequest::default())
        .await
        .map(|r| r.into_inner().experts.len())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_the_ca_connects_and_others_are_refused() {
    let fixture = tls_server(false).await;
    fixture.server.register("ann", &[("network", L2)], 5).await;
    let trusting = ClientTls {
        ca: Some(fixture.ca.ca.clone()),
        ..Default::default()
    };
    assert_eq!(list_experts(&fixture, &fixture.url, &trusting).await, Ok(1));

    // The system's roots do not know the test CA.
    let native = list_experts(&fixture, &fixture.url, &ClientTls::default()).await;
    assert!(native.is_err(), "{native:?}");
    // Trusting another CA is no better.
    let wrong_ca = ClientTls {
        ca: Some(fixture.stranger.ca.clone()),
        ..Default::default()
    };
    let refused = list_experts(&fixture, &fixture.url, &wrong_ca).await;
    assert!(refused.is_err(), "{refused:?}");
    // Plaintext to a TLS port gets nowhere.
    let plain_url = format!("http://127.0.0.1:{}", fixture.server.addr.port());
    let plain = list_experts(&fixture, &plain_url, &ClientTls::default()).await;
    assert!(plain.is_err(), "{plain:?}");
    drop(fixture.server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate_from_its_ca() {
    let fixture = tls_server(true).await;
    let server_ca_only = ClientTls {
        ca: Some(fixture.ca.ca.clone()),
        ..Default::default()
    };
    let anonymous = list_experts(&fixture, &fixture.url, &server_ca_only).await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");

    let (cert, key) = fixture
        .stranger
        .leaf("intruder", ExtendedKeyUsagePurpose::ClientAuth);
    let foreign = ClientTls {
        cert: Some(cert),
        key: Some(key),
        ..server_ca_only.clone()
    };
    let refused = list_experts(&fixture, &fixture.url, &foreign).await;
    assert!(
        refused.is_err(),
        "a certificate from another CA: {refused:?}"
    );

    let (cert, key) = fixture
        .ca
        .leaf("agent-desktop", ExtendedKeyUsagePurpose::ClientAuth);
    let member = ClientTls {
        cert: Some(cert),
        key: Some(key),
        ..server_ca_only
    };
    assert_eq!(list_experts(&fixture, &fixture.url, &member).await, Ok(0));
    drop(fixture.server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_tls_with_ca_and_client_certificate_flags() {
    let fixture = tls_server(true).await;
    let (cert, key) = fixture.ca.leaf("cli", ExtendedKeyUsagePurpose::ClientAuth);
    let url = fixture.url.clone();
    let token = fixture.server.admin_token.clone();
    let ca = fixture.ca.ca.clone();
    let run = |with_cert: bool| {
        let mut args: Vec<String> = vec!["token".into(), "list".into(), "--server".into()];
        args.push(url.clone());
        args.push("--ca".into());
        args.push(ca.display().to_string());
        if with_cert {
            args.extend(["--cert".into(), cert.display().to_string()]);
            args.extend(["--key".into(), key.display().to_string()]);
        }
        run_cli(args, Some(token.clone()))
    };
    let (ok, stdout, stderr) = run(true).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("first admin"), "{stdout}");
    let (ok, _, stderr) = run(false).await;
    assert!(!ok, "mutual TLS without a client certificate must fail");
    assert!(!stderr.is_empty());
    drop(fixture.server.stop().await);
}
