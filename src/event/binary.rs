//! Binary mode: attributes from `ce-*` headers (percent-encoded), the body is `data`.

use bytes::Bytes;
use serde_json::value::RawValue;

use super::attributes::EventBuilder;
use super::{check_depth, Decoded, EventError, Rejected, RequestError, Text};
use crate::config::LimitsConfig;
use crate::error::Code;

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
                    Code::InvalidAttribute,
                    format!("/{name}"),
                    format!("header ce-{name} is not valid percent-encoded UTF-8"),
                ));
                continue;
            }
        };
        if name == "id" {
            id = Some(Text::from(value));
        } else if let Err(e) = ev.attribute(name, Text::from(value), || Text::from(name)) {
            attr_errors.push(e);
        }
    }
    if let Some(error) = attr_errors.into_iter().next() {
        return Ok(vec![Err(Rejected { id, error })]);
    }
    if let Some(ct) = content_type {
        if ev.datacontenttype.is_none() {
            ev.datacontenttype = Some(Text::from(ct));
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

/// Percent-decoding of binary-mode header values (CloudEvents HTTP binding, 3.1.3.2): every
/// `%` must start a two-digit hex escape, and the result must be UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let well_formed = b.iter().enumerate().all(|(i, &c)| {
        c != b'%' || (b.get(i + 1..i + 3)).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|v| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn header_values_are_strictly_percent_decoded() {
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("caf%C3%A9%20au").as_deref(), Some("café au"));
        assert_eq!(percent_decode("100%25").as_deref(), Some("100%"));
        // A `%` that starts no escape, a cut-off escape, or bytes that are not UTF-8.
        for bad in ["%zz", "50%", "%4", "a%e9", "%FF"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }
}
