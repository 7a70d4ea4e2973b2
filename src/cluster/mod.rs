//! Cluster mode: several nodes over one log on NATS JetStream.
//!
//! ```text
//!   node a (writer)          node b, node c (followers)
//!   lease: renews KV key     read the lease: who writes, where
//!   appends ──▶ stream ──▶ every node applies it to its replica
//!   ◀── writes forwarded (gRPC, forward.rs), answered once applied here
//! ```
//!
//! - **The lease** (a key in the KV bucket `<name>_writer`, whose age limit
//!   is the lease's length) says who should write: the node that creates
//!   the key promotes its log (it applies the stream to its end) and renews
//!   the key every heartbeat by compare-and-swap on its revision; a node
//!   that cannot renew steps down. Safety is the log's fence, not the
//!   lease: a writer that lost the lease without knowing it (paused, cut
//!   off) has its next batch refused by JetStream.
//! - **Node records** (the bucket `<name>_nodes`, one key per node, aged
//!   out after a few missed heartbeats) carry each node's address, role and
//!   applied sequence, for `ClusterStatus`.
//! - Writes sent to a follower are forwarded to the writer named by the
//!   lease (`forward.rs`).
//! - Presence: each node reports the experts streaming from it, a delta on
//!   each change and a snapshot every heartbeat (`presence.rs`).

pub mod forward;
mod presence;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::desk::Desk;
use crate::store::jetstream::{nats_token, until_jetstream_answers, JetStreamLog, Role};
use crate::store::StoreError;

/// How a node takes part in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub urls: Vec<String>,
    pub node_id: String,
    /// Where other nodes reach this one's gRPC (to forward writes).
    pub advertise: String,
    pub name: String,
    pub replicas: usize,
    /// How long a writer's lease lasts unless renewed.
    pub lease: Duration,
    pub heartbeat: Duration,
    pub credentials: Option<std::path::PathBuf>,
    pub tls_ca: Option<std::path::PathBuf>,
    /// How this node reaches another's https:// address (to forward).
    pub peer_tls: crate::client::ClientTls,
}

/// The lease's value: who writes, and where it is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterInfo {
    pub node: String,
    pub url: String,
}

/// What `ClusterStatus` shows.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    pub node_id: String,
    pub writer: Option<WriterInfo>,
    pub nodes: Vec<NodeRecord>,
    pub log_last: u64,
    pub replicas: Vec<ReplicaHealth>,
}

/// One JetStream server holding a copy of the log.
#[derive(Clone, Debug)]
pub struct ReplicaHealth {
    pub server: String,
    pub leader: bool,
    pub current: bool,
    pub offline: bool,
    pub lag: u64,
}

/// A node's record, renewed every heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node: String,
    pub url: String,
    pub writer: bool,
    pub applied: u64,
    /// Unix microseconds of the heartbeat that wrote it.
    pub at: i64,
}

const LEASE_KEY: &str = "writer";

/// This node's part in the cluster: its log, and the lease and node
/// records it keeps in NATS.
pub struct Cluster {
    config: ClusterConfig,
    log: Arc<JetStreamLog>,
    leases: kv::Store,
    nodes: kv::Store,
    /// The writer as last read from the lease (this node, when it writes).
    writer: RwLock<Option<WriterInfo>>,
    promoting: AtomicBool,
    /// Counts the times this node became the writer (the desk reloads then).
    promotions: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.config.node_id)
            .field("writer", &self.writer())
            .finish_non_exhaustive()
    }
}

