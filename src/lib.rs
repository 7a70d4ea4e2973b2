//! swarmdesk: a swarming support server.
//!
//! A ticket gets exactly one owner from the moment it is created, chosen by
//! skill, rank, load and fairness, and is streamed at once to its swarm:
//! every expert subscribed to a skill channel matching its tags.
//!
//! # Layout
//! - [`domain`]: tickets, experts, ranks, routing, status moves, events and
//!   errors; no transport, no storage.
//! - [`store`]: the log and the state it is applied to, behind small
//!   traits; the sled backend (log and state at once, group commit), an
//!   in-memory one (a fenced shared stream), the NATS JetStream one
//!   (cluster mode: a fenced writer, every node applying the log to its
//!   sled replica), and the contract all pass.
//! - [`hub`]: live fan-out to streams; its module doc states the delivery
//!   guarantee.
//! - [`desk`]: every API operation, applying the domain's rules through the
//!   log and the hub, one file per concern.
//! - [`auth`]: tokens at run time: authentication, rate and stream caps,
//!   creation and revocation (the rights themselves are in the domain).
//! - [`rpc`]: generated code, conversions, the status mapping, one file per
//!   service.
//! - [`server`]: wiring, health, reflection, TLS, graceful shutdown;
//!   [`listener`] caps the connections it accepts.
//! - [`cluster`]: cluster mode: the writer's lease, node records, writes
//!   forwarded from followers to the writer.
//! - [`client`]: connecting as a client (TLS, bearer token), for the CLI,
//!   the benchmark and the tests.
//! - [`config`]: settings from flags, environment and a TOML file.
//! - [`metrics`]: Prometheus metrics and their `/metrics` endpoint.
//! - [`cli`]: the `swarmdesk` command's client subcommands.
//! - [`bench`]: `swarmdesk bench`, the benchmark against a bare baseline.
//! - [`nats_process`]: NATS servers as child processes, for the cluster's
//!   tests, benchmark and local script.
//! - [`sim`]: the deterministic simulation of the desk over a faulty log.
#![forbid(unsafe_code)]

pub mod auth;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod desk;
pub mod domain;
pub mod hub;
pub mod knowledge;
pub mod listener;
pub mod metrics;
pub mod nats_process;
pub mod rpc;
pub mod server;
pub mod sim;
pub mod stats;
pub mod store;
pub mod timers;
