//! Every node's follower: the stream applied in order to the replica, its
//! events handed to the sink, and a replica that no longer fits the log
//! rebuilt beside the current one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures_util::StreamExt;

use super::{lock, Batch, Role, Shared};
use crate::domain::TicketEvent;
use crate::store::sled::SledState;
use crate::store::{Change, Entry, State, StoreError, TicketStore};

const FOLLOW_EXPIRES: Duration = Duration::from_secs(2);
/// How long the follower waits without a message before it asks the
/// stream whether it is behind (a consumer that silently stopped after
/// its server died is then made again, whatever the client library did).
const STALL_CHECK: Duration = Duration::from_secs(5);

pub(super) async fn run(shared: Arc<Shared>) {
    while !shared.stop.is_cancelled() {
        if lock(&shared.core).role == Role::Rebuilding {
            if let Err(e) = rebuild(&shared).await {
                tracing::warn!(error = %e, "rebuilding the replica failed; retrying");
                pause(&shared).await;
                continue;
            }
        }
        let start = lock(&shared.core).applied_seq + 1;
        if let Err(e) = follow(&shared, start).await {
            tracing::warn!(error = %e, "following the log failed; retrying");
            pause(&shared).await;
        }
    }
}

async fn pause(shared: &Shared) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        _ = shared.stop.cancelled() => {}
    }
}

fn bad(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

/// The stream's messages from `start` on, in order.
/// The log's messages from sequence `start` on, in order (an ordered
/// consumer, made again by the client when its server goes).
pub(super) async fn messages(
    stream: &async_nats::jetstream::stream::Stream,
    start: u64,
) -> Result<async_nats::jetstream::consumer::pull::Ordered, StoreError> {
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            // Pulls expire (and idle heartbeats come) every second or so:
            // a consumer lost with the stream's leader is noticed by two
            // missed heartbeats and made again within seconds, not the
            // default's half minute.
            max_expires: FOLLOW_EXPIRES,
            ..Default::default()
        })
        .await
        .map_err(|e| bad("cannot follow the log", e))?;
    consumer
        .messages()
        .await
        .map_err(|e| bad("cannot follow the log", e))
}

pub(super) fn decode(payload: &[u8], seq: u64) -> Result<Batch, StoreError> {
    postcard::from_bytes(payload)
        .map_err(|e| StoreError::Corrupt(format!("log message {seq} cannot be read: {e}")))
}

/// Applies the stream from `start` until told to stop or to rebuild.
async fn follow(shared: &Shared, start: u64) -> Result<(), StoreError> {
    let mut messages = messages(&shared.stream, start).await?;
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            _ = shared.follow_wake.notified() => {
                if lock(&shared.core).role == Role::Rebuilding {
                    return Ok(());
                }
                continue;
            }
            _ = shared.stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(STALL_CHECK) => {
                check_not_stalled(shared).await?;
                continue;
            }
        };
        let message = next
            .ok_or_else(|| StoreError::Unavailable("the log's consumer ended".into()))?
            .map_err(|e| bad("reading the log", e))?;
        let info = message.info().map_err(|e| bad("a log message", e))?;
        let seq = info.stream_sequence;
        shared
            .stream_last
            .fetch_max(seq + info.pending, Ordering::AcqRel);
        match take_in(shared, &message, seq)? {
            Step::Next => {}
            Step::Stop => return Ok(()),
            Step::AwaitStepDown => {
                tokio::select! {
                    _ = shared.follow_wake.notified() => {}
                    _ = shared.stop.cancelled() => {}
                }
                return Ok(());
            }
        }
    }
}

/// Fails when the stream holds more than this node applied although no
/// message came for a while: the caller follows again with a new consumer.
async fn check_not_stalled(shared: &Shared) -> Result<(), StoreError> {
    let asked = tokio::time::timeout(STALL_CHECK, shared.stream.get_info()).await;
    let Ok(Ok(info)) = asked else {
        // The stream cannot say (no leader, no NATS): nothing to compare.
        return Ok(());
    };
    let last = info.state.last_sequence;
    shared.stream_last.fetch_max(last, Ordering::AcqRel);
    let applied = lock(&shared.core).applied_seq;
    if last > applied {
        return Err(StoreError::Unavailable(format!(
            "the log's consumer stalled at sequence {applied} while the log ends at {last}"
        )));
    }
    Ok(())
}

/// What the follower does after a message.
enum Step {
    Next,
    /// Follow again from what was applied (or rebuild).
    Stop,
    /// Another writer appended while this one had a batch in flight: wait
    /// until the publisher learned its outcome and stepped down.
    AwaitStepDown,
}

