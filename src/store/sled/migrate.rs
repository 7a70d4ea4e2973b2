//! Rewrites of stores written by older schemas (see the parent module's
//! doc for what each schema added).

use serde::Deserialize;
#[cfg(test)]
use serde::Serialize;

use super::keys::{
    backend, decode, encode, is_live, key, u64_at, CommitTail, EventRecord, MIGRATE_4_KEY,
};
use crate::domain::{
    EventKind, ExpertId, SlaClocks, TicketHeader, TicketId, TicketState, TicketStatus, UnixMicros,
};
use crate::store::StoreError;

/// A ticket header as schema 1 stored it (before `created_by`).
#[derive(Deserialize)]
pub(super) struct TicketHeaderV1 {
    id: TicketId,
    title: String,
    description: String,
    requester: String,
    channel: crate::domain::ContactChannel,
    kind: crate::domain::TicketKind,
    priority: crate::domain::Priority,
    skills: Vec<crate::domain::SkillRequirement>,
    created_at: UnixMicros,
}

/// Rewrites schema 1 headers in the current form. Safe to run again after
/// a crash part way: a header already rewritten decodes as current.
pub(super) fn migrate_v1_headers(db: &sled::Db) -> Result<(), StoreError> {
    let mut rewritten = 0u64;
    for item in db.scan_prefix(b"h/") {
        let (k, v) = item.map_err(backend)?;
        if postcard::from_bytes::<TicketHeader>(&v).is_ok() {
            continue;
        }
        let old: TicketHeaderV1 = decode("schema 1 ticket header", &v)?;
        let header = TicketHeader {
            id: old.id,
            title: old.title,
            description: old.description,
            requester: old.requester,
            channel: old.channel,
            kind: old.kind,
            priority: old.priority,
            skills: old.skills,
            created_at: old.created_at,
            created_by: None,
        };
        db.insert(k, encode(&header)?).map_err(backend)?;
        rewritten += 1;
    }
    db.flush().map_err(backend)?;
    tracing::info!(rewritten, "ticket headers migrated from schema 1");
    Ok(())
}

/// A ticket state as schemas 1 to 3 stored it.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(super) struct TicketStateV3 {
    pub(super) status: TicketStatus,
    pub(super) owner: Option<ExpertId>,
    pub(super) members: Vec<ExpertId>,
    pub(super) help_tags: Vec<crate::domain::Tag>,
    pub(super) declined: Vec<ExpertId>,
    pub(super) updated_at: UnixMicros,
    pub(super) version: u64,
}

impl TicketStateV3 {
    /// Clocks that were never kept cannot be restored: they count as
    /// having no limit (no deadline, no breach).
    fn upgrade(self) -> TicketState {
        TicketState {
            status: self.status,
            owner: self.owner,
            members: self.members,
            help_tags: self.help_tags,
            declined: self.declined,
            updated_at: self.updated_at,
            version: self.version,
            ..TicketState::blank(0, SlaClocks::untracked())
        }
    }
}

/// An event record as schemas 1 to 3 stored it.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(super) struct EventRecordV3 {
    pub(super) ticket: TicketId,
    pub(super) at: UnixMicros,
    pub(super) actor: String,
    pub(super) kind: EventKind,
    pub(super) state: TicketStateV3,
    pub(super) commit_first: u64,
    pub(super) tail: Option<CommitTail>,
}

impl EventRecordV3 {
    pub(super) fn upgrade(self) -> EventRecord {
        EventRecord {
            ticket: self.ticket,
            at: self.at,
            actor: self.actor,
            kind: self.kind,
            state: self.state.upgrade(),
            commit_first: self.commit_first,
            tail: self.tail,
        }
    }
}

/// Rewrites every event and ticket state of a schema 3 (or older) store in
/// the schema 4 form, then indexes live tickets. Each chunk is one sled
/// batch that also records the last key it rewrote, so a crash part way
/// resumes after it and never decodes a record twice.
pub(super) fn migrate_v3_states(db: &sled::Db) -> Result<(), StoreError> {
    const CHUNK: usize = 1024;
    let mut resume = db.get(MIGRATE_4_KEY).map_err(backend)?.map(|v| v.to_vec());
    let mut rewritten = 0u64;
    for prefix in [b"e/", b"s/"] {
        if resume
            .as_ref()
            .is_some_and(|k| k.as_slice() >= prefix.as_slice() && !k.starts_with(prefix))
        {
            continue; // this prefix was finished before the crash
        }
        loop {
            let start = match &resume {
                Some(k) if k.starts_with(prefix) => std::ops::Bound::Excluded(k.clone()),
                _ => std::ops::Bound::Included(prefix.to_vec()),
            };
            let mut batch = sled::Batch::default();
            let mut last = None;
            for item in db
                .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
                .take(CHUNK)
            {
                let (k, v) = item.map_err(backend)?;
                if !k.starts_with(prefix) {
                    break;
                }
                let bytes = if prefix == b"e/" {
                    encode(&decode::<EventRecordV3>("schema 3 event", &v)?.upgrade())?
                } else {
                    encode(&decode::<TicketStateV3>("schema 3 ticket state", &v)?.upgrade())?
                };
                batch.insert(k.to_vec(), bytes);
                last = Some(k.to_vec());
                rewritten += 1;
            }
            let Some(last) = last else { break };
            batch.insert(MIGRATE_4_KEY, last.clone());
            db.apply_batch(batch).map_err(backend)?;
            resume = Some(last);
        }
    }
    for item in db.scan_prefix(b"u/") {
        let (k, _) = item.map_err(backend)?;
        db.remove(k).map_err(backend)?;
    }
    for item in db.scan_prefix(b"s/") {
        let (k, v) = item.map_err(backend)?;
        let state: TicketState = decode("ticket state", &v)?;
        if is_live(state.status) {
            db.insert(key(b'l', u64_at(&k, 2)?), &[]).map_err(backend)?;
        }
    }
    db.remove(MIGRATE_4_KEY).map_err(backend)?;
    db.flush().map_err(backend)?;
    tracing::info!(rewritten, "ticket states and events migrated to schema 4");
    Ok(())
}
