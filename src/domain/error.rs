//! Every way a desk operation can fail. The gRPC layer maps each variant to
//! one status code in a single exhaustive match.

use super::knowledge::{ArticleId, ArticleState};
use super::model::{ExpertId, Rank, Tag, TicketId, TicketStatus};

#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },

    #[error("ticket {0} not found")]
    TicketNotFound(TicketId),

    #[error("expert {0} not found")]
    ExpertNotFound(ExpertId),

    #[error("token {0} not found")]
    TokenNotFound(super::access::TokenId),

    #[error("article {0} not found")]
    ArticleNotFound(ArticleId),

    #[error("article {article} is {state}: {why}")]
    ArticleState {
        article: ArticleId,
        state: ArticleState,
        why: &'static str,
    },

    /// An edit computed from an older version of the article.
    #[error("article {article} is at version {stored}, not {expected}: it changed since it was read; read it again")]
    ArticleVersionMismatch {
        article: ArticleId,
        expected: u64,
        stored: u64,
    },

    #[error("ticket {ticket} is already owned by {owner}")]
    AlreadyOwned { ticket: TicketId, owner: ExpertId },

    #[error("ticket {ticket} is not owned by {expert} ({})", owner_text(.owner))]
    NotOwner {
        ticket: TicketId,
        expert: ExpertId,
        owner: Option<ExpertId>,
    },

    #[error("expert {expert} does not qualify: {tag} needs {needed}, {}", held_text(.held))]
    RankTooLow {
        expert: ExpertId,
        tag: Tag,
        needed: Rank,
        held: Option<Rank>,
    },

    #[error("expert {expert} is at capacity ({owned} of {capacity} open tickets)")]
    AtCapacity {
        expert: ExpertId,
        owned: u32,
        capacity: u32,
    },

    #[error("ticket {ticket} cannot move from {from} to {to}: {why}")]
    InvalidTransition {
        ticket: TicketId,
        from: TicketStatus,
        to: TicketStatus,
        why: &'static str,
    },

    #[error("ticket {ticket} is {status}: {why}")]
    WrongState {
        ticket: TicketId,
        status: TicketStatus,
        why: &'static str,
    },

    #[error("ticket {ticket}'s resolution is already rated ({score} of 5); a rating is given once per resolution")]
    AlreadyRated { ticket: TicketId, score: u8 },

    #[error("{0}")]
    PermissionDenied(String),

    /// No valid credentials; the text names what is wrong with them, never
    /// echoes them.
    #[error("{0}")]
    Unauthenticated(String),

    /// A principal's request rate is over its limit.
    #[error("request rate limit exceeded; retry in {} ms", .retry_after.as_millis())]
    RateLimited { retry_after: std::time::Duration },

    /// Too many open streams, for one principal or for the server.
    #[error("too many open streams: {0}")]
    TooManyStreams(String),

    /// A compare-and-swap lost to a concurrent write.
    #[error("concurrent update of {0}; retry")]
    Conflict(String),

    #[error("server is shutting down")]
    ShuttingDown,

    /// Derived data is still being brought up to date; retry shortly.
    #[error("{0}")]
    CatchingUp(String),

    /// This node may not write now (another took over as the writer);
    /// nothing was written: retry, on this node or another.
    #[error("not the writer: {0}; retry")]
    NotWriter(String),

    /// A write may or may not have been stored (the log did not answer in
    /// time); a retry with the same request id is safe.
    #[error("the outcome of the write is unknown ({0}); retry with the same request id")]
    OutcomeUnknown(String),

    /// The storage cannot be reached now; nothing was written.
    #[error("storage unavailable: {0}; retry shortly")]
    StorageUnavailable(String),

    /// The disk of the data dir is full; nothing was written. Reads go on.
    #[error(
        "no space left on the disk of data dir {data_dir}: writes are refused until space is freed"
    )]
    DiskFull { data_dir: String },

    /// The data dir cannot be written (read-only, an I/O error); nothing
    /// was written. Reads go on.
    #[error("data dir {data_dir} cannot be written ({reason}): writes are refused")]
    DiskFailed { data_dir: String, reason: String },

    #[error("storage failure: {0}")]
    Storage(String),
}

fn owner_text(owner: &Option<ExpertId>) -> String {
    match owner {
        Some(owner) => format!("its owner is {owner}"),
        None => "it has no owner".to_owned(),
    }
}

fn held_text(held: &Option<Rank>) -> String {
    match held {
        Some(rank) => format!("holds {rank}"),
        None => "does not hold it".to_owned(),
    }
}

/// How much of an input an error may echo. A long input is cut here, so an
/// error stays small whatever it was sent: stock gRPC clients refuse error
/// metadata over 8-16 KiB and would lose the code and the field.
pub const ECHO_CHARS: usize = 64;

/// `raw`, quoted for an error: whole if short, else its first
/// [`ECHO_CHARS`] characters and its length in bytes.
pub fn quote(raw: &str) -> String {
    match raw.char_indices().nth(ECHO_CHARS) {
        None => format!("{raw:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &raw[..cut], raw.len()),
    }
}

impl DeskError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        DeskError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_input_is_echoed_as_a_short_prefix_and_its_size() {
        assert_eq!(quote("vpn"), "\"vpn\"");
        let long = "é".repeat(5_000);
        let quoted = quote(&long);
        assert!(quoted.starts_with(&format!("\"{}\"…", "é".repeat(ECHO_CHARS))));
        assert!(quoted.ends_with("(10000 bytes)"), "{quoted}");
        assert!(quoted.len() < 200);
        assert_eq!(
            quote(&"x".repeat(ECHO_CHARS)),
            format!("{:?}", "x".repeat(ECHO_CHARS))
        );
    }
}
