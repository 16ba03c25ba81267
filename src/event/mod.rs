//! CloudEvents 1.0 decoding: one event, a batch (JSON array), NDJSON, and binary mode
//! (`ce-*` headers with the body as `data`), with every request limit enforced here.
//!
//! This module owns the envelope and the limits; it knows nothing of schemas, routing or
//! sinks. Events keep their `data` as a zero-copy slice of the request body, so the bytes a
//! client sent are the bytes that reach the topic.

pub mod body;
mod pattern;

pub use pattern::TypePattern;

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::config::LimitsConfig;

/// Where `source` comes from when the client leaves it out and no principal names one.
pub const DEFAULT_SOURCE: &str = "sluice://anonymous";

/// One decoded event. Attribute values are kept as the strings that go into record headers.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub source: String,
    /// False when `source` is [`DEFAULT_SOURCE`] because the client sent none; the pipeline
    /// then names the authenticated client instead.
    pub source_given: bool,
    pub ty: String,
    pub specversion: String,
    pub time: Option<String>,
    pub subject: Option<String>,
    pub dataschema: Option<String>,
    pub datacontenttype: Option<String>,
    /// Extension attributes, names lowercase per the spec, values stringified.
    pub extensions: Vec<(String, String)>,
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
    pub fn partition_key(&self) -> &str {
        self.extension("partitionkey").unwrap_or(&self.id)
    }
}

/// Why one event was refused; the rest of its request may still be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    /// The HTTP status this event would get on its own (400, 403, 413, 415, 503).
    pub status: u16,
    /// Stable, documented, machine-readable.
    pub code: &'static str,
    /// JSON pointer into the event of the offending field ("" for the whole event).
    pub pointer: String,
    pub message: String,
}

