//! A cluster's log read afresh, and digests of the state it makes, so
//! that what every node holds can be checked against the log itself: the
//! whole stream from its first message, applied in order to an empty
//! in-memory state (which refuses any entry out of step, as a replica
//! does), and a digest of that state to set beside each node's replica.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use super::follow::{decode, messages};
use super::replica::{latest_replica, recorded_applied};
use super::{connect, until_jetstream_answers, JetStreamConfig};
use crate::domain::TicketId;
use crate::store::memory::MemoryState;
use crate::store::{State, StoreError};

/// The log of a cluster, applied afresh.
#[derive(Debug)]
pub struct Replayed {
    /// The last sequence applied: the stream's last, or the one asked for.
    pub last_seq: u64,
    pub state: Arc<MemoryState>,
}

/// Reads the log named by `config` (its URLs and name) from its first
/// message to its last (or to sequence `upto`), and applies every entry to
/// an empty state.
pub async fn replay(config: &JetStreamConfig, upto: Option<u64>) -> Result<Replayed, StoreError> {
    let js = async_nats::jetstream::new(connect(config).await?);
    // Right after a server's death the stream may be electing a leader.
    let stream =
        until_jetstream_answers("the log's stream", || js.get_stream(config.stream_name())).await?;
    let last_seq = stream.cached_info().state.last_sequence;
    if let Some(upto) = upto.filter(|&upto| upto > last_seq) {
        return Err(StoreError::Backend(format!(
            "the log ends at sequence {last_seq}, before {upto}"
        )));
    }
    let last_seq = upto.unwrap_or(last_seq);
    let state = Arc::new(MemoryState::default());
    if last_seq == 0 {
        return Ok(Replayed { last_seq, state });
    }
    let mut messages =
        until_jetstream_answers("a consumer of the log", || messages(&stream, 1)).await?;
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Unavailable(format!("replaying the log: {what}: {e}"))
    };
    let mut applied = 0;
    while applied < last_seq {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .map_err(|_| StoreError::Timeout(format!("no log message after {applied} in 30 s")))?
            .ok_or_else(|| StoreError::Unavailable("the consumer ended".into()))?
            .map_err(|e| unavailable("a message", &e))?;
        let seq = message
            .info()
            .map_err(|e| unavailable("a message", &e))?
            .stream_sequence;
        if seq != applied + 1 {
            return Err(StoreError::Corrupt(format!(
                "the log skips from sequence {applied} to {seq}"
            )));
        }
        for entry in decode(&message.payload, seq)?.entries {
            state.apply(entry).map_err(|e| {
                StoreError::Corrupt(format!("log message {seq} does not apply: {e}"))
            })?;
        }
        applied = seq;
    }
    Ok(Replayed { last_seq, state })
}

/// A digest of a state, one per area (events, tickets, experts, tokens,
/// articles, knowledge), so that a difference names where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDigest {
    pub areas: Vec<(&'static str, String)>,
}

impl std::fmt::Display for StateDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (area, hash)) in self.areas.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{area}:{}", &hash[..12])?;
        }
        Ok(())
    }
}

fn hash_all<T: std::fmt::Debug>(items: impl IntoIterator<Item = T>) -> String {
    let mut hasher = Sha256::new();
    for item in items {
        // Debug output of the domain's records: plain data in fixed field
        // order, without maps of unordered iteration, so equal records
        // give equal bytes within one build (which is all a check of
        // replicas against a replay needs).
        hasher.update(format!("{item:?}\n").as_bytes());
    }
    format!("{:x}", hasher.finalize())
}

/// The digest of what `state` holds that the log decides. A token's last
/// use is left out: each node notes it for itself (it is not in the log).
pub fn digest(state: &dyn State) -> Result<StateDigest, StoreError> {
    let last = state.last_position();
    let events = state.events_between(0, last, usize::MAX)?;
    let tickets = state.tickets_from(TicketId(1), usize::MAX)?;
    let tokens = state.tokens()?.into_iter().map(|mut t| {
        t.last_used_at = None;
        t
    });
    Ok(StateDigest {
        areas: vec![
            ("events", hash_all(events.iter().map(|e| &**e))),
            ("tickets", hash_all(&tickets)),
            ("experts", hash_all(state.experts()?)),
            ("tokens", hash_all(tokens)),
            ("articles", hash_all(state.articles()?)),
            (
                "knowledge",
                hash_all([
                    format!("{}", state.knowledge_generation()?),
                    format!("{:?}", state.knowledge_counts(0, i64::MAX, None)?),
                ]),
            ),
        ],
    })
}

/// The digest of the replica a stopped node left in `data_dir`, with the
/// stream sequence it holds when it was closed cleanly (`None` after a
/// crash: such a replica is rebuilt, never trusted). Opens it without
/// changing it; the node must not be running.
pub fn replica_digest(data_dir: &Path) -> Result<(Option<u64>, StateDigest), StoreError> {
    let state = latest_replica(data_dir)?
        .ok_or_else(|| StoreError::Backend(format!("no replica in {}", data_dir.display())))?;
    Ok((recorded_applied(&state)?, digest(&state)?))
}
