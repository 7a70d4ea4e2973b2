//! Presence across the cluster: which experts have streams open on which
//! node. A node owns the presence of the streams it holds and reports it
//! on the core NATS subject `<name>.presence`:
//! - a **delta** as soon as its own set changes (who came online, who went
//!   offline since its last report; changes within a few milliseconds go
//!   out together), so the writer routes to an expert who just opened a
//!   stream on a follower without waiting for a heartbeat;
//! - a **snapshot** (the whole set) every heartbeat, which replaces what
//!   the others knew of it and so mends a delta that was lost.
//!
//! Both go out from one task, in order, over one connection, so a node's
//! reports reach every other node in the order they were made. A node not
//! heard from for three heartbeats counts as gone: its streams count as
//! closed, which starts the owners' grace.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::desk::Desk;
use crate::domain::ExpertId;

/// How long a change waits for others to go out with it.
const COALESCE: Duration = Duration::from_millis(5);

/// A node's presence report. A snapshot names every expert with a stream
/// on the node; a delta only who came online and who went offline.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct PresenceReport {
    node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    experts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    online: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    offline: Vec<String>,
}

impl PresenceReport {
    fn snapshot(node: &str, experts: &BTreeSet<ExpertId>) -> Self {
        PresenceReport {
            node: node.to_owned(),
            experts: Some(names(experts.iter())),
            ..Default::default()
        }
    }

    /// What changed from `before` to `now`; `None` when nothing did.
    fn delta(node: &str, before: &BTreeSet<ExpertId>, now: &BTreeSet<ExpertId>) -> Option<Self> {
        let online = names(now.difference(before));
        let offline = names(before.difference(now));
        (!online.is_empty() || !offline.is_empty()).then(|| PresenceReport {
            node: node.to_owned(),
            experts: None,
            online,
            offline,
        })
    }
}

fn names<'a>(ids: impl Iterator<Item = &'a ExpertId>) -> Vec<String> {
    ids.map(|id| id.as_str().to_owned()).collect()
}

fn ids(names: &[String]) -> impl Iterator<Item = ExpertId> + '_ {
    names
        .iter()
        .filter_map(|name| ExpertId::parse("expert", name).ok())
}

/// What this node knows of the others' presence, from their reports.
#[derive(Debug, Default)]
pub(super) struct RemotePresence {
    nodes: HashMap<String, (BTreeSet<ExpertId>, Instant)>,
}

impl RemotePresence {
    /// Takes in `report` (heard at `now`) and returns its node and that
    /// node's experts now.
    pub(super) fn take(
        &mut self,
        report: &PresenceReport,
        now: Instant,
    ) -> (String, BTreeSet<ExpertId>) {
        let (experts, heard) = self
            .nodes
            .entry(report.node.clone())
            .or_insert_with(|| (BTreeSet::new(), now));
        *heard = now;
        match &report.experts {
            Some(all) => *experts = ids(all).collect(),
            None => {
                experts.extend(ids(&report.online));
                for gone in ids(&report.offline) {
                    experts.remove(&gone);
                }
            }
        }
        (report.node.clone(), experts.clone())
    }

    /// The nodes not heard from for longer than `silence`, forgotten.
    pub(super) fn silent(&mut self, now: Instant, silence: Duration) -> Vec<String> {
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, (_, heard))| now.duration_since(*heard) > silence)
            .map(|(node, _)| node.clone())
            .collect();
        for node in &gone {
            self.nodes.remove(node);
        }
        gone
    }
}

impl Cluster {
    fn presence_subject(&self) -> String {
        format!(
            "{}.presence",
            crate::store::jetstream::nats_token(&self.config.name)
        )
    }

    async fn send_presence(&self, report: &PresenceReport) {
        let Ok(payload) = serde_json::to_vec(report) else {
            return;
        };
        if let Err(e) = self
            .log
            .client()
            .publish(self.presence_subject(), payload.into())
            .await
        {
            tracing::debug!(error = %e, "cannot report presence");
        }
    }

