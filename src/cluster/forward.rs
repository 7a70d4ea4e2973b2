//! Writes sent to a follower, forwarded to the writer as they came (the
//! same gRPC request, its token and deadline included), and answered only
//! once this node has applied the log up to the writer's answer: a client
//! reads its own writes on the node it talks to.
//!
//! The writer marks its answer to a forwarded call with the log sequence
//! it had applied when it answered (`swarmdesk-log-seq`), which covers the
//! call's write, since the writer answers only once it is durable. A
//! forwarded call is never forwarded again: a node that is no longer the
//! writer answers it UNAVAILABLE, and the client retries.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::transport::Channel;
use tower_service::Service;

use super::Cluster;

/// Marks a call forwarded by a follower (its value: the follower's id).
pub const FORWARDED_HEADER: &str = "swarmdesk-forwarded";
/// The writer's applied log sequence when it answered a forwarded call.
pub const LOG_SEQ_HEADER: &str = "swarmdesk-log-seq";

/// How long a follower waits to apply a forwarded write before it answers
/// anyway (the write is durable; only reading it here may lag).
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// The calls that write: the ones a follower forwards.
const WRITES: &[&str] = &[
    "/swarmdesk.v1.TicketService/CreateTicket",
    "/swarmdesk.v1.TicketService/PostMessage",
    "/swarmdesk.v1.TicketService/ClaimTicket",
    "/swarmdesk.v1.TicketService/TransferTicket",
    "/swarmdesk.v1.TicketService/ReleaseTicket",
    "/swarmdesk.v1.TicketService/JoinSwarm",
    "/swarmdesk.v1.TicketService/LeaveSwarm",
    "/swarmdesk.v1.TicketService/RequestHelp",
    "/swarmdesk.v1.TicketService/UpdateStatus",
    "/swarmdesk.v1.TicketService/RateTicket",
    "/swarmdesk.v1.ExpertService/RegisterExpert",
    "/swarmdesk.v1.ExpertService/SetPresence",
    "/swarmdesk.v1.AdminService/CreateToken",
    "/swarmdesk.v1.AdminService/RevokeToken",
    "/swarmdesk.v1.KnowledgeService/CreateArticle",
    "/swarmdesk.v1.KnowledgeService/UpdateArticle",
    "/swarmdesk.v1.KnowledgeService/PublishArticle",
    "/swarmdesk.v1.KnowledgeService/ArchiveArticle",
    "/swarmdesk.v1.KnowledgeService/RecordDeflection",
];

/// Whether a method path is a write.
pub fn is_write(path: &str) -> bool {
    WRITES.contains(&path)
}

/// Forwards writes to the writer when this node follows; off (a plain
/// pass-through) on a single node.
#[derive(Clone, Debug, Default)]
pub struct ForwardLayer {
    /// Set once the node joined its cluster (never on a single node).
    cluster: Arc<OnceLock<Arc<Cluster>>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl ForwardLayer {
    pub fn new(cluster: Arc<OnceLock<Arc<Cluster>>>) -> Self {
        ForwardLayer {
            cluster,
            channels: Arc::default(),
        }
    }
}

impl<S> tower_layer::Layer<S> for ForwardLayer {
    type Service = Forward<S>;

