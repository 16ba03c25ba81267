//! Metrics and logs. Every metric name lives here, named `sluice_<name>_<unit>` with
//! counters ending in `_total`, base units (seconds, bytes) and bounded labels: route
//! templates, status codes, sink kinds and error codes, never ids or raw event types.
//! docs/metrics.md lists them for operators.

use std::sync::OnceLock;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::{LogConfig, LogFormat};

/// Requests by `route` (template) and `status`.
pub const HTTP_REQUESTS: &str = "sluice_http_requests_total";
/// Request duration by `route`.
pub const HTTP_REQUEST_DURATION: &str = "sluice_http_request_duration_seconds";
/// Events that passed decoding and validation and were handed to the sink.
pub const EVENTS_ACCEPTED: &str = "sluice_events_accepted_total";
/// Events refused, by `reason` (the error code the client was given).
pub const EVENTS_REJECTED: &str = "sluice_events_rejected_total";
/// Events the sink acknowledged as durable, by `sink`.
pub const EVENTS_PUBLISHED: &str = "sluice_events_published_total";
/// Events the sink failed to make durable, by `sink` and `reason`.
pub const PUBLISH_FAILURES: &str = "sluice_publish_failures_total";
/// Duration of one publish call (a request's batch, until every record is acked), by `sink`.
pub const PUBLISH_DURATION: &str = "sluice_publish_duration_seconds";
/// Producers replaced after a fatal error, by `sink`.
pub const PRODUCER_RESTARTS: &str = "sluice_producer_restarts_total";
/// Events decoded and not yet answered: the autoscaling demand signal.
/// Kafka refusing this gateway's credentials, certificate or permissions, by `cause`
/// (`authentication`, `certificate`, `tls`, `authorization`).
pub const KAFKA_SECURITY_ERRORS: &str = "sluice_kafka_security_errors_total";
/// OAUTHBEARER tokens made for Kafka, by `source` (`oidc`, `msk_iam`) and `result` (`ok`, `failed`).
pub const KAFKA_TOKEN_REFRESHES: &str = "sluice_kafka_token_refreshes_total";
/// Expiry of the current Kafka OAUTHBEARER token, as a Unix timestamp.
pub const KAFKA_TOKEN_EXPIRY: &str = "sluice_kafka_token_expiry_timestamp_seconds";
pub const INFLIGHT_EVENTS: &str = "sluice_inflight_events";
/// Rejected events for dead-letter topics, by `result` (`published`, `failed`, `capped`).
pub const DEAD_LETTERS: &str = "sluice_dead_letters_total";
/// Demand, the autoscaling signal: events in flight plus events waiting for admission.
pub const DEMAND_EVENTS: &str = "sluice_demand_events";
/// Requests waiting for admission before their body is read.
pub const ADMISSION_WAITING_REQUESTS: &str = "sluice_admission_waiting_requests";
/// Request body bytes admitted and not yet answered.
pub const INFLIGHT_BYTES: &str = "sluice_inflight_bytes";
/// 1 when /readyz answers 200.
pub const READY: &str = "sluice_ready";
/// Compiled schemas in the validator cache.
pub const SCHEMAS_LOADED: &str = "sluice_schemas_loaded";
/// Requests refused by authentication or authorization, by `reason` (the error code).
pub const AUTH_FAILURES: &str = "sluice_auth_failures_total";
/// JWKS fetches, by `result` (`ok`, `error`).
pub const JWKS_FETCHES: &str = "sluice_jwks_fetches_total";
/// Reloads of `auth.api_keys_file` after it changed, by `result` (`ok`, `error`: the previous
/// keys stay in use).
pub const API_KEYS_RELOADS: &str = "sluice_api_keys_reloads_total";
/// API keys in use (`auth.api_keys` and `auth.api_keys_file`), set when a keys file is used.
pub const API_KEYS_LOADED: &str = "sluice_api_keys";
/// Verification keys loaded from all JWKS URLs.
pub const JWKS_KEYS: &str = "sluice_jwks_keys";
/// Age of the oldest JWKS key cache (time since its last successful fetch).
pub const JWKS_AGE: &str = "sluice_jwks_age_seconds";
/// Kinesis records acknowledged by PutRecords.
pub const KINESIS_RECORDS_PUT: &str = "sluice_kinesis_records_put_total";
/// Kinesis record failures, by `code` (the record's ErrorCode, or the call's error).
pub const KINESIS_RECORDS_FAILED: &str = "sluice_kinesis_records_failed_total";
/// Kinesis records sent again after a failure.
pub const KINESIS_RETRIES: &str = "sluice_kinesis_retries_total";
/// Kinesis throttling answers (ProvisionedThroughputExceeded, LimitExceeded), records or calls.
pub const KINESIS_THROTTLES: &str = "sluice_kinesis_throttles_total";
/// One PutRecords call, from send to answer.
pub const KINESIS_CALL_DURATION: &str = "sluice_kinesis_call_duration_seconds";
/// Records per PutRecords call.
pub const KINESIS_BATCH_RECORDS: &str = "sluice_kinesis_batch_records";
/// Bytes of spool segments on disk (replayed or not; a segment goes once fully acknowledged).
pub const SPOOL_BYTES: &str = "sluice_spool_bytes";
/// Bytes of `<spool.dir>/rejected.log`, counted in `spool.max_bytes`.
pub const SPOOL_REJECTED_BYTES: &str = "sluice_spool_rejected_bytes";
/// Bytes in the spool not yet acknowledged by the sink: the spool backlog.
pub const SPOOL_BACKLOG_BYTES: &str = "sluice_spool_backlog_bytes";
/// Spool segment files on disk.
pub const SPOOL_SEGMENTS: &str = "sluice_spool_segments";
/// Age of the oldest segment holding records not yet acknowledged (0 when none).
pub const SPOOL_OLDEST_AGE: &str = "sluice_spool_oldest_age_seconds";
/// Records written to the spool, by `reason` (`ack_spool`, `backlog`, `sink_down`, `sink_failed`).
pub const SPOOL_APPENDED: &str = "sluice_spool_appended_total";
/// Records replayed from the spool and acknowledged by the sink.
pub const SPOOL_REPLAYED: &str = "sluice_spool_replayed_total";
/// Records refused by the spool, by `reason` (`full`, `io`).
pub const SPOOL_REFUSED: &str = "sluice_spool_refused_total";
/// Damage found while reading the spool back, by `kind` (`torn_tail`, `corrupt_record`).
pub const SPOOL_DAMAGE: &str = "sluice_spool_damage_total";
/// Spooled records the sink refused for good, moved to `<spool.dir>/rejected.log`.
pub const SPOOL_QUARANTINED: &str = "sluice_spool_quarantined_total";
/// Open client connections (all listeners).
pub const HTTP_CONNECTIONS: &str = "sluice_http_connections";
/// Connections closed for `server.max_connection_age`, by `how` (`graceful`: they finished
/// what they had in flight; `cut`: still busy after `server.shutdown_grace`).
pub const HTTP_CONNECTIONS_AGED: &str = "sluice_http_connections_aged_total";
/// New connections closed at once for `server.max_connections`.
pub const HTTP_CONNECTIONS_REFUSED: &str = "sluice_http_connections_refused_total";
/// Connections ended by `why`: `header` (a request head slower than
/// `server.header_read_timeout`: cut) or `idle` (no request for `server.idle_timeout`).
pub const HTTP_CONNECTIONS_TIMED_OUT: &str = "sluice_http_connections_timed_out_total";
/// Certificate reloads, by `result` (`ok`, `error`: the old certificate stays in use).
pub const TLS_RELOADS: &str = "sluice_tls_reloads_total";
/// TLS handshakes that failed, by `reason` (`timeout`, `error`, `busy`).
pub const TLS_HANDSHAKE_FAILURES: &str = "sluice_tls_handshake_failures_total";
/// The earliest `nextUpdate` of the client CRLs (`tls.client_crl_file`), as a Unix timestamp.
pub const TLS_CLIENT_CRL_NEXT_UPDATE: &str = "sluice_tls_client_crl_next_update_timestamp_seconds";
/// Expiry (notAfter) of the served certificate, as a Unix timestamp.
pub const TLS_CERT_NOT_AFTER: &str = "sluice_tls_cert_not_after_timestamp_seconds";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide Prometheus recorder. Installed once; every server in the process (tests
/// run several) renders from the same handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("static bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full(KINESIS_BATCH_RECORDS.into()),
                    &[1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0],
                )
                .expect("static bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            handle
        })
        .clone()
}