/// Applies message `seq` (or skips it, or sees that this node was deposed).
fn take_in(
    shared: &Shared,
    message: &async_nats::jetstream::Message,
    seq: u64,
) -> Result<Step, StoreError> {
    let mut core = lock(&shared.core);
    if seq <= core.applied_seq {
        return Ok(Step::Next);
    }
    match core.role {
        Role::Rebuilding => return Ok(Step::Stop),
        Role::Writer => {
            let ours = format!("{}:{}:", shared.config.node_id, core.term);
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            if id.starts_with(&ours) {
                // Our own batch, its acknowledgement on the way.
                return Ok(Step::Next);
            }
            let why = format!("another writer appended message {seq} ({id})");
            if core.in_flight {
                // The batch in flight may have been stored before this
                // one: its outcome is the publisher's to learn first.
                core.deposed = Some(why);
                return Ok(Step::AwaitStepDown);
            }
            drop(core);
            shared.step_down(StoreError::Fenced(why));
            return Ok(Step::Stop);
        }
        Role::Follower => {}
    }
    if seq != core.applied_seq + 1 {
        return Err(StoreError::Unavailable(format!(
            "the log skipped from {} to {seq}; following again",
            core.applied_seq
        )));
    }
    let batch = decode(&message.payload, seq)?;
    let state = shared.replica.state();
    let mut events = Vec::new();
    let mut changes = Vec::new();
    for entry in batch.entries {
        note_ids(&mut core, &entry);
        changes.extend(observed(&entry));
        match state.apply(entry) {
            Ok(made) => events.extend(made),
            Err(e) => {
                tracing::error!(error = %e, seq, "the replica does not fit the log; rebuilding it");
                shared.take_role(&mut core, Role::Rebuilding);
                return Ok(Step::Stop);
            }
        }
    }
    core.applied_seq = seq;
    hand_on(shared, &mut core, events);
    drop(core);
    // Outside the core's lock: observers take their own locks, whose
    // holders may ask the log for its role.
    if let Some(observer) = shared.observer.get() {
        for change in &changes {
            observer.applied(change);
        }
    }
    shared.applied.send_replace(seq);
    Ok(Step::Next)
}

/// What observers are told of: the changes a node keeps more of than
/// the state (tokens it authenticates, articles it indexes, experts it
/// routes and streams to); a ticket's commit as the experts it moves.
fn observed(entry: &Entry) -> Vec<Change> {
    match &entry.change {
        Change::Token(_) | Change::Article(_) | Change::Expert(_) => vec![entry.change.clone()],
        Change::Ticket(commit) => commit.experts.iter().cloned().map(Change::Expert).collect(),
        Change::KnowledgeCounts { .. } => Vec::new(),
    }
}

fn note_ids(core: &mut super::Core, entry: &Entry) {
    match &entry.change {
        Change::Ticket(commit) => core.next_ticket = core.next_ticket.max(commit.ticket.0 + 1),
        Change::Article(article) => {
            core.next_article = core.next_article.max(article.id.0 + 1);
        }
        _ => {}
    }
}

/// Hands the events not yet handed on to the sink, in order.
fn hand_on(shared: &Shared, core: &mut super::Core, events: Vec<Arc<TicketEvent>>) {
    let fresh: Vec<_> = events
        .into_iter()
        .filter(|e| e.position > core.published_position)
        .collect();
    if let Some(last) = fresh.last() {
        core.published_position = last.position;
        shared.sink.publish(&fresh);
    }
}

/// Builds a replica from the whole log beside the current one (which
/// serves reads meanwhile), then swaps it in.
async fn rebuild(shared: &Shared) -> Result<(), StoreError> {
    let target = shared.read_stream_last().await?;
    tracing::info!(to = target, "rebuilding the replica from the log");
    let (generation, state) = shared.replica.fresh()?;
    let mut tail = Vec::new();
    let published = lock(&shared.core).published_position;
    let mut applied = 0;
    if target > 0 {
        let mut messages = messages(&shared.stream, 1).await?;
        while applied < target {
            let message = tokio::select! {
                next = messages.next() => next,
                _ = shared.stop.cancelled() => return Err(StoreError::Closed),
            }
            .ok_or_else(|| StoreError::Unavailable("the log's consumer ended".into()))?
            .map_err(|e| bad("reading the log", e))?;
            let seq = message
                .info()
                .map_err(|e| bad("a log message", e))?
                .stream_sequence;
            if seq != applied + 1 {
                return Err(StoreError::Unavailable(format!(
                    "the log skipped from {applied} to {seq} while rebuilding"
                )));
            }
            let batch = decode(&message.payload, seq)?;
            apply_all(&state, batch, published, &mut tail)?;
            applied = seq;
        }
    }
    let (ticket, article) = state.last_ids()?;
    let mut core = lock(&shared.core);
    shared.replica.replace(generation, state);
    core.applied_seq = applied;
    shared.take_role(&mut core, Role::Follower);
    core.next_ticket = core.next_ticket.max(ticket.0 + 1);
    core.next_article = core.next_article.max(article.0 + 1);
    hand_on(shared, &mut core, tail);
    drop(core);
    shared.applied.send_replace(applied);
    if let Some(observer) = shared.observer.get() {
        observer.rebuilt();
    }
    tracing::info!(at = applied, "replica rebuilt from the log");
    Ok(())
}

fn apply_all(
    state: &SledState,
    batch: Batch,
    published: u64,
    tail: &mut Vec<Arc<TicketEvent>>,
) -> Result<(), StoreError> {
    for entry in batch.entries {
        let events = state.apply(entry)?;
        tail.extend(events.into_iter().filter(|e| e.position > published));
    }
    debug_assert!(state.last_position() >= published || tail.is_empty());
    Ok(())
}
