//! `[schemas]` and `[registry]`: where schemas come from and how the registry stores and checks
//! them.

use std::path::PathBuf;

use serde::Deserialize;

use super::units::{ByteSize, HumanDuration, MIB};
use super::{field_error, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemasConfig {
    pub dir: PathBuf,
}

impl Default for SchemasConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("schemas"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// A schema file that disagrees with the registry stops start-up.
    #[default]
    Fail,
    /// It is logged and skipped.
    Warn,
}

/// The schema registry's store.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// `sqlite://<path>` (relative to the working directory; the embedded default) or
    /// `postgres://user@host/db` (shared by every replica).
    pub url: String,
    /// What a `schemas/` file that conflicts with the registry does at start.
    pub on_conflict: OnConflict,
    /// How often a replica checks the store for changes made elsewhere. With PostgreSQL,
    /// LISTEN/NOTIFY brings changes at once and this is the safety net.
    pub poll_interval: HumanDuration,
    /// Registry reads (GET, lookups, compatibility checks) without a `registry:read` scope.
    pub open_reads: bool,
    /// The largest body a registration, lookup or compatibility request may have (the
    /// schema, JSON-encoded in it); larger ones get 413 before they are parsed.
    pub max_schema_bytes: ByteSize,
    /// The work one compatibility check may do, in steps (a pair of subschemas compared, or
    /// a schema node walked); past it the answer is "cannot decide" (409 on registration).
    pub compat_budget: u64,
    /// How long compiling a schema or checking compatibility may take before the client is
    /// answered (cannot decide, or 422 for a compilation).
    pub compat_timeout: HumanDuration,
    /// The most subschema applications a schema may make to one value of an event (its
    /// combinators and `$ref`s, counted level by level to `limits.max_depth`); schemas that
    /// could make more are refused (422), so validating an event costs at most this times its
    /// size.
    pub max_schema_fanout: u64,
}

/// The work a compatibility check may do by default, in steps (one step: one pair of
/// subschemas compared, or one schema node walked). A 64-level schema of two-way combinators, the worst shape the
/// tests know, needs a few thousand once pairs are memoised; a million take well under a
/// second on one core.
pub const DEFAULT_COMPAT_BUDGET: u64 = 1_000_000;

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/registry.db".into(),
            on_conflict: OnConflict::Fail,
            poll_interval: HumanDuration::from_secs(5),
            open_reads: false,
            max_schema_bytes: ByteSize(MIB),
            compat_budget: DEFAULT_COMPAT_BUDGET,
            compat_timeout: HumanDuration::from_secs(10),
            max_schema_fanout: 1000,
        }
    }
}

impl RegistryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("sqlite://")
            || self.url.starts_with("postgres://")
            || self.url.starts_with("postgresql://"))
        {
            return Err(field_error(
                "registry.url",
                "must start with sqlite:// (e.g. sqlite://data/registry.db) or postgres://",
            ));
        }
        for (field, zero) in [
            ("registry.poll_interval", self.poll_interval.0.is_zero()),
            ("registry.max_schema_bytes", self.max_schema_bytes.0 == 0),
            ("registry.compat_budget", self.compat_budget == 0),
            ("registry.compat_timeout", self.compat_timeout.0.is_zero()),
            ("registry.max_schema_fanout", self.max_schema_fanout == 0),
        ] {
            if zero {
                return Err(field_error(field, "must be greater than 0"));
            }
        }
        Ok(())
    }
}
