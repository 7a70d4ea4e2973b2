//! The server's settings, layered: command-line flag > environment
//! (SWARMDESK_*) > TOML file (`--config`) > built-in default.
//!
//! clap resolves flags, environment and defaults, and says where each value
//! came from; a value that is only the default gives way to the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// `serve` (and `config print`) flags. Every one can also be set in the
/// environment or the file; see [`Settings`] for what each means.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (flags and environment win).
    #[arg(long, env = "SWARMDESK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "SWARMDESK_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Where tickets, events, experts and memberships are kept.
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
    pub log_level: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default).
    #[arg(long, env = "SWARMDESK_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// The effective settings, as `config print` shows them and as the TOML
/// file spells them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data directory (created if missing).
    pub data_dir: PathBuf,
    /// Events buffered per open stream.
    pub stream_buffer: usize,
    /// sled page cache, in MiB.
    pub cache_mb: u64,
    /// Seconds in-flight calls get after a shutdown signal.
    pub shutdown_grace: u64,
    /// pretty or json.
    pub log_format: LogFormat,
    /// Log filter; absent means RUST_LOG, else info.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Prometheus `/metrics` address; absent means off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
}

/// The file layer: every key optional, unknown keys refused by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    stream_buffer: Option<usize>,
    cache_mb: Option<u64>,
    shutdown_grace: Option<u64>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    metrics_listen: Option<SocketAddr>,
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
}

fn load_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.message().to_owned(),
    })
}

impl Settings {
    /// Resolves the layers for `args`, parsed from `matches` (the matches of
    /// the subcommand that holds the [`ServeArgs`]).
    pub fn resolve(args: &ServeArgs, matches: &ArgMatches) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileSettings::default(),
        };
        // A value counts as given when it came from a flag or the environment.
        let given = |id: &str| {
            matches
                .value_source(id)
                .is_some_and(|s| s != ValueSource::DefaultValue)
        };
        fn pick<T>(given: bool, flag: T, file: Option<T>) -> T {
            if given {
                flag
            } else {
                file.unwrap_or(flag)
            }
        }
        Ok(Settings {
            listen: pick(given("listen"), args.listen, file.listen),
            data_dir: pick(given("data_dir"), args.data_dir.clone(), file.data_dir),
            stream_buffer: pick(
                given("stream_buffer"),
                args.stream_buffer,
                file.stream_buffer,
            ),
            cache_mb: pick(given("cache_mb"), args.cache_mb, file.cache_mb),
            shutdown_grace: pick(
                given("shutdown_grace"),
                args.shutdown_grace,
                file.shutdown_grace,
            ),
            log_format: pick(given("log_format"), args.log_format, file.log_format),
            log_level: if given("log_level") {
                args.log_level.clone()
            } else {
                file.log_level.or_else(|| args.log_level.clone())
            },
            metrics_listen: if given("metrics_listen") {
                args.metrics_listen
            } else {
                file.metrics_listen.or(args.metrics_listen)
            },
        })
    }

    /// The settings as TOML, loadable again with `--config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}
