//! The server's settings, layered: command-line flag > environment
//! (SWARMDESK_*) > TOML file (`--config`) > built-in default.
//!
//! One struct is both the clap arguments and the TOML keys. clap resolves
//! flags, environment and defaults and says where each value came from;
//! resolving turns the values that are only defaults, the file's keys and
//! the given values into three TOML tables and overlays them in that order,
//! so a new setting needs no layering code of its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::auth::AuthLimits;
use crate::cluster::ClusterConfig;
use crate::domain::sla::{Calendar, WorkingHours};
use crate::domain::{DeskError, Priority, SlaPolicies};
use crate::server::{AuthMode, ServerConfig, TlsFiles};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// `--auth on|off`, `--console on|off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

/// `serve` (and `config print`) settings: flags, SWARMDESK_* variables and
/// TOML keys (the field names) alike.
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A TOML file with any of the settings below (flags and environment win).
    #[arg(long, env = "SWARMDESK_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "SWARMDESK_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Where tickets, events, experts, memberships and tokens are kept.
    #[arg(long, env = "SWARMDESK_DATA_DIR", default_value = "./swarmdesk-data")]
    pub data_dir: PathBuf,
    /// Events buffered per open stream before a slow reader is made to catch
    /// up from the store instead.
    #[arg(long, env = "SWARMDESK_STREAM_BUFFER", default_value_t = 1024)]
    pub stream_buffer: usize,
    /// sled page cache, in MiB.
    #[arg(long, env = "SWARMDESK_CACHE_MB", default_value_t = 256)]
    pub cache_mb: u64,
    /// Seconds in-flight calls get to finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "SWARMDESK_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace: u64,
    /// Log format.
    #[arg(
        long,
        env = "SWARMDESK_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
    /// Log filter, e.g. info or swarmdesk=debug (default: RUST_LOG, else info).
    #[arg(long, env = "SWARMDESK_LOG_LEVEL")]
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub log_level: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default).
    #[arg(long, env = "SWARMDESK_METRICS_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Require a bearer token on every call. `off` makes every caller an
    /// admin and is refused on a non-loopback address.
    #[arg(long, env = "SWARMDESK_AUTH", value_enum, default_value = "on")]
    pub auth: OnOff,
    /// PEM certificate (chain) to serve TLS with; needs --tls-key.
    #[arg(long, env = "SWARMDESK_TLS_CERT")]
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWARMDESK_TLS_KEY")]
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that client certificates must chain to (mutual TLS: clients
    /// without a valid certificate are refused).
    #[arg(long, env = "SWARMDESK_TLS_CLIENT_CA")]
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tls_client_ca: Option<PathBuf>,
    /// Sustained calls per second per token (a token bucket); over it,
    /// RESOURCE_EXHAUSTED with a retry delay.
    #[arg(long, env = "SWARMDESK_RATE_LIMIT", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: u32,
    /// Calls a token may make in a burst above the sustained rate.
    #[arg(long, env = "SWARMDESK_RATE_BURST", default_value_t = 40_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_burst: u32,
    /// Open streams per token.
    #[arg(long, env = "SWARMDESK_MAX_STREAMS_PER_TOKEN", default_value_t = 16)]
    pub max_streams_per_token: usize,
    /// Open streams on the whole server.
    #[arg(long, env = "SWARMDESK_MAX_STREAMS", default_value_t = 20_000)]
    pub max_streams: usize,
    /// Connections open at once; more wait in the listen backlog.
    #[arg(long, env = "SWARMDESK_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Concurrent calls on one HTTP/2 connection.
    #[arg(
        long,
        env = "SWARMDESK_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 1024
    )]
    pub max_streams_per_connection: u32,
    /// Largest request message, in bytes; bigger ones are refused
    /// (RESOURCE_EXHAUSTED) before they are decoded.
    #[arg(long, env = "SWARMDESK_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Seconds a unary call may run before DEADLINE_EXCEEDED (streams are
    /// not cut); a client's shorter grpc-timeout wins.
    #[arg(long, env = "SWARMDESK_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout: u64,
    /// Seconds a new connection has to send its first bytes (and to finish
    /// the TLS handshake) before it is closed.
    #[arg(long, env = "SWARMDESK_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub handshake_timeout: u64,
    /// Seconds the owner of an active P1 or P2 ticket may be offline (no
    /// open Subscribe stream) before the ticket is routed again.
    #[arg(long, env = "SWARMDESK_OWNER_GRACE", default_value_t = 600)]
    pub owner_grace: u64,
    /// Serve the web console at / on the listen address, with gRPC-web for
    /// it beside native gRPC; `off` serves native gRPC only.
    #[arg(long, env = "SWARMDESK_CONSOLE", value_enum, default_value = "on")]
    pub console: OnOff,
    /// Cluster mode (off unless `--cluster` names NATS servers): the
    /// `[cluster]` table of the config file.
    #[command(flatten)]
    #[serde(default, skip_serializing_if = "ClusterSettings::is_off")]
    pub cluster: ClusterSettings,
    /// Service levels per priority and business calendars: the `[sla]`
    /// table of the config file (see deploy/swarmdesk.toml).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "SlaSettings::is_default")]
    pub sla: SlaSettings,
}

