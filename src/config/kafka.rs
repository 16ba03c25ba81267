//! `[kafka]`: the producer's settings; its security (TLS, SASL, tokens) is checked in
//! [`security`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::env::string_or_list;
use super::units::HumanDuration;
use super::{field_error, ConfigError, Secret};

mod security;
#[cfg(test)]
mod tests;

pub use security::{KafkaProtocol, KafkaSecurity, SaslMechanism, TokenSource};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers (`host:port`, comma-separated in the environment).
    #[serde(deserialize_with = "string_or_list")]
    pub brokers: Vec<String>,
    pub client_id: String,
    /// librdkafka's `linger.ms`; 5 is librdkafka's default since 1.7.
    pub linger_ms: u64,
    pub compression: String,
    /// librdkafka's `message.timeout.ms`: how long an event may wait for its broker ack before
    /// the client is told it failed. Kept well under typical HTTP client timeouts
    /// (librdkafka's own default is 300000).
    pub delivery_timeout_ms: u64,
    /// How often readiness re-checks that a broker answers.
    pub probe_interval: HumanDuration,
    /// Passed to librdkafka as-is, after (and so over) the settings above. Keys that a
    /// security field below sets are refused here (one place for each setting).
    pub properties: BTreeMap<String, String>,
    // Security (see src/config/kafka.rs and README "Kafka security"). Secrets come from files
    // (or, for sasl_password and oauth_client_secret, the environment), never shown by Debug.
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: KafkaProtocol,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `OAUTHBEARER` or `AWS_MSK_IAM`.
    pub sasl_mechanism: Option<SaslMechanism>,
    pub sasl_username: Option<String>,
    pub sasl_password_file: Option<PathBuf>,
    /// From the environment (`SLUICE_KAFKA__SASL_PASSWORD`); `sasl_password_file` otherwise.
    pub sasl_password: Option<Secret>,
    /// CA certificates (PEM) that verify the brokers; unset: the system's.
    pub ssl_ca_file: Option<PathBuf>,
    /// A client certificate (PEM, with its chain) and its key, for brokers that require one.
    pub ssl_cert_file: Option<PathBuf>,
    pub ssl_key_file: Option<PathBuf>,
    /// OAUTHBEARER: the OIDC token endpoint (client credentials grant).
    pub oauth_token_url: Option<String>,
    pub oauth_client_id: Option<String>,
    pub oauth_client_secret_file: Option<PathBuf>,
    /// From the environment (`SLUICE_KAFKA__OAUTH_CLIENT_SECRET`).
    pub oauth_client_secret: Option<Secret>,
    pub oauth_scope: Option<String>,
    /// AWS_MSK_IAM: the cluster's region; unset: the AWS chain's (`AWS_REGION`, profile).
    pub msk_iam_region: Option<String>,
    /// Lets PLAIN, OAUTHBEARER or AWS_MSK_IAM run over `sasl_plaintext`, which sends the
    /// password or token in clear. Off: refused at start.
    pub allow_insecure_sasl: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            client_id: "sluice".into(),
            linger_ms: 5,
            compression: "zstd".into(),
            delivery_timeout_ms: 10_000,
            probe_interval: HumanDuration::from_secs(2),
            properties: BTreeMap::new(),
            security_protocol: KafkaProtocol::default(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_file: None,
            sasl_password: None,
            ssl_ca_file: None,
            ssl_cert_file: None,
            ssl_key_file: None,
            oauth_token_url: None,
            oauth_client_id: None,
            oauth_client_secret_file: None,
            oauth_client_secret: None,
            oauth_scope: None,
            msk_iam_region: None,
            allow_insecure_sasl: false,
        }
    }
}

const KAFKA_COMPRESSIONS: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];

impl KafkaConfig {
    /// The producer's own settings; the security fields are checked (their files read) by
    /// [`KafkaSecurity::from_config`], from [`crate::check`].
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.is_empty() {
            return Err(field_error(
                "kafka.brokers",
                "must be set when sink.kind = \"kafka\" (e.g. SLUICE_KAFKA__BROKERS=127.0.0.1:9092)",
            ));
        }
        if !KAFKA_COMPRESSIONS.contains(&self.compression.as_str()) {
            return Err(field_error(
                "kafka.compression",
                format!("must be one of {}", KAFKA_COMPRESSIONS.join(", ")),
            ));
        }
        if self.delivery_timeout_ms == 0 {
            return Err(field_error(
                "kafka.delivery_timeout_ms",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}