impl EventError {
    pub fn new(
        status: u16,
        code: &'static str,
        pointer: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// An event refused while decoding, with its id when it got far enough to have one.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub id: Option<String>,
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

impl RequestError {
    pub fn status(&self) -> u16 {
        match self {
            RequestError::UnsupportedMediaType(_) => 415,
            RequestError::TooManyEvents { .. } | RequestError::EventTooLarge { .. } => 413,
            RequestError::Malformed(_) | RequestError::TooDeep { .. } | RequestError::Empty => 400,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            RequestError::UnsupportedMediaType(_) => "unsupported_media_type",
            RequestError::Malformed(_) => "malformed_json",
            RequestError::TooDeep { .. } => "too_deep",
            RequestError::TooManyEvents { .. } => "too_many_events",
            RequestError::Empty => "empty_batch",
            RequestError::EventTooLarge { .. } => "event_too_large",
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

fn is_json_media(content_type: &str) -> bool {
    let m = media_type(content_type);
    m == "application/json" || m == "text/json" || m.ends_with("+json")
}

/// Decodes a structured, batch or NDJSON body (already decompressed).
pub fn decode_body(
    format: BodyFormat,
    body: &Bytes,
    limits: &LimitsConfig,
) -> Result<Decoded, RequestError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| RequestError::Malformed(format!("not UTF-8 ({e})")))?;
    match format {
        BodyFormat::Ndjson => decode_ndjson(body, text, limits),
        BodyFormat::Batch | BodyFormat::Structured => {
            let first = text.trim_start().as_bytes().first().copied();
            if first.is_none() {
                return Err(RequestError::Empty);
            }
            if format == BodyFormat::Batch || first == Some(b'[') {
                // The array itself is one level above each event.
                check_depth(text.as_bytes(), limits.max_depth + 1)?;
                decode_array(body, text, limits)
            } else {
                check_depth(text.as_bytes(), limits.max_depth)?;
                if text.len() > limits.max_event_bytes.as_usize() {
                    return Err(RequestError::EventTooLarge {
                        size: text.len(),
                        limit: limits.max_event_bytes.as_usize(),
                    });
                }
                let raw: &RawValue = serde_json::from_str(text)
                    .map_err(|e| RequestError::Malformed(e.to_string()))?;
                Ok(vec![decode_structured(body, raw.get(), limits)])
            }
        }
        BodyFormat::Binary => unreachable!("binary mode is decoded by decode_binary"),
    }
}

fn decode_array(body: &Bytes, text: &str, limits: &LimitsConfig) -> Result<Decoded, RequestError> {
    use serde::de::DeserializeSeed;
    // Counted while scanning: `[0,0,0,...]` of ten million items stops at the limit, not
    // after ten million references were collected.
    let mut de = serde_json::Deserializer::from_str(text);
    let items = AtMost(limits.max_events)
        .deserialize(&mut de)
        .and_then(|items| de.end().map(|()| items))
        .map_err(|e| {
            if e.to_string().starts_with(TOO_MANY) {
                RequestError::TooManyEvents {
                    limit: limits.max_events,
                }
            } else {
                RequestError::Malformed(e.to_string())
            }
        })?;
    if items.is_empty() {
        return Err(RequestError::Empty);
    }
    Ok(items
        .iter()
        .map(|raw| decode_structured(body, raw.get(), limits))
        .collect())
}

fn decode_ndjson(body: &Bytes, text: &str, limits: &LimitsConfig) -> Result<Decoded, RequestError> {
    let mut lines: Vec<&str> = Vec::new();
    for line in text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
    {
        // Counted while splitting, as for arrays.
        if lines.len() == limits.max_events {
            return Err(RequestError::TooManyEvents {
                limit: limits.max_events,
            });
        }
        lines.push(line);
    }
    if lines.is_empty() {
        return Err(RequestError::Empty);
    }
    for line in &lines {
        check_depth(line.as_bytes(), limits.max_depth)?;
    }
    Ok(lines
        .into_iter()
        .map(|line| match serde_json::from_str::<&RawValue>(line) {
            Ok(raw) => decode_structured(body, raw.get(), limits),
            Err(e) => Err(Rejected {
                id: None,
                error: EventError::new(
                    400,
                    "malformed_json",
                    "",
                    format!("this line is not valid JSON: {e}"),
                ),
            }),
        })
        .collect())
}

/// Decodes one structured-mode event from `raw`, a slice of `body`.
fn decode_structured(body: &Bytes, raw: &str, limits: &LimitsConfig) -> Result<Event, Rejected> {
    let reject = |id: Option<String>, error: EventError| Rejected { id, error };
    if raw.len() > limits.max_event_bytes.as_usize() {
        return Err(reject(
            None,
            EventError::new(
                413,
                "event_too_large",
                "",
                format!(
                    "the event is {} bytes; at most {} are accepted",
                    raw.len(),
                    limits.max_event_bytes.0
                ),
            ),
        ));
    }
    let fields = {
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_str(raw);
        Fields(CONTEXT_ATTRIBUTES.len() + limits.max_extensions)
            .deserialize(&mut de)
            .map_err(|e| {
                let error = if e.to_string().starts_with(TOO_MANY) {
                    too_many_extensions(limits.max_extensions)
                } else {
                    EventError::new(400, "invalid_event", "", "an event must be a JSON object")
                };
                reject(None, error)
            })?
    };
    let id = match fields.get("id") {
        Some(v) => Some(string_attr("id", v).map_err(|e| reject(None, e))?),
        None => None,
    };
    let fail = |e: EventError| reject(id.clone(), e);
    let mut ev = EventBuilder::new(limits);
    for (name, value) in &fields {
        match name.as_str() {
            "id" => {}
            "data" => ev.data = Some(body.slice_ref(value.get().as_bytes())),
            "data_base64" => {
                return Err(fail(EventError::new(
                    415,
                    "unsupported_data",
                    "/data_base64",
                    "binary data cannot be validated against a JSON Schema; send JSON in `data`",
                )))
            }
            _ => ev
                .attribute(name, &scalar_attr(name, value).map_err(fail)?)
                .map_err(fail)?,
        }
    }
    let id_for_error = id.clone();
    ev.build(id).map_err(|e| reject(id_for_error, e))
}

/// Decodes a binary-mode event: attributes from `ce-*` headers, `data` is the body.
pub fn decode_binary<'h>(
    ce_headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    content_type: Option<&str>,
    body: Bytes,
    limits: &LimitsConfig,
) -> Result<Decoded, RequestError> {
    if body.len() > limits.max_event_bytes.as_usize() {
        return Err(RequestError::EventTooLarge {
            size: body.len(),
            limit: limits.max_event_bytes.as_usize(),
        });
    }
    let mut ev = EventBuilder::new(limits);
    let mut id = None;
    let mut attr_errors = Vec::new();
    for (name, raw) in ce_headers {
        let value = match std::str::from_utf8(raw).ok().and_then(percent_decode) {
            Some(v) => v,
            None => {
                attr_errors.push(EventError::new(
                    400,
                    "invalid_attribute",
                    format!("/{name}"),
                    format!("header ce-{name} is not valid percent-encoded UTF-8"),
                ));
                continue;
            }
        };
        if name == "id" {
            id = Some(value);
        } else if let Err(e) = ev.attribute(name, &value) {
            attr_errors.push(e);
        }
    }
    if let Some(error) = attr_errors.into_iter().next() {
        return Ok(vec![Err(Rejected { id, error })]);
    }
    if let Some(ct) = content_type {
        if ev.datacontenttype.is_none() {
            ev.datacontenttype = Some(ct.to_string());
        }
    }
    let trimmed_empty = body.iter().all(u8::is_ascii_whitespace);
    if !trimmed_empty {
        let text = std::str::from_utf8(&body)
            .map_err(|e| RequestError::Malformed(format!("not UTF-8 ({e})")))?;
        // In binary mode the body is `data`, one level below the event.
        check_depth(text.as_bytes(), limits.max_depth.saturating_sub(1).max(1))?;
        serde_json::from_str::<&RawValue>(text)
            .map_err(|e| RequestError::Malformed(e.to_string()))?;
        ev.data = Some(body);
    }
    // A rejected event still reports the id the client gave it in `ce-id`.
    let id_for_error = id.clone();
    Ok(vec![ev.build(id).map_err(|error| Rejected {
        id: id_for_error,
        error,
    })])
}

/// Attributes CloudEvents defines (and `data`, `data_base64`): every other member of an event
/// is an extension.
const CONTEXT_ATTRIBUTES: [&str; 10] = [
    "id",
    "source",
    "type",
    "specversion",
    "time",
    "subject",
    "dataschema",
    "datacontenttype",
    "data",
    "data_base64",
];

/// How a bounded visitor says it stopped at its bound (serde errors carry only a message).
const TOO_MANY: &str = "sluice: too many";

fn too_many_extensions(limit: usize) -> EventError {
    EventError::new(
        400,
        "too_many_extensions",
        "",
        format!("an event may carry at most {limit} extension attributes (limits.max_extensions)"),
    )
}

/// A JSON array of at most `.0` raw items, refused as soon as it holds more.
struct AtMost(usize);

impl<'de> serde::de::DeserializeSeed<'de> for AtMost {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for AtMost {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.0).min(1024));
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if items.len() == self.0 {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// An event's members (the last of a repeated name wins), at most `.0` of them.
struct Fields(usize);

impl<'de> serde::de::DeserializeSeed<'de> for Fields {
    type Value = HashMap<String, &'de RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Fields {
    type Value = HashMap<String, &'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = HashMap::new();
        let mut members = 0usize;
        while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
            members += 1;
            if members > self.0 {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            fields.insert(k, v);
        }
        Ok(fields)
    }
}

struct EventBuilder {
    source: Option<String>,
    ty: Option<String>,
    specversion: Option<String>,
    time: Option<String>,
    subject: Option<String>,
    dataschema: Option<String>,
    datacontenttype: Option<String>,
    extensions: Vec<(String, String)>,
    data: Option<Bytes>,
    max_extensions: usize,
}

impl EventBuilder {
    fn new(limits: &LimitsConfig) -> EventBuilder {
        EventBuilder {
            source: None,
            ty: None,
            specversion: None,
            time: None,
            subject: None,
            dataschema: None,
            datacontenttype: None,
            extensions: Vec::new(),
            data: None,
            max_extensions: limits.max_extensions,
        }
    }

    fn attribute(&mut self, name: &str, value: &str) -> Result<(), EventError> {
        let slot = match name {
            "source" => &mut self.source,
            "type" => &mut self.ty,
            "specversion" => &mut self.specversion,
            "time" => &mut self.time,
            "subject" => &mut self.subject,
            "dataschema" => &mut self.dataschema,
            "datacontenttype" => &mut self.datacontenttype,
            _ => {
                if !valid_extension_name(name) {
                    return Err(EventError::new(
                        400,
                        "invalid_attribute",
                        format!("/{}", escape_pointer(name)),
                        "extension attribute names are 1 to 20 lowercase letters or digits",
                    ));
                }
                // Sluice's own attributes (tenant, schema id, receive time) are written into
                // records and envelopes under this prefix: a client must not be able to claim
                // them, e.g. another tenant.
                if name.starts_with(RESERVED_PREFIX) {
                    return Err(EventError::new(
                        400,
                        "reserved_attribute",
                        format!("/{name}"),
                        format!(
                            "extension names starting with `{RESERVED_PREFIX}` are reserved for Sluice's own attributes"
                        ),
                    ));
                }
                if self.extensions.len() == self.max_extensions {
                    return Err(too_many_extensions(self.max_extensions));
                }
                self.extensions.push((name.to_string(), value.to_string()));
                return Ok(());
            }
        };
        *slot = Some(value.to_string());
        Ok(())
    }

    fn build(self, id: Option<String>) -> Result<Event, EventError> {
        let specversion = self.specversion.unwrap_or_else(|| "1.0".into());
        if specversion != "1.0" {
            return Err(EventError::new(
                400,
                "unsupported_specversion",
                "/specversion",
                "only CloudEvents specversion 1.0 is accepted",
            ));
        }
        let ty = match self.ty {
            Some(t) if !t.is_empty() => t,
            _ => {
                return Err(EventError::new(
                    400,
                    "missing_type",
                    "/type",
                    "every event needs a non-empty `type`",
                ))
            }
        };
        if let Some(ct) = &self.datacontenttype {
            if !is_json_media(ct) {
                return Err(EventError::new(
                    415,
                    "unsupported_data",
                    "/datacontenttype",
                    "only JSON data (application/json or */*+json) can be validated and accepted",
                ));
            }
        }
        for (name, v) in [("id", &id), ("source", &self.source)] {
            if matches!(v, Some(s) if s.is_empty()) {
                return Err(EventError::new(
                    400,
                    "invalid_attribute",
                    format!("/{name}"),
                    format!("`{name}` must not be empty (leave it out to have Sluice fill it)"),
                ));
            }
        }
        let mut schema_version = None;
        if let Some(pin) = self.extensions.iter().find(|(k, _)| k == "schemaversion") {
            schema_version = Some(parse_version(&pin.1).ok_or_else(|| {
                EventError::new(
                    400,
                    "invalid_attribute",
                    "/schemaversion",
                    "`schemaversion` must be a positive integer",
                )
            })?);
        } else if let Some(ds) = &self.dataschema {
            schema_version = ds
                .rsplit_once("/versions/")
                .and_then(|(_, v)| parse_version(v));
        }
        Ok(Event {
            id: id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            source_given: self.source.is_some(),
            source: self.source.unwrap_or_else(|| DEFAULT_SOURCE.into()),
            ty,
            specversion,
            time: self.time,
            subject: self.subject,
            dataschema: self.dataschema,
            datacontenttype: self.datacontenttype,
            extensions: self.extensions,
            data: self.data,
            schema_version,
        })
    }
}

/// Extension names Sluice keeps for its own attributes (`sluicetenant`, `sluiceschemaid`, ...).
pub const RESERVED_PREFIX: &str = "sluice";

fn parse_version(s: &str) -> Option<u32> {
    s.trim().parse::<u32>().ok().filter(|v| *v > 0)
}

fn valid_extension_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 20
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn string_attr(name: &str, raw: &RawValue) -> Result<String, EventError> {
    serde_json::from_str::<String>(raw.get()).map_err(|_| {
        EventError::new(
            400,
            "invalid_attribute",
            format!("/{name}"),
            format!("`{name}` must be a string"),
        )
    })
}

/// Context attributes are strings; extensions may also be integers or booleans (CloudEvents
/// JSON format), which are carried as their JSON text.
fn scalar_attr(name: &str, raw: &RawValue) -> Result<String, EventError> {
    let v: serde_json::Value = serde_json::from_str(raw.get()).map_err(|_| {
        EventError::new(
            400,
            "invalid_attribute",
            format!("/{}", escape_pointer(name)),
            "unreadable attribute",
        )
    })?;
    match v {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        _ => Err(EventError::new(
            400,
            "invalid_attribute",
            format!("/{}", escape_pointer(name)),
            format!(
                "attribute `{}` must be a string, integer or boolean",
                name.chars().take(40).collect::<String>()
            ),
        )),
    }
}

pub fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Percent-decoding of binary-mode header values (CloudEvents HTTP binding, 3.1.3.2).
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Refuses JSON nested deeper than `limit` before any parser recurses into it. Counts
/// brackets outside strings; malformed input is left for the parser to report.
pub fn check_depth(json: &[u8], limit: usize) -> Result<(), RequestError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return Err(RequestError::TooDeep { limit });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig::default()
    }