/// `[cluster]`: several nodes sharing one log on NATS JetStream.
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// NATS servers of the cluster's JetStream (comma-separated
    /// nats://host:port); empty: a single node on its embedded store.
    #[arg(long = "cluster", env = "SWARMDESK_CLUSTER", value_delimiter = ',')]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// This node's name, unique in the cluster.
    #[arg(long, env = "SWARMDESK_NODE_ID")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// The URL other nodes forward writes to (default: http://LISTEN).
    #[arg(long, env = "SWARMDESK_ADVERTISE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Prefix of every stream, bucket and subject the desk uses, so several
    /// desks can share one NATS.
    #[arg(
        long = "cluster-name",
        env = "SWARMDESK_CLUSTER_NAME",
        default_value = "swarmdesk"
    )]
    pub name: String,
    /// Copies JetStream keeps of the log (3 for a cluster that survives a
    /// NATS server's loss).
    #[arg(
        long = "cluster-replicas",
        env = "SWARMDESK_CLUSTER_REPLICAS",
        default_value_t = 3
    )]
    pub replicas: usize,
    /// Milliseconds a writer's lease lasts unless renewed.
    #[arg(long = "lease-ms", env = "SWARMDESK_LEASE_MS", default_value_t = 3000)]
    pub lease_ms: u64,
    /// Milliseconds between a node's heartbeats (lease renewal, presence
    /// snapshot, node record).
    #[arg(
        long = "heartbeat-ms",
        env = "SWARMDESK_HEARTBEAT_MS",
        default_value_t = 1000
    )]
    pub heartbeat_ms: u64,
    /// A NATS credentials file.
    #[arg(long = "nats-credentials", env = "SWARMDESK_NATS_CREDENTIALS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_credentials: Option<PathBuf>,
    /// A PEM CA to trust for the NATS servers' TLS (TLS is then required).
    #[arg(long = "nats-tls-ca", env = "SWARMDESK_NATS_TLS_CA")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_tls_ca: Option<PathBuf>,
    /// A PEM CA to trust for the other nodes' https:// addresses, to which
    /// writes are forwarded (default: the system's roots). A node presents
    /// its own --tls-cert to them, for writers that ask for client
    /// certificates.
    #[arg(long = "cluster-peer-ca", env = "SWARMDESK_CLUSTER_PEER_CA")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_ca: Option<PathBuf>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            urls: Vec::new(),
            node_id: None,
            advertise: None,
            name: "swarmdesk".into(),
            replicas: 3,
            lease_ms: 3000,
            heartbeat_ms: 1000,
            nats_credentials: None,
            nats_tls_ca: None,
            peer_ca: None,
        }
    }
}

