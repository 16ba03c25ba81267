use std::path::Path;

use super::*;
use crate::config::{Config, ConfigError};

fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut env: Vec<(String, String)> = vec![
        ("SLUICE_SINK__KIND".into(), "kafka".into()),
        ("SLUICE_KAFKA__BROKERS".into(), "127.0.0.1:9092".into()),
    ];
    env.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    // What start-up runs: the plain rules, then the security settings built.
    let config = Config::load(None, env)?;
    crate::check(&config)?;
    Ok(config)
}

fn err(pairs: &[(&str, &str)]) -> String {
    load(pairs).unwrap_err().to_string()
}

fn file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

#[test]
fn each_mechanism_becomes_librdkafka_settings_with_the_secret_read_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let password = file(dir.path(), "pw", "s3cret-0123\n");
    let ca = file(dir.path(), "ca.pem", CERT);
    let c = load(&[
        ("SLUICE_KAFKA__SECURITY_PROTOCOL", "sasl_ssl"),
        ("SLUICE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512"),
        ("SLUICE_KAFKA__SASL_USERNAME", "alice"),
        ("SLUICE_KAFKA__SASL_PASSWORD_FILE", &password),
        ("SLUICE_KAFKA__SSL_CA_FILE", &ca),
    ])
    .unwrap();
    let s = KafkaSecurity::from_config(&c.kafka).unwrap();
    let props: Vec<(&str, &str)> = s.properties().collect();
    assert_eq!(
        props,
        [
            ("security.protocol", "sasl_ssl"),
            ("ssl.ca.location", ca.as_str()),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "alice"),
            ("sasl.password", "s3cret-0123"),
        ]
    );
    assert_eq!(s.summary, "sasl_ssl, SCRAM-SHA-512 as alice");
    assert!(
        !format!("{s:?}{:?}", c.kafka).contains("s3cret"),
        "never in Debug"
    );

    // The password from the environment stays a string, digits and all.
    let c = load(&[
        ("SLUICE_KAFKA__SECURITY_PROTOCOL", "sasl_ssl"),
        ("SLUICE_KAFKA__SASL_MECHANISM", "PLAIN"),
        ("SLUICE_KAFKA__SASL_USERNAME", "0042"),
        ("SLUICE_KAFKA__SASL_PASSWORD", "007"),
    ])
    .unwrap();
    let s = KafkaSecurity::from_config(&c.kafka).unwrap();
    let props: Vec<(&str, &str)> = s.properties().collect();
    assert!(props.contains(&("ssl.ca.location", "probe")), "system CAs");
    assert!(props.contains(&("sasl.username", "0042")));
    assert!(props.contains(&("sasl.password", "007")));

    let c = load(&[
        ("SLUICE_KAFKA__SECURITY_PROTOCOL", "sasl_ssl"),
        ("SLUICE_KAFKA__SASL_MECHANISM", "AWS_MSK_IAM"),
        ("SLUICE_KAFKA__MSK_IAM_REGION", "eu-west-1"),
    ])
    .unwrap();
    let s = KafkaSecurity::from_config(&c.kafka).unwrap();
    assert!(s
        .properties()
        .any(|p| p == ("sasl.mechanism", "OAUTHBEARER")));
    assert!(matches!(&s.token, Some(TokenSource::MskIam { region: Some(r) }) if r == "eu-west-1"));
}

