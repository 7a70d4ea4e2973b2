//! The writer's publisher: the appends waiting, as one message per batch,
//! fenced on the sequence the writer expects to be the stream's last.
//!
//! One batch is in flight at a time: the next one expects the sequence the
//! last one was given, and appends arriving meanwhile make the next batch
//! larger (the group commit). A batch whose acknowledgement is lost is
//! sent again with the same message id and expected sequence; a refusal
//! after such a retry is checked against what the stream holds at that
//! sequence, so the outcome is known before any caller is answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;

use super::{lock, Role, Shared};
use crate::domain::TicketEvent;
use crate::store::{Lsn, StoreError};

/// The header naming the node that published a batch.
pub(super) const NODE_HEADER: &str = "Swarmdesk-Node";

/// A batch on its way.
struct Outgoing {
    expected: u64,
    msg_id: String,
    payload: Bytes,
    last_lsn: Lsn,
    entries: usize,
    events: Vec<Arc<TicketEvent>>,
}

pub(super) async fn run(shared: Arc<Shared>) {
    loop {
        match take_batch(&shared) {
            Ok(Some(batch)) => send(&shared, batch).await,
            Ok(None) => {
                tokio::select! {
                    _ = shared.publish_wake.notified() => {}
                    _ = shared.stop.cancelled() => return,
                }
            }
            Err(e) => shared.step_down(e),
        }
    }
}

/// The appends waiting, up to the servers' message size, as one batch.
fn take_batch(shared: &Shared) -> Result<Option<Outgoing>, StoreError> {
    let mut core = lock(&shared.core);
    if core.role != Role::Writer || core.in_flight || core.pending.is_empty() {
        return Ok(None);
    }
    let mut body = Vec::new();
    let mut entries = 0usize;
    let mut events = Vec::new();
    let mut last_lsn = 0;
    while let Some(next) = core.pending.front() {
        let bytes = postcard::to_allocvec(&next.entry)
            .map_err(|e| StoreError::Backend(format!("encoding an entry: {e}")))?;
        if entries > 0 && body.len() + bytes.len() > shared.max_batch_bytes {
            break;
        }
        body.extend_from_slice(&bytes);
        let staged = core.pending.pop_front().expect("front exists");
        entries += 1;
        last_lsn = staged.lsn;
        events.extend(staged.events);
    }
    // postcard's Vec: the length as a varint, then the items.
    let mut payload = Vec::with_capacity(body.len() + 10);
    let mut n = entries as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            payload.push(byte);
            break;
        }
        payload.push(byte | 0x80);
    }
    payload.extend_from_slice(&body);
    core.in_flight = true;
    let expected = core.applied_seq;
    Ok(Some(Outgoing {
        expected,
        msg_id: format!("{}:{}:{expected}", shared.config.node_id, core.term),
        payload: Bytes::from(payload),
        last_lsn,
        entries,
        events,
    }))
}

/// How a batch ended.
enum Outcome {
    Stored(u64),
    Refused(StoreError),
}

async fn send(shared: &Shared, batch: Outgoing) {
    let started = Instant::now();
    let outcome = publish(shared, &batch).await;
    let metrics = crate::metrics::metrics();
    match outcome {
        Outcome::Stored(seq) => {
            metrics
                .cluster_append_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics.cluster_batch_entries.observe(batch.entries as f64);
            let mut core = lock(&shared.core);
            core.in_flight = false;
            if core.role != Role::Writer {
                // Stepped down meanwhile (a demotion): stored, but its
                // callers were already told it failed; the rebuild applies it.
                return;
            }
            core.applied_seq = seq;
            core.durable_lsn = batch.last_lsn;
            if let Some(last) = batch.events.last() {
                core.published_position = core.published_position.max(last.position);
            }
            // Handed on under the lock, so that the follower, which also
            // publishes under it, cannot overtake.
            if !batch.events.is_empty() {
                shared.sink.publish(&batch.events);
            }
            let deposed = core.deposed.take();
            drop(core);
            shared
                .stream_last
                .fetch_max(seq, std::sync::atomic::Ordering::AcqRel);
            shared.applied.send_replace(seq);
            shared
                .durable
                .send_modify(|d| d.lsn = d.lsn.max(batch.last_lsn));
            match deposed {
                // Another writer appended after this batch: the rest fails.
                Some(why) => shared.step_down(StoreError::Fenced(why)),
                None => shared.publish_wake.notify_one(),
            }
        }
        Outcome::Refused(error) => {
            if matches!(error, StoreError::Fenced(_)) {
                metrics.cluster_fencing_refusals.inc();
            }
            lock(&shared.core).in_flight = false;
            shared.step_down(error);
        }
    }
}

async fn publish(shared: &Shared, batch: &Outgoing) -> Outcome {
    let deadline = Instant::now() + shared.config.append_timeout;
    let mut retried = false;
    let mut backoff = Duration::from_millis(20);
    loop {
        let message = PublishMessage::build()
            .payload(batch.payload.clone())
            .message_id(&batch.msg_id)
            .expected_last_sequence(batch.expected)
            .header(NODE_HEADER, shared.config.node_id.as_str());
        let sent = match shared
            .js
            .send_publish(shared.subject.clone(), message)
            .await
        {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let error = match sent {
            Ok(ack) => return Outcome::Stored(ack.sequence),
            Err(e) => e,
        };
        match error.kind() {
            PublishErrorKind::WrongLastSequence => {
                // After a lost acknowledgement the retry may find its own
                // batch at the end of the stream: look before stepping down.
                if retried {
                    match stored_as(shared, batch).await {
                        Ok(Some(seq)) => return Outcome::Stored(seq),
                        Ok(None) => {}
                        Err(e) if Instant::now() < deadline => {
                            tracing::warn!(error = %e, "cannot read the log back; retrying");
                            tokio::time::sleep(backoff).await;
                            continue;
                        }
                        Err(_) => {
                            return Outcome::Refused(StoreError::Timeout(format!(
                                "batch {} may or may not be in the log",
                                batch.msg_id
                            )))
                        }
                    }
                }
                return Outcome::Refused(StoreError::Fenced(format!(
                    "another writer appended: the log no longer ends at sequence {}",
                    batch.expected
                )));
            }
            PublishErrorKind::MaxPayloadExceeded => {
                return Outcome::Refused(StoreError::Backend(format!(
                    "a batch of {} bytes exceeds the NATS servers' max_payload",
                    batch.payload.len()
                )))
            }
            _ if Instant::now() < deadline => {
                tracing::debug!(error = %error, msg_id = %batch.msg_id, "publishing a batch failed; retrying");
                retried = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            _ => {
                return Outcome::Refused(StoreError::Timeout(format!(
                    "batch {} unacknowledged after {:?}: {error}",
                    batch.msg_id, shared.config.append_timeout
                )))
            }
        }
    }
}

/// The sequence at which the stream holds `batch`, if it does: the message
/// right after the one it expected, carrying its id.
async fn stored_as(shared: &Shared, batch: &Outgoing) -> Result<Option<u64>, StoreError> {
    let seq = batch.expected + 1;
    match shared.stream.direct_get(seq).await {
        Ok(message) => {
            let id = message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_owned());
            Ok((id.as_deref() == Some(batch.msg_id.as_str())).then_some(seq))
        }
        Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(StoreError::Unavailable(format!("reading the log: {e}"))),
    }
}
