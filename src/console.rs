//! The web console on the API's own port: its built assets (`web/dist`,
//! inside the binary) answered to plain GETs, and the gate that lets
//! gRPC-web reach only the services a browser should call.
//!
//! Layer order on the server: this gate, then tonic-web's translation,
//! then the rest. tonic-web answers 400 to any HTTP/1.1 request that is
//! not gRPC-web, so the console's GETs are answered here, before it.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use tonic::body::Body;

/// The console's built files: `web/dist`, made by `npm run build` in web/
/// and committed, so `cargo build` needs no Node.
#[derive(rust_embed::Embed)]
#[folder = "web/dist"]
struct Assets;

/// Scripts, styles, images and calls from this origin only; no inline
/// script, no framing, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Vite names what it builds under assets/ by content hash: such a file
/// never changes under its name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// index.html names the current hashes: always asked for again.
const REVALIDATE: &str = "no-cache";

/// Methods a browser may call over gRPC-web: the desk's own services,
/// except the admin backup, which streams a whole store and is for the CLI.
/// Health and reflection stay native gRPC.
pub fn web_callable(path: &str) -> bool {
    path.starts_with("/swarmdesk.v1.") && path != "/swarmdesk.v1.AdminService/Backup"
}

fn is_grpc_web(headers: &http::HeaderMap) -> bool {
    content_type(headers).starts_with("application/grpc-web")
}

fn content_type(headers: &http::HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Serves the console and gates gRPC-web.
#[derive(Clone, Copy, Debug)]
pub struct ConsoleLayer {
    /// `--console off`: no GET is answered with a page.
    enabled: bool,
}

impl ConsoleLayer {
    pub fn new(enabled: bool) -> Self {
        ConsoleLayer { enabled }
    }
}

impl<S> tower_layer::Layer<S> for ConsoleLayer {
    type Service = Console<S>;

    fn layer(&self, inner: S) -> Console<S> {
        Console {
            inner,
            enabled: self.enabled,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Console<S> {
    inner: S,
    enabled: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower_service::Service<http::Request<Body>> for Console<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        if is_grpc_web(request.headers()) {
            if !web_callable(path) {
                let refused = native_only(path);
                return Box::pin(async move { Ok(refused) });
            }
        } else if !content_type(request.headers()).starts_with("application/grpc")
            && matches!(*request.method(), Method::GET | Method::HEAD)
        {
            let page = if self.enabled {
                asset(&request)
            } else {
                plain(
                    StatusCode::NOT_FOUND,
                    "the console is off (--console off)\n",
                )
            };
            return Box::pin(async move { Ok(page) });
        }
        Box::pin(self.inner.call(request))
    }
}

/// A gRPC-web answer (trailers-only) refusing a method that is served
/// over native gRPC only.
fn native_only(path: &str) -> http::Response<Body> {
    let status = tonic::Status::unimplemented(format!(
        "{path} is served over native gRPC only, not gRPC-web"
    ));
    let mut response = http::Response::new(Body::empty());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc-web+proto"),
    );
    // Into the headers as grpc-status and grpc-message.
    let _ = status.add_header(response.headers_mut());
    response
}

fn plain(status: StatusCode, text: &'static str) -> http::Response<Body> {
    let mut response = http::Response::new(Body::new(http_body_util::Full::new(
        Bytes::from_static(text.as_bytes()),
    )));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    harden(headers);
    response
}

/// What every console answer carries.
fn harden(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// The file a GET names, with its caching rules and an ETag.
fn asset(request: &http::Request<Body>) -> http::Response<Body> {
    let path = request.uri().path();
    let name = match path.trim_start_matches('/') {
        "" => "index.html",
        other => other,
    };
    let Some(file) = Assets::get(name) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let cache = if name.starts_with("assets/") {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    let unchanged = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    let body = if unchanged || request.method() == Method::HEAD {
        Body::empty()
    } else {
        Body::new(http_body_util::Full::new(match file.data {
            Cow::Borrowed(bytes) => Bytes::from_static(bytes),
            Cow::Owned(bytes) => Bytes::from(bytes),
        }))
    };
    let mut response = http::Response::new(body);
    if unchanged {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let headers = response.headers_mut();
    if let Ok(mime) = HeaderValue::from_str(file.metadata.mimetype()) {
        headers.insert(header::CONTENT_TYPE, mime);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(tag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, tag);
    }
    harden(headers);
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_web_reaches_the_desk_but_not_backup_health_or_reflection() {
        assert!(web_callable("/swarmdesk.v1.ExpertService/Subscribe"));
        assert!(web_callable("/swarmdesk.v1.AdminService/CreateToken"));
        assert!(!web_callable("/swarmdesk.v1.AdminService/Backup"));
        assert!(!web_callable("/grpc.health.v1.Health/Check"));
        assert!(!web_callable(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
    }

    #[test]
    fn the_built_console_has_an_index_that_loads_no_inline_script() {
        let index = Assets::get("index.html").expect("web/dist/index.html is built");
        let html = std::str::from_utf8(&index.data).unwrap();
        assert!(html.contains("<script type=\"module\""), "{html}");
        // Every script is a file of this origin (the CSP forbids inline).
        for script in html.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(
                tag.contains("src=\"/assets/"),
                "inline or foreign script: {tag}"
            );
        }
    }
}