/// What a metric is: Prometheus' type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric, as registered and as docs/metrics.md lists it (a test keeps them equal).
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<metrics::Unit>,
    pub help: &'static str,
}

/// Every metric Sluice exports: the one place their descriptions are written.
pub const METRICS: &[Metric] = &[
    Metric {
        name: HTTP_REQUESTS,
        kind: Kind::Counter,
        unit: None,
        help: "HTTP requests by route template and status code",
    },
    Metric {
        name: HTTP_REQUEST_DURATION,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "HTTP request duration by route template",
    },
    Metric {
        name: EVENTS_ACCEPTED,
        kind: Kind::Counter,
        unit: None,
        help: "Events that passed validation and were handed to the sink",
    },
    Metric {
        name: EVENTS_REJECTED,
        kind: Kind::Counter,
        unit: None,
        help: "Events refused, by reason code",
    },
    Metric {
        name: EVENTS_PUBLISHED,
        kind: Kind::Counter,
        unit: None,
        help: "Events acknowledged as durable by the sink",
    },
    Metric {
        name: PUBLISH_FAILURES,
        kind: Kind::Counter,
        unit: None,
        help: "Events the sink failed to make durable, by reason code",
    },
    Metric {
        name: PUBLISH_DURATION,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time from handing a batch to the sink until every record is acknowledged",
    },
    Metric {
        name: PRODUCER_RESTARTS,
        kind: Kind::Counter,
        unit: None,
        help: "Producers replaced after a fatal error",
    },
    Metric {
        name: KAFKA_SECURITY_ERRORS,
        kind: Kind::Counter,
        unit: None,
        help: "Kafka refusing the gateway's credentials, certificate or permissions, by cause",
    },
    Metric {
        name: KAFKA_TOKEN_REFRESHES,
        kind: Kind::Counter,
        unit: None,
        help: "OAUTHBEARER tokens made for Kafka, by source and result",
    },
    Metric {
        name: KAFKA_TOKEN_EXPIRY,
        kind: Kind::Gauge,
        unit: None,
        help: "Expiry of the current Kafka OAUTHBEARER token (Unix time)",
    },
    Metric {
        name: HTTP_CONNECTIONS,
        kind: Kind::Gauge,
        unit: None,
        help: "Open client connections",
    },
    Metric {
        name: HTTP_CONNECTIONS_AGED,
        kind: Kind::Counter,
        unit: None,
        help: "Connections closed for server.max_connection_age, by how (graceful, cut)",
    },
    Metric {
        name: HTTP_CONNECTIONS_REFUSED,
        kind: Kind::Counter,
        unit: None,
        help: "New connections closed at once because server.max_connections were open",
    },
    Metric {
        name: HTTP_CONNECTIONS_TIMED_OUT,
        kind: Kind::Counter,
        unit: None,
        help: "Connections ended by why: header (a request head slower than server.header_read_timeout), idle (no request for server.idle_timeout)",
    },
    Metric {
        name: TLS_RELOADS,
        kind: Kind::Counter,
        unit: None,
        help: "TLS certificate reloads, by result (error: the previous certificate stays in use)",
    },
    Metric {
        name: TLS_HANDSHAKE_FAILURES,
        kind: Kind::Counter,
        unit: None,
        help: "TLS handshakes that failed, by reason",
    },
    Metric {
        name: TLS_CERT_NOT_AFTER,
        kind: Kind::Gauge,
        unit: None,
        help: "Expiry (notAfter) of the served TLS certificate, Unix time",
    },
    Metric {
        name: TLS_CLIENT_CRL_NEXT_UPDATE,
        kind: Kind::Gauge,
        unit: None,
        help: "Earliest nextUpdate of the client certificate revocation lists, Unix time",
    },
    Metric {
        name: INFLIGHT_EVENTS,
        kind: Kind::Gauge,
        unit: None,
        help: "Events decoded and not yet answered",
    },
    Metric {
        name: READY,
        kind: Kind::Gauge,
        unit: None,
        help: "1 when /readyz answers 200",
    },
    Metric {
        name: DEMAND_EVENTS,
        kind: Kind::Gauge,
        unit: None,
        help: "Events in flight plus events waiting for admission (the autoscaling signal)",
    },
    Metric {
        name: ADMISSION_WAITING_REQUESTS,
        kind: Kind::Gauge,
        unit: None,
        help: "Requests waiting for admission before their body is read",
    },
    Metric {
        name: DEAD_LETTERS,
        kind: Kind::Counter,
        unit: None,
        help: "Rejected events for dead-letter topics, by result (published, failed, capped)",
    },
    Metric {
        name: INFLIGHT_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Request body bytes admitted and not yet answered",
    },
    Metric {
        name: SCHEMAS_LOADED,
        kind: Kind::Gauge,
        unit: None,
        help: "Compiled schemas in the validator cache",
    },
    Metric {
        name: AUTH_FAILURES,
        kind: Kind::Counter,
        unit: None,
        help: "Requests refused by authentication or authorization, by reason code",
    },
    Metric {
        name: JWKS_FETCHES,
        kind: Kind::Counter,
        unit: None,
        help: "JWKS fetches by result (ok, error)",
    },
    Metric {
        name: API_KEYS_RELOADS,
        kind: Kind::Counter,
        unit: None,
        help: "auth.api_keys_file reloads after a change, by result (error: the previous keys stay in use)",
    },
    Metric {
        name: API_KEYS_LOADED,
        kind: Kind::Gauge,
        unit: None,
        help: "API keys in use (auth.api_keys and auth.api_keys_file)",
    },
    Metric {
        name: JWKS_KEYS,
        kind: Kind::Gauge,
        unit: None,
        help: "Verification keys loaded from JWKS URLs",
    },
    Metric {
        name: JWKS_AGE,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        help: "Time since the least recently refreshed JWKS URL was last fetched successfully",
    },
    Metric {
        name: KINESIS_RECORDS_PUT,
        kind: Kind::Counter,
        unit: None,
        help: "Kinesis records acknowledged by PutRecords",
    },
    Metric {
        name: KINESIS_RECORDS_FAILED,
        kind: Kind::Counter,
        unit: None,
        help: "Kinesis record failures by code (record ErrorCode or call error)",
    },
    Metric {
        name: KINESIS_RETRIES,
        kind: Kind::Counter,
        unit: None,
        help: "Kinesis records sent again after a failure",
    },
    Metric {
        name: KINESIS_THROTTLES,
        kind: Kind::Counter,
        unit: None,
        help: "Kinesis throttling answers (records or whole calls)",
    },
    Metric {
        name: KINESIS_CALL_DURATION,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "One PutRecords call, from send to answer",
    },
    Metric {
        name: KINESIS_BATCH_RECORDS,
        kind: Kind::Histogram,
        unit: None,
        help: "Records per PutRecords call",
    },
    Metric {
        name: SPOOL_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Bytes of spool segment files and rejected.log on disk (what spool.max_bytes bounds)",
    },
    Metric {
        name: SPOOL_REJECTED_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Bytes of rejected.log, counted in spool.max_bytes until deleted",
    },
    Metric {
        name: SPOOL_BACKLOG_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Spooled bytes not yet acknowledged by the sink (the spool backlog)",
    },
    Metric {
        name: SPOOL_SEGMENTS,
        kind: Kind::Gauge,
        unit: None,
        help: "Spool segment files on disk",
    },
    Metric {
        name: SPOOL_OLDEST_AGE,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        help: "Age of the oldest spool segment holding unacknowledged records (0 when none)",
    },
    Metric {
        name: SPOOL_APPENDED,
        kind: Kind::Counter,
        unit: None,
        help: "Records written to the spool, by reason (ack_spool, backlog, sink_down, sink_failed)",
    },
    Metric {
        name: SPOOL_REPLAYED,
        kind: Kind::Counter,
        unit: None,
        help: "Records replayed from the spool and acknowledged by the sink",
    },
    Metric {
        name: SPOOL_REFUSED,
        kind: Kind::Counter,
        unit: None,
        help: "Records the spool could not take, by reason (full, io)",
    },
    Metric {
        name: SPOOL_DAMAGE,
        kind: Kind::Counter,
        unit: None,
        help: "Damage found reading the spool back, by kind (torn_tail, corrupt_record)",
    },
    Metric {
        name: SPOOL_QUARANTINED,
        kind: Kind::Counter,
        unit: None,
        help: "Spooled records the sink refused for good, kept in rejected.log",
    },
];

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    for m in METRICS {
        match (m.kind, m.unit) {
            (Kind::Counter, Some(u)) => describe_counter!(m.name, u, m.help),
            (Kind::Counter, None) => describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(u)) => describe_gauge!(m.name, u, m.help),
            (Kind::Gauge, None) => describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(u)) => describe_histogram!(m.name, u, m.help),
            (Kind::Histogram, None) => describe_histogram!(m.name, m.help),
        }
    }
}

