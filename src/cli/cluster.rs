//! `swarmdesk cluster status`.

use super::output::Printer;
use crate::rpc::pb;

impl Printer {
    /// `cluster status`: one line per node and per replica of the log.
    pub(super) fn cluster_status(&self, status: &pb::ClusterStatusResponse) {
        if self.json {
            let nodes: Vec<_> = status
                .nodes
                .iter()
                .map(|n| {
                    serde_json::json!({
                        "id": n.id, "address": n.address, "writer": n.writer,
                        "applied_sequence": n.applied_sequence, "lag": n.lag,
                        "last_heartbeat_unix": n.last_heartbeat.as_ref().map(|t| t.seconds),
                    })
                })
                .collect();
            let replicas: Vec<_> = status
                .replicas
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "server": r.server, "leader": r.leader, "current": r.current,
                        "offline": r.offline, "lag": r.lag,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "answered_by": status.node_id, "writer": status.writer,
                    "log_last_sequence": status.log_last_sequence,
                    "nodes": nodes, "replicas": replicas,
                })
            );
            return;
        }
        let writer = if status.writer.is_empty() {
            "none (being chosen)"
        } else {
            &status.writer
        };
        println!(
            "writer {writer}; log at sequence {}; answered by {}",
            status.log_last_sequence, status.node_id
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for n in &status.nodes {
            let seen = n.last_heartbeat.as_ref().map_or("never".to_owned(), |t| {
                format!("{} s ago", (now - t.seconds).max(0))
            });
            println!(
                "node {:<12} {:<8} applied {:<8} lag {:<6} heartbeat {seen:<10} {}",
                n.id,
                if n.writer { "writer" } else { "follower" },
                n.applied_sequence,
                n.lag,
                n.address
            );
        }
        for r in &status.replicas {
            let state = if r.offline {
                "offline"
            } else if r.current {
                "current"
            } else {
                "behind"
            };
            println!(
                "log replica {:<10} {:<7} {state} (lag {})",
                r.server,
                if r.leader { "leader" } else { "" },
                r.lag
            );
        }
    }
}
