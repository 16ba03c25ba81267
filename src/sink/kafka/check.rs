//! `sluice kafka check`: connects with the configured security, lists the brokers and the
//! topics the routes name, and says plainly what is wrong when it cannot. What operators
//! otherwise reach for kcat to find out.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;

use super::diagnose::Cause;
use super::{client_config, create, probe_config, tokens, Health};
use crate::config::{KafkaConfig, KafkaSecurity};

/// What the check found: the text to print, and whether everything is usable.
pub struct Report {
    pub text: String,
    pub ok: bool,
}

/// What to look up besides the brokers.
pub struct Topics {
    /// The topics the routes name (the caller renders them for the known event types).
    pub names: BTreeSet<String>,
    /// Some routes name topics by tenant, which cannot be listed.
    pub by_tenant: bool,
}

/// Runs the check for `k` (whose security settings, checked, are `security`) and `topics`.
pub async fn check(
    k: &KafkaConfig,
    security: &KafkaSecurity,
    topics: &Topics,
    timeout: Duration,
) -> anyhow::Result<Report> {
    if k.brokers.is_empty() {
        anyhow::bail!("kafka.brokers is not set: nothing to check");
    }
    let mut out = String::new();
    writeln!(
        out,
        "Kafka at {} ({})",
        k.brokers.join(","),
        security.summary
    )?;
    let cc = probe_config(&client_config(k, security));
    let tokens = match &security.token {
        None => None,
        Some(source) => Some(Arc::new(tokens(source, k).await?)),
    };
    let health = Arc::new(Health::default());
    let client = create(&cc, &health, &tokens, true)?;

    let p = client.clone();
    let md = tokio::task::spawn_blocking(move || p.client().fetch_metadata(None, timeout)).await?;
    let md = match md {
        Ok(md) => md,
        Err(e) => {
            // The refusal, if the brokers gave one, is in the error callback's record.
            health.probed(false);
            let problem = health.problem().unwrap_or_else(|| e.to_string());
            writeln!(out, "cannot connect: {problem}")?;
            writeln!(out, "{}", hint(health.cause(), security))?;
            return Ok(Report {
                text: out,
                ok: false,
            });
        }
    };
    writeln!(out, "connected: {} broker(s)", md.brokers().len())?;
    for b in md.brokers() {
        writeln!(out, "  {:>5}  {}:{}", b.id(), b.host(), b.port())?;
    }

    if topics.by_tenant {
        writeln!(
            out,
            "note: some routes name topics by tenant; those are not listed"
        )?;
    }
    writeln!(out, "topics the routes name ({}):", topics.names.len())?;
    let mut problems = 0;
    for topic in &topics.names {
        let p = client.clone();
        let t = topic.clone();
        let answer =
            tokio::task::spawn_blocking(move || p.client().fetch_metadata(Some(&t), timeout))
                .await?;
        let line = match answer {
            Err(e) => {
                problems += 1;
                format!("  error    {topic}: {e}")
            }
            Ok(md) => match md.topics().first() {
                None => {
                    problems += 1;
                    format!("  error    {topic}: not in the brokers' answer")
                }
                Some(t) => match t.error().map(RDKafkaErrorCode::from) {
                    None => format!("  ok       {topic}  {} partition(s)", t.partitions().len()),
                    Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                        problems += 1;
                        format!("  missing  {topic}: does not exist (create it; production clusters do not create topics on first write)")
                    }
                    Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
                        problems += 1;
                        format!("  denied   {topic}: authorization: this principal may not describe it (grant Describe and Write)")
                    }
                    Some(code) => {
                        problems += 1;
                        format!("  error    {topic}: {}", KafkaError::MetadataFetch(code))
                    }
                },
            },
        };
        writeln!(out, "{line}")?;
    }
    if problems == 0 {
        writeln!(out, "OK")?;
    } else {
        writeln!(out, "{problems} problem(s)")?;
    }
    Ok(Report {
        text: out,
        ok: problems == 0,
    })
}

/// What to look at for a refusal of this kind.
fn hint(cause: Option<Cause>, security: &KafkaSecurity) -> String {
    match cause {
        Some(Cause::Authentication) => format!(
            "hint: the brokers refuse the credentials ({}): check kafka.sasl_mechanism is one the listener enables, and the user and password (file) or token source",
            security.summary
        ),
        Some(Cause::Certificate) => "hint: a certificate was refused: kafka.ssl_ca_file must hold the CA that signed the brokers' certificates, which must name the host in kafka.brokers; a listener requiring client certificates needs kafka.ssl_cert_file and kafka.ssl_key_file".to_string(),
        Some(Cause::Tls) => "hint: the TLS session failed: does kafka.security_protocol (ssl, sasl_ssl) match the listener at that port?".to_string(),
        Some(Cause::Authorization) => "hint: the brokers refuse this principal's request: check its ACLs (Describe on the topics, IdempotentWrite or Write)".to_string(),
        None => "hint: no broker answered in time: check kafka.brokers, the network path, and that kafka.security_protocol matches the listener (TLS to a plaintext port or the reverse only times out)".to_string(),
    }
}
