//! `swarmdesk`: the server (`serve`) and its client commands.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use swarmdesk::bench::{self, BenchArgs};
use swarmdesk::cli::{self, ClientCommand, ClientOptions};
use swarmdesk::config::{LogFormat, Settings};
use swarmdesk::server;
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
    Serve(Settings),
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigCommand,
    },
    /// Restore a backup file into an empty (or new) data dir, offline.
    Restore {
        #[arg(long)]
        from: std::path::PathBuf,
        #[arg(long, env = "SWARMDESK_DATA_DIR")]
        data_dir: std::path::PathBuf,
    },
    /// Measure swarmdesk beside a bare tonic baseline (see docs/PERFORMANCE.md).
    Bench(BenchArgs),
    /// Run the deterministic simulation of the desk over a faulty log:
    /// seeds `--from` to `--from + --seeds - 1`, `--steps` steps each; a
    /// failing seed prints itself and replays exactly with `--from`.
    Simulate {
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 500)]
        steps: usize,
    },
    /// The benchmark's bare baseline server (started by `bench`).
    #[command(hide = true)]
    BenchBaseline {
        #[arg(long)]
        listen: SocketAddr,
        /// Where DurableEcho writes (it fails without one).
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the effective configuration (flags > SWARMDESK_* > --config file > defaults) as TOML.
    Print(Settings),
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

async fn serve(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    init_logging(settings.log_format, settings.log_level.as_deref());
    let config = settings.server_config()?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    server::run(listener, config, server::shutdown_signal()).await?;
    Ok(())
}

async fn simulate(from: u64, seeds: u64, steps: usize) -> Result<(), Box<dyn std::error::Error>> {
    // On a thread of its own with a one-thread runtime: tasks the desk
    // spawns then run only where the simulation waits, so a seed replays
    // exactly.
    let total = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let mut total = swarmdesk::sim::Report::default();
        for seed in from..from.saturating_add(seeds) {
            total.add(&runtime.block_on(swarmdesk::sim::run(seed, steps))?);
        }
        Ok::<_, String>(total)
    })
    .join()
    .map_err(|_| "the simulation panicked")??;
    println!(
        "{seeds} seeds x {steps} steps: every invariant held ({} faults injected, {} crashes \
         of which {} in a recovery, {} operations refused, {} creates acknowledged, {} \
         breaches recorded once, {} stream deliveries checked, {} streams resumed)",
        total.faults,
        total.crashes,
        total.crashes_in_recovery,
        total.refused,
        total.acknowledged_creates,
        total.breaches,
        total.delivered,
        total.resumed
    );
    Ok(())
}

async fn serve_baseline(
    listen: SocketAddr,
    data_dir: Option<&std::path::Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    bench::baseline::serve(listener, 4096, data_dir).await
}

/// The runtime of every subcommand: the server, the bench and the bench's
/// baseline server alike, so that both sides of a ratio run on the same.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // A stream's send wakes its connection's writer task. From the LIFO slot
    // that writer runs at once and writes the one frame queued so far: one
    // `writev` per delivery (1,000 per ticket on a 1,000-expert channel).
    // Queued behind the other woken streams instead, it writes all their
    // frames in one call.
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.build()
}

fn main() -> ExitCode {
    match runtime() {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("swarmdesk: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Serve(args) => match matches.subcommand_matches("serve") {
            Some(m) => match args.resolve(m) {
                Ok(settings) => serve(settings).await,
                Err(e) => Err(e.into()),
            },
            None => Err("serve: no arguments".into()),
        },
        Command::Config {
            action: ConfigCommand::Print(args),
        } => match matches
            .subcommand_matches("config")
            .and_then(|m| m.subcommand_matches("print"))
        {
            Some(m) => args
                .resolve(m)
                .map(|settings| print!("{}", settings.to_toml()))
                .map_err(Into::into),
            None => Err("config print: no arguments".into()),
        },
        Command::Restore { from, data_dir } => {
            let into = swarmdesk::store::sled::SledConfig::new(&data_dir);
            swarmdesk::backup::restore(&from, &data_dir, &into)
                .map(|count| println!("restored {count} records into {}", data_dir.display()))
                .map_err(Into::into)
        }
        Command::Bench(args) => bench::run(args).await.map_err(Into::into),
        Command::Simulate { seeds, from, steps } => simulate(from, seeds, steps).await,
        Command::BenchBaseline { listen, data_dir } => {
            serve_baseline(listen, data_dir.as_deref()).await
        }
        Command::Client(command) => cli::run(&cli.client, command).await.map_err(Into::into),
    };
    if let Err(e) = &result {
        if let Some(server::ServerError::RestartNeeded(_)) = e.downcast_ref::<server::ServerError>()
        {
            eprintln!("swarmdesk: {e}");
            return ExitCode::from(server::EXIT_RESTART);
        }
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swarmdesk: {e}");
            ExitCode::FAILURE
        }
    }
}