async fn bucket(
    js: &jetstream::Context,
    name: String,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, StoreError> {
    until_jetstream_answers(&format!("the bucket {name}"), || async {
        match js.get_key_value(&name).await {
            Ok(store) => Ok(store),
            Err(_) => {
                js.create_key_value(kv::Config {
                    bucket: name.clone(),
                    history: 1,
                    max_age,
                    num_replicas: replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
            }
        }
    })
    .await
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Cluster {
    /// Finds (or creates) the cluster's buckets.
    pub async fn join(config: ClusterConfig, log: Arc<JetStreamLog>) -> Result<Self, StoreError> {
        let js = log.jetstream();
        let prefix = nats_token(&config.name);
        let leases = bucket(
            &js,
            format!("{prefix}_writer"),
            config.lease,
            config.replicas,
        )
        .await?;
        let nodes = bucket(
            &js,
            format!("{prefix}_nodes"),
            config.heartbeat * 5,
            config.replicas,
        )
        .await?;
        Ok(Cluster {
            config,
            log,
            leases,
            nodes,
            writer: RwLock::new(None),
            promoting: AtomicBool::new(false),
            promotions: tokio::sync::watch::channel(0).0,
        })
    }

    /// How this node reaches another's https:// address.
    pub fn peer_tls(&self) -> &crate::client::ClientTls {
        &self.config.peer_tls
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    pub fn heartbeat(&self) -> Duration {
        self.config.heartbeat
    }

    pub fn log(&self) -> &Arc<JetStreamLog> {
        &self.log
    }

    /// The writer as this node last saw it.
    pub fn writer(&self) -> Option<WriterInfo> {
        self.writer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_writer(&self, writer: Option<WriterInfo>) {
        *self.writer.write().unwrap_or_else(|p| p.into_inner()) = writer;
    }

    fn me(&self) -> WriterInfo {
        WriterInfo {
            node: self.config.node_id.clone(),
            url: self.config.advertise.clone(),
        }
    }

    /// Changes each time this node becomes the writer.
    pub fn promotions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.promotions.subscribe()
    }

    /// Whether the node reaches NATS now.
    pub fn connected(&self) -> bool {
        self.log.connected()
    }

    /// The cluster as this node sees it now.
    pub async fn status(&self) -> Result<ClusterStatus, StoreError> {
        let nodes = self.nodes().await?;
        let (log_last, replicas) = self.log.stream_health().await?;
        Ok(ClusterStatus {
            node_id: self.config.node_id.clone(),
            writer: self.writer(),
            nodes,
            log_last,
            replicas,
        })
    }

    /// Every node's record (those heard from lately).
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        use futures_util::StreamExt;
        let mut keys = self
            .nodes
            .keys()
            .await
            .map_err(|e| StoreError::Unavailable(format!("listing nodes: {e}")))?;
        let mut records = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| StoreError::Unavailable(format!("listing nodes: {e}")))?;
            if let Ok(Some(value)) = self.nodes.get(&key).await {
                if let Ok(record) = serde_json::from_slice::<NodeRecord>(&value) {
                    records.push(record);
                }
            }
        }
        records.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(records)
    }

    /// Heartbeats until `stop`: the node record and the lease (taken when
    /// free, renewed while held, given up when it cannot be renewed), with
    /// the presence reports beside them. At `stop` a held lease is released
    /// once what was appended is durable, so another node writes at once.
    pub async fn run(self: Arc<Self>, desk: Desk, stop: CancellationToken) {
        tokio::spawn(self.clone().follow_presence(desk.clone(), stop.clone()));
        tokio::spawn(self.clone().report_presence(desk.clone(), stop.clone()));
        let mut lease: Option<u64> = None;
        let mut tick = tokio::time::interval(self.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            lease = self.lease_step(lease).await;
            self.write_record(lease.is_some()).await;
        }
        if let Some(revision) = lease {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while !self.log.drained() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.log.demote("shutting down");
            if let Err(e) = self
                .leases
                .delete_expect_revision(LEASE_KEY, Some(revision))
                .await
            {
                tracing::warn!(error = %e, "cannot release the writer's lease");
            }
        }
    }

    async fn write_record(&self, writer: bool) {
        let record = NodeRecord {
            node: self.config.node_id.clone(),
            url: self.config.advertise.clone(),
            writer: writer && self.log.role() == Role::Writer,
            applied: self.log.applied_seq(),
            at: now_micros(),
        };
        crate::metrics::metrics().cluster_apply_lag.set(
            i64::try_from(self.log.stream_last().saturating_sub(record.applied))
                .unwrap_or(i64::MAX),
        );
        if let Ok(value) = serde_json::to_vec(&record) {
            if let Err(e) = self.nodes.put(&self.config.node_id, value.into()).await {
                tracing::debug!(error = %e, "cannot write this node's record");
            }
        }
    }

    /// One heartbeat of the lease; returns its revision while held.
    async fn lease_step(self: &Arc<Self>, held: Option<u64>) -> Option<u64> {
        let value: bytes::Bytes = serde_json::to_vec(&self.me()).ok()?.into();
        if let Some(revision) = held {
            return match self.leases.update(LEASE_KEY, value, revision).await {
                Ok(next) => {
                    if self.log.role() != Role::Writer {
                        // Stepped down on its own (fenced, or an unknown
                        // outcome) while holding the lease: write again
                        // once its replica is clean.
                        self.promote();
                    }
                    Some(next)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the writer's lease could not be renewed; stepping down");
                    self.log.demote("the lease could not be renewed");
                    self.set_writer(None);
                    None
                }
            };
        }
        match self.leases.entry(LEASE_KEY).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                let writer: Option<WriterInfo> = serde_json::from_slice(&entry.value).ok();
                if writer
                    .as_ref()
                    .is_some_and(|w| w.node == self.config.node_id)
                {
                    // Our own lease from before a restart: renew it.
                    return match self.leases.update(LEASE_KEY, value, entry.revision).await {
                        Ok(next) => {
                            self.set_writer(Some(self.me()));
                            self.promote();
                            Some(next)
                        }
                        Err(_) => None,
                    };
                }
                if self.log.role() == Role::Writer {
                    self.log.demote("another node holds the lease");
                }
                self.set_writer(writer);
                None
            }
            Ok(_) => match self.leases.create(LEASE_KEY, value).await {
                Ok(revision) => {
                    tracing::info!(node = %self.config.node_id, "took the writer's lease");
                    self.set_writer(Some(self.me()));
                    self.promote();
                    Some(revision)
                }
                Err(_) => None,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the writer's lease");
                None
            }
        }
    }

    /// Promotes the log in the background (it catches up first), while
    /// the heartbeats go on renewing the lease.
    fn promote(self: &Arc<Self>) {
        if self.promoting.swap(true, Ordering::AcqRel) {
            return;
        }
        let cluster = self.clone();
        tokio::spawn(async move {
            let log = cluster.log.clone();
            let timeout = cluster.config.lease * 20;
            let promoted = tokio::task::spawn_blocking(move || log.promote(timeout)).await;
            cluster.promoting.store(false, Ordering::Release);
            match promoted {
                Ok(Ok(())) => cluster.promotions.send_modify(|n| *n += 1),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not become the writer"),
                Err(e) => tracing::warn!(error = %e, "promotion task failed"),
            }
        });
    }
}
