//! CloudEvents 1.0 decoding: one event, a batch (JSON array), NDJSON, and binary mode
//! (`ce-*` headers with the body as `data`), with every request limit enforced here.
//!
//! This module owns the envelope and the limits; it knows nothing of schemas, routing or
//! sinks. Events keep their `data` as a zero-copy slice of the request body, so the bytes a
//! client sent are the bytes that reach the topic.

//!
//! Where things are: [`json`] decodes the JSON formats (one structured event, a batch,
//! NDJSON), [`binary`] the binary mode, `attributes` checks and collects the CloudEvents
//! attributes every format shares; [`body`] reads (and decompresses) the request body first.

mod attributes;
mod binary;
pub mod body;
mod json;
mod pattern;
mod text;

pub use binary::decode_binary;
pub use json::decode_body;
pub use pattern::TypePattern;
pub use text::Text;

use bytes::Bytes;

use crate::error::{ClientError, Code};

/// Where `source` comes from when the client leaves it out and no principal names one.
pub const DEFAULT_SOURCE: &str = "sluice://anonymous";

/// One decoded event. Attribute values are kept as the text that goes into record headers,
/// sliced from the body where the client wrote them without escapes.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Text,
    pub source: Text,
    /// False when `source` is [`DEFAULT_SOURCE`] because the client sent none; the pipeline
    /// then names the authenticated client instead.
    pub source_given: bool,
    pub ty: Text,
    pub specversion: Text,
    pub time: Option<Text>,
    pub subject: Option<Text>,
    pub dataschema: Option<Text>,
    pub datacontenttype: Option<Text>,
    /// Extension attributes, names lowercase per the spec, values stringified.
    pub extensions: Vec<(Text, Text)>,
    /// The raw JSON of `data` (absent: the event has no data).
    pub data: Option<Bytes>,
    /// Version pinned by the `schemaversion` extension or a `dataschema` ending in
    /// `/versions/<n>`.
    pub schema_version: Option<u32>,
}

impl Event {
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The Kafka key / Kinesis partition key: the `partitionkey` extension, else the id.
    pub fn partition_key(&self) -> &Text {
        self.extensions
            .iter()
            .find(|(k, _)| k == "partitionkey")
            .map_or(&self.id, |(_, v)| v)
    }
}

/// Why one event was refused; the rest of its request may still be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    /// Stable, documented, machine-readable; the event's status comes with it.
    pub code: Code,
    /// JSON pointer into the event of the offending field ("" for the whole event).
    pub pointer: String,
    pub message: String,
}

impl EventError {
    pub fn new(code: Code, pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            pointer: pointer.into(),
            message: message.into(),
        }
    }

    /// The HTTP status this event would get on its own (400, 403, 413, 415, 500, 503).
    pub fn status(&self) -> u16 {
        self.code.status()
    }
}

/// An event refused while decoding, with its id when it got far enough to have one.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub id: Option<Text>,
    pub error: EventError,
}

pub type Decoded = Vec<Result<Event, Rejected>>;

/// A problem with the request as a whole: nothing in it is accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("Content-Type `{0}` is not accepted; use application/cloudevents+json, application/cloudevents-batch+json, application/json, application/x-ndjson, or binary mode (ce-* headers)")]
    UnsupportedMediaType(String),
    #[error("the body is not valid JSON: {0}")]
    Malformed(String),
    #[error("the body nests JSON deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error(
        "the request carries more than {limit} events; at most {limit} are accepted per request"
    )]
    TooManyEvents { limit: usize },
    #[error("the request carries no events")]
    Empty,
    #[error("the event is {size} bytes; at most {limit} are accepted")]
    EventTooLarge { size: usize, limit: usize },
}

impl ClientError for RequestError {
    /// The stable code; its status comes with it (docs/api.md).
    fn code(&self) -> Code {
        match self {
            RequestError::UnsupportedMediaType(_) => Code::UnsupportedMediaType,
            RequestError::Malformed(_) => Code::MalformedJson,
            RequestError::TooDeep { .. } => Code::TooDeep,
            RequestError::TooManyEvents { .. } => Code::TooManyEvents,
            RequestError::Empty => Code::EmptyBatch,
            RequestError::EventTooLarge { .. } => Code::EventTooLarge,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One structured-mode event, or a JSON array of them sent as plain JSON.
    Structured,
    Batch,
    Ndjson,
    /// Attributes in `ce-*` headers, the body is `data`.
    Binary,
}

impl BodyFormat {
    /// Picks the format from the headers. Binary mode is signalled by `ce-specversion` (the
    /// HTTP binding's required header) or `ce-type`.
    pub fn detect(
        content_type: Option<&str>,
        has_ce_headers: bool,
    ) -> Result<BodyFormat, RequestError> {
        if has_ce_headers {
            return Ok(BodyFormat::Binary);
        }
        let media = media_type(content_type.unwrap_or(""));
        match media.as_str() {
            "application/cloudevents+json" | "application/json" => Ok(BodyFormat::Structured),
            "application/cloudevents-batch+json" => Ok(BodyFormat::Batch),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Ok(BodyFormat::Ndjson)
            }
            _ => Err(RequestError::UnsupportedMediaType(
                content_type.unwrap_or("(none)").chars().take(100).collect(),
            )),
        }
    }
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

pub(crate) fn is_json_media(content_type: &str) -> bool {
    let m = media_type(content_type);
    m == "application/json" || m == "text/json" || m.ends_with("+json")
}

/// Extension names Sluice keeps for its own attributes (`sluicetenant`, `sluiceschemaid`, ...).
pub const RESERVED_PREFIX: &str = "sluice";

/// A name as a JSON pointer token (RFC 6901).
pub fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Refuses JSON nested deeper than `limit` before any parser recurses into it. Counts
/// brackets outside strings; malformed input is left for the parser to report. Strings, most
/// of an event's bytes, are skipped with `memchr` (SIMD) rather than byte by byte.
pub fn check_depth(json: &[u8], limit: usize) -> Result<(), RequestError> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                // To the closing quote: the next `"` not escaped by a `\`.
                i += 1;
                loop {
                    let Some(at) = memchr::memchr2(b'"', b'\\', &json[i..]) else {
                        return Ok(());
                    };
                    i += at;
                    if json[i] == b'"' {
                        break;
                    }
                    // A backslash escapes the byte after it, whatever it is.
                    i += 2;
                    if i >= json.len() {
                        return Ok(());
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return Err(RequestError::TooDeep { limit });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