/// Logs to stderr, as text or JSON. `RUST_LOG` overrides `log.level`.
pub fn init_logging(config: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn kind_name(k: Kind) -> &'static str {
        match k {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }

    #[test]
    fn every_metric_is_in_the_table_and_docs_metrics_md_lists_the_same_with_the_same_types() {
        let table: BTreeMap<&str, &str> = METRICS
            .iter()
            .map(|m| (m.name, kind_name(m.kind)))
            .collect();
        assert_eq!(table.len(), METRICS.len(), "a metric listed twice");

        // Every name constant here is described.
        let source = include_str!("mod.rs");
        let consts: Vec<&str> = source
            .lines()
            .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \"sluice_"))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        for name in &consts {
            assert!(table.contains_key(name), "{name} has no entry in METRICS");
        }
        assert_eq!(
            consts.len(),
            table.len(),
            "METRICS names something not defined here"
        );

        // docs/metrics.md: `| `name` | type | labels | meaning |`.
        let doc = include_str!("../../docs/metrics.md");
        let documented: BTreeMap<&str, &str> = doc
            .lines()
            .filter(|l| l.starts_with("| `sluice_"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].trim_matches('`'), cells[2])
            })
            .collect();
        assert_eq!(
            documented, table,
            "docs/metrics.md and telemetry::METRICS differ (name -> type)"
        );
    }
}
