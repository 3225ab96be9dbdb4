//! The `warren` binary: parses the command line, loads the configuration, starts the server and
//! stops it gracefully on SIGINT or SIGTERM. Everything else lives in the library.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use warren::config::{Config, Overrides};

/// Warren: a self-hosted real-time push server speaking the Pusher Channels protocol.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file (default: the embedded configuration, one app `app-key`).
    #[arg(long, env = "WARREN_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides server.bind).
    #[arg(long, env = "WARREN_BIND")]
    bind: Option<String>,
    /// Port for WebSocket clients and the HTTP API (overrides server.port).
    #[arg(long, env = "WARREN_PORT")]
    port: Option<u16>,
    /// Number of shards, one per core by default (overrides server.shards).
    #[arg(long, env = "WARREN_SHARDS")]
    shards: Option<usize>,
    /// Log filter, e.g. `info`, `warren=debug`.
    #[arg(long, env = "WARREN_LOG", default_value = "info")]
    log: String,
    /// Print the effective configuration (listen address, shards, app ids and keys, cluster,
    /// webhook receivers; never a secret) and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let overrides = Overrides {
        bind: cli.bind.clone(),
        port: cli.port,
        shards: cli.shards,
    };
    let config_path = cli.config.clone();
    let config = match Config::load(config_path.as_deref(), std::env::vars(), &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("warren: {error}");
            return ExitCode::from(2);
        }
    };
    if config.uses_default_secret() {
        tracing::warn!("an app uses the published default secret \"app-secret\": set your own before exposing this server");
    }
    if cli.check_config {
        print!("{}", config.summary());
        return ExitCode::SUCCESS;
    }
    let shards = config.server.effective_shards();
    let config_for_console = config.clone();
    let server = match warren::server::start(config) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("warren: {error}");
            return ExitCode::FAILURE;
        }
    };
    let console = match warren::console::Console::start(&config_for_console, server.local_addr()) {
        Ok(console) => console,
        Err(error) => {
            eprintln!("warren: cannot start the console: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(console) = &console {
        tracing::info!(addr = %console.local_addr(), "debug console listening (GET /console?token=...)");
    }
    let stop = server.stop_flag();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(error) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("warren: cannot handle signal {signal}: {error}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(error) = watch_reloads(server.reloader(), console, cli, overrides) {
        eprintln!("warren: cannot handle SIGHUP: {error}");
        return ExitCode::FAILURE;
    }
    tracing::info!(addr = %server.local_addr(), shards, "warren listening");
    server.wait();
    tracing::info!("warren stopped");
    ExitCode::SUCCESS
}

/// On SIGHUP, re-reads the configuration (same file, environment and flags) and applies its
/// apps; an invalid configuration is refused with a log line and the running one stays.
fn watch_reloads(
    reloader: warren::server::Reloader,
    console: Option<warren::console::Console>,
    cli: Cli,
    overrides: Overrides,
) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("warren-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                match Config::load(cli.config.as_deref(), std::env::vars(), &overrides) {
                    Ok(config) => {
                        reloader.reload(&config);
                        if let Some(console) = &console {
                            console.reload(&config);
                        }
                        tracing::info!(
                            apps = config.apps.len(),
                            "configuration reloaded (apps applied; server, cluster and webhook receiver settings take effect at the next restart)"
                        );
                    }
                    Err(error) => {
                        tracing::error!(%error, "configuration reload refused; the running configuration stays")
                    }
                }
            }
        })?;
    Ok(())
}