    /// Reports this node's presence until `stop`: a delta on each change,
    /// a snapshot every heartbeat.
    pub(super) async fn report_presence(self: Arc<Self>, desk: Desk, stop: CancellationToken) {
        let mut changes = desk.local_presence_changes();
        let mut tick = tokio::time::interval(self.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let node = self.config.node_id.clone();
        let mut reported = BTreeSet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    reported = desk.local_presence().into_iter().collect();
                    self.send_presence(&PresenceReport::snapshot(&node, &reported)).await;
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tokio::time::sleep(COALESCE).await;
                    changes.borrow_and_update();
                    let now: BTreeSet<ExpertId> = desk.local_presence().into_iter().collect();
                    if let Some(delta) = PresenceReport::delta(&node, &reported, &now) {
                        self.send_presence(&delta).await;
                    }
                    reported = now;
                }
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Takes in the other nodes' presence reports until `stop`.
    pub(super) async fn follow_presence(self: Arc<Self>, desk: Desk, stop: CancellationToken) {
        use futures_util::StreamExt;
        let mut subscription = match self.log.client().subscribe(self.presence_subject()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot follow the cluster's presence reports");
                return;
            }
        };
        let mut known = RemotePresence::default();
        let silence = self.config.heartbeat * 3;
        let mut sweep = tokio::time::interval(self.config.heartbeat);
        loop {
            tokio::select! {
                message = subscription.next() => {
                    let Some(message) = message else { return };
                    let Ok(report) = serde_json::from_slice::<PresenceReport>(&message.payload) else {
                        continue;
                    };
                    if report.node == self.config.node_id {
                        continue;
                    }
                    let (node, experts) = known.take(&report, Instant::now());
                    desk.set_remote_presence(&node, experts);
                }
                _ = sweep.tick() => {
                    for node in known.silent(Instant::now(), silence) {
                        tracing::warn!(%node, "no presence report from a node; its streams count as closed");
                        desk.set_remote_presence(&node, BTreeSet::new());
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<ExpertId> {
        names
            .iter()
            .map(|n| ExpertId::parse("expert", n).unwrap())
            .collect()
    }

    #[test]
    fn a_delta_names_only_what_changed() {
        let before = set(&["ana", "bo"]);
        let now = set(&["bo", "cy"]);
        let delta = PresenceReport::delta("a", &before, &now).unwrap();
        assert_eq!(delta.online, vec!["cy"]);
        assert_eq!(delta.offline, vec!["ana"]);
        assert_eq!(delta.experts, None);
        assert_eq!(PresenceReport::delta("a", &now, &now), None);
    }

    #[test]
    fn deltas_apply_on_the_last_snapshot_and_a_snapshot_replaces_all() {
        let t0 = Instant::now();
        let mut known = RemotePresence::default();
        let snapshot = PresenceReport::snapshot("b", &set(&["ana", "bo"]));
        assert_eq!(known.take(&snapshot, t0), ("b".into(), set(&["ana", "bo"])));
        let delta = PresenceReport::delta("b", &set(&["ana", "bo"]), &set(&["bo", "cy"])).unwrap();
        assert_eq!(known.take(&delta, t0).1, set(&["bo", "cy"]));
        // A snapshot mends whatever deltas were lost.
        let mended = PresenceReport::snapshot("b", &set(&["dee"]));
        assert_eq!(known.take(&mended, t0).1, set(&["dee"]));
        // Another node's reports are its own.
        let other = PresenceReport::delta("c", &set(&[]), &set(&["ana"])).unwrap();
        assert_eq!(known.take(&other, t0), ("c".into(), set(&["ana"])));
    }

    #[test]
    fn reports_travel_as_json_and_an_old_snapshot_still_reads() {
        let delta = PresenceReport::delta("b", &set(&["ana"]), &set(&["bo"])).unwrap();
        let bytes = serde_json::to_vec(&delta).unwrap();
        assert_eq!(
            serde_json::from_slice::<PresenceReport>(&bytes).unwrap(),
            delta
        );
        // What nodes sent before deltas existed.
        let old: PresenceReport =
            serde_json::from_str(r#"{"node":"b","experts":["ana"]}"#).unwrap();
        assert_eq!(old, PresenceReport::snapshot("b", &set(&["ana"])));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_unheard_for_the_silence_is_forgotten() {
        let mut known = RemotePresence::default();
        known.take(
            &PresenceReport::snapshot("b", &set(&["ana"])),
            Instant::now(),
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        known.take(
            &PresenceReport::snapshot("c", &set(&["bo"])),
            Instant::now(),
        );
        assert!(known
            .silent(Instant::now(), Duration::from_secs(3))
            .is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            known.silent(Instant::now(), Duration::from_secs(3)),
            vec!["b"]
        );
        // Forgotten: a later delta starts from nothing.
        let delta = PresenceReport::delta("b", &set(&[]), &set(&["cy"])).unwrap();
        assert_eq!(known.take(&delta, Instant::now()).1, set(&["cy"]));
    }
}
