use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_are_the_embedded_file_sink() {
    let c = Config::load(None, vec![]).unwrap();
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.sink.kind, SinkKind::File);
    assert_eq!(c.file.dir, PathBuf::from("data"));
    assert_eq!(c.limits.max_body_bytes.0, 5 * MIB);
    assert_eq!(c.limits.max_decompressed_bytes.0, 20 * MIB);
    assert_eq!(c.limits.max_event_bytes.0, MIB);
    assert_eq!(c.limits.max_events, 1000);
    assert_eq!(c.limits.max_depth, 64);
    assert_eq!(c.server.shutdown_grace.0, Duration::from_secs(30));
}

#[test]
fn env_overrides_file_and_types_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:1\"\n[kafka]\nlinger_ms = 50\n",
    )
    .unwrap();
    let c = Config::load(
        Some(&path),
        env(&[
            ("SLUICE_SERVER__LISTEN", "127.0.0.1:8081"),
            ("SLUICE_SINK__KIND", "kafka"),
            ("SLUICE_KAFKA__BROKERS", "a:9092, b:9092"),
            ("SLUICE_KAFKA__PROPERTIES__SOCKET_TIMEOUT_MS", "1000"),
            ("SLUICE_LIMITS__MAX_EVENT_BYTES", "64KiB"),
            ("SLUICE_LIMITS__MAX_EVENTS", "10"),
            ("SLUICE_SERVER__DRAIN_DELAY", "0s"),
            ("OTHER", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8081");
    assert_eq!(c.sink.kind, SinkKind::Kafka);
    assert_eq!(c.kafka.brokers, vec!["a:9092", "b:9092"]);
    assert_eq!(c.kafka.linger_ms, 50, "file value kept where env is silent");
    assert_eq!(c.kafka.properties["socket.timeout.ms"], "1000");
    assert_eq!(c.limits.max_event_bytes.0, 64 * KIB);
    assert_eq!(c.limits.max_events, 10);
    assert_eq!(c.server.drain_delay.0, Duration::ZERO);
}

/// The error start-up gives: the plain rules ([`Config::load`]), then [`crate::check`].
fn err(pairs: &[(&str, &str)]) -> String {
    match Config::load(None, env(pairs)) {
        Ok(config) => crate::check(&config).err().expect("refused").to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_hardening_limits_are_checked_at_start() {
    for (var, value, field) in [
        (
            "SLUICE_SERVER__HEADER_READ_TIMEOUT",
            "0s",
            "server.header_read_timeout",
        ),
        ("SLUICE_SERVER__IDLE_TIMEOUT", "0s", "server.idle_timeout"),
        (
            "SLUICE_SERVER__MAX_CONNECTIONS",
            "0",
            "server.max_connections",
        ),
        (
            "SLUICE_SERVER__MAX_STREAMS_PER_CONNECTION",
            "0",
            "server.max_streams_per_connection",
        ),
        (
            "SLUICE_LIMITS__MAX_EXTENSIONS",
            "1025",
            "limits.max_extensions",
        ),
        (
            "SLUICE_LIMITS__MAX_INFLIGHT_BYTES_PER_CONNECTION",
            "1MiB",
            "limits.max_inflight_bytes_per_connection",
        ),
        (
            "SLUICE_REGISTRY__MAX_SCHEMA_BYTES",
            "0",
            "registry.max_schema_bytes",
        ),
        (
            "SLUICE_REGISTRY__COMPAT_BUDGET",
            "0",
            "registry.compat_budget",
        ),
        (
            "SLUICE_REGISTRY__COMPAT_TIMEOUT",
            "0s",
            "registry.compat_timeout",
        ),
        (
            "SLUICE_REGISTRY__MAX_SCHEMA_FANOUT",
            "0",
            "registry.max_schema_fanout",
        ),
    ] {
        let e = err(&[(var, value)]);
        assert!(e.contains(field), "{var}={value}: {e}");
    }
    assert!(Config::load(None, env(&[("SLUICE_LIMITS__MAX_EXTENSIONS", "1024")])).is_ok());
}

#[test]
fn bad_values_name_the_field() {
    assert!(err(&[("SLUICE_SERVER__LISTEN", "nope")]).contains("server.listen"));
    assert!(
        err(&[("SLUICE_LIMITS__MAX_BODY_BYTES", "5 parsecs")]).contains("limits.max_body_bytes")
    );
    assert!(err(&[("SLUICE_SINK__KIND", "carrier-pigeon")]).contains("sink.kind"));
    assert!(err(&[("SLUICE_SINK__KIND", "kafka")]).contains("kafka.brokers"));
    assert!(err(&[("SLUICE_LIMITS__MAX_EVENTS", "0")]).contains("limits.max_events"));
    assert!(err(&[("SLUICE_SERVER__SHUTDOWN_GRACE", "30")]).contains("server.shutdown_grace"));
    assert!(err(&[("SLUICE_SERVER__TYPO", "1")]).contains("typo"));
    assert!(err(&[("SLUICE_SERVER_LISTEN", "1")]).contains("SLUICE_<SECTION>__<FIELD>"));
    assert!(err(&[("SLUICE_NOSUCH__FIELD", "1")]).contains("nosuch"));
    // Other tools' SLUICE_* variables are not config.
    assert!(Config::load(
        None,
        env(&[("SLUICE_TOOLS_DIR", "/x"), ("SLUICE_CONFIG", "f")])
    )
    .is_ok());
    assert!(err(&[
        ("SLUICE_SINK__KIND", "kafka"),
        ("SLUICE_KAFKA__BROKERS", "x:1"),
        ("SLUICE_KAFKA__COMPRESSION", "brotli")
    ])
    .contains("kafka.compression"));
}

#[test]
fn the_example_config_is_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sluice.example.toml");
    let c = Config::load(Some(&path), vec![]).unwrap();
    let d = Config::default();
    assert_eq!(c.server.listen, d.server.listen);
    assert_eq!(c.auth.effective_mode(), AuthMode::Protected);
    assert_eq!(c.auth.cors.allowed_headers, d.auth.cors.allowed_headers);
    assert_eq!(c.auth.cors.max_age.0, d.auth.cors.max_age.0);
    assert_eq!(c.auth.token_cache_ttl.0, d.auth.token_cache_ttl.0);
    assert_eq!(c.auth.max_token_bytes, d.auth.max_token_bytes);
    assert_eq!(c.routes.ack, d.routes.ack);
    assert_eq!(c.spool.enabled, d.spool.enabled);
    assert_eq!(c.spool.dir, d.spool.dir);
    assert_eq!(c.spool.max_bytes, d.spool.max_bytes);
    assert_eq!(c.spool.segment_bytes, d.spool.segment_bytes);
    assert_eq!(c.spool.ack_timeout.0, d.spool.ack_timeout.0);
    assert_eq!(c.spool.replay_batch, d.spool.replay_batch);
    let (k, dk) = (&c.kinesis, &d.kinesis);
    assert_eq!(k.linger.0, dk.linger.0);
    assert_eq!(k.max_batch_records, dk.max_batch_records);
    assert_eq!(k.max_batch_bytes, dk.max_batch_bytes);
    assert_eq!(k.max_in_flight_calls, dk.max_in_flight_calls);
    assert_eq!(k.delivery_timeout.0, dk.delivery_timeout.0);
    assert_eq!(k.call_timeout.0, dk.call_timeout.0);
    assert_eq!(k.probe_interval.0, dk.probe_interval.0);
    assert_eq!(k.format, dk.format);
}

#[test]
fn auth_lists_come_from_the_environment_and_mode_follows_key_sources() {
    let c = Config::load(
        None,
        vec![
            (
                "SLUICE_AUTH__JWKS_URLS".to_string(),
                "https://a.test/jwks, https://b.test/jwks".to_string(),
            ),
            ("SLUICE_AUTH__AUDIENCE".to_string(), "sluice".to_string()),
        ],
    )
    .unwrap();
    assert_eq!(c.auth.jwks_urls.len(), 2);
    assert_eq!(c.auth.audience, ["sluice"]);
    assert_eq!(c.auth.effective_mode(), AuthMode::Required);
    let c = Config::load(
        None,
        vec![
            (
                "SLUICE_AUTH__JWKS_URLS".to_string(),
                "https://a.test/jwks".to_string(),
            ),
            ("SLUICE_AUTH__MODE".to_string(), "disabled".to_string()),
        ],
    )
    .unwrap();
    assert_eq!(c.auth.effective_mode(), AuthMode::Disabled);
    assert!(format!("{:?}", Secret::from("hunter2".to_string())).contains("redacted"));
}

#[test]
fn sizes_and_durations_parse() {
    assert_eq!("5MiB".parse::<ByteSize>().unwrap().0, 5 * MIB);
    assert_eq!("1KB".parse::<ByteSize>().unwrap().0, 1000);
    assert_eq!("123".parse::<ByteSize>().unwrap().0, 123);
    assert!("99999999999999999999GiB".parse::<ByteSize>().is_err());
    assert_eq!(
        "500ms".parse::<HumanDuration>().unwrap().0,
        Duration::from_millis(500)
    );
    assert_eq!(
        "2m".parse::<HumanDuration>().unwrap().0,
        Duration::from_secs(120)
    );
    assert!("2".parse::<HumanDuration>().is_err());
}
