//! Binary mode: `ce-*` headers (split from the input) and a body.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::config::{ByteSize, LimitsConfig};
use sluice::error::ClientError;
use sluice::event::decode_binary;

fuzz_target!(|data: &[u8]| {
    let limits = LimitsConfig {
        max_depth: 8,
        max_extensions: 4,
        max_event_bytes: ByteSize(4096),
        ..LimitsConfig::default()
    };
    // "name=value\n" lines up to an empty line, then the body.
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &b""[..]),
    };
    let headers: Vec<(String, Vec<u8>)> = head
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let eq = line.iter().position(|b| *b == b'=')?;
            Some((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                line[eq + 1..].to_vec(),
            ))
        })
        .collect();
    let iter = headers.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
    match decode_binary(
        iter,
        Some("application/json"),
        Bytes::copy_from_slice(body),
        &limits,
    ) {
        Ok(events) => {
            assert_eq!(events.len(), 1);
            if let Ok(ev) = &events[0] {
                assert!(ev.extensions.len() <= limits.max_extensions);
            }
        }
        Err(e) => assert!((400..500).contains(&e.code().status()), "{e}"),
    }
});