impl ClusterSettings {
    fn is_off(&self) -> bool {
        self == &ClusterSettings::default()
    }

    /// The cluster these settings describe; `None` without NATS URLs.
    /// `identity` is the node's own TLS certificate and key, if it serves
    /// TLS: its default address is then https://, and it shows the
    /// certificate to the writers it forwards to.
    pub fn config(
        &self,
        listen: SocketAddr,
        identity: Option<&TlsFiles>,
    ) -> Result<Option<ClusterConfig>, ConfigError> {
        if self.urls.is_empty() {
            return Ok(None);
        }
        let node_id = self
            .node_id
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ConfigError::Invalid("cluster mode needs --node-id (SWARMDESK_NODE_ID): a name unique in the cluster".into()))?;
        if self.heartbeat_ms == 0 || self.lease_ms < 2 * self.heartbeat_ms {
            return Err(ConfigError::Invalid(format!(
                "lease_ms ({}) must be at least twice heartbeat_ms ({}), which must be above 0",
                self.lease_ms, self.heartbeat_ms
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(ConfigError::Invalid(format!(
                "cluster_replicas must be 1 to 5, not {}",
                self.replicas
            )));
        }
        Ok(Some(ClusterConfig {
            urls: self.urls.clone(),
            node_id,
            advertise: self.advertise.clone().unwrap_or_else(|| match identity {
                Some(_) => format!("https://{listen}"),
                None => format!("http://{listen}"),
            }),
            name: self.name.clone(),
            replicas: self.replicas,
            lease: Duration::from_millis(self.lease_ms),
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            credentials: self.nats_credentials.clone(),
            tls_ca: self.nats_tls_ca.clone(),
            peer_tls: crate::client::ClientTls {
                ca: self.peer_ca.clone(),
                cert: identity.map(|t| t.cert.clone()),
                key: identity.map(|t| t.key.clone()),
            },
        }))
    }
}

/// Keys only the config file sets (they have no flag).
const FILE_ONLY_KEYS: &[&str] = &["sla"];

/// Tables whose keys are flags too (each layered on its own).
const NESTED_KEYS: &[&str] = &["cluster"];

/// `[sla]`: a policy per priority and named business calendars.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p1: Option<PolicySettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p2: Option<PolicySettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p3: Option<PolicySettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p4: Option<PolicySettings>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub calendars: BTreeMap<String, CalendarSettings>,
}

/// One priority's targets (durations such as "15m", "4h", "3days"; each
/// left out keeps its default) and the calendar they count in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_response: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve: Option<String>,
    /// A name under `[sla.calendars]`; none: around the clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<String>,
}

