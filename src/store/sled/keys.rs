//! The key layout (see the parent module's doc) and the records stored
//! under it.

use serde::{Deserialize, Serialize};

use crate::domain::{
    EventKind, Expert, ExpertId, Tag, TicketId, TicketState, TicketStatus, TokenId, UnixMicros,
};
use crate::store::StoreError;

pub(super) const SCHEMA_VERSION: u32 = 5;
pub(super) const SCHEMA_KEY: &[u8] = b"m/schema";
/// Where an interrupted schema-4 migration got to: the last key rewritten.
pub(super) const MIGRATE_4_KEY: &[u8] = b"m/migrate-4";
pub(super) const STATUS_COUNTS_KEY: &[u8] = b"m/status-counts";
pub(super) const KNOWLEDGE_GENERATION_KEY: &[u8] = b"m/knowledge-generation";

/// One event as stored under `e/<position>`.
#[derive(Serialize, Deserialize)]
pub(super) struct EventRecord {
    pub(super) ticket: TicketId,
    pub(super) at: UnixMicros,
    pub(super) actor: String,
    pub(super) kind: EventKind,
    pub(super) state: TicketState,
    /// Position of the first event of the commit this event belongs to.
    pub(super) commit_first: u64,
    /// Present on the commit's last event only: it is the commit point.
    pub(super) tail: Option<CommitTail>,
}

/// What a commit writes besides its events, kept on its commit point so
/// that recovery can finish the commit.
#[derive(Serialize, Deserialize)]
pub(super) struct CommitTail {
    pub(super) experts: Vec<Expert>,
    pub(super) idempotency_key: Option<String>,
}

pub(super) fn key(prefix: u8, n: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = prefix;
    k[1] = b'/';
    k[2..].copy_from_slice(&n.to_be_bytes());
    k
}

pub(super) fn seq_key(ticket: TicketId, seq: u64) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..10].copy_from_slice(&key(b'x', ticket.0));
    k[10..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn expert_key(id: &ExpertId) -> Vec<u8> {
    [b"p/", id.as_str().as_bytes()].concat()
}

pub(super) fn token_key(id: &TokenId) -> Vec<u8> {
    [b"k/", id.as_str().as_bytes()].concat()
}

pub(super) fn blob_key(name: &str) -> Vec<u8> {
    [b"b/", name.as_bytes()].concat()
}

/// `q/<tag>/` (tag "" for every article): the prefix of a tag's counters.
fn counts_prefix(tag: Option<&Tag>) -> Vec<u8> {
    [b"q/", tag.map_or("", Tag::as_str).as_bytes(), b"/"].concat()
}

pub(super) fn counts_key(tag: Option<&Tag>, hour: UnixMicros) -> Vec<u8> {
    // Times before 1970 do not occur; clamping keeps the order numeric.
    let hour = u64::try_from(hour).unwrap_or(0);
    [counts_prefix(tag), hour.to_be_bytes().to_vec()].concat()
}

pub(super) fn request_key(k: &str) -> Vec<u8> {
    [b"r/", k.as_bytes()].concat()
}

pub(super) fn u64_at(bytes: &[u8], at: usize) -> Result<u64, StoreError> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("short key or value ({} bytes)", bytes.len())))
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|e| StoreError::Backend(format!("encode: {e}")))
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn backend(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => disk(&io, ""),
        other => StoreError::Backend(other.to_string()),
    }
}

/// An I/O error of the data dir at `data_dir` (empty: not known here; the
/// store names it before the error leaves it), by kind: a full disk, or
/// any other failure to write.
pub(super) fn disk(io: &std::io::Error, data_dir: &str) -> StoreError {
    // ENOSPC, and EDQUOT (a quota is a full disk to us).
    if io.kind() == std::io::ErrorKind::StorageFull || matches!(io.raw_os_error(), Some(28 | 122)) {
        StoreError::DiskFull {
            data_dir: data_dir.to_owned(),
        }
    } else {
        StoreError::DiskFailed {
            data_dir: data_dir.to_owned(),
            reason: io.to_string(),
        }
    }
}

/// `error`, naming the data dir if it is about the disk.
pub(super) fn in_dir(error: StoreError, path: &std::path::Path) -> StoreError {
    let dir = path.display().to_string();
    match error {
        StoreError::DiskFull { .. } => StoreError::DiskFull { data_dir: dir },
        StoreError::DiskFailed { reason, .. } => StoreError::DiskFailed {
            data_dir: dir,
            reason,
        },
        other => other,
    }
}

/// Whether a ticket in `status` is loaded at start-up (it may still have an
/// owner to route or clocks to watch).
pub(super) fn is_live(status: TicketStatus) -> bool {
    !matches!(status, TicketStatus::Resolved | TicketStatus::Closed)
}

/// The largest number stored under `prefix/`, or 0.
pub(super) fn last_number(db: &sled::Db, prefix: u8) -> Result<u64, StoreError> {
    match db
        .scan_prefix([prefix, b'/'])
        .next_back()
        .transpose()
        .map_err(backend)?
    {
        Some((k, _)) => u64_at(&k, 2),
        None => Ok(0),
    }
}
