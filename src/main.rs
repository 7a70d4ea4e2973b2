//! `swarmdesk`: the server (`serve`) and its client commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use swarmdesk::bench::{self, BenchArgs};
use swarmdesk::cli::{self, ClientCommand, ClientOptions};
use swarmdesk::server::{self, ServerConfig};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "swarmdesk",
    version,
    about = "A swarming support server and its client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: ClientOptions,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (embedded sled store; no other service needed).
    Serve(ServeArgs),
    /// Measure swarmdesk beside a bare tonic baseline (see docs/PERFORMANCE.md).
    Bench(BenchArgs),
    /// The benchmark's bare baseline server (started by `bench`).
    #[command(hide = true)]
    BenchBaseline {
        #[arg(long)]
        listen: SocketAddr,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Parser, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SWARMDESK_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Where tickets, events, experts and memberships are kept.
    #[arg(long, env = "SWARMDESK_DATA_DIR", default_value = "./swarmdesk-data")]
    data_dir: PathBuf,
    /// Events buffered per open stream before a slow reader is made to catch
    /// up from the store instead.
    #[arg(long, env = "SWARMDESK_STREAM_BUFFER", default_value_t = 1024)]
    stream_buffer: usize,
    /// sled page cache, in MiB.
    #[arg(long, env = "SWARMDESK_CACHE_MB", default_value_t = 256)]
    cache_mb: u64,
    /// Seconds in-flight calls get to finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "SWARMDESK_SHUTDOWN_GRACE", default_value_t = 10)]
    shutdown_grace: u64,
    /// Log format.
    #[arg(
        long,
        env = "SWARMDESK_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    log_format: LogFormat,
    /// Log filter (overrides RUST_LOG), e.g. info or swarmdesk=debug.
    #[arg(long, env = "SWARMDESK_LOG_LEVEL")]
    log_level: Option<String>,
}

fn init_logging(format: LogFormat, level: Option<&str>) {
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    init_logging(args.log_format, args.log_level.as_deref());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let config = ServerConfig {
        stream_buffer: args.stream_buffer,
        cache_capacity: args.cache_mb * 1024 * 1024,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        ..ServerConfig::new(args.data_dir)
    };
    server::run(listener, config, server::shutdown_signal()).await?;
    Ok(())
}

async fn serve_baseline(listen: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    bench::baseline::serve(listener, 4096).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Bench(args) => bench::run(args).await.map_err(Into::into),
        Command::BenchBaseline { listen } => serve_baseline(listen).await,
        Command::Client(command) => cli::run(&cli.client, command).await.map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swarmdesk: {e}");
            ExitCode::FAILURE
        }
    }
}
