//! `[server]` (listeners, timeouts, connection bounds) and `[log]`.

use std::net::SocketAddr;

use serde::Deserialize;

use super::units::HumanDuration;
use super::{field_error, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Unset: the admin routes (/healthz, /readyz, /metrics) are served on the main port.
    pub admin_listen: Option<SocketAddr>,
    /// Upper bound from SIGTERM to exit, drain delay included.
    pub shutdown_grace: HumanDuration,
    /// Time between readiness turning 503 and the listener closing, so that load balancers
    /// stop routing to this replica before it stops accepting.
    pub drain_delay: HumanDuration,
    /// A client that has not finished sending its body by then gets 408: slow bodies must not
    /// hold memory and connections forever.
    pub body_timeout: HumanDuration,
    /// A connection older than this (±10 %) is closed gracefully (HTTP/2 GOAWAY, HTTP/1.1
    /// after the request in progress), so clients reconnect through the load balancer and
    /// spread over new replicas; `0s`: no limit. One still busy `shutdown_grace` later is cut.
    pub max_connection_age: HumanDuration,
    /// A request head (or, on a new connection, the first request) not complete this long
    /// after its first byte: the connection is cut. Slowloris' bound.
    pub header_read_timeout: HumanDuration,
    /// A connection with no request in flight for this long is closed gracefully (HTTP/2
    /// GOAWAY). Longer than load balancers' own idle timeouts (AWS ALB: 60 s), so that they
    /// close first and never send on a connection Sluice is closing.
    pub idle_timeout: HumanDuration,
    /// Open client connections at most, per listener; new ones past it are closed at once.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams (requests) of one connection.
    pub max_streams_per_connection: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: None,
            shutdown_grace: HumanDuration::from_secs(30),
            drain_delay: HumanDuration::from_secs(5),
            body_timeout: HumanDuration::from_secs(30),
            max_connection_age: HumanDuration::from_secs(300),
            header_read_timeout: HumanDuration::from_secs(10),
            idle_timeout: HumanDuration::from_secs(75),
            max_connections: 10_000,
            max_streams_per_connection: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `sluice=debug,rdkafka=warn`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl ServerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (name, d) in [
            ("server.header_read_timeout", self.header_read_timeout.0),
            ("server.idle_timeout", self.idle_timeout.0),
        ] {
            if d.is_zero() {
                return Err(field_error(name, "must be greater than 0"));
            }
        }
        if self.max_connections == 0 {
            return Err(field_error(
                "server.max_connections",
                "must be greater than 0",
            ));
        }
        if self.max_streams_per_connection == 0 {
            return Err(field_error(
                "server.max_streams_per_connection",
                "must be greater than 0",
            ));
        }
        if self.drain_delay.0 >= self.shutdown_grace.0 && !self.shutdown_grace.0.is_zero() {
            return Err(field_error(
                "server.drain_delay",
                "must be shorter than server.shutdown_grace, or in-flight requests get no time to finish",
            ));
        }
        Ok(())
    }
}
