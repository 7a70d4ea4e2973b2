//! How many tickets are in each status: kept by apply, saved now and then,
//! brought up to date from the log on open.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::keys::{backend, decode, encode, key, seq_key, u64_at, EventRecord, STATUS_COUNTS_KEY};
use crate::domain::{TicketId, TicketStatus};
use crate::store::StoreError;

/// How many tickets are in each status, as of the event at `through`.
/// Saved by a commit (after its commit point) about once a second and at
/// close, not by every commit: a key written per created ticket was a
/// sixth of the store's work. Opening counts the events after `through`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StatusCounts {
    pub(super) through: u64,
    pub(super) counts: BTreeMap<TicketStatus, u64>,
}

impl StatusCounts {
    /// Counts a ticket moving `from` (`None`: a new ticket) `to`, by the
    /// commit ending at `through`; false when that is no change.
    pub(super) fn moved(
        &mut self,
        from: Option<TicketStatus>,
        to: TicketStatus,
        through: u64,
    ) -> bool {
        if from == Some(to) {
            return false;
        }
        if let Some(from) = from {
            let n = self.counts.entry(from).or_default();
            *n = n.saturating_sub(1);
        }
        *self.counts.entry(to).or_default() += 1;
        self.through = through;
        true
    }

    pub(super) fn load(tree: &sled::Db) -> Result<StatusCounts, StoreError> {
        tree.get(STATUS_COUNTS_KEY)
            .map_err(backend)?
            .map_or(Ok(StatusCounts::default()), |v| decode("status counts", &v))
    }

    /// The counts as last saved, brought up to date with the events
    /// written after them (saved again if there were any).
    pub(super) fn recount(tree: &sled::Db) -> Result<StatusCounts, StoreError> {
        let mut counts = Self::load(tree)?;
        let mut latest: HashMap<TicketId, TicketStatus> = HashMap::new();
        let mut recounted = 0u64;
        let from = key(b'e', counts.through.saturating_add(1));
        for item in tree.range(from..=key(b'e', u64::MAX)) {
            let (k, v) = item.map_err(backend)?;
            let position = u64_at(&k, 2)?;
            let record: EventRecord = decode("event", &v)?;
            let before = match latest.get(&record.ticket) {
                Some(status) => Some(*status),
                None => status_before(tree, record.ticket, record.state.version)?,
            };
            counts.moved(before, record.state.status, position);
            counts.through = position;
            latest.insert(record.ticket, record.state.status);
            recounted += 1;
        }
        if recounted > 0 {
            tracing::info!(
                events = recounted,
                "ticket counts brought up to date from the log"
            );
            counts.save(tree)?;
        }
        Ok(counts)
    }

    pub(super) fn save(&self, tree: &sled::Db) -> Result<(), StoreError> {
        tree.insert(STATUS_COUNTS_KEY, encode(self)?)
            .map_err(backend)?;
        Ok(())
    }

    pub(super) fn publish(&self) {
        let gauge = &crate::metrics::metrics().tickets_by_status;
        for status in TicketStatus::ALL {
            let n = self.counts.get(status).copied().unwrap_or(0);
            gauge
                .with_label_values(&[status.label()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// The status of `ticket` before the event that made it `version`.
fn status_before(
    tree: &sled::Db,
    ticket: TicketId,
    version: u64,
) -> Result<Option<TicketStatus>, StoreError> {
    if version <= 1 {
        return Ok(None);
    }
    let Some(position) = tree.get(seq_key(ticket, version - 1)).map_err(backend)? else {
        return Err(StoreError::Corrupt(format!(
            "ticket {ticket} has no event for version {}",
            version - 1
        )));
    };
    let position = u64_at(&position, 0)?;
    let bytes = tree
        .get(key(b'e', position))
        .map_err(backend)?
        .ok_or_else(|| StoreError::Corrupt(format!("event {position} missing")))?;
    Ok(Some(decode::<EventRecord>("event", &bytes)?.state.status))
}

/// Counts every ticket's status once (opening a store from before schema 3).
pub(super) fn migrate_status_counts(tree: &sled::Db, through: u64) -> Result<(), StoreError> {
    let mut counts = StatusCounts {
        through,
        counts: BTreeMap::new(),
    };
    for item in tree.scan_prefix(b"s/") {
        let (_, v) = item.map_err(backend)?;
        let state: crate::domain::TicketState = decode("ticket state", &v)?;
        *counts.counts.entry(state.status).or_default() += 1;
    }
    counts.save(tree)?;
    tracing::info!(?counts.counts, "tickets counted by status");
    Ok(())
}
