//! Connecting to a swarmdesk server as a client: the URL (http:// or
//! https://), TLS, and the bearer token carried on every call. Used by the
//! CLI, the benchmark and the integration tests alike.

use std::path::{Path, PathBuf};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::auth::ADMIN_TOKEN_FILE;

mod failover;
pub use failover::Failover;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server URL {url:?}: {source}")]
    Url {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--cert and --key go together (mutual TLS needs both)")]
    HalfIdentity,
    #[error("TLS setup: {0}")]
    Tls(tonic::transport::Error),
    /// `detail` is the whole cause chain: tonic's own message is only
    /// "transport error".
    #[error("cannot reach {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("the token is not valid metadata (it must be printable ASCII)")]
    BadToken,
    #[error("no server URL given")]
    NoServer,
}

impl ClientError {
    pub fn connect(url: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut detail = error.to_string();
        let mut cause = error.source();
        while let Some(inner) = cause {
            // Layers often repeat their cause's text; say it once.
            let text = inner.to_string();
            if !detail.ends_with(&text) {
                detail.push_str(": ");
                detail.push_str(&text);
            }
            cause = inner.source();
        }
        ClientError::Connect {
            url: url.to_owned(),
            detail,
        }
    }
}

/// TLS files for a client; all optional. With an https:// URL and no CA
/// file, the system's trusted roots are used.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// PEM CA certificate(s) to trust for the server.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key, for servers requiring mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The endpoint for `url`, with TLS set up when the URL is https:// (or
/// when TLS files are given).
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, ClientError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|source| ClientError::Url {
            url: url.to_owned(),
            source,
        })?
        .tcp_nodelay(true);
    let wants_tls =
        url.starts_with("https://") || tls.ca.is_some() || tls.cert.is_some() || tls.key.is_some();
    if !wants_tls {
        return Ok(endpoint);
    }
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca {
        Some(ca) => config.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?)),
        None => config.with_native_roots(),
    };
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        (None, None) => {}
        _ => return Err(ClientError::HalfIdentity),
    }
    endpoint.tls_config(config).map_err(ClientError::Tls)
}

/// Connects to `url` now (so a wrong address fails here, clearly).
pub async fn connect(url: &str, tls: &ClientTls) -> Result<Channel, ClientError> {
    endpoint(url, tls)?
        .connect()
        .await
        .map_err(|source| ClientError::connect(url, &source))
}

/// Adds `authorization: Bearer <token>` to every call (nothing without a
/// token, for servers run with `--auth off`).
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.write_str(if self.0.is_some() {
            "BearerToken(<set>)"
        } else {
            "BearerToken(<none>)"
        })
    }
}

impl BearerToken {
    pub fn new(token: Option<&str>) -> Result<Self, ClientError> {
        token
            .map(|t| {
                let mut value: MetadataValue<Ascii> = format!("Bearer {}", t.trim())
                    .parse()
                    .map_err(|_| ClientError::BadToken)?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()
            .map(BearerToken)
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel (to one server or several, see [`Failover`]) that sends a
/// bearer token with every call.
pub type AuthedChannel = InterceptedService<Failover, BearerToken>;

pub fn with_token(channel: Channel, token: Option<&str>) -> Result<AuthedChannel, ClientError> {
    with_token_over(Failover::single("server", channel), token)
}

pub fn with_token_over(
    servers: Failover,
    token: Option<&str>,
) -> Result<AuthedChannel, ClientError> {
    Ok(InterceptedService::new(servers, BearerToken::new(token)?))
}

/// The servers of a comma-separated list of URLs (the nodes of a
/// cluster, or one server), each connected when first used, so that a
/// node that is down fails only the calls that reach it.
pub fn servers(urls: &str, tls: &ClientTls) -> Result<Failover, ClientError> {
    let mut servers = Vec::new();
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let endpoint = endpoint(url, tls)?.connect_timeout(std::time::Duration::from_secs(5));
        servers.push((url.to_owned(), endpoint.connect_lazy()));
    }
    if servers.is_empty() {
        return Err(ClientError::NoServer);
    }
    Ok(Failover::new(servers))
}

/// The token a client uses when none is given: the first admin token the
/// server wrote into its data dir, when this user can read it (so the
/// two-command quick start works on one machine).
pub fn token_from_data_dir(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE))
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}