    fn decode(format: BodyFormat, s: &str) -> Result<Decoded, RequestError> {
        decode_body(format, &Bytes::copy_from_slice(s.as_bytes()), &limits())
    }

    #[test]
    fn single_event_fills_id_and_source_and_keeps_data_bytes() {
        let out = decode(
            BodyFormat::Structured,
            r#"{"type":"t.a","data":{"x": 1},"partitionkey":"k","count":3}"#,
        )
        .unwrap();
        let ev = out[0].as_ref().unwrap();
        assert_eq!(ev.ty, "t.a");
        assert_eq!(ev.source, DEFAULT_SOURCE);
        assert_eq!(uuid::Uuid::parse_str(&ev.id).unwrap().get_version_num(), 7);
        assert_eq!(&ev.data.as_ref().unwrap()[..], br#"{"x": 1}"#);
        assert_eq!(ev.partition_key(), "k");
        assert_eq!(ev.extension("count"), Some("3"));
    }

    #[test]
    fn batch_and_ndjson_keep_order_and_reject_per_event() {
        let out = decode(
            BodyFormat::Batch,
            r#"[{"type":"a","id":"1"}, 7, {"id":"3"}]"#,
        )
        .unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_ref().unwrap().id, "1");
        assert_eq!(out[1].as_ref().unwrap_err().error.code, "invalid_event");
        let r = out[2].as_ref().unwrap_err();
        assert_eq!(
            (r.id.as_deref(), r.error.code, r.error.pointer.as_str()),
            (Some("3"), "missing_type", "/type")
        );

        let out = decode(
            BodyFormat::Ndjson,
            "{\"type\":\"a\"}\n\n{oops\r\n{\"type\":\"b\"}\n",
        )
        .unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].as_ref().unwrap_err().error.code, "malformed_json");
        assert_eq!(out[2].as_ref().unwrap().ty, "b");
    }

    #[test]
    fn request_level_errors() {
        assert_eq!(
            decode(BodyFormat::Batch, "[]").unwrap_err(),
            RequestError::Empty
        );
        assert_eq!(
            decode(BodyFormat::Structured, "  ").unwrap_err(),
            RequestError::Empty
        );
        assert!(matches!(
            decode(BodyFormat::Structured, "{").unwrap_err(),
            RequestError::Malformed(_)
        ));
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        assert_eq!(
            decode(
                BodyFormat::Structured,
                &format!(r#"{{"type":"a","data":{deep}}}"#)
            )
            .unwrap_err(),
            RequestError::TooDeep { limit: 64 }
        );
        assert!(BodyFormat::detect(Some("text/plain"), false).is_err());
        assert_eq!(
            BodyFormat::detect(Some("application/json; charset=utf-8"), false),
            Ok(BodyFormat::Structured)
        );
    }

    #[test]
    fn depth_counts_only_outside_strings() {
        assert!(check_depth(br#"{"a":"[[[[[[[[[[[[[[[[[[["}"#, 1).is_ok());
        assert!(check_depth(br#"{"a":"\"[[[[["}"#, 1).is_ok());
        assert!(check_depth(br#"{"a":[1]}"#, 1).is_err());
        assert!(check_depth(br#"{"a":[1]}"#, 2).is_ok());
    }

    #[test]
    fn attribute_rules() {
        let code = |s: &str| {
            decode(BodyFormat::Structured, s).unwrap()[0]
                .as_ref()
                .unwrap_err()
                .error
                .code
        };
        assert_eq!(
            code(r#"{"type":"a","specversion":"0.3"}"#),
            "unsupported_specversion"
        );
        assert_eq!(
            code(r#"{"type":"a","data_base64":"AA=="}"#),
            "unsupported_data"
        );
        assert_eq!(
            code(r#"{"type":"a","datacontenttype":"text/plain"}"#),
            "unsupported_data"
        );
        assert_eq!(code(r#"{"type":"a","Bad-Name":"x"}"#), "invalid_attribute");
        assert_eq!(
            code(r#"{"type":"a","ext":{"nested":1}}"#),
            "invalid_attribute"
        );
        assert_eq!(code(r#"{"type":"a","id":5}"#), "invalid_attribute");
        assert_eq!(code(r#"{"type":"a","id":""}"#), "invalid_attribute");
        assert_eq!(
            code(r#"{"type":"a","schemaversion":"x"}"#),
            "invalid_attribute"
        );
        for reserved in ["sluicetenant", "sluiceschemaid", "sluice"] {
            assert_eq!(
                code(&format!(r#"{{"type":"a","{reserved}":"acme"}}"#)),
                "reserved_attribute"
            );
        }
        let ok = decode(
            BodyFormat::Structured,
            r#"{"type":"a","dataschema":"https://r/subjects/a/versions/3"}"#,
        )
        .unwrap();
        assert_eq!(ok[0].as_ref().unwrap().schema_version, Some(3));
    }

    #[test]
    fn binary_mode() {
        let headers = [
            ("type", &b"t.b"[..]),
            ("id", b"abc"),
            ("source", b"%2Fapp%20one"),
        ];
        let out = decode_binary(
            headers.into_iter(),
            Some("application/json"),
            Bytes::from_static(br#"{"k":true}"#),
            &limits(),
        )
        .unwrap();
        let ev = out[0].as_ref().unwrap();
        assert_eq!(
            (ev.id.as_str(), ev.source.as_str(), ev.ty.as_str()),
            ("abc", "/app one", "t.b")
        );
        assert_eq!(ev.datacontenttype.as_deref(), Some("application/json"));
        let rejected = decode_binary(
            [
                ("type", &b"t"[..]),
                ("id", b"mine"),
                ("specversion", b"0.3"),
            ]
            .into_iter(),
            Some("application/json"),
            Bytes::from_static(b"{}"),
            &limits(),
        )
        .unwrap();
        let r = rejected[0].as_ref().unwrap_err();
        assert_eq!(
            (r.id.as_deref(), r.error.code),
            (Some("mine"), "unsupported_specversion")
        );
        let spoofed = decode_binary(
            [("type", &b"t"[..]), ("sluicetenant", b"other")].into_iter(),
            Some("application/json"),
            Bytes::from_static(b"{}"),
            &limits(),
        )
        .unwrap();
        let r = spoofed[0].as_ref().unwrap_err();
        assert_eq!(
            (r.error.code, r.error.pointer.as_str()),
            ("reserved_attribute", "/sluicetenant")
        );
        assert!(decode_binary(
            [("type", &b"t"[..])].into_iter(),
            Some("application/json"),
            Bytes::from_static(b"{nope"),
            &limits()
        )
        .is_err());
    }

    /// Hostile input never panics the decoder: mutated valid bodies (flipped bytes, brackets
    /// and quotes dropped in, truncations) through every format, with tight limits.
    #[test]
    fn mutated_bodies_never_panic() {
        let seeds: &[&[u8]] = &[
            br#"{"type":"a","id":"1","data":{"x":[1,2,{"y":"z\"q"}]},"ext":5}"#,
            br#"[{"type":"a"},{"type":"b","data":null,"partitionkey":"k"}]"#,
            b"{\"type\":\"a\"}\n{\"type\":\"b\",\"data\":[[[]]]}\n",
        ];
        let limits = LimitsConfig {
            max_depth: 4,
            max_events: 3,
            max_event_bytes: crate::config::ByteSize(60),
            ..LimitsConfig::default()
        };
        let specials = b"{}[]\"\\,:\n\xff\x00 ";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..20_000 {
            let mut body = seeds[i % seeds.len()].to_vec();
            for _ in 0..(next() % 4 + 1) {
                let pos = (next() as usize) % (body.len() + 1);
                match next() % 4 {
                    0 if pos < body.len() => body[pos] = next() as u8,
                    1 => body.insert(pos, specials[(next() as usize) % specials.len()]),
                    2 => body.truncate(pos),
                    _ if pos < body.len() => {
                        body.remove(pos);
                    }
                    _ => {}
                }
            }
            let bytes = Bytes::from(body);
            for format in [
                BodyFormat::Structured,
                BodyFormat::Batch,
                BodyFormat::Ndjson,
            ] {
                let _ = decode_body(format, &bytes, &limits);
            }
            let _ = decode_binary(
                [("type", &bytes[..bytes.len().min(10)])].into_iter(),
                Some("application/json"),
                bytes.clone(),
                &limits,
            );
        }
    }

    #[test]
    fn counts_are_enforced_while_scanning() {
        let limits = LimitsConfig {
            max_events: 3,
            ..LimitsConfig::default()
        };
        let scan = |format, body: String| decode_body(format, &Bytes::from(body), &limits);
        let three = r#"[{"type":"a"},{"type":"a"},{"type":"a"}]"#.to_string();
        assert_eq!(scan(BodyFormat::Batch, three).unwrap().len(), 3);
        // Ten million items: refused at the fourth, with the limit in the answer.
        let huge = format!("[{}0]", "0,".repeat(10_000_000));
        let e = scan(BodyFormat::Batch, huge).unwrap_err();
        assert_eq!(e, RequestError::TooManyEvents { limit: 3 });
        assert!(e.to_string().contains("more than 3"), "{e}");
        let lines = "{\"type\":\"a\"}\n".repeat(1_000_000);
        assert_eq!(
            scan(BodyFormat::Ndjson, lines).unwrap_err(),
            RequestError::TooManyEvents { limit: 3 }
        );
        // Malformed arrays still say so.
        assert!(matches!(
            scan(BodyFormat::Batch, "[{\"type\":\"a\"}".into()),
            Err(RequestError::Malformed(_))
        ));
        assert!(matches!(
            scan(BodyFormat::Batch, "[] x".into()),
            Err(RequestError::Malformed(_))
        ));
    }

    #[test]
    fn extensions_are_counted_per_event_in_every_mode() {
        let limits = LimitsConfig {
            max_extensions: 2,
            ..LimitsConfig::default()
        };
        let event = |n: usize| {
            let ext: String = (0..n).map(|i| format!(",\"x{i}\":1")).collect();
            format!(r#"{{"type":"a","id":"e"{ext}}}"#)
        };
        let one = |body: String| {
            decode_body(BodyFormat::Structured, &Bytes::from(body), &limits)
                .unwrap()
                .remove(0)
        };
        assert_eq!(one(event(2)).unwrap().extensions.len(), 2);
        let e = one(event(3)).unwrap_err();
        assert_eq!(e.error.code, "too_many_extensions");
        // A hundred thousand members are refused without being collected first.
        let e = one(event(50_000)).unwrap_err();
        assert_eq!(e.error.code, "too_many_extensions");
        // Binary mode: ce-* headers.
        let names: Vec<String> = (0..3).map(|i| format!("x{i}")).collect();
        let headers = names
            .iter()
            .map(|n| (n.as_str(), &b"1"[..]))
            .chain([("type", &b"a"[..])]);
        let out = decode_binary(headers, None, Bytes::new(), &limits).unwrap();
        assert_eq!(
            out[0].as_ref().unwrap_err().error.code,
            "too_many_extensions"
        );
    }
}
