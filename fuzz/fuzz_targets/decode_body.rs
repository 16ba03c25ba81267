//! Structured, batch and NDJSON bodies under tight limits: any bytes give events or a 4xx
//! reason, never a panic, and nothing is held past the limits; and they are JSON to Sluice
//! exactly when they are to serde_json.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::config::{ByteSize, LimitsConfig};
use sluice::error::ClientError;
use sluice::event::{decode_body, BodyFormat, RequestError};

fuzz_target!(|data: &[u8]| {
    let limits = LimitsConfig {
        max_depth: 8,
        max_events: 16,
        max_extensions: 4,
        max_event_bytes: ByteSize(4096),
        ..LimitsConfig::default()
    };
    let body = Bytes::copy_from_slice(data);
    for format in [
        BodyFormat::Structured,
        BodyFormat::Batch,
        BodyFormat::Ndjson,
    ] {
        let result = decode_body(format, &body, &limits);
        // The envelope is walked by Sluice, values by serde_json: the body is JSON to one
        // exactly when it is to the other.
        // (A batch must also be an array: other JSON is refused as a batch. And bodies must be
        // UTF-8, which serde_json does not check in strings it skips.)
        let array = data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let utf8 = std::str::from_utf8(data).is_ok();
        if utf8 && (format == BodyFormat::Structured || (format == BodyFormat::Batch && array)) {
            let json = serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok();
            match &result {
                Ok(_) => assert!(json, "accepted what serde_json refuses"),
                Err(RequestError::Malformed(m)) => assert!(!json, "refused JSON: {m}"),
                Err(_) => {}
            }
        }
        match result {
            Ok(events) => {
                assert!(!events.is_empty() && events.len() <= limits.max_events);
                for ev in events.iter().flatten() {
                    assert!(ev.extensions.len() <= limits.max_extensions);
                    assert!(!ev.ty.is_empty());
                }
            }
            Err(e) => assert!((400..500).contains(&e.code().status()), "{e}"),
        }
    }
});
