//! The CloudEvents attributes every format shares: which names are context attributes,
//! what an extension may be called, and the checks an event passes before it is built.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::{
    escape_pointer, is_json_media, Event, EventError, Text, DEFAULT_SOURCE, RESERVED_PREFIX,
};
use crate::config::LimitsConfig;
use crate::error::Code;

/// Attributes CloudEvents defines (and `data`, `data_base64`): every other member of an event
/// is an extension.
pub(super) const CONTEXT_ATTRIBUTES: [&str; 10] = [
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

pub(super) fn too_many_extensions(limit: usize) -> EventError {
    EventError::new(
        Code::TooManyExtensions,
        "",
        format!("an event may carry at most {limit} extension attributes (limits.max_extensions)"),
    )
}

pub(super) struct EventBuilder {
    pub(super) source: Option<Text>,
    pub(super) ty: Option<Text>,
    pub(super) specversion: Option<Text>,
    pub(super) time: Option<Text>,
    pub(super) subject: Option<Text>,
    pub(super) dataschema: Option<Text>,
    pub(super) datacontenttype: Option<Text>,
    pub(super) extensions: Vec<(Text, Text)>,
    pub(super) data: Option<Bytes>,
    pub(super) max_extensions: usize,
}

impl EventBuilder {
    pub(super) fn new(limits: &LimitsConfig) -> EventBuilder {
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

    /// `name` as [`Text`] only when it is an extension's: the others are known.
    pub(super) fn attribute(
        &mut self,
        name: &str,
        value: Text,
        text_name: impl FnOnce() -> Text,
    ) -> Result<(), EventError> {
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
                        Code::InvalidAttribute,
                        format!("/{}", escape_pointer(name)),
                        "extension attribute names are 1 to 20 lowercase letters or digits",
                    ));
                }
                // Sluice's own attributes (tenant, schema id, receive time) are written into
                // records and envelopes under this prefix: a client must not be able to claim
                // them, e.g. another tenant.
                if name.starts_with(RESERVED_PREFIX) {
                    return Err(EventError::new(
 Code::ReservedAttribute, format!("/{name}"),
                        format!(
                            "extension names starting with `{RESERVED_PREFIX}` are reserved for Sluice's own attributes"
                        ),
                    ));
                }
                if self.extensions.len() == self.max_extensions {
                    return Err(too_many_extensions(self.max_extensions));
                }
                self.extensions.push((text_name(), value));
                return Ok(());
            }
        };
        *slot = Some(value);
        Ok(())
    }

    pub(super) fn build(self, id: Option<Text>) -> Result<Event, EventError> {
        let specversion = self.specversion.unwrap_or_else(|| Text::from_static("1.0"));
        if specversion != "1.0" {
            return Err(EventError::new(
                Code::UnsupportedSpecversion,
                "/specversion",
                "only CloudEvents specversion 1.0 is accepted",
            ));
        }
        let ty = match self.ty {
            Some(t) if !t.is_empty() => t,
            _ => {
                return Err(EventError::new(
                    Code::MissingType,
                    "/type",
                    "every event needs a non-empty `type`",
                ))
            }
        };
        if let Some(ct) = &self.datacontenttype {
            if !is_json_media(ct) {
                return Err(EventError::new(
                    Code::UnsupportedData,
                    "/datacontenttype",
                    "only JSON data (application/json or */*+json) can be validated and accepted",
                ));
            }
        }
        for (name, v) in [("id", &id), ("source", &self.source)] {
            if matches!(v, Some(s) if s.is_empty()) {
                return Err(EventError::new(
                    Code::InvalidAttribute,
                    format!("/{name}"),
                    format!("`{name}` must not be empty (leave it out to have Sluice fill it)"),
                ));
            }
        }
        let mut schema_version = None;
        if let Some(pin) = self.extensions.iter().find(|(k, _)| k == "schemaversion") {
            schema_version = Some(parse_version(&pin.1).ok_or_else(|| {
                EventError::new(
                    Code::InvalidAttribute,
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
            id: id.unwrap_or_else(|| Text::from(uuid::Uuid::now_v7().to_string())),
            source_given: self.source.is_some(),
            source: self
                .source
                .unwrap_or_else(|| Text::from_static(DEFAULT_SOURCE)),
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

/// A JSON string's text, or `None` for any other value. `raw` was checked by serde_json, so a
/// string without escapes is its text between the quotes, borrowed.
fn json_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    if !text.contains('\\') {
        return Some(Cow::Borrowed(&text[1..text.len() - 1]));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

pub(super) fn string_attr<'a>(name: &str, raw: &'a RawValue) -> Result<Cow<'a, str>, EventError> {
    json_string(raw).ok_or_else(|| {
        EventError::new(
            Code::InvalidAttribute,
            format!("/{name}"),
            format!("`{name}` must be a string"),
        )
    })
}

/// Context attributes are strings; extensions may also be integers or booleans (CloudEvents
/// JSON format), which are carried as their JSON text.
pub(super) fn scalar_attr<'a>(name: &str, raw: &'a RawValue) -> Result<Cow<'a, str>, EventError> {
    if let Some(s) = json_string(raw) {
        return Ok(s);
    }
    let v: serde_json::Value = serde_json::from_str(raw.get()).map_err(|_| {
        EventError::new(
            Code::InvalidAttribute,
            format!("/{}", escape_pointer(name)),
            "unreadable attribute",
        )
    })?;
    match v {
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string().into()),
        serde_json::Value::Bool(b) => Ok(b.to_string().into()),
        _ => Err(EventError::new(
            Code::InvalidAttribute,
            format!("/{}", escape_pointer(name)),
            format!(
                "attribute `{}` must be a string, integer or boolean",
                name.chars().take(40).collect::<String>()
            ),
        )),
    }
}
