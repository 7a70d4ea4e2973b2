//! The metrics endpoint counts a known sequence of calls. (Its own test
//! binary: the metrics registry is per process.)

mod common;

use common::*;
use swarmdesk::server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

async fn scrape(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: swarmdesk\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// The value of the sample line that starts with `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_a_known_sequence_of_calls() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = ServerConfig {
        metrics_listen: Some(metrics_addr),
        ..ServerConfig::new(dir.path().join("data"))
    };
    let server = spawn_server_with(config).await;
    server.register("ann", &[("network", L2)], 5).await;
    let a = server.create("one", &[("network", L1)], P3).await;
    server.create("two", &[("network", L1)], P3).await;
    server.claim(&a.id, "ann").await.unwrap();
    assert_eq!(
        server.claim(&a.id, "ann").await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let missing = server
        .tickets
        .clone()
        .get_ticket(swarmdesk::rpc::pb::GetTicketRequest { id: "T-99".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let response = scrape(metrics_addr, "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let rpc = |method: &str, code: &str| {
        value(
            &response,
            &format!(
                "swarmdesk_rpc_requests_total{{code=\"{code}\",method=\"/swarmdesk.v1.{method}\"}}"
            ),
        )
    };
    assert_eq!(rpc("ExpertService/RegisterExpert", "Ok"), Some(1.0));
    assert_eq!(rpc("TicketService/CreateTicket", "Ok"), Some(2.0));
    assert_eq!(rpc("TicketService/ClaimTicket", "Ok"), Some(1.0));
    assert_eq!(
        rpc("TicketService/ClaimTicket", "FailedPrecondition"),
        Some(1.0)
    );
    assert_eq!(rpc("TicketService/GetTicket", "NotFound"), Some(1.0));
    let routing = |outcome: &str| {
        value(
            &response,
            &format!("swarmdesk_routing_outcomes_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(routing("offered"), Some(2.0), "nobody was online");
    assert_eq!(routing("claimed"), Some(1.0));
    assert_eq!(value(&response, "swarmdesk_tickets_waiting"), Some(1.0));
    let tickets = |status: &str| {
        value(
            &response,
            &format!("swarmdesk_tickets{{status=\"{status}\"}}"),
        )
    };
    assert_eq!(tickets("open"), Some(1.0));
    assert_eq!(tickets("assigned"), Some(1.0));
    assert_eq!(tickets("resolved"), Some(0.0));
    assert_eq!(
        value(&response, "swarmdesk_events_appended_total"),
        Some(3.0)
    );
    assert!(value(&response, "swarmdesk_store_flush_seconds_count").unwrap_or(0.0) >= 1.0);
    assert!(
        value(
            &response,
            "swarmdesk_rpc_duration_seconds_count{method=\"/swarmdesk.v1.TicketService/CreateTicket\"}"
        ) == Some(2.0),
        "{response}"
    );

    let mut stream = server.subscribe("ann").await;
    next_or_open(&mut stream).await;
    let response = scrape(metrics_addr, "/metrics").await;
    assert_eq!(value(&response, "swarmdesk_open_streams"), Some(1.0));
    // Every answer and event above went out through the connections' outboxes.
    let writes = value(&response, "swarmdesk_socket_writes_total").unwrap_or(0.0);
    let bytes = value(&response, "swarmdesk_socket_write_bytes_total").unwrap_or(0.0);
    assert!(
        writes >= 1.0 && bytes > writes,
        "{writes} writes, {bytes} bytes"
    );
    assert!(scrape(metrics_addr, "/other")
        .await
        .starts_with("HTTP/1.1 404"));
}

/// Subscribing replays ann's events; reading one proves the stream is open.
async fn next_or_open(stream: &mut tonic::Streaming<swarmdesk::rpc::pb::SwarmEvent>) {
    let event = next(stream).await;
    assert!(event.position >= 1);
}
