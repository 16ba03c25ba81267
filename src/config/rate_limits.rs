//! `[rate_limits]`: per-tenant token buckets.

use serde::Deserialize;

use super::units::{ByteSize, HumanDuration};

/// Per-tenant rate limits (token buckets). 0 means unlimited.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// For every tenant without its own entry (and for unauthenticated traffic).
    pub default: RateLimitConfig,
    /// Bucket size, as seconds of the rate: how far a tenant may burst above it.
    pub burst: HumanDuration,
    pub tenants: Vec<TenantRateLimit>,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            default: RateLimitConfig::default(),
            burst: HumanDuration::from_secs(1),
            tenants: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub events_per_second: u64,
    /// Body bytes as received.
    pub bytes_per_second: ByteSize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRateLimit {
    pub tenant: String,
    #[serde(default)]
    pub events_per_second: u64,
    #[serde(default)]
    pub bytes_per_second: ByteSize,
}