    fn layer(&self, inner: S) -> Forward<S> {
        Forward {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Forward<S> {
    inner: S,
    layer: ForwardLayer,
}

fn unavailable(reason: &str, message: String) -> http::Response<Body> {
    use tonic_types::{ErrorDetails, StatusExt};
    tonic::Status::with_error_details(
        tonic::Code::Unavailable,
        message,
        ErrorDetails::with_error_info(
            reason,
            crate::rpc::ERROR_DOMAIN,
            std::collections::HashMap::new(),
        ),
    )
    .into_http()
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower_service::Service<http::Request<Body>> for Forward<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let Some(cluster) = self.layer.cluster.get().cloned() else {
            return Box::pin(self.inner.call(request));
        };
        let forwarded = request.headers().contains_key(FORWARDED_HEADER);
        let writes_here = cluster.log().role() == crate::store::jetstream::Role::Writer;
        if !is_write(request.uri().path()) || writes_here {
            let future = self.inner.call(request);
            return Box::pin(async move {
                let mut response = future.await?;
                if forwarded {
                    let seq = cluster.log().applied_seq();
                    response
                        .headers_mut()
                        .insert(LOG_SEQ_HEADER, http::HeaderValue::from(seq));
                }
                Ok(response)
            });
        }
        if forwarded {
            return Box::pin(async move {
                Ok(unavailable(
                    "NOT_WRITER",
                    format!("node {} no longer writes the log; retry", cluster.node_id()),
                ))
            });
        }
        let writer = match cluster.writer() {
            Some(w) if w.node != cluster.node_id() => w,
            Some(_) => {
                return Box::pin(async {
                    Ok(unavailable(
                        "NO_WRITER",
                        "this node is becoming the writer; retry".into(),
                    ))
                })
            }
            None => {
                return Box::pin(async {
                    Ok(unavailable(
                        "NO_WRITER",
                        "the cluster has no writer now (one is being chosen); retry".into(),
                    ))
                })
            }
        };
        let channel = {
            let mut channels = self
                .layer
                .channels
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match channels.get(&writer.url) {
                Some(c) => Some(c.clone()),
                // https:// with the cluster's peer CA and this node's
                // own certificate; http:// as it is.
                None => crate::client::endpoint(&writer.url, cluster.peer_tls())
                    .inspect_err(|e| tracing::warn!(writer = %writer.url, error = %e, "cannot reach the writer"))
                    .ok()
                    .map(|e| {
                        e.connect_timeout(Duration::from_secs(2))
                            .tcp_nodelay(true)
                            .connect_lazy()
                    })
                    .inspect(|c| {
                        channels.insert(writer.url.clone(), c.clone());
                    }),
            }
        };
        if let Ok(me) = http::HeaderValue::from_str(cluster.node_id()) {
            request.headers_mut().insert(FORWARDED_HEADER, me);
        }
        Box::pin(async move {
            let Some(mut channel) = channel else {
                return Ok(unavailable(
                    "NO_WRITER",
                    format!(
                        "the writer's address {:?} cannot be used (not a URL, or this node's \
                         TLS files for it unreadable: see its log)",
                        writer.url
                    ),
                ));
            };
            let ready = std::future::poll_fn(|cx| {
                Service::<http::Request<Body>>::poll_ready(&mut channel, cx)
            })
            .await;
            let answered = match ready {
                Ok(()) => channel.call(request).await,
                Err(e) => Err(e),
            };
            let mut response = match answered {
                Ok(response) => response,
                Err(e) => {
                    return Ok(unavailable(
                        "WRITER_UNREACHABLE",
                        format!(
                            "cannot reach the writer, node {} at {}: {e}; retry",
                            writer.node, writer.url
                        ),
                    ))
                }
            };
            let seq = response
                .headers_mut()
                .remove(LOG_SEQ_HEADER)
                .and_then(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()));
            // The whole answer is read before any of it is passed on: a
            // writer dying mid-answer then reads as a failover, not as a
            // broken stream (the write may have happened: retry by id).
            let (parts, body) = response.into_parts();
            let collected = match http_body_util::BodyExt::collect(body).await {
                Ok(collected) => collected,
                Err(e) => {
                    return Ok(unavailable(
                        "OUTCOME_UNKNOWN",
                        format!(
                            "the writer, node {}, stopped answering: {e}; retry with the same request_id",
                            writer.node
                        ),
                    ))
                }
            };
            if let Some(seq) = seq {
                if let Err(e) = cluster.log().applied_to(seq, APPLY_WAIT).await {
                    tracing::warn!(error = %e, "answering a forwarded write before applying it");
                }
            }
            let trailers = collected.trailers().cloned();
            let mut frames = vec![Ok::<_, std::convert::Infallible>(http_body::Frame::data(
                collected.to_bytes(),
            ))];
            if let Some(trailers) = trailers {
                frames.push(Ok(http_body::Frame::trailers(trailers)));
            }
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
            Ok(http::Response::from_parts(parts, Body::new(body)))
        })
    }
}
