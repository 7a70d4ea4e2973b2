//! What an admin relies on: health, reflection, configuration layers and
//! clear start-up errors.

mod common;

use std::process::{Command, Stdio};

use common::*;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

#[tokio::test]
async fn health_is_serving_for_the_server_and_each_service() {
    let server = spawn_server().await;
    let mut health = HealthClient::new(connect(server.addr).await);
    for service in [
        "",
        "swarmdesk.v1.TicketService",
        "swarmdesk.v1.ExpertService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_every_service() {
    let server = spawn_server().await;
    let mut reflection = ServerReflectionClient::new(connect(server.addr).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "swarmdesk.v1.TicketService",
        "swarmdesk.v1.ExpertService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.contains("BenchBaseline")),
        "the benchmark's baseline is not part of the API: {names:?}"
    );
}

fn swarmdesk(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_remove("SWARMDESK_LISTEN")
        .env_remove("SWARMDESK_DATA_DIR")
        .env_remove("SWARMDESK_CACHE_MB")
        .env_remove("SWARMDESK_STREAM_BUFFER")
        .env_remove("SWARMDESK_CONFIG")
        .stdin(Stdio::null());
    command
}

fn output(command: &mut Command) -> (bool, String, String) {
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn configuration_precedence_is_flag_then_environment_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("swarmdesk.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:7000\"\ncache_mb = 64\nstream_buffer = 8\nshutdown_grace = 3\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (ok, stdout, stderr) = output(
        swarmdesk(&["config", "print", "--config", file, "--stream-buffer", "16"])
            .env("SWARMDESK_CACHE_MB", "128")
            .env("SWARMDESK_STREAM_BUFFER", "32"),
    );
    assert!(ok, "{stderr}");
    let printed: toml::Table = toml::from_str(&stdout).unwrap();
    assert_eq!(
        printed["listen"].as_str(),
        Some("127.0.0.1:7000"),
        "file over default"
    );
    assert_eq!(
        printed["cache_mb"].as_integer(),
        Some(128),
        "environment over file"
    );
    assert_eq!(
        printed["stream_buffer"].as_integer(),
        Some(16),
        "flag over environment"
    );
    assert_eq!(printed["shutdown_grace"].as_integer(), Some(3), "file");
    assert_eq!(
        printed["data_dir"].as_str(),
        Some("./swarmdesk-data"),
        "default"
    );

    // What config print prints loads again as a config file.
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &stdout).unwrap();
    let (ok, reprinted, stderr) = output(&mut swarmdesk(&[
        "config",
        "print",
        "--config",
        again.to_str().unwrap(),
    ]));
    assert!(ok, "{stderr}");
    assert_eq!(reprinted, stdout);
}

#[test]
fn unknown_config_keys_are_an_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:7000\"\nlisten_adress = \"x\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = output(&mut swarmdesk(&[
        "config",
        "print",
        "--config",
        file.to_str().unwrap(),
    ]));
    assert!(!ok);
    assert!(stderr.contains("listen_adress"), "{stderr}");
}

#[test]
fn start_up_refuses_a_data_dir_that_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let (ok, _, stderr) = output(&mut swarmdesk(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        file.to_str().unwrap(),
    ]));
    assert!(!ok);
    assert!(
        stderr.contains("data dir") && stderr.contains("not-a-dir"),
        "{stderr}"
    );
}

#[test]
fn start_up_refuses_a_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = output(&mut swarmdesk(&[
        "serve",
        "--listen",
        &addr,
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]));
    assert!(!ok);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn start_up_refuses_data_from_a_newer_version() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.insert(b"m/schema", &99u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let (ok, _, stderr) = output(&mut swarmdesk(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]));
    assert!(!ok);
    assert!(stderr.contains("newer swarmdesk"), "{stderr}");
}

/// Runs the binary off the async workers, so the in-process server it
/// talks to keeps running.
async fn output_async(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        output(&mut swarmdesk(&args))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_probes_a_server() {
    let server = spawn_server().await;
    let url = format!("http://{}", server.addr);
    let args = vec!["health".to_owned(), "--server".to_owned(), url.clone()];
    let (ok, stdout, stderr) = output_async(args.clone()).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "server: SERVING");
    drop(server.stop().await);
    let (ok, _, stderr) = output_async(args).await;
    assert!(!ok, "a stopped server is not healthy");
    assert!(stderr.contains("cannot reach"), "{stderr}");
}

#[tokio::test]
async fn health_watch_sees_serving_then_not_serving_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = swarmdesk::server::ServerConfig {
        // The watch stream itself holds the drain open until the grace ends.
        shutdown_grace: std::time::Duration::from_millis(500),
        ..swarmdesk::server::ServerConfig::new(dir.path().join("data"))
    };
    let server = spawn_server_with(config).await;
    let mut watch = HealthClient::new(connect(server.addr).await)
        .watch(HealthCheckRequest {
            service: "swarmdesk.v1.TicketService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap().status;
    assert_eq!(first, ServingStatus::Serving as i32);
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let next = watch.message().await;
        let _ = tx.send(next.ok().flatten().map(|m| m.status));
    });
    drop(server.stop().await);
    let during_shutdown = tokio::time::timeout(WAIT, rx).await.unwrap().unwrap();
    assert_eq!(during_shutdown, Some(ServingStatus::NotServing as i32));
}
