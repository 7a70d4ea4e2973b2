//! The door of every swarmdesk service: the bearer token is checked (and
//! charged against its rate) before a request is decoded into work, and
//! the caller rides in the request's extensions to the handler, which
//! checks its rights with [`authorize`].

use std::sync::{Arc, OnceLock};

use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::{ready, DeskCell};
use crate::auth::{Caller, StreamPermit};
use crate::domain::{DeskError, Operation};

/// Whether requests must carry a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    On,
    /// Every request is an admin: for local experiments on loopback only.
    Off,
}

/// The interceptor in front of TicketService, ExpertService and
/// AdminService (health and reflection stay open: probes carry no token).
#[derive(Clone, Debug)]
pub struct Authenticate {
    desk: DeskCell,
    mode: AuthMode,
    /// The one caller every request is when authentication is off.
    anonymous: Arc<OnceLock<Arc<Caller>>>,
}

impl Authenticate {
    pub fn new(desk: DeskCell, mode: AuthMode) -> Self {
        Authenticate {
            desk,
            mode,
            anonymous: Arc::new(OnceLock::new()),
        }
    }
}

/// The token text of `authorization: Bearer <token>`.
fn bearer(metadata: &MetadataMap) -> Result<&str, DeskError> {
    let value = metadata.get("authorization").ok_or_else(|| {
        DeskError::Unauthenticated("missing `authorization: Bearer <token>` metadata".into())
    })?;
    let text = value.to_str().map_err(|_| {
        DeskError::Unauthenticated("authorization metadata is not printable ASCII".into())
    })?;
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(DeskError::Unauthenticated(
            "authorization metadata must be `Bearer <token>`".into(),
        ));
    }
    Ok(token.trim())
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let tokens = &ready(&self.desk)?.tokens;
        let caller = match self.mode {
            AuthMode::On => bearer(request.metadata()).and_then(|token| tokens.authenticate(token)),
            AuthMode::Off => {
                let caller = self
                    .anonymous
                    .get_or_init(|| tokens.anonymous_admin())
                    .clone();
                tokens.admit(&caller).map(|()| caller)
            }
        }?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The authenticated caller of a request.
pub fn caller_of<T>(request: &Request<T>) -> Result<Arc<Caller>, Status> {
    request
        .extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| {
            // Only a service registered without the interceptor gets here.
            tracing::error!("a request reached a handler without authentication");
            Status::internal("request was not authenticated")
        })
}

/// The caller of a request, if its role may call `op` at all.
pub fn authorize<T>(request: &Request<T>, op: Operation) -> Result<Arc<Caller>, Status> {
    let caller = caller_of(request)?;
    caller.principal.require(op)?;
    Ok(caller)
}

/// The label of the caller's token, for spans.
pub fn principal_label<T>(request: &Request<T>) -> &str {
    request
        .extensions()
        .get::<Arc<Caller>>()
        .map_or("-", |caller| caller.principal.label.as_str())
}

/// Counts a new stream against its caller's and the server's caps.
pub fn open_stream(cell: &DeskCell, caller: &Arc<Caller>) -> Result<StreamPermit, Status> {
    Ok(ready(cell)?.tokens.open_stream(caller)?)
}
