//! The gRPC surface: generated code, conversions between it and the domain,
//! the one mapping from domain errors to status codes, and a file per service.

pub mod admin;
pub mod convert;
pub mod experts;
pub mod gate;
pub mod knowledge;
pub mod layer;
pub mod raw;
pub mod stats;
pub mod streams;
pub mod tickets;
pub mod wire;

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::DeskError;
use crate::hub::StreamEnd;

/// Generated from proto/swarmdesk/v1.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod pb {
    tonic::include_proto!("swarmdesk.v1");

    pub use super::wire::SwarmEvent;

    /// For server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/swarmdesk_descriptor.bin"));
}

/// What the services call: the desk and the parts it was built from.
#[derive(Debug)]
pub struct Served {
    pub desk: crate::desk::Desk,
    pub tokens: std::sync::Arc<crate::auth::TokenRegistry>,
    pub knowledge: std::sync::Arc<crate::knowledge::KnowledgeBase>,
    /// What a backup copies.
    pub snapshot: std::sync::Arc<dyn crate::store::Snapshot>,
    /// The log, whose failure health reports.
    pub log: std::sync::Arc<dyn crate::store::Log>,
    /// This node's part in its cluster (cluster mode only).
    pub cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
}

/// What is served, set once the store is open and recovery is done; the
/// services are served (and answer UNAVAILABLE) before that, so health can
/// say NOT_SERVING during recovery.
pub type DeskCell = std::sync::Arc<std::sync::OnceLock<Served>>;

fn ready_desk(cell: &DeskCell) -> Result<&crate::desk::Desk, Status> {
    Ok(&ready(cell)?.desk)
}

fn ready(cell: &DeskCell) -> Result<&Served, Status> {
    cell.get().ok_or_else(|| {
        Status::with_error_details(
            Code::Unavailable,
            "starting: the store is being opened; retry shortly",
            ErrorDetails::with_error_info("STARTING", ERROR_DOMAIN, HashMap::new()),
        )
    })
}

/// Metadata key carrying a stream's last delivered position when it ends.
pub const LAST_POSITION_HEADER: &str = "swarmdesk-last-position";

/// The domain of every ErrorInfo swarmdesk sends.
pub const ERROR_DOMAIN: &str = "swarmdesk.v1";

/// Maps a domain error to its status: the readable message, plus the rich
/// details of google.rpc (BadRequest naming the field for INVALID_ARGUMENT,
/// ErrorInfo with a stable reason for the rest). Exhaustive on purpose: a
/// new variant must be given a code and a reason here.
impl From<DeskError> for Status {
    fn from(error: DeskError) -> Status {
        let (code, reason) = match &error {
            DeskError::Invalid { .. } => (Code::InvalidArgument, "INVALID_ARGUMENT"),
            DeskError::TicketNotFound(_) => (Code::NotFound, "TICKET_NOT_FOUND"),
            DeskError::ExpertNotFound(_) => (Code::NotFound, "EXPERT_NOT_FOUND"),
            DeskError::TokenNotFound(_) => (Code::NotFound, "TOKEN_NOT_FOUND"),
            DeskError::ArticleNotFound(_) => (Code::NotFound, "ARTICLE_NOT_FOUND"),
            DeskError::ArticleState { .. } => (Code::FailedPrecondition, "ARTICLE_STATE"),
            DeskError::ArticleVersionMismatch { .. } => (Code::Aborted, "VERSION_MISMATCH"),
            DeskError::AlreadyOwned { .. } => (Code::FailedPrecondition, "ALREADY_OWNED"),
            DeskError::NotOwner { .. } => (Code::FailedPrecondition, "NOT_OWNER"),
            DeskError::InvalidTransition { .. } => (Code::FailedPrecondition, "INVALID_TRANSITION"),
            DeskError::WrongState { .. } => (Code::FailedPrecondition, "WRONG_STATE"),
            DeskError::AlreadyRated { .. } => (Code::FailedPrecondition, "ALREADY_RATED"),
            DeskError::RankTooLow { .. } => (Code::PermissionDenied, "RANK_TOO_LOW"),
            DeskError::PermissionDenied(_) => (Code::PermissionDenied, "PERMISSION_DENIED"),
            DeskError::Unauthenticated(_) => (Code::Unauthenticated, "UNAUTHENTICATED"),
            DeskError::RateLimited { .. } => (Code::ResourceExhausted, "RATE_LIMITED"),
            DeskError::TooManyStreams(_) => (Code::ResourceExhausted, "TOO_MANY_STREAMS"),
            DeskError::AtCapacity { .. } => (Code::ResourceExhausted, "AT_CAPACITY"),
            DeskError::Conflict(_) => (Code::Aborted, "CONFLICT"),
            DeskError::ShuttingDown => (Code::Unavailable, "SHUTTING_DOWN"),
            DeskError::CatchingUp(_) => (Code::Unavailable, "CATCHING_UP"),
            DeskError::NotWriter(_) => (Code::Aborted, "NOT_WRITER"),
            DeskError::OutcomeUnknown(_) => (Code::Unavailable, "OUTCOME_UNKNOWN"),
            DeskError::StorageUnavailable(_) => (Code::Unavailable, "STORAGE_UNAVAILABLE"),
            DeskError::DiskFull { .. } => (Code::ResourceExhausted, "DISK_FULL"),
            DeskError::DiskFailed { .. } => (Code::Unavailable, "DATA_DIR_UNWRITABLE"),
            DeskError::Storage(detail) => {
                // Logged once here; the client gets no internals.
                tracing::error!(%detail, "storage failure");
                return Status::with_error_details(
                    Code::Internal,
                    "internal storage error",
                    ErrorDetails::with_error_info("INTERNAL", ERROR_DOMAIN, HashMap::new()),
                );
            }
        };
        let details = match &error {
            DeskError::Invalid { field, reason } => {
                ErrorDetails::with_bad_request_violation(bounded(field, 128), bounded(reason, 512))
            }
            DeskError::RateLimited { retry_after } => {
                // RetryInfo is what gRPC clients' retry policies read.
                let mut details = ErrorDetails::with_retry_info(Some(*retry_after));
                details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
                details
            }
            other => ErrorDetails::with_error_info(reason, ERROR_DOMAIN, error_metadata(other)),
        };
        Status::with_error_details(code, bounded(&error.to_string(), 768), details)
    }
}

