mod schema_cli;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice::config::{ApiKeyConfig, Config, KeyClass};

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
    /// Kafka as the configuration reaches it.
    Kafka {
        #[command(subcommand)]
        command: KafkaCommand,
    },
    /// The schema registry of a running Sluice: register, check, get, list.
    Schema {
        #[command(flatten)]
        target: schema_cli::Target,
        #[command(subcommand)]
        command: schema_cli::SchemaCommand,
    },
    /// API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// For benchmarks only: the ceiling. The same HTTP stack as `serve` (tokio, hyper, axum)
    /// answering `POST /v1/events` with 200 after reading the body, and nothing else: no
    /// parsing, no validation, no sink. loadtest/bench compares Sluice with it.
    #[command(hide = true)]
    Ceiling {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum KafkaCommand {
    /// Connect with the configured security (the same config as `serve`), list the brokers
    /// and the topics the routes name for the types in schemas.dir, and say what is wrong
    /// when it cannot. Exits 0 when everything is usable.
    Check {
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        /// How long to wait for each answer.
        #[arg(long, default_value = "10s", value_parser = humantime_secs)]
        timeout: std::time::Duration,
    },
}

fn humantime_secs(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<sluice::config::HumanDuration>()
        .map(|d| d.0)
        .map_err(|e| e.to_string())
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a new API key (once: it is stored nowhere) and the config entry holding its hash.
    Generate {
        /// Tenant the key writes as.
        #[arg(long)]
        tenant: String,
        /// Scope, repeatable: events:write:<type pattern>, registry:read, registry:write.
        #[arg(long = "scope", default_value = "events:write:*")]
        scopes: Vec<String>,
        /// `browser` keys are public (shipped in web pages): write scopes only, origin-checked.
        #[arg(long, value_enum, default_value = "server")]
        class: Class,
        /// Browser keys: an allowed Origin, repeatable (https://app.example.com).
        #[arg(long = "origin")]
        origins: Vec<String>,
        /// Expiry, RFC 3339 or a date (2027-06-30).
        #[arg(long)]
        expires: Option<String>,
        /// Who holds the key, for logs.
        #[arg(long)]
        name: Option<String>,
        /// Print the entry for an `auth.api_keys_file` (`[[api_keys]]`) instead of the main
        /// config (`[[auth.api_keys]]`).
        #[arg(long)]
        for_file: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Class {
    Server,
    Browser,
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Config::load(path.map(PathBuf::as_path), std::env::vars()).context("invalid configuration")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve { .. });
    let code = match run(cli).await {
        Ok(()) => 0,
        Err(e) => {
            // One line with the whole cause chain, never a backtrace: operators read this.
            eprintln!("sluice: {e:#}");
            1
        }
    };
    if serving {
        // Everything acknowledged is durable and the drain is over: exit now, without waiting
        // for blocking tasks (a broker probe can hang on a dead connection) to notice the
        // runtime going away, so the process ends within server.shutdown_grace.
        use std::io::Write;
        let _ = std::io::stderr().flush();
        std::process::exit(code);
    }
    std::process::ExitCode::from(code as u8)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let config = load(config.as_ref())?;
            sluice::telemetry::init_logging(&config.log);
            let listeners = sluice::Listeners::bind(&config.server).await?;
            sluice::serve(config, listeners, shutdown_signal()).await
        }
        Command::CheckConfig { config } => {
            let config = load(config.as_ref())?;
            let checked = sluice::check(&config).context("invalid configuration")?;
            let cache = sluice::registry::ValidatorCache::load(std::sync::Arc::new(
                sluice::registry::DirStore::new(&config.schemas.dir),
            ))
            .await?;
            let sink = match &checked.kafka {
                Some(security) => format!("kafka ({})", security.summary),
                None => config.sink.kind.to_string(),
            };
            println!(
                "config OK: listen {}, sink {sink}, {} schemas from {}, auth {:?}",
                config.server.listen,
                cache.catalog().len(),
                config.schemas.dir.display(),
                config.auth.effective_mode(),
            );
            Ok(())
        }
        Command::Kafka {
            command: KafkaCommand::Check { config, timeout },
        } => {
            let config = load(config.as_ref())?;
            let cache = sluice::registry::ValidatorCache::load(std::sync::Arc::new(
                sluice::registry::DirStore::new(&config.schemas.dir),
            ))
            .await?;
            let checked = sluice::check(&config).context("invalid configuration")?;
            let router = checked.router;
            let security = match checked.kafka {
                Some(s) => s,
                None => sluice::config::KafkaSecurity::from_config(&config.kafka)?,
            };
            let topics = sluice::sink::kafka::check::Topics {
                names: cache
                    .catalog()
                    .subjects()
                    .flat_map(|ty| router.tenant_free_topics(ty))
                    .collect(),
                by_tenant: router.uses_tenant(),
            };
            let report =
                sluice::sink::kafka::check::check(&config.kafka, &security, &topics, timeout)
                    .await?;
            print!("{}", report.text);
            if !report.ok {
                anyhow::bail!("Kafka is not usable as configured (see above)");
            }
            Ok(())
        }
        Command::Schema { target, command } => schema_cli::run(target, command).await,
        Command::Ceiling { listen } => {
            let app = axum::Router::new()
                .route(
                    "/v1/events",
                    axum::routing::post(|body: axum::body::Bytes| async move {
                        std::hint::black_box(body.len());
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            r#"{"accepted":1,"rejected":0}"#,
                        )
                    }),
                )
                .layer(axum::extract::DefaultBodyLimit::max(64 << 20));
            let listener = tokio::net::TcpListener::bind(listen).await?;
            eprintln!("sluice ceiling: answering 200 on {listen}/v1/events (benchmarks only)");
            // Sluice's own accept loop, so that the ceiling differs from `serve` by the work only.
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop_tx.send(true);
            });
            let limits = sluice::http::serve::ConnectionLimits {
                max_age: None,
                ..sluice::http::serve::ConnectionLimits::from_config(
                    &Default::default(),
                    std::time::Duration::ZERO,
                )
            };
            sluice::http::serve::serve(
                sluice::tls::Listener::new(listener, None)?,
                app,
                stop,
                limits,
            )
            .await;
            Ok(())
        }
        Command::Keys {
            command:
                KeysCommand::Generate {
                    tenant,
                    scopes,
                    class,
                    origins,
                    expires,
                    name,
                    for_file,
                },
        } => {
            let class = match class {
                Class::Server => KeyClass::Server,
                Class::Browser => KeyClass::Browser,
            };
            let g = sluice::auth::generate_key(class).map_err(anyhow::Error::msg)?;
            let entry = ApiKeyConfig {
                id: g.id.clone(),
                hash: g.hash.clone(),
                tenant,
                scopes,
                class,
                origins,
                expires,
                name,
            };
            // Refuse now what the server would refuse at start.
            let mut check = sluice::config::AuthConfig::default();
            check.api_keys.push(entry.clone());
            sluice::auth::Authenticator::check_config(&check)
                .map_err(|(_, m)| anyhow::anyhow!("{m}"))?;
            let q = |s: &str| toml::Value::String(s.to_string()).to_string();
            let list = |v: &[String]| {
                format!(
                    "[{}]",
                    v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
                )
            };
            println!("{}", g.key);
            println!();
            println!(
                "# The key above is shown once; Sluice stores only its hash. Add this entry to"
            );
            if for_file {
                println!("# the file that auth.api_keys_file names:");
                println!("[[api_keys]]");
            } else {
                println!(
                    "# the config (or, as [[api_keys]], to the file auth.api_keys_file names):"
                );
                println!("[[auth.api_keys]]");
            }
            println!("id = {}", q(&entry.id));
            println!("hash = {}", q(&entry.hash));
            println!("tenant = {}", q(&entry.tenant));
            println!("scopes = {}", list(&entry.scopes));
            if class == KeyClass::Browser {
                println!("class = \"browser\"");
                println!("origins = {}", list(&entry.origins));
            }
            if let Some(e) = &entry.expires {
                println!("expires = {}", q(e));
            }
            if let Some(n) = &entry.name {
                println!("name = {}", q(n));
            }
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
