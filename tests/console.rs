//! The web console on the API's port: its page and assets with their
//! security and caching headers, `--console off`, and gRPC-web over
//! HTTP/1.1 for the desk's services only (health, reflection and backup
//! stay native gRPC). Spoken as raw HTTP/1.1, as a browser would.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use prost::Message;
use swarmdesk::rpc::pb;
use swarmdesk::server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;

struct HttpResponse {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`), read
/// to the end; chunked bodies are joined.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("the server never finished its answer")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap().trim(), 16).unwrap();
        raw = &raw[end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// A gRPC-web request body: one uncompressed message frame.
fn grpc_web_frame(message: &impl Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bytes);
    frame
}

/// The messages and the trailers of a gRPC-web response body.
fn grpc_web_frames(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let mut messages = Vec::new();
    let mut trailers = String::new();
    while body.len() >= 5 {
        let flag = body[0];
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let payload = &body[5..5 + len];
        if flag & 0x80 != 0 {
            trailers.push_str(std::str::from_utf8(payload).unwrap());
        } else {
            messages.push(payload.to_vec());
        }
        body = &body[5 + len..];
    }
    (messages, trailers)
}

async fn grpc_web(
    addr: SocketAddr,
    path: &str,
    token: &str,
    message: &impl Message,
) -> HttpResponse {
    let bearer = format!("Bearer {token}");
    http(
        addr,
        "POST",
        path,
        &[
            ("Content-Type", "application/grpc-web+proto"),
            ("X-Grpc-Web", "1"),
            ("Authorization", &bearer),
        ],
        &grpc_web_frame(message),
    )
    .await
}

fn built_index() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("web/dist/index.html"))
        .unwrap()
}

#[tokio::test]
async fn the_console_page_and_its_assets_come_with_a_strict_policy_and_the_right_caching() {
    let server = spawn_server().await;
    let page = http(server.addr, "GET", "/", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type").starts_with("text/html"),
        "{}",
        page.header("content-type")
    );
    let csp = page.header("content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "CSP without {directive}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert_eq!(page.header("cache-control"), "no-cache");
    let html = String::from_utf8(page.body.clone()).unwrap();
    assert_eq!(html, built_index(), "the page is the committed build");

    // The script it loads: hashed, so cached for good.
    let start = html
        .find("src=\"/assets/")
        .expect("a script under /assets/")
        + 5;
    let script = &html[start..start + html[start..].find('"').unwrap()];
    let asset = http(server.addr, "GET", script, &[], b"").await;
    assert_eq!(asset.status, 200, "{script}");
    assert!(
        asset.header("content-type").contains("javascript"),
        "{}",
        asset.header("content-type")
    );
    assert_eq!(
        asset.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert!(!asset.body.is_empty());

    // Asked again with its ETag: not sent again.
    let etag = asset.header("etag").to_owned();
    assert!(etag.starts_with('"'), "{etag}");
    let again = http(server.addr, "GET", script, &[("If-None-Match", &etag)], b"").await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    let missing = http(server.addr, "GET", "/assets/nothing-here.js", &[], b"").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("x-content-type-options"), "nosniff");
    server.stop().await;
}

#[tokio::test]
async fn console_off_serves_no_page_and_native_grpc_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server_with(ServerConfig {
        console: false,
        ..ServerConfig::new(dir.path().join("data"))
    })
    .await;
    server.keep_dir(dir);
    let page = http(server.addr, "GET", "/", &[], b"").await;
    assert_eq!(page.status, 404);
    assert!(String::from_utf8_lossy(&page.body).contains("console is off"));
    let expert = server.register("ann", &[("network", 1)], 3).await;
    assert_eq!(expert.id, "ann");
    server.stop().await;
}

#[tokio::test]
async fn grpc_web_over_http1_reaches_the_desk_but_not_health_reflection_or_backup() {
    let server = spawn_server().await;
    let token = server.admin_token.clone();
    let answer = grpc_web(
        server.addr,
        "/swarmdesk.v1.AdminService/WhoAmI",
        &token,
        &pb::WhoAmIRequest {},
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(answer
        .header("content-type")
        .starts_with("application/grpc-web"));
    let (messages, trailers) = grpc_web_frames(&answer.body);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let me = pb::Token::decode(messages[0].as_slice()).unwrap();
    assert_eq!(me.role(), pb::Role::Admin);

    // A write through gRPC-web lands like any other.
    let registered = grpc_web(
        server.addr,
        "/swarmdesk.v1.ExpertService/RegisterExpert",
        &token,
        &register_request("ann", &[("network", 1)], 3),
    )
    .await;
    let (messages, trailers) = grpc_web_frames(&registered.body);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    assert_eq!(
        pb::Expert::decode(messages[0].as_slice()).unwrap().id,
        "ann"
    );
    assert_eq!(server.expert("ann").await.capacity, 3);

    // A refusal is a gRPC-web status, not an HTTP error.
    let refused = grpc_web(
        server.addr,
        "/swarmdesk.v1.AdminService/WhoAmI",
        "wrong",
        &pb::WhoAmIRequest {},
    )
    .await;
    assert_eq!(refused.status, 200);
    let status = refused
        .headers
        .get("grpc-status")
        .cloned()
        .or_else(|| {
            let (_, trailers) = grpc_web_frames(&refused.body);
            trailers
                .lines()
                .find_map(|l| l.strip_prefix("grpc-status:").map(|s| s.trim().to_owned()))
        })
        .unwrap();
    assert_eq!(status, (tonic::Code::Unauthenticated as i32).to_string());

    for native_only in [
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/swarmdesk.v1.AdminService/Backup",
    ] {
        let answer = grpc_web(server.addr, native_only, &token, &pb::BackupRequest {}).await;
        assert_eq!(answer.status, 200, "{native_only}");
        assert_eq!(
            answer.header("grpc-status"),
            (tonic::Code::Unimplemented as i32).to_string(),
            "{native_only}"
        );
        assert!(
            answer.header("grpc-message").contains("native"),
            "{native_only}"
        );
    }
    // Plain HTTP/1.1 that is neither a page nor gRPC-web is refused.
    let post = http(
        server.addr,
        "POST",
        "/swarmdesk.v1.AdminService/WhoAmI",
        &[],
        b"x",
    )
    .await;
    assert!(post.status >= 400, "{}", post.status);
    server.stop().await;
}