#[test]
fn half_done_or_unsafe_security_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let pw = file(dir.path(), "pw", "x");
    let empty = file(dir.path(), "empty", "\n");
    let cert = file(dir.path(), "c.pem", CERT);
    let key = file(dir.path(), "k.pem", KEY);
    let not_pem = file(dir.path(), "n.pem", "hello");
    let sasl_ssl = ("SLUICE_KAFKA__SECURITY_PROTOCOL", "sasl_ssl");
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("SLUICE_KAFKA__SECURITY_PROTOCOL", "tls")],
            "kafka.security_protocol",
            "",
        ),
        (vec![sasl_ssl], "kafka.sasl_mechanism", "must be set"),
        (
            vec![("SLUICE_KAFKA__SASL_MECHANISM", "PLAIN")],
            "kafka.sasl_mechanism",
            "needs kafka.security_protocol sasl_ssl",
        ),
        (
            vec![sasl_ssl, ("SLUICE_KAFKA__SASL_MECHANISM", "GSSAPI")],
            "kafka.sasl_mechanism",
            "",
        ),
        (
            vec![sasl_ssl, ("SLUICE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")],
            "kafka.sasl_username",
            "must be set",
        ),
        (
            vec![
                sasl_ssl,
                ("SLUICE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256"),
                ("SLUICE_KAFKA__SASL_USERNAME", "a"),
            ],
            "kafka.sasl_password_file",
            "must be set",
        ),
        (
            vec![
                sasl_ssl,
                ("SLUICE_KAFKA__SASL_MECHANISM", "PLAIN"),
                ("SLUICE_KAFKA__SASL_USERNAME", "a"),
                ("SLUICE_KAFKA__SASL_PASSWORD_FILE", &pw),
                ("SLUICE_KAFKA__SASL_PASSWORD", "y"),
            ],
            "kafka.sasl_password",
            "keep one",
        ),
        (
            vec![
                sasl_ssl,
                ("SLUICE_KAFKA__SASL_MECHANISM", "PLAIN"),
                ("SLUICE_KAFKA__SASL_USERNAME", "a"),
                ("SLUICE_KAFKA__SASL_PASSWORD_FILE", &empty),
            ],
            "kafka.sasl_password_file",
            "empty",
        ),
        (
            vec![
                sasl_ssl,
                ("SLUICE_KAFKA__SASL_MECHANISM", "PLAIN"),
                ("SLUICE_KAFKA__SASL_USERNAME", "a"),
                ("SLUICE_KAFKA__SASL_PASSWORD_FILE", "/nonexistent/pw"),
            ],
            "kafka.sasl_password_file",
            "cannot read",
        ),
        (
            vec![
                ("SLUICE_KAFKA__SECURITY_PROTOCOL", "sasl_plaintext"),
                ("SLUICE_KAFKA__SASL_MECHANISM", "PLAIN"),
                ("SLUICE_KAFKA__SASL_USERNAME", "a"),
                ("SLUICE_KAFKA__SASL_PASSWORD_FILE", &pw),
            ],
            "kafka.sasl_mechanism",
            "allow_insecure_sasl",
        ),
        (
            vec![
                ("SLUICE_KAFKA__SECURITY_PROTOCOL", "sasl_plaintext"),
                ("SLUICE_KAFKA__SASL_MECHANISM", "AWS_MSK_IAM"),
            ],
            "kafka.sasl_mechanism",
            "in clear",
        ),
        (
            vec![("SLUICE_KAFKA__SSL_CA_FILE", &cert)],
            "kafka.ssl_ca_file",
            "TLS only",
        ),
        (
            vec![
                ("SLUICE_KAFKA__SECURITY_PROTOCOL", "ssl"),
                ("SLUICE_KAFKA__SSL_CERT_FILE", &cert),
            ],
            "kafka.ssl_key_file",
            "together",
        ),
        (
            vec![
                ("SLUICE_KAFKA__SECURITY_PROTOCOL", "ssl"),
                ("SLUICE_KAFKA__SSL_CA_FILE", &not_pem),
            ],
            "kafka.ssl_ca_file",
            "no PEM CERTIFICATE",
        ),
        (
            vec![
                ("SLUICE_KAFKA__SECURITY_PROTOCOL", "ssl"),
                ("SLUICE_KAFKA__SSL_CERT_FILE", &cert),
                ("SLUICE_KAFKA__SSL_KEY_FILE", &cert),
            ],
            "kafka.ssl_key_file",
            "no PEM PRIVATE KEY",
        ),
        (
            vec![
                ("SLUICE_KAFKA__SECURITY_PROTOCOL", "ssl"),
                ("SLUICE_KAFKA__SSL_CERT_FILE", &cert),
                ("SLUICE_KAFKA__SSL_KEY_FILE", &key),
                ("SLUICE_KAFKA__MSK_IAM_REGION", "eu-west-1"),
            ],
            "kafka.msk_iam_region",
            "not used",
        ),
        (
            vec![
                sasl_ssl,
                ("SLUICE_KAFKA__SASL_MECHANISM", "OAUTHBEARER"),
                (
                    "SLUICE_KAFKA__OAUTH_TOKEN_URL",
                    "http://idp.example.com/token",
                ),
                ("SLUICE_KAFKA__OAUTH_CLIENT_ID", "c"),
                ("SLUICE_KAFKA__OAUTH_CLIENT_SECRET", "s"),
            ],
            "kafka.oauth_token_url",
            "https",
        ),
        (
            vec![
                sasl_ssl,
                ("SLUICE_KAFKA__SASL_MECHANISM", "OAUTHBEARER"),
                (
                    "SLUICE_KAFKA__OAUTH_TOKEN_URL",
                    "https://idp.example.com/token",
                ),
                ("SLUICE_KAFKA__OAUTH_CLIENT_ID", "c"),
            ],
            "kafka.oauth_client_secret_file",
            "must be set",
        ),
        (
            vec![
                sasl_ssl,
                ("SLUICE_KAFKA__SASL_MECHANISM", "AWS_MSK_IAM"),
                ("SLUICE_KAFKA__MSK_IAM_REGION", "eu west"),
            ],
            "kafka.msk_iam_region",
            "region name",
        ),
        (
            vec![("SLUICE_KAFKA__PROPERTIES__SASL_PASSWORD", "x")],
            "kafka.properties.\"sasl.password\"",
            "kafka.sasl_password_file",
        ),
        (
            vec![("SLUICE_KAFKA__PROPERTIES__SECURITY_PROTOCOL", "ssl")],
            "kafka.properties.\"security.protocol\"",
            "",
        ),
    ];
    for (pairs, field, words) in cases {
        let e = err(&pairs);
        assert!(
            e.contains(&format!("`{field}`")) && e.contains(words),
            "{pairs:?}: {e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
    }
    // OAUTHBEARER to this host over http is fine (a local IdP).
    load(&[
        sasl_ssl,
        ("SLUICE_KAFKA__SASL_MECHANISM", "OAUTHBEARER"),
        (
            "SLUICE_KAFKA__OAUTH_TOKEN_URL",
            "http://127.0.0.1:8080/token",
        ),
        ("SLUICE_KAFKA__OAUTH_CLIENT_ID", "c"),
        ("SLUICE_KAFKA__OAUTH_CLIENT_SECRET", "s"),
    ])
    .unwrap();
}
