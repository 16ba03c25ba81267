//! `[tls]`: TLS on the listeners.

use std::path::PathBuf;

use serde::Deserialize;

use super::units::HumanDuration;
use super::{field_error, ConfigError};

/// TLS on the listeners (rustls), off unless `cert_file` and `key_file` are set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to; set to ask for them.
    pub client_ca_file: Option<PathBuf>,
    /// PEM certificate revocation lists (one per CA of the client chains, below the trust
    /// anchor): a client certificate listed there, or whose status no CRL covers, or checked
    /// against a CRL past its `nextUpdate`, fails the handshake. Re-read with the other files.
    pub client_crl_file: Option<PathBuf>,
    /// With `client_ca_file`: `optional` (a client may present one) or `required` (the
    /// handshake fails without one).
    pub client_auth: ClientAuth,
    /// The files are re-read this often; changed ones replace the served certificate (and
    /// client CAs) without a restart. New connections get the new one.
    pub reload_interval: HumanDuration,
    /// A connection that has not finished its handshake by then is closed.
    pub handshake_timeout: HumanDuration,
    /// Handshakes in progress at once from one client address; more are closed at once, so
    /// one source cannot take the listener's 4 096 pending handshakes. `0`: no per-source
    /// bound (behind a TCP proxy that hides client addresses).
    pub max_pending_handshakes_per_source: usize,
    /// Also TLS on `server.admin_listen` (probes then need `scheme: HTTPS`).
    pub admin: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_crl_file: None,
            client_auth: ClientAuth::Optional,
            reload_interval: HumanDuration::from_secs(10),
            handshake_timeout: HumanDuration::from_secs(10),
            max_pending_handshakes_per_source: 64,
            admin: false,
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    Optional,
    Required,
}

impl TlsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(field_error(
                "tls.key_file",
                "tls.cert_file and tls.key_file are set together (or neither, for plain HTTP)",
            ));
        }
        if self.client_ca_file.is_some() && !self.enabled() {
            return Err(field_error(
                "tls.client_ca_file",
                "client certificates need TLS: set tls.cert_file and tls.key_file too",
            ));
        }
        if self.client_crl_file.is_some() && self.client_ca_file.is_none() {
            return Err(field_error(
                "tls.client_crl_file",
                "revocation lists apply to client certificates: set tls.client_ca_file too",
            ));
        }
        for (name, d) in [
            ("tls.reload_interval", self.reload_interval.0),
            ("tls.handshake_timeout", self.handshake_timeout.0),
        ] {
            if d.is_zero() {
                return Err(field_error(name, "must be greater than 0"));
            }
        }
        Ok(())
    }
}
