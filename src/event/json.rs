//! The JSON formats: one structured-mode event, a batch (a JSON array) and NDJSON.
//!
//! The envelope (the array, each event's braces, member names) is read here, by a cursor that
//! walks the body once; each member's value is handed to serde_json, which checks it and says
//! where it ends. So every byte of a body is read once, `data` included, and counts are
//! enforced while walking, before anything past them is collected.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::attributes::{
    scalar_attr, string_attr, too_many_extensions, EventBuilder, CONTEXT_ATTRIBUTES,
};
use super::{check_depth, BodyFormat, Decoded, Event, EventError, Rejected, RequestError, Text};
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
            let mut cursor = Cursor::new(text);
            cursor.skip_whitespace();
            let decoded = match cursor.peek() {
                None => return Err(RequestError::Empty),
                Some(b'[') => {
                    // The array itself is one level above each event.
                    check_depth(text.as_bytes(), limits.max_depth + 1)?;
                    decode_array(&mut cursor, body, limits)?
                }
                Some(_) if format == BodyFormat::Batch => {
                    return Err(cursor.malformed("expected a JSON array of events"))
                }
                Some(_) => {
                    check_depth(text.as_bytes(), limits.max_depth)?;
                    if text.len() > limits.max_event_bytes.as_usize() {
                        return Err(RequestError::EventTooLarge {
                            size: text.len(),
                            limit: limits.max_event_bytes.as_usize(),
                        });
                    }
                    let event = decode_event(&mut cursor, body, limits)
                        .map_err(|e| RequestError::Malformed(e.0))?;
                    vec![event]
                }
            };
            cursor.skip_whitespace();
            if cursor.peek().is_some() {
                return Err(cursor.malformed("trailing characters"));
            }
            if decoded.is_empty() {
                return Err(RequestError::Empty);
            }
            Ok(decoded)
        }
        BodyFormat::Binary => unreachable!("binary mode is decoded by decode_binary"),
    }
}

fn decode_array(
    cursor: &mut Cursor,
    body: &Bytes,
    limits: &LimitsConfig,
) -> Result<Decoded, RequestError> {
    cursor.expect(b'[', "expected `[`")?;
    cursor.skip_whitespace();
    if cursor.eat(b']') {
        return Ok(Vec::new());
    }
    let mut events = Vec::with_capacity(limits.max_events.min(128));
    loop {
        // Counted while walking: `[0,0,0,...]` of ten million items stops at the limit.
        if events.len() == limits.max_events {
            return Err(RequestError::TooManyEvents {
                limit: limits.max_events,
            });
        }
        let event = decode_event(cursor, body, limits).map_err(|e| RequestError::Malformed(e.0))?;
        events.push(event);
        cursor.skip_whitespace();
        if cursor.eat(b']') {
            return Ok(events);
        }
        cursor.expect(b',', "expected `,` or `]`")?;
        cursor.skip_whitespace();
    }
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
        .map(|line| {
            let mut cursor = Cursor::new(line);
            cursor.skip_whitespace();
            let event = decode_event(&mut cursor, body, limits).and_then(|event| {
                cursor.skip_whitespace();
                match cursor.peek() {
                    None => Ok(event),
                    Some(_) => Err(Malformed(cursor.malformed_message("trailing characters"))),
                }
            });
            event.unwrap_or_else(|Malformed(e)| {
                Err(Rejected {
                    id: None,
                    error: EventError::new(
                        Code::MalformedJson,
                        "",
                        format!("this line is not valid JSON: {e}"),
                    ),
                })
            })
        })
        .collect())
}

/// Text that is not JSON, with where (line and column of the whole body or line).
struct Malformed(String);

/// Reads one event (any JSON value; events are objects) at the cursor. `Err` only for text
/// that is not JSON; an event that is JSON but not acceptable is an `Ok(Err(..))`.
fn decode_event(
    cursor: &mut Cursor,
    body: &Bytes,
    limits: &LimitsConfig,
) -> Result<Result<Event, Rejected>, Malformed> {
    let reject = |id: Option<Text>, error: EventError| Err(Rejected { id, error });
    // What was read from the body, as text that shares it.
    let text = |s: Cow<str>| match s {
        Cow::Borrowed(s) => Text::slice_of(body, s),
        Cow::Owned(s) => Text::from(s),
    };
    let start = cursor.pos;
    let max_members = CONTEXT_ATTRIBUTES.len() + limits.max_extensions;
    let mut members: Vec<(Cow<str>, &RawValue)> = Vec::with_capacity(8);
    let mut too_many = false;
    let mut unreadable_name = false;
    let object = cursor.peek() == Some(b'{');
    if object {
        cursor.pos += 1;
        cursor.skip_whitespace();
        if !cursor.eat(b'}') {
            loop {
                let name = cursor.string()?;
                cursor.skip_whitespace();
                cursor.expect_in_value(b':', "expected `:`")?;
                let value = cursor.value()?;
                // A hundred thousand members are walked over, not collected.
                match name {
                    None => unreadable_name = true,
                    Some(_) if members.len() == max_members => too_many = true,
                    Some(name) => members.push((name, value)),
                }
                cursor.skip_whitespace();
                if cursor.eat(b'}') {
                    break;
                }
                cursor.expect_in_value(b',', "expected `,` or `}`")?;
                cursor.skip_whitespace();
            }
        }
    } else {
        cursor.value()?;
    }
    let size = cursor.pos - start;
    if size > limits.max_event_bytes.as_usize() {
        return Ok(reject(
            None,
            EventError::new(
                Code::EventTooLarge,
                "",
                format!(
                    "the event is {size} bytes; at most {} are accepted",
                    limits.max_event_bytes.0
                ),
            ),
        ));
    }
    if !object {
        return Ok(reject(
            None,
            EventError::new(Code::InvalidEvent, "", "an event must be a JSON object"),
        ));
    }
    if unreadable_name {
        return Ok(reject(
            None,
            EventError::new(
                Code::InvalidEvent,
                "",
                "a member name is not Unicode (it escapes a lone surrogate)",
            ),
        ));
    }
    if too_many {
        return Ok(reject(None, too_many_extensions(limits.max_extensions)));
    }
    // The last of a repeated name wins: sorted by name (stably), a name's last copy is the
    // last of its run.
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let last = |i: usize| members.get(i + 1).is_none_or(|next| next.0 != members[i].0);
    let id = match members.iter().rposition(|(name, _)| name == "id") {
        Some(i) => match string_attr("id", members[i].1) {
            Ok(id) => Some(text(id)),
            Err(e) => return Ok(reject(None, e)),
        },
        None => None,
    };
    let mut ev = EventBuilder::new(limits);
    for (i, (name, value)) in members.iter().enumerate() {
        if !last(i) {
            continue;
        }
        let added = match name.as_ref() {
            "id" => Ok(()),
            "data" => {
                ev.data = Some(body.slice_ref(value.get().as_bytes()));
                Ok(())
            }
            "data_base64" => Err(EventError::new(
                Code::UnsupportedData,
                "/data_base64",
                "binary data cannot be validated against a JSON Schema; send JSON in `data`",
            )),
            _ => scalar_attr(name, value)
                .and_then(|v| ev.attribute(name, text(v), || text(name.clone()))),
        };
        if let Err(e) = added {
            return Ok(reject(id, e));
        }
    }
    let id_for_error = id.clone();
    Ok(ev.build(id).map_err(|error| Rejected {
        id: id_for_error,
        error,
    }))
}

