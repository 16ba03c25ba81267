//! `[limits]`: what one request may carry, and what all of them may hold at once.

use std::time::Duration;

use serde::Deserialize;

use super::units::{ByteSize, HumanDuration, GIB, KIB, MAX_HEADER_BYTES_CAP, MIB};
use super::{field_error, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Request body as received (before decompression).
    pub max_body_bytes: ByteSize,
    /// Request body after decompression; enforced while inflating.
    pub max_decompressed_bytes: ByteSize,
    /// One event's JSON; 1 MiB is the record cap of both Kafka's default and Kinesis.
    pub max_event_bytes: ByteSize,
    pub max_events: usize,
    /// JSON nesting depth of one event (the event object itself is depth 1).
    pub max_depth: usize,
    /// Extension attributes of one event (each becomes a Kafka header or envelope field).
    pub max_extensions: usize,
    /// All request headers together, counted as on the wire in HTTP/1.1 (name, `: `, value,
    /// CRLF). At most [`MAX_HEADER_BYTES_CAP`]: hyper's own read buffer refuses heads past
    /// ~400 KiB with a bare 431 before Sluice sees them.
    pub max_header_bytes: ByteSize,
    /// Events decoded and not yet answered, process-wide: admission control's bound.
    pub max_inflight_events: usize,
    /// Request bodies held at once, process-wide (their received size).
    pub max_inflight_bytes: ByteSize,
    /// The same, for the requests of one connection (HTTP/2 multiplexes many).
    pub max_inflight_bytes_per_connection: ByteSize,
    /// How long a request may wait for admission before 503 + Retry-After.
    pub admission_wait: HumanDuration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: ByteSize(5 * MIB),
            max_decompressed_bytes: ByteSize(20 * MIB),
            max_event_bytes: ByteSize(MIB),
            max_events: 1000,
            max_depth: 64,
            max_extensions: 32,
            max_header_bytes: ByteSize(64 * KIB),
            max_inflight_events: 20_000,
            max_inflight_bytes: ByteSize(256 * MIB),
            max_inflight_bytes_per_connection: ByteSize(64 * MIB),
            admission_wait: HumanDuration(Duration::from_millis(200)),
        }
    }
}

impl LimitsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (name, v) in [
            ("limits.max_body_bytes", self.max_body_bytes.0),
            (
                "limits.max_decompressed_bytes",
                self.max_decompressed_bytes.0,
            ),
            ("limits.max_event_bytes", self.max_event_bytes.0),
            ("limits.max_events", self.max_events as u64),
            ("limits.max_depth", self.max_depth as u64),
            ("limits.max_header_bytes", self.max_header_bytes.0),
        ] {
            if v == 0 {
                return Err(field_error(name, "must be greater than 0"));
            }
        }
        // The spool frames a record's header count in 16 bits, with Sluice's own headers.
        if self.max_extensions > 1024 {
            return Err(field_error("limits.max_extensions", "must be at most 1024"));
        }
        if self.max_inflight_events < self.max_events {
            return Err(field_error(
                "limits.max_inflight_events",
                "must be at least limits.max_events, or a full request could never be admitted",
            ));
        }
        if self.max_inflight_bytes.0 < self.max_decompressed_bytes.0 {
            return Err(field_error(
                "limits.max_inflight_bytes",
                "must be at least limits.max_decompressed_bytes, or a full (inflated) body could never be admitted",
            ));
        }
        if self.max_inflight_bytes_per_connection.0
            < self.max_decompressed_bytes.0.max(self.max_body_bytes.0)
        {
            return Err(field_error(
                "limits.max_inflight_bytes_per_connection",
                "must be at least limits.max_decompressed_bytes and limits.max_body_bytes, or a full body could never be admitted",
            ));
        }
        if self.max_inflight_bytes.0 > 4 * GIB {
            return Err(field_error(
                "limits.max_inflight_bytes",
                "must be at most 4GiB",
            ));
        }
        if self.max_header_bytes.0 > MAX_HEADER_BYTES_CAP {
            return Err(field_error(
                "limits.max_header_bytes",
                "must be at most 256KiB (larger heads are refused by the HTTP layer first)",
            ));
        }
        if self.max_depth > 512 {
            return Err(field_error(
                "limits.max_depth",
                "must be at most 512 (deeper JSON is refused by the parser anyway)",
            ));
        }
        if self.max_decompressed_bytes.0 < self.max_body_bytes.0 {
            return Err(field_error(
                "limits.max_decompressed_bytes",
                "must be at least limits.max_body_bytes (an uncompressed body counts against both)",
            ));
        }
        if self.max_event_bytes.0 > self.max_decompressed_bytes.0 {
            return Err(field_error(
                "limits.max_event_bytes",
                "must not exceed limits.max_decompressed_bytes",
            ));
        }
        Ok(())
    }
}
