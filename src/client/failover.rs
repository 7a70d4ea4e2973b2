//! Several servers (the nodes of a cluster) behind one channel: a call
//! goes to the node that answered last, and moves on to the next when
//! that one cannot take it.
//!
//! A call moves on only when that is safe:
//! - the node was not reached (connection refused), or it said it did not
//!   do the call: UNAVAILABLE `NO_WRITER`, `WRITER_UNREACHABLE`,
//!   `SHUTTING_DOWN`, `CATCHING_UP`, or ABORTED `NOT_WRITER`;
//! - or the call may have been done (UNAVAILABLE `OUTCOME_UNKNOWN`, any
//!   other UNAVAILABLE, a connection lost mid-call) and doing it again
//!   changes nothing: a read, or a write that carries a request id
//!   (CreateTicket, PostMessage), which the desk applies once.
//!
//! Anything else (a write without a request id whose outcome is unknown,
//! every other status) is the caller's answer. A stream moves on only
//! before its first message; once it streams, a dropped stream is resumed
//! by the caller from its last position, on whichever node it likes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use tower_service::Service;

/// The writes a retry cannot apply twice, and the field number of their
/// request id.
const WRITES_WITH_REQUEST_ID: &[(&str, u32)] = &[
    ("/swarmdesk.v1.TicketService/CreateTicket", 8),
    ("/swarmdesk.v1.TicketService/PostMessage", 5),
];

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One channel over several servers, in the order given.
#[derive(Clone, Debug)]
pub struct Failover {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Each server's URL, for errors, and its channel.
    servers: Vec<(String, Channel)>,
    /// The server to try first: the last one that answered.
    current: AtomicUsize,
}

impl Failover {
    /// Over `servers`, each a URL and its (lazily connecting) channel.
    pub fn new(servers: Vec<(String, Channel)>) -> Self {
        assert!(!servers.is_empty(), "a failover channel needs a server");
        Failover {
            shared: Arc::new(Shared {
                servers,
                current: AtomicUsize::new(0),
            }),
        }
    }

    /// One server: calls go straight to it.
    pub fn single(url: &str, channel: Channel) -> Self {
        Failover::new(vec![(url.to_owned(), channel)])
    }

    /// The URL calls go to first now.
    pub fn current(&self) -> &str {
        let i = self.shared.current.load(Ordering::Relaxed) % self.shared.servers.len();
        &self.shared.servers[i].0
    }
}

/// Why a node did not take a call, from its trailers-only answer.
enum Refusal {
    /// It did not do it.
    NotDone,
    /// It may have done it.
    MaybeDone,
}

fn refusal(status: &Status) -> Option<Refusal> {
    let reason = status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default();
    match (status.code(), reason.as_str()) {
        (Code::Unavailable, "NO_WRITER" | "WRITER_UNREACHABLE" | "SHUTTING_DOWN")
        | (Code::Unavailable, "CATCHING_UP")
        | (Code::Aborted, "NOT_WRITER") => Some(Refusal::NotDone),
        (Code::Unavailable, _) => Some(Refusal::MaybeDone),
        _ => None,
    }
}

/// Whether the error says the server was never reached.
fn never_reached(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

/// Whether a gRPC request body (one length-prefixed message) sets
/// protobuf field `number` to a non-empty string.
fn sets_field(body: &[u8], number: u32) -> bool {
    let Some(mut message) = body.get(5..) else {
        return false;
    };
    while !message.is_empty() {
        let Ok(key) = prost::encoding::decode_varint(&mut message) else {
            return false;
        };
        let (field, wire_type) = ((key >> 3) as u32, key & 7);
        match wire_type {
            0 => {
                if prost::encoding::decode_varint(&mut message).is_err() {
                    return false;
                }
            }
            1 | 5 => {
                let skip = if wire_type == 1 { 8 } else { 4 };
                let Some(rest) = message.get(skip..) else {
                    return false;
                };
                message = rest;
            }
            2 => {
                let Ok(len) = prost::encoding::decode_varint(&mut message) else {
                    return false;
                };
                let Some(rest) = usize::try_from(len).ok().and_then(|l| message.get(l..)) else {
                    return false;
                };
                if field == number && len > 0 {
                    return true;
                }
                message = rest;
            }
            _ => return false,
        }
    }
    false
}

/// Whether doing the call twice changes nothing.
fn repeatable(path: &str, body: &[u8]) -> bool {
    if !crate::cluster::forward::is_write(path) {
        return true;
    }
    WRITES_WITH_REQUEST_ID
        .iter()
        .any(|(p, field)| *p == path && sets_field(body, *field))
}

fn request_again(template: &http::request::Parts, body: &Bytes) -> http::Request<Body> {
    let mut request = http::Request::new(Body::new(http_body_util::Full::new(body.clone())));
    *request.method_mut() = template.method.clone();
    *request.uri_mut() = template.uri.clone();
    *request.version_mut() = template.version;
    *request.headers_mut() = template.headers.clone();
    request
}

impl Service<http::Request<Body>> for Failover {
    type Response = http::Response<Body>;
    type Error = Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Each call makes its channel ready itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let count = shared.servers.len();
            let first = shared.current.load(Ordering::Relaxed) % count;
            if count == 1 {
                let mut channel = shared.servers[0].1.clone();
                std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
                return Ok(channel.call(request).await?);
            }
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let again = repeatable(parts.uri.path(), &body);
            let mut last_error: Option<Error> = None;
            for attempt in 0..count {
                let i = (first + attempt) % count;
                let last_try = attempt + 1 == count;
                let mut channel = shared.servers[i].1.clone();
                let sent = async {
                    std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
                    channel.call(request_again(&parts, &body)).await
                };
                match sent.await {
                    Err(e) => {
                        if !(never_reached(&e) || again) || last_try {
                            return Err(e.into());
                        }
                        tracing::debug!(server = %shared.servers[i].0, error = %e, "moving on");
                        last_error = Some(e.into());
                    }
                    Ok(response) => {
                        // A refusal comes trailers-only: its status is in
                        // the headers.
                        let moves_on = Status::from_header_map(response.headers())
                            .filter(|s| s.code() != Code::Ok)
                            .and_then(|s| refusal(&s))
                            .is_some_and(|r| matches!(r, Refusal::NotDone) || again);
                        if moves_on && !last_try {
                            tracing::debug!(server = %shared.servers[i].0, "refused; moving on");
                            continue;
                        }
                        shared.current.store(i, Ordering::Relaxed);
                        return Ok(response);
                    }
                }
            }
            Err(last_error.unwrap_or_else(|| "no server answered".into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        body
    }

    #[test]
    fn only_reads_and_writes_with_a_request_id_are_repeatable() {
        use prost::Message;
        let create = "/swarmdesk.v1.TicketService/CreateTicket";
        let with_id = crate::rpc::pb::CreateTicketRequest {
            title: "t".into(),
            description: "x".repeat(300),
            request_id: "r-1".into(),
            ..Default::default()
        };
        let without = crate::rpc::pb::CreateTicketRequest {
            request_id: String::new(),
            ..with_id.clone()
        };
        assert!(repeatable(create, &framed(&with_id.encode_to_vec())));
        assert!(!repeatable(create, &framed(&without.encode_to_vec())));
        assert!(!repeatable(
            "/swarmdesk.v1.TicketService/ClaimTicket",
            &framed(&[])
        ));
        assert!(repeatable(
            "/swarmdesk.v1.TicketService/GetTicket",
            &framed(&[])
        ));
        // Garbage is not taken for a request id.
        assert!(!repeatable(create, &framed(&[0x42, 0xff, 0xff])));
    }
}
