//! `[spool]`: the on-disk write-ahead log.

use std::path::PathBuf;

use serde::Deserialize;

use super::units::{ByteSize, HumanDuration, GIB, MIB};
use super::{field_error, ConfigError, LimitsConfig};

/// The disk spool: a write-ahead log on local disk for when the sink is down or slow.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    pub enabled: bool,
    pub dir: PathBuf,
    /// Disk quota; when full, requests that would need the spool get 503 + Retry-After.
    pub max_bytes: ByteSize,
    /// Segment files roll at this size; a segment is deleted once all its records are acked.
    pub segment_bytes: ByteSize,
    /// With `ack = "broker"`: how long to wait for the broker before spooling instead.
    pub ack_timeout: HumanDuration,
    /// Records per publish while replaying.
    pub replay_batch: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("data/spool"),
            max_bytes: ByteSize(GIB),
            segment_bytes: ByteSize(8 * MIB),
            ack_timeout: HumanDuration::from_secs(2),
            replay_batch: 500,
        }
    }
}

impl SpoolConfig {
    /// `limits`: the spool must hold at least two of the largest bodies.
    pub(super) fn validate(&self, limits: &LimitsConfig) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.max_bytes.0 < limits.max_body_bytes.0 * 2 {
            return Err(field_error(
                "spool.max_bytes",
                "must be at least twice limits.max_body_bytes",
            ));
        }
        if self.segment_bytes.0 == 0 || self.segment_bytes.0 > self.max_bytes.0 {
            return Err(field_error(
                "spool.segment_bytes",
                "must be greater than 0 and at most spool.max_bytes",
            ));
        }
        if self.replay_batch == 0 {
            return Err(field_error("spool.replay_batch", "must be greater than 0"));
        }
        if self.ack_timeout.0.is_zero() {
            return Err(field_error("spool.ack_timeout", "must be greater than 0"));
        }
        Ok(())
    }
}
