use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice::config::Config;

/// Sluice: an HTTP ingestion gateway for CloudEvents. Every event is validated against its
/// JSON Schema and acknowledged only once durable in Kafka (or the local file sink).
///
/// Configuration: a TOML file (--config or SLUICE_CONFIG), every field overridable by
/// SLUICE_<SECTION>__<FIELD> environment variables (e.g. SLUICE_SINK__KIND=kafka,
/// SLUICE_KAFKA__BROKERS=127.0.0.1:9092). See sluice.example.toml.
#[derive(Parser)]
#[command(name = "sluice", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. With no config it listens on 0.0.0.0:8080, validates against
    /// ./schemas and appends events to NDJSON files under ./data.
    Serve {
        /// TOML config file.
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Load and validate the configuration and the schemas, then exit (0 when usable).
    CheckConfig {
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Config::load(path.map(PathBuf::as_path), std::env::vars()).context("invalid configuration")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain, never a backtrace: operators read this.
            eprintln!("sluice: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let config = load(config.as_ref())?;
            sluice::telemetry::init_logging(&config.log);
            let listener = tokio::net::TcpListener::bind(config.server.listen)
                .await
                .with_context(|| format!("binding server.listen {}", config.server.listen))?;
            sluice::serve(config, listener, shutdown_signal()).await
        }
        Command::CheckConfig { config } => {
            let config = load(config.as_ref())?;
            let cache = sluice::registry::ValidatorCache::load(std::sync::Arc::new(
                sluice::registry::DirStore::new(&config.schemas.dir),
            ))
            .await?;
            println!(
                "config OK: listen {}, sink {}, {} schemas from {}",
                config.server.listen,
                config.sink.kind,
                cache.catalog().len(),
                config.schemas.dir.display()
            );
            Ok(())
        }
    }
}

/// SIGTERM (Kubernetes, systemd) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