/// Working hours per weekday (`mon = "09:00-17:00"`; days left out are
/// not worked), an IANA time zone, and holidays (`YYYY-MM-DD`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarSettings {
    pub time_zone: String,
    pub hours: BTreeMap<Weekday, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl SlaSettings {
    fn is_default(&self) -> bool {
        self == &SlaSettings::default()
    }

    /// The policies these settings describe; every error names its key.
    pub fn policies(&self) -> Result<SlaPolicies, ConfigError> {
        let invalid = |e: DeskError| ConfigError::Invalid(e.to_string());
        let mut calendars = BTreeMap::new();
        for (name, c) in &self.calendars {
            let field = format!("sla.calendars.{name}");
            let mut week = [None; 7];
            for (day, hours) in &c.hours {
                let key = format!("{field}.hours.{}", format!("{day:?}").to_lowercase());
                week[*day as usize] = Some(WorkingHours::parse(&key, hours).map_err(invalid)?);
            }
            let calendar =
                Calendar::new(&field, &c.time_zone, week, &c.holidays).map_err(invalid)?;
            calendars.insert(name.clone(), Arc::new(calendar));
        }
        let defaults = SlaPolicies::default();
        let policy = |priority: Priority, given: &Option<PolicySettings>| {
            let mut policy = defaults.for_priority(priority).clone();
            let Some(given) = given else {
                return Ok(policy);
            };
            let field = format!("sla.{priority}");
            let limit = |name: &str, raw: &Option<String>, default: i64| match raw {
                None => Ok(default),
                Some(raw) => humantime::parse_duration(raw)
                    .map_err(|e| ConfigError::Invalid(format!("{field}.{name}: {raw:?}: {e}")))
                    .and_then(|d| {
                        i64::try_from(d.as_micros())
                            .ok()
                            .filter(|m| *m > 0)
                            .ok_or_else(|| {
                                ConfigError::Invalid(format!("{field}.{name}: must be above zero"))
                            })
                    }),
            };
            policy.own = limit("own", &given.own, policy.own)?;
            policy.first_response = limit(
                "first_response",
                &given.first_response,
                policy.first_response,
            )?;
            policy.resolve = limit("resolve", &given.resolve, policy.resolve)?;
            if let Some(name) = &given.calendar {
                let calendar = calendars.get(name).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "{field}.calendar: no calendar {name:?} under [sla.calendars]"
                    ))
                })?;
                policy.calendar = Some(calendar.clone());
            }
            Ok(policy)
        };
        Ok(SlaPolicies::new(
            policy(Priority::P1, &self.p1)?,
            policy(Priority::P2, &self.p2)?,
            policy(Priority::P3, &self.p3)?,
            policy(Priority::P4, &self.p4)?,
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

fn load_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_owned(),
        })
}

