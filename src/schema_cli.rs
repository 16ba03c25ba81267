//! `sluice schema ...`: the registry API from the command line, for developers and CI
//! pipelines. Talks HTTP to a running Sluice; exits non-zero when the registry refuses.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum SchemaCommand {
    /// Register a JSON Schema file as the next version of a subject (an event type).
    Register { subject: String, file: PathBuf },
    /// Check a JSON Schema file against a subject's version (latest by default) under the
    /// subject's compatibility level; exits 1 when incompatible. For CI, before merging.
    Check {
        subject: String,
        file: PathBuf,
        #[arg(long, default_value = "latest")]
        version: String,
    },
    /// Print a subject's schema (latest by default).
    Get {
        subject: String,
        #[arg(long, default_value = "latest")]
        version: String,
    },
    /// List subjects, or a subject's versions.
    List { subject: Option<String> },
}

/// Where the registry is and how to authenticate.
#[derive(clap::Args)]
pub struct Target {
    /// Base URL of a running Sluice (its main port, or server.admin_listen when set).
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token or API key with registry:read / registry:write.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub async fn run(target: Target, cmd: SchemaCommand) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let call = |method: reqwest::Method,
                segments: &[&str],
                query: &[(&str, &str)],
                body: Option<Value>| {
        let mut url = reqwest::Url::parse(&target.url)
            .with_context(|| format!("--url {} is not a URL", target.url))?;
        url.path_segments_mut()
            .map_err(|_| anyhow::anyhow!("--url {} cannot take a path", target.url))?
            .pop_if_empty()
            .extend(segments);
        let mut req = client.request(method, url).query(query);
        if let Some(t) = &target.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(b.to_string());
        }
        anyhow::Ok(req)
    };
    match cmd {
        SchemaCommand::Register { subject, file } => {
            let body = schema_request(&file)?;
            let r = send(call(
                reqwest::Method::POST,
                &["subjects", &subject, "versions"],
                &[],
                Some(body),
            )?)
            .await?;
            println!(
                "registered {subject} version {} (id {})",
                r["version"], r["id"]
            );
        }
        SchemaCommand::Check {
            subject,
            file,
            version,
        } => {
            let body = schema_request(&file)?;
            let r = send(call(
                reqwest::Method::POST,
                &["compatibility", "subjects", &subject, "versions", &version],
                &[("verbose", "true")],
                Some(body),
            )?)
            .await?;
            if r["is_compatible"] == true {
                println!("compatible with {subject} version {version}");
            } else {
                let reasons: Vec<String> = r["messages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| format!("\n  - {}", m.as_str().unwrap_or_default()))
                    .collect();
                bail!(
                    "NOT compatible with {subject} version {version}:{}",
                    reasons.concat()
                );
            }
        }
        SchemaCommand::Get { subject, version } => {
            let r = send(call(
                reqwest::Method::GET,
                &["subjects", &subject, "versions", &version, "schema"],
                &[],
                None,
            )?)
            .await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        SchemaCommand::List { subject } => {
            let r = match &subject {
                None => send(call(reqwest::Method::GET, &["subjects"], &[], None)?).await?,
                Some(s) => {
                    send(call(
                        reqwest::Method::GET,
                        &["subjects", s, "versions"],
                        &[],
                        None,
                    )?)
                    .await?
                }
            };
            for item in r.as_array().into_iter().flatten() {
                match item {
                    Value::String(s) => println!("{s}"),
                    other => println!("{other}"),
                }
            }
        }
    }
    Ok(())
}

fn schema_request(file: &PathBuf) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let schema: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    Ok(json!({"schemaType": "JSON", "schema": schema.to_string()}))
}

/// The JSON answer, or the registry's error as the command's error.
async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req
        .send()
        .await
        .context("cannot reach Sluice (is --url right?)")?;
    let status = resp.status();
    let text = resp.text().await?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let msg = body["message"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| body.to_string());
        let code = &body["error_code"];
        bail!("{status} (error_code {code}): {msg}");
    }
    Ok(body)
}