/// `text`, cut to `max` characters. Inputs are already echoed short
/// (`domain::error::quote`); this keeps every error under 2 KiB as sent,
/// whatever a future message puts in it, so a stock client can read it.
fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// The ids an error is about, for clients to act on without parsing text.
fn error_metadata(error: &DeskError) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_owned(), v);
    };
    match error {
        DeskError::TicketNotFound(t) => put("ticket_id", t.to_string()),
        DeskError::ExpertNotFound(e) => put("expert_id", e.to_string()),
        DeskError::TokenNotFound(t) => put("token_id", t.to_string()),
        DeskError::ArticleNotFound(a) => put("article_id", a.to_string()),
        DeskError::ArticleState { article, state, .. } => {
            put("article_id", article.to_string());
            put("state", state.to_string());
        }
        DeskError::ArticleVersionMismatch {
            article,
            expected,
            stored,
        } => {
            put("article_id", article.to_string());
            put("expected_version", expected.to_string());
            put("stored_version", stored.to_string());
        }
        DeskError::AlreadyOwned { ticket, owner } => {
            put("ticket_id", ticket.to_string());
            put("owner_id", owner.to_string());
        }
        DeskError::NotOwner {
            ticket,
            expert,
            owner,
        } => {
            put("ticket_id", ticket.to_string());
            put("expert_id", expert.to_string());
            put(
                "owner_id",
                owner.as_ref().map(ToString::to_string).unwrap_or_default(),
            );
        }
        DeskError::InvalidTransition {
            ticket, from, to, ..
        } => {
            put("ticket_id", ticket.to_string());
            put("from", from.to_string());
            put("to", to.to_string());
        }
        DeskError::AlreadyRated { ticket, score } => {
            put("ticket_id", ticket.to_string());
            put("score", score.to_string());
        }
        DeskError::WrongState { ticket, status, .. } => {
            put("ticket_id", ticket.to_string());
            put("status", status.to_string());
        }
        DeskError::RankTooLow {
            expert,
            tag,
            needed,
            ..
        } => {
            put("expert_id", expert.to_string());
            put("tag", tag.to_string());
            put("min_rank", needed.to_string());
        }
        DeskError::AtCapacity {
            expert, capacity, ..
        } => {
            put("expert_id", expert.to_string());
            put("capacity", capacity.to_string());
        }
        DeskError::DiskFull { data_dir } | DeskError::DiskFailed { data_dir, .. } => {
            put("data_dir", data_dir.clone());
        }
        DeskError::Invalid { .. }
        | DeskError::PermissionDenied(_)
        | DeskError::Unauthenticated(_)
        | DeskError::RateLimited { .. }
        | DeskError::TooManyStreams(_)
        | DeskError::Conflict(_)
        | DeskError::ShuttingDown
        | DeskError::CatchingUp(_)
        | DeskError::NotWriter(_)
        | DeskError::OutcomeUnknown(_)
        | DeskError::StorageUnavailable(_)
        | DeskError::Storage(_) => {}
    }
    m
}

/// The status a stream ends with when the server ends it.
pub fn status_of_end(end: StreamEnd) -> Status {
    match end {
        StreamEnd::ShuttingDown { last_position } => {
            let mut status = Status::unavailable(format!(
                "server is shutting down; resume with after_position={last_position}"
            ));
            if let Ok(value) = last_position.to_string().parse() {
                status.metadata_mut().insert(LAST_POSITION_HEADER, value);
            }
            status
        }
        StreamEnd::Failed(error) => Status::from(error),
    }
}