impl Settings {
    /// Resolves the layers for these (clap-parsed) settings; `matches` are
    /// the matches of the subcommand that holds them.
    pub fn resolve(&self, matches: &ArgMatches) -> Result<Self, ConfigError> {
        let Some(path) = &self.config else {
            return Ok(self.clone());
        };
        let file = load_file(path)?;
        let parsed = toml::Table::try_from(self)
            .map_err(|e| ConfigError::Invalid(format!("cannot render settings: {e}")))?;
        let (mut merged, mut given) = (toml::Table::new(), toml::Table::new());
        // A value counts as given when it came from a flag or the environment.
        let from_user = |key: &str| {
            !FILE_ONLY_KEYS.contains(&key)
                && matches
                    .value_source(key)
                    .is_some_and(|s| s != ValueSource::DefaultValue)
        };
        let mut file = file;
        for (key, value) in parsed {
            if let (toml::Value::Table(table), true) = (&value, NESTED_KEYS.contains(&key.as_str()))
            {
                // A table of flags: each of its keys is layered on its own.
                let mut nested = match file.remove(&key) {
                    Some(toml::Value::Table(t)) => t,
                    Some(other) => {
                        return Err(ConfigError::Parse {
                            path: path.clone(),
                            message: format!("{key} must be a table, not {}", other.type_str()),
                        })
                    }
                    None => toml::Table::new(),
                };
                for (sub, v) in table {
                    if from_user(sub) || !nested.contains_key(sub) {
                        nested.insert(sub.clone(), v.clone());
                    }
                }
                merged.insert(key, toml::Value::Table(nested));
            } else if from_user(&key) {
                given.insert(key, value);
            } else {
                merged.insert(key, value);
            }
        }
        merged.extend(file);
        merged.extend(given);
        let mut settings: Settings =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.clone(),
                    message: e.message().to_owned(),
                })?;
        settings.config = self.config.clone();
        Ok(settings)
    }

    /// The settings as TOML, loadable again with `--config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }

    /// The server configuration these settings describe.
    pub fn server_config(&self) -> Result<ServerConfig, ConfigError> {
        let nonzero = |name: &str, n: u32| {
            std::num::NonZeroU32::new(n)
                .ok_or_else(|| ConfigError::Invalid(format!("{name} must be at least 1")))
        };
        let seconds = |name: &str, n: u64| {
            nonzero(name, u32::try_from(n).unwrap_or(u32::MAX)).map(|_| Duration::from_secs(n))
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            (None, None) if self.tls_client_ca.is_none() => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "tls_cert and tls_key go together, and tls_client_ca needs them".into(),
                ))
            }
        };
        Ok(ServerConfig {
            stream_buffer: self.stream_buffer,
            cache_capacity: self.cache_mb * 1024 * 1024,
            max_message_bytes: self.max_message_bytes,
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            metrics_listen: self.metrics_listen,
            auth: match self.auth {
                OnOff::On => AuthMode::On,
                OnOff::Off => AuthMode::Off,
            },
            limits: AuthLimits {
                requests_per_second: nonzero("rate_limit", self.rate_limit)?,
                request_burst: nonzero("rate_burst", self.rate_burst)?,
                streams_per_principal: self.max_streams_per_token,
                max_streams: self.max_streams,
            },
            cluster: self.cluster.config(self.listen, tls.as_ref())?,
            tls,
            max_connections: self.max_connections,
            max_streams_per_connection: self.max_streams_per_connection,
            request_timeout: seconds("request_timeout", self.request_timeout)?,
            handshake_timeout: seconds("handshake_timeout", self.handshake_timeout)?,
            owner_grace: Duration::from_secs(self.owner_grace),
            sla: self.sla.policies()?,
            console: self.console == OnOff::On,
            ..ServerConfig::new(&self.data_dir)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sla::ClockState;
    use crate::domain::TicketState;

    fn parse(text: &str) -> Result<SlaPolicies, ConfigError> {
        let sla: SlaSettings = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "test".into(),
            message: e.message().to_owned(),
        })?;
        sla.policies()
    }

    #[test]
    fn sla_tables_override_defaults_and_name_bad_keys() {
        let policies = parse(
            r#"
            [p2]
            own = "2m"
            resolve = "8h"
            calendar = "office"
            [calendars.office]
            time_zone = "America/New_York"
            hours = { mon = "09:00-17:00", fri = "09:00-13:00" }
            holidays = ["2026-12-25"]
            "#,
        )
        .unwrap();
        let p2 = policies.for_priority(Priority::P2);
        assert_eq!(p2.own, 120_000_000);
        assert_eq!(p2.first_response, 3_600_000_000, "default kept");
        assert!(p2.calendar.is_some());
        let p1 = policies.for_priority(Priority::P1);
        assert_eq!(p1.own, 300_000_000);
        assert!(p1.calendar.is_none());
        // The calendar counts: Friday 12:00 New York + 8 working hours is
        // Monday 16:00 (Friday closes at 13:00).
        let mut state = TicketState::blank(0, p2.fresh_clocks());
        let blank = state.clone();
        let friday_noon = "2026-11-27T17:00:00Z".parse::<jiff::Timestamp>().unwrap();
        p2.track(&blank, &mut state, friday_noon.as_microsecond());
        let due = "2026-11-30T21:00:00Z".parse::<jiff::Timestamp>().unwrap();
        assert_eq!(
            state.sla.resolve.state,
            ClockState::Running {
                due: due.as_microsecond()
            }
        );

        for (text, names) in [
            ("[p1]\nown = \"soon\"", "sla.p1.own"),
            ("[p1]\nown = \"0s\"", "sla.p1.own"),
            ("[p3]\ncalendar = \"none\"", "sla.p3.calendar"),
            (
                "[calendars.x]\ntime_zone = \"Nowhere/Land\"\nhours = { mon = \"09:00-17:00\" }",
                "sla.calendars.x.time_zone",
            ),
            (
                "[calendars.x]\ntime_zone = \"UTC\"\nhours = { mon = \"17:00-09:00\" }",
                "sla.calendars.x.hours.mon",
            ),
            ("[p1]\nownn = \"5m\"", "ownn"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(names), "{text}: {err}");
        }
    }
}
