//! `[sink]`, `[file]` and `[kinesis]`: where durable events go (Kafka's section is in `kafka`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::units::{ByteSize, HumanDuration, MIB};
use super::{field_error, ConfigError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    #[default]
    File,
    Kafka,
    Kinesis,
    /// Counts and drops. For benchmarks only: nothing sent to it is kept.
    Blackhole,
}

impl fmt::Display for SinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SinkKind::File => "file",
            SinkKind::Kafka => "kafka",
            SinkKind::Kinesis => "kinesis",
            SinkKind::Blackhole => "blackhole",
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    pub kind: SinkKind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub dir: PathBuf,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data"),
        }
    }
}

/// How a record's data is laid out in Kinesis, which has no record headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KinesisFormat {
    /// A CloudEvents JSON event (structured mode): the attributes, Sluice's metadata as
    /// `sluice*` extensions, and `data` (or `data_base64`). See docs/kinesis.md.
    #[default]
    Envelope,
    /// The event's data only, exactly as the Kafka sink writes the value.
    Raw,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KinesisConfig {
    /// Unset: the standard AWS chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// An emulator or VPC endpoint, e.g. `http://127.0.0.1:4566`.
    pub endpoint_url: Option<String>,
    /// How long a record may wait for others to share its PutRecords call.
    pub linger: HumanDuration,
    /// Records per PutRecords call (at most 500).
    pub max_batch_records: usize,
    /// Bytes (data + partition keys) per PutRecords call (at most 5 MiB).
    pub max_batch_bytes: ByteSize,
    /// PutRecords calls in flight at once.
    pub max_in_flight_calls: usize,
    /// An event not acknowledged by then (retries included) is reported failed (503).
    pub delivery_timeout: HumanDuration,
    /// One PutRecords call's own time limit.
    pub call_timeout: HumanDuration,
    /// Readiness re-checks the streams this often (DescribeStreamSummary).
    pub probe_interval: HumanDuration,
    pub format: KinesisFormat,
    /// Streams `/readyz` checks with DescribeStreamSummary; empty: ListStreams answers.
    pub streams: Vec<String>,
}

impl Default for KinesisConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            linger: HumanDuration(Duration::from_millis(10)),
            max_batch_records: 500,
            max_batch_bytes: ByteSize(5 * MIB),
            max_in_flight_calls: 8,
            delivery_timeout: HumanDuration::from_secs(10),
            call_timeout: HumanDuration::from_secs(5),
            probe_interval: HumanDuration::from_secs(10),
            format: KinesisFormat::Envelope,
            streams: Vec::new(),
        }
    }
}

impl KinesisConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=500).contains(&self.max_batch_records) {
            return Err(field_error(
                "kinesis.max_batch_records",
                "must be between 1 and 500 (PutRecords' limit)",
            ));
        }
        if self.max_batch_bytes.0 == 0 || self.max_batch_bytes.0 > 5 * MIB {
            return Err(field_error(
                "kinesis.max_batch_bytes",
                "must be greater than 0 and at most 5MiB (PutRecords' limit)",
            ));
        }
        if self.max_in_flight_calls == 0 {
            return Err(field_error(
                "kinesis.max_in_flight_calls",
                "must be greater than 0",
            ));
        }
        for (name, d) in [
            ("kinesis.delivery_timeout", self.delivery_timeout.0),
            ("kinesis.call_timeout", self.call_timeout.0),
            ("kinesis.probe_interval", self.probe_interval.0),
        ] {
            if d.is_zero() {
                return Err(field_error(name, "must be greater than 0"));
            }
        }
        Ok(())
    }
}
