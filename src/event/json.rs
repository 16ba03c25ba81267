//! The JSON formats: one structured-mode event, a batch (a JSON array) and NDJSON. Counts
//! are enforced while scanning, before anything is collected.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::attributes::{
    scalar_attr, string_attr, too_many_extensions, EventBuilder, CONTEXT_ATTRIBUTES,
};
use super::{check_depth, BodyFormat, Decoded, Event, EventError, Rejected, RequestError};
use crate::config::LimitsConfig;
use crate::error::Code;

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
                    Code::MalformedJson,
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
                Code::EventTooLarge,
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
                    EventError::new(Code::InvalidEvent, "", "an event must be a JSON object")
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
                    Code::UnsupportedData,
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

/// How a bounded visitor says it stopped at its bound (serde errors carry only a message).
const TOO_MANY: &str = "sluice: too many";

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
