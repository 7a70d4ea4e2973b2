//! The gRPC surface: generated code, conversions between it and the domain,
//! the one mapping from domain errors to status codes, and a file per service.

pub mod convert;
pub mod experts;
pub mod tickets;

use tonic::{Code, Status};

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

    /// For server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/swarmdesk_descriptor.bin"));
}

/// Metadata key carrying a stream's last delivered position when it ends.
pub const LAST_POSITION_HEADER: &str = "swarmdesk-last-position";

/// Maps a domain error to its status. Exhaustive on purpose: a new variant
/// must be given a code here.
pub fn status_of(error: DeskError) -> Status {
    let code = match &error {
        DeskError::Invalid { .. } => Code::InvalidArgument,
        DeskError::TicketNotFound(_) | DeskError::ExpertNotFound(_) => Code::NotFound,
        DeskError::AlreadyOwned { .. }
        | DeskError::NotOwner { .. }
        | DeskError::InvalidTransition { .. }
        | DeskError::WrongState { .. } => Code::FailedPrecondition,
        DeskError::RankTooLow { .. } | DeskError::PermissionDenied(_) => Code::PermissionDenied,
        DeskError::AtCapacity { .. } => Code::ResourceExhausted,
        DeskError::Conflict(_) => Code::Aborted,
        DeskError::ShuttingDown => Code::Unavailable,
        DeskError::Storage(detail) => {
            // Logged once here; the client gets no internals.
            tracing::error!(%detail, "storage failure");
            return Status::internal("internal storage error");
        }
    };
    Status::new(code, error.to_string())
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
        StreamEnd::Failed(error) => status_of(error),
    }
}
