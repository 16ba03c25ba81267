//! `sluice-load`: drive a running Sluice and, optionally, audit the topics afterwards.
//!
//!     sluice-load --url http://127.0.0.1:8080 --connections 16 --batch 100 --duration 20s
//!     sluice-load --url ... --rate 2000 --format single --batch 1        (open loop)
//!     sluice-load --url ... --audit-kafka 127.0.0.1:9092                 (exit 1 when lost > 0)

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use sluice_loadtest::{audit, gen, run, Auth, Compression, Format, Options};

#[derive(Parser, Debug)]
#[command(
    name = "sluice-load",
    about = "Load generator for Sluice with an end-to-end loss audit"
)]
struct Cli {
    /// Sluice's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// How long to send, e.g. 30s, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Closed loop: connections sending back to back. Open loop: most requests in flight.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Requests per second: switches to open loop (latency counted from when each was due).
    #[arg(long)]
    rate: Option<f64>,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[arg(long, value_enum, default_value = "array")]
    format: Format,
    /// Approximate bytes of a page view's data (9 in 10 events; the rest are small sign-ups).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    #[arg(long, value_enum, default_value = "none")]
    compression: Compression,
    /// Mint HS256 tokens with this secret (at least 32 bytes, as Sluice requires).
    #[arg(long, env = "SLUICE_LOAD_JWT_SECRET")]
    jwt_hs256_secret: Option<String>,
    /// Mint RS256 tokens with this private key (PEM file).
    #[arg(long)]
    jwt_rs256_key: Option<PathBuf>,
    /// `kid` header of minted tokens.
    #[arg(long)]
    jwt_kid: Option<String>,
    /// Tenant claim of minted tokens.
    #[arg(long, default_value = "loadtest")]
    tenant: String,
    /// Send this API key (`X-API-Key`) instead of a token.
    #[arg(long, env = "SLUICE_LOAD_API_KEY")]
    api_key: Option<String>,
    /// After the run, read these brokers' topics back and compare with what was acknowledged.
    #[arg(long)]
    audit_kafka: Option<String>,
    /// After the run, read the Kinesis streams back (Sluice's envelope format) and compare.
    /// Credentials and region from the AWS chain.
    #[arg(long)]
    audit_kinesis: bool,
    /// Kinesis endpoint for the audit (an emulator); unset: AWS.
    #[arg(long)]
    kinesis_endpoint: Option<String>,
    /// Topic (or stream) of an event type, as Sluice routes it.
    #[arg(long, default_value = "events.{type}")]
    topic_template: String,
    /// How long the audit may read.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    audit_timeout: Duration,
    /// Also write the report (and audit) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// For an https:// URL: trust the certificates in this PEM file (a private CA or the
    /// server's self-signed certificate) besides the system roots.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

/// Prints a line; a closed stdout (`| head`) is not worth a panic.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = n.parse().map_err(|_| format!("not a duration: {s}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit in {s}: use ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn mint(cli: &Cli) -> anyhow::Result<Auth> {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "sub": "sluice-load",
        "tenant": cli.tenant,
        "scope": "events:write",
        "iat": now,
        "exp": now + 24 * 3600,
    });
    let (alg, key) = match (&cli.jwt_hs256_secret, &cli.jwt_rs256_key) {
        (Some(s), None) => (Algorithm::HS256, EncodingKey::from_secret(s.as_bytes())),
        (None, Some(p)) => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&std::fs::read(p)?)?,
        ),
        (None, None) => {
            return Ok(match &cli.api_key {
                Some(k) => Auth::ApiKey(k.clone()),
                None => Auth::None,
            })
        }
        (Some(_), Some(_)) => anyhow::bail!("give --jwt-hs256-secret or --jwt-rs256-key, not both"),
    };
    let mut header = Header::new(alg);
    header.kid = cli.jwt_kid.clone();
    Ok(Auth::Bearer(encode(&header, &claims, &key)?))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match real_main().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice-load: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn real_main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let run_id = format!(
        "lt{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
    );
    let opts = Options {
        url: cli.url.trim_end_matches('/').to_string(),
        duration: cli.duration,
        connections: cli.connections.max(1),
        rate: cli.rate,
        batch: cli.batch.max(1),
        format: cli.format,
        size: cli.size,
        compression: cli.compression,
        auth: mint(&cli)?,
        record_ids: cli.audit_kafka.is_some() || cli.audit_kinesis,
        run_id: run_id.clone(),
        ca_cert: cli.ca_cert.as_ref().map(std::fs::read).transpose()?,
    };
    let outcome = run(opts).await?;
    say(&outcome.report.text());
    let mut json = serde_json::json!({"report": outcome.report});
    let mut code = std::process::ExitCode::SUCCESS;
    let topics: Vec<String> = gen::TYPES
        .iter()
        .map(|(t, _)| cli.topic_template.replace("{type}", t))
        .collect();
    let audited = if let Some(brokers) = &cli.audit_kafka {
        let (brokers, acked, timeout) = (brokers.clone(), outcome.acked, cli.audit_timeout);
        let run_id = run_id.clone();
        Some(
            tokio::task::spawn_blocking(move || {
                audit::kafka(&brokers, &topics, &run_id, &acked, timeout)
            })
            .await??,
        )
    } else if cli.audit_kinesis {
        Some(
            audit::kinesis(
                cli.kinesis_endpoint.as_deref(),
                &topics,
                &run_id,
                &outcome.acked,
                cli.audit_timeout,
            )
            .await?,
        )
    } else {
        None
    };
    if let Some(a) = audited {
        say(&a.text());
        if a.lost > 0 {
            code = std::process::ExitCode::from(1);
        }
        json["audit"] = serde_json::to_value(&a)?;
    }
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    }
    Ok(code)
}
