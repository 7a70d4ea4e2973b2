//! The RPC metrics layer: every call counted by method and code, and
//! timed to its response headers, into [`crate::metrics`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::metrics::metrics;

/// Counts every RPC by method and code, and times it to its response headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcMetricsLayer;

impl<S> tower_layer::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RpcMetrics<S> {
    inner: S,
}

/// Every method path the server serves: its own services (from the
/// compiled descriptors), health and reflection.
fn known_methods() -> &'static std::collections::HashSet<String> {
    static KNOWN: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        use prost::Message;
        let mut known = std::collections::HashSet::new();
        for bytes in [
            super::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(bytes) else {
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        known.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        for version in ["v1", "v1alpha"] {
            known.insert(format!(
                "/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
            ));
        }
        known
    })
}

/// What tonic says of a request over the decoding limit, with the status
/// OUT_OF_RANGE; gRPC's convention (grpc-core's, and what `serve --help`
/// promises) is RESOURCE_EXHAUSTED.
const TOO_LARGE: &str = "Error, decoded message length too large: ";

/// Rewrites tonic's OUT_OF_RANGE for an oversized request as
/// RESOURCE_EXHAUSTED, keeping the sizes it names, with an ErrorInfo
/// (`MESSAGE_TOO_LARGE`). No handler of ours answers OUT_OF_RANGE, and
/// the text is tonic's own, so nothing else is touched.
fn oversized_is_resource_exhausted(headers: &mut http::HeaderMap) {
    if headers.get("grpc-status").map(http::HeaderValue::as_bytes) != Some(b"11") {
        return;
    }
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return;
    };
    let Some(sizes) = status.message().strip_prefix(TOO_LARGE) else {
        return;
    };
    use tonic_types::{ErrorDetails, StatusExt};
    let replaced = tonic::Status::with_error_details(
        tonic::Code::ResourceExhausted,
        format!("request message too large: {sizes} (the server's max_message_bytes)"),
        ErrorDetails::with_error_info(
            "MESSAGE_TOO_LARGE",
            super::ERROR_DOMAIN,
            std::collections::HashMap::new(),
        ),
    );
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if replaced.add_header(headers).is_err() {
        tracing::warn!("cannot rewrite an oversized request's status");
    }
}

/// The method label: served methods only, so that random paths cannot grow
/// the label set without bound.
fn method_label(path: &str) -> String {
    if known_methods().contains(path) {
        path.to_owned()
    } else {
        "other".to_owned()
    }
}

impl<S, B, R> tower_service::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut result = future.await;
            if let Ok(response) = &mut result {
                oversized_is_resource_exhausted(response.headers_mut());
            }
            // tonic answers errors "trailers-only": the status is a header.
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unknown,
            };
            let m = metrics();
            m.rpc_requests
                .with_label_values(&[method.as_str(), &format!("{code:?}")])
                .inc();
            m.rpc_seconds
                .with_label_values(&[method.as_str()])
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::method_label;

    #[test]
    fn only_served_methods_get_their_own_label() {
        for served in [
            "/swarmdesk.v1.TicketService/CreateTicket",
            "/swarmdesk.v1.StatsService/GetStats",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(method_label(served), served);
        }
        for unknown in [
            "/swarmdesk.v1.TicketService/Nope",
            "/swarmdesk.v1.Random123/X",
            "/",
            "/grpc.x/y",
        ] {
            assert_eq!(method_label(unknown), "other", "{unknown}");
        }
    }
}
