//! Knowledge and stats entry points.
use super::Desk;

use crate::domain::stats::Bucket;
use crate::domain::{DeskError, KnowledgeCounts, Tag, UnixMicros};

impl Desk {
    /// The stats for `[from, to)`, counting every event written before
    /// the call, with the uses of knowledge outside tickets.
    pub async fn stats(
        &self,
        from: UnixMicros,
        to: UnixMicros,
        tag: Option<&Tag>,
    ) -> Result<(Bucket, KnowledgeCounts), DeskError> {
        if from >= to {
            return Err(DeskError::invalid("from", "must be before to"));
        }
        // Everything a read could already show, not only what has been
        // streamed: a ticket's breach is visible before its event is durable.
        let upto = self.inner.storage.tickets.last_position();
        let tickets = self.inner.stats.report(from, to, tag, upto).await?;
        let knowledge = self.inner.knowledge.counts(from, to, tag)?;
        Ok((tickets, knowledge))
    }
}