/// A position in JSON text. The structure is read here; values are read by serde_json.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor { text, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// Steps over `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        let next = self.peek() == Some(byte);
        self.pos += usize::from(next);
        next
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), RequestError> {
        self.expect_in_value(byte, what)
            .map_err(|Malformed(e)| RequestError::Malformed(e))
    }

    fn expect_in_value(&mut self, byte: u8, what: &str) -> Result<(), Malformed> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(Malformed(self.malformed_message(what)))
        }
    }

    /// One JSON value of type `T` read by serde_json at the cursor, which then moves past it.
    /// `None` at the end of the text.
    fn read<T: serde::Deserialize<'a>>(&mut self) -> Option<Result<T, serde_json::Error>> {
        let mut values = serde_json::Deserializer::from_str(&self.text[self.pos..]).into_iter();
        let value = values.next();
        if let Some(Ok(_)) = value {
            self.pos += values.byte_offset();
        }
        value
    }

    /// One JSON value, checked by serde_json, as its text.
    fn value(&mut self) -> Result<&'a RawValue, Malformed> {
        match self.read() {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(Malformed(self.serde_message(&e))),
            None => Err(Malformed(
                self.malformed_message("EOF while parsing a value"),
            )),
        }
    }

    /// A member name. Names without escapes (all of them, in practice) are borrowed from the
    /// text; the rest are unescaped by serde_json. `None`: JSON, but not Unicode (a lone
    /// surrogate escape), which refuses the event, not the body.
    fn string(&mut self) -> Result<Option<Cow<'a, str>>, Malformed> {
        if self.peek() != Some(b'"') {
            return Err(Malformed(self.malformed_message("key must be a string")));
        }
        let bytes = self.text.as_bytes();
        let start = self.pos + 1;
        let mut end = start;
        while let Some(&b) = bytes.get(end) {
            match b {
                b'"' => {
                    self.pos = end + 1;
                    return Ok(Some(Cow::Borrowed(&self.text[start..end])));
                }
                // Escapes, and control characters (which JSON refuses): serde_json's job.
                b'\\' | 0..=0x1f => break,
                _ => end += 1,
            }
        }
        if let Some(Ok(s)) = self.read::<String>() {
            return Ok(Some(Cow::Owned(s)));
        }
        match self.read::<IgnoredAny>() {
            Some(Ok(_)) => Ok(None),
            Some(Err(e)) => Err(Malformed(self.serde_message(&e))),
            None => Err(Malformed(
                self.malformed_message("EOF while parsing a string"),
            )),
        }
    }

    fn malformed(&self, what: &str) -> RequestError {
        RequestError::Malformed(self.malformed_message(what))
    }

    /// `what`, at the cursor's line and column (1-based, as serde_json counts them).
    fn malformed_message(&self, what: &str) -> String {
        let (line, column) = line_column(self.text, self.pos, 1, 1);
        format!("{what} at line {line} column {column}")
    }

    /// serde_json's message for a value that starts at the cursor, placed in the whole text.
    fn serde_message(&self, e: &serde_json::Error) -> String {
        let message = e.to_string();
        let what = match message.rfind(" at line ") {
            Some(at) => &message[..at],
            None => &message,
        };
        let (line, column) = line_column(self.text, self.pos, e.line(), e.column());
        format!("{what} at line {line} column {column}")
    }
}

/// The 1-based line and column in `text` of `(line, column)` counted from byte `from`.
fn line_column(text: &str, from: usize, line: usize, column: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..from];
    let lines_before = memchr::memchr_iter(b'\n', before).count();
    if line > 1 {
        return (lines_before + line, column);
    }
    let line_start = memchr::memrchr(b'\n', before).map_or(0, |at| at + 1);
    (lines_before + 1, from - line_start + column)
}
