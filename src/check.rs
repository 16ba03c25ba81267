//! The start-up check: the settings that can only be judged by building something (the topic
//! templates, the key sets, the CORS origins, the TLS certificates, the Kafka secrets) are
//! built here, once. `sluice check-config` runs it and prints what it found; start-up runs it
//! and keeps what it built, so a config that passes `check-config` starts, and nothing is
//! built (or a file read) twice.
//!
//! [`Config::validate`] stays plain data rules (no file is read there), so `Config::load`
//! can run anywhere.

use std::sync::Arc;

use crate::auth::cors::Cors;
use crate::auth::Authenticator;
use crate::config::{field_error, AuthMode, Config, ConfigError, KafkaSecurity, SinkKind};
use crate::pipeline::TopicRouter;
use crate::tls::Tls;

/// What [`check`] built from a config, handed to the server at start.
pub struct Checked {
    pub router: TopicRouter,
    /// Key sets read, nothing fetched yet (`Authenticator::start` fetches JWKS).
    pub auth: Authenticator,
    pub cors: Cors,
    /// The rustls configuration, when `tls.cert_file` is set.
    pub tls: Option<Arc<Tls>>,
    /// The Kafka security settings with their secrets read, when `sink.kind = "kafka"`.
    pub kafka: Option<KafkaSecurity>,
}

/// Builds the parts a config names and refuses it, naming the field, when one cannot be built.
pub fn check(config: &Config) -> Result<Checked, ConfigError> {
    config.validate()?;
    let router = TopicRouter::from_config(&config.routes)
        .map_err(|(field, message)| field_error(&field, message))?;
    if router.uses_tenant() && config.auth.effective_mode() != AuthMode::Required {
        return Err(field_error(
            "routes",
            "a topic uses {tenant} but auth is disabled, so no request has a tenant",
        ));
    }
    let auth = Authenticator::from_config(&config.auth)
        .map_err(|(field, message)| field_error(&field, message))?;
    let cors =
        Cors::new(&config.auth.cors).map_err(|(field, message)| field_error(&field, message))?;
    let tls = Tls::from_config(&config.tls).map_err(|e| field_error("tls", format!("{e:#}")))?;
    let kafka = match config.sink.kind {
        SinkKind::Kafka => Some(KafkaSecurity::from_config(&config.kafka)?),
        _ => None,
    };
    Ok(Checked {
        router,
        auth,
        cors,
        tls,
        kafka,
    })
}
