//! Configuration: one TOML file, overlaid by `SLUICE_<SECTION>__<FIELD>` environment
//! variables, overlaid on defaults. Section and field names are a contract, documented in
//! sluice.example.toml (scripts, the Helm chart and operators rely on them: add fields, rename
//! none).
//!
//! Loading never panics: every problem becomes a [`ConfigError`] whose message names the
//! field, so a bad deployment fails at start with something an operator can act on.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use self::env::overlay_env;

mod auth;
mod env;
mod kafka;
mod limits;
mod rate_limits;
mod registry;
mod routes;
mod server;
mod sink;
mod spool;
#[cfg(test)]
mod tests;
mod tls;
mod units;

pub use auth::{
    ApiKeyConfig, AuthConfig, AuthMode, ClientCertConfig, CorsConfig, KeyClass, StaticKeyConfig,
};
pub use kafka::{KafkaConfig, KafkaProtocol, KafkaSecurity, SaslMechanism, TokenSource};
pub use limits::LimitsConfig;
pub use rate_limits::{RateLimitConfig, RateLimitsConfig, TenantRateLimit};
pub use registry::{OnConflict, RegistryConfig, SchemasConfig, DEFAULT_COMPAT_BUDGET};
pub use routes::{Ack, RouteRule, RoutesConfig};
pub use server::{LogConfig, LogFormat, ServerConfig};
pub use sink::{FileConfig, KinesisConfig, KinesisFormat, SinkConfig, SinkKind};
pub use spool::SpoolConfig;
pub use tls::{ClientAuth, TlsConfig};
pub use units::{ByteSize, HumanDuration, GIB, KIB, MAX_HEADER_BYTES_CAP, MIB};

/// Prefix of every environment variable that overrides a config field.
pub const ENV_PREFIX: &str = "SLUICE_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment variable {var}: expected SLUICE_<SECTION>__<FIELD>")]
    EnvName { var: String },
    #[error("config field `{field}`: {message}")]
    Field { field: String, message: String },
}

pub(crate) fn field_error(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The config file's sections, as named in the environment.
const SECTIONS: &[&str] = &[
    "server",
    "limits",
    "schemas",
    "sink",
    "file",
    "kafka",
    "kinesis",
    "routes",
    "auth",
    "registry",
    "rate_limits",
    "spool",
    "tls",
    "log",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub schemas: SchemasConfig,
    pub sink: SinkConfig,
    pub file: FileConfig,
    pub kafka: KafkaConfig,
    pub kinesis: KinesisConfig,
    pub routes: RoutesConfig,
    pub auth: AuthConfig,
    pub registry: RegistryConfig,
    pub rate_limits: RateLimitsConfig,
    pub spool: SpoolConfig,
    pub tls: TlsConfig,
    pub log: LogConfig,
}

/// A secret from config: never shown by `Debug`, so it cannot leak through logs.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Config {
    /// Defaults, then the file (if any), then `SLUICE_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut root = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        for (var, value) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if !rest.contains("__") {
                // Not a config field (SLUICE_CONFIG names the file; tools have their own
                // SLUICE_* variables), unless it looks like one with a single underscore.
                let lower = rest.to_ascii_lowercase();
                if SECTIONS.iter().any(|s| lower.starts_with(&format!("{s}_"))) {
                    return Err(ConfigError::EnvName { var });
                }
                continue;
            }
            overlay_env(&mut root, &var, rest, &value)?;
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
                let field = e.path().to_string();
                field_error(&field, e.into_inner().message().to_string())
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that parse but cannot work, naming the field to fix: each section's
    /// own rules, then the rules that tie sections together. Nothing here reads a file or
    /// builds a part of the server; [`crate::check`] does that, once, for start-up and
    /// `check-config` alike.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate()?;
        self.server.validate()?;
        self.tls.validate()?;
        match self.sink.kind {
            SinkKind::Kafka => self.kafka.validate()?,
            SinkKind::Kinesis => self.kinesis.validate()?,
            SinkKind::File | SinkKind::Blackhole => {}
        }
        self.spool.validate(&self.limits)?;
        self.registry.validate()?;
        self.auth.validate()?;
        if !self.auth.client_certs.is_empty() && self.tls.client_ca_file.is_none() {
            return Err(field_error(
                "auth.client_certs",
                "needs tls.client_ca_file, or no client certificate is ever verified",
            ));
        }
        if self.routes.any_confluent_wire_format() && self.sink.kind == SinkKind::File {
            return Err(field_error(
                "routes.confluent_wire_format",
                "frames values in binary, which the file sink (NDJSON) cannot hold; use it with kafka",
            ));
        }
        if self.routes.any_ack(Ack::Spool) && !self.spool.enabled {
            return Err(field_error(
                "routes.ack",
                "is \"spool\" for some route but spool.enabled is false",
            ));
        }
        Ok(())
    }
}
