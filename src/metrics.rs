//! Prometheus metrics, served as text at `/metrics` on `--metrics-listen`
//! (off by default). One process-wide registry: the figures describe the
//! process, whatever parts of it record them.

use std::convert::Infallible;
use std::sync::LazyLock;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Every metric swarmdesk exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// RPCs by method and gRPC code.
    pub rpc_requests: IntCounterVec,
    /// RPC latency to the response headers, by method.
    pub rpc_seconds: HistogramVec,
    /// Open Subscribe and WatchTicket streams.
    pub open_streams: IntGauge,
    /// Events appended to the store.
    pub events_appended: IntCounter,
    /// Tickets waiting for an owner (status OPEN).
    pub tickets_waiting: IntGauge,
    /// Tickets in each status, kept by the store as tickets move.
    pub tickets_by_status: IntGaugeVec,
    /// 1 while writes are refused, by reason (`disk_full`, `unwritable`,
    /// `failed`): why health says NOT_SERVING.
    pub store_refusing_writes: IntGaugeVec,
    /// How tickets got their owners.
    pub routing: IntCounterVec,
    /// Time to write one commit to the store (before durability).
    pub store_write_seconds: Histogram,
    /// Time of one group flush (sled flush + fdatasync).
    pub store_flush_seconds: Histogram,
    /// Events between the newest durable one and the one a stream delivers.
    pub stream_lag: Histogram,
    /// Streams dropped from the live feed for falling behind.
    pub stream_resyncs: IntCounter,
    /// Pages a stream replayed, by where they came from (memory, store).
    pub replay_pages: IntCounterVec,
    /// System calls that wrote to client connections, and the bytes they
    /// wrote: their ratio shows how many frames each write gathers.
    pub socket_writes: IntCounter,
    pub socket_write_bytes: IntCounter,
    /// Cluster mode: 1 while this node writes the log, 0 otherwise.
    pub cluster_writer: IntGauge,
    /// Cluster mode: stream messages this node has yet to apply.
    pub cluster_apply_lag: IntGauge,
    /// Cluster mode: time from publishing a batch to JetStream's ack.
    pub cluster_append_seconds: Histogram,
    /// Cluster mode: entries per published batch.
    pub cluster_batch_entries: Histogram,
    /// Cluster mode: times this node became the writer.
    pub cluster_failovers: IntCounter,
    /// Cluster mode: batches the stream refused because another writer
    /// had appended (the fence).
    pub cluster_fencing_refusals: IntCounter,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are fixed at compile time and unique, so this cannot fail.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new_custom(Some("swarmdesk".into()), None).unwrap_or_default();
        let latency = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5,
        ];
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| panic!("metric {name}: {e}"))
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .unwrap_or_else(|e| panic!("metric {name}: {e}"))
        };
        let gauge = |name: &str, help: &str| {
            IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"))
        };
        Metrics {
            rpc_requests: register(
                &registry,
                counter_vec("rpc_requests_total", "RPCs by method and gRPC code", &["method", "code"]),
            ),
            rpc_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new("rpc_duration_seconds", "RPC latency to the response headers")
                        .buckets(latency.clone()),
                    &["method"],
                )
                .unwrap_or_else(|e| panic!("metric rpc_duration_seconds: {e}")),
            ),
            open_streams: register(&registry, gauge("open_streams", "Open event streams")),
            events_appended: register(
                &registry,
                IntCounter::new("events_appended_total", "Events appended to the store")
                    .unwrap_or_else(|e| panic!("metric events_appended_total: {e}")),
            ),
            tickets_waiting: register(
                &registry,
                gauge("tickets_waiting", "Tickets waiting for an owner (status OPEN)"),
            ),
            tickets_by_status: register(
                &registry,
                IntGaugeVec::new(Opts::new("tickets", "Tickets by status"), &["status"])
                    .unwrap_or_else(|e| panic!("metric tickets: {e}")),
            ),
            store_refusing_writes: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "store_refusing_writes",
                        "1 while the store refuses writes, by reason (disk_full, unwritable, failed)",
                    ),
                    &["reason"],
                )
                .unwrap_or_else(|e| panic!("metric store_refusing_writes: {e}")),
            ),
            routing: register(
                &registry,
                counter_vec(
                    "routing_outcomes_total",
                    "How tickets got owners: assigned_at_create, offered (none eligible), assigned_later, claimed, transferred",
                    &["outcome"],
                ),
            ),
            store_write_seconds: register(
                &registry,
                histogram("store_write_seconds", "Time to write one commit", latency.clone()),
            ),
            store_flush_seconds: register(
                &registry,
                histogram("store_flush_seconds", "Time of one group flush + fdatasync", latency.clone()),
            ),
            stream_lag: register(
                &registry,
                histogram(
                    "stream_lag_events",
                    "Durable events not yet delivered when a stream delivers one",
                    vec![0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0],
                ),
            ),
            stream_resyncs: register(
                &registry,
                IntCounter::new(
                    "stream_resyncs_total",
                    "Streams dropped from the live feed for falling behind (they catch up by replay)",
                )
                .unwrap_or_else(|e| panic!("metric stream_resyncs_total: {e}")),
            ),
            replay_pages: register(
                &registry,
                counter_vec(
                    "replay_pages_total",
                    "Pages of events streams replayed, from recent events in memory or from the store",
                    &["from"],
                ),
            ),
            socket_writes: register(
                &registry,
                IntCounter::new(
                    "socket_writes_total",
                    "System calls that wrote to client connections (each gathers the frames queued by then)",
                )
                .unwrap_or_else(|e| panic!("metric socket_writes_total: {e}")),
            ),
            socket_write_bytes: register(
                &registry,
                IntCounter::new(
                    "socket_write_bytes_total",
                    "Bytes written to client connections",
                )
                .unwrap_or_else(|e| panic!("metric socket_write_bytes_total: {e}")),
            ),
            cluster_writer: register(
                &registry,
                gauge("cluster_writer", "1 while this node writes the cluster's log"),
            ),
            cluster_apply_lag: register(
                &registry,
                gauge("cluster_apply_lag", "Log messages this node has yet to apply"),
            ),
            cluster_append_seconds: register(
                &registry,
                histogram(
                    "cluster_append_seconds",
                    "Time from publishing a batch to the log to its acknowledgement",
                    latency.clone(),
                ),
            ),
            cluster_batch_entries: register(
                &registry,
                histogram(
                    "cluster_batch_entries",
                    "Entries per batch published to the log",
                    vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                ),
            ),
            cluster_failovers: register(
                &registry,
                IntCounter::new("cluster_failovers_total", "Times this node became the writer")
                    .unwrap_or_else(|e| panic!("metric cluster_failovers_total: {e}")),
            ),
            cluster_fencing_refusals: register(
                &registry,
                IntCounter::new(
                    "cluster_fencing_refusals_total",
                    "Batches the log refused because another writer had appended",
                )
                .unwrap_or_else(|e| panic!("metric cluster_fencing_refusals_total: {e}")),
            ),
            registry,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Serves `/metrics` on `listener` until `stop` fires.
pub async fn serve(listener: TcpListener, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

async fn answer(
    request: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let response = if request.uri().path() == "/metrics" {
        http::Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(metrics().render())))
    } else {
        http::Response::builder()
            .status(http::StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"only /metrics is here\n")))
    };
    Ok(response.unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new()))))
}
