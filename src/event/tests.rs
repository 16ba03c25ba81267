use super::*;
use crate::config::LimitsConfig;

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
        (
            r.id.as_deref(),
            r.error.code.as_str(),
            r.error.pointer.as_str()
        ),
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

/// The byte-at-a-time state machine `check_depth` replaced: the reference it must agree with.
fn depth_reference(json: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

#[test]
fn depth_check_agrees_with_the_byte_by_byte_reference() {
    // Random strings over the bytes that matter (and one that does not), lengths 0-40,
    // including escapes at the very end and unterminated strings.
    let alphabet = br#"{}[]"\a"#;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..200_000 {
        let len = (next() % 41) as usize;
        let json: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let limit = (next() % 5) as usize;
        assert_eq!(
            check_depth(&json, limit).is_ok(),
            depth_reference(&json, limit),
            "{:?} at limit {limit}",
            String::from_utf8_lossy(&json)
        );
    }
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
        (r.id.as_deref(), r.error.code.as_str()),
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
        (r.error.code.as_str(), r.error.pointer.as_str()),
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

/// A repeatable stream of pseudo-random numbers for the mutation tests.
pub(crate) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
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
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
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

/// The envelope walk accepts exactly the JSON serde_json accepts (when reading past values, as
/// it did before: lone surrogates pass, and are refused when `data` is validated), and each
/// event's `data` is the member serde_json sees (the last of a repeated name): checked on
/// mutated bodies.
#[test]
fn the_walk_agrees_with_serde_json() {
    let seeds: &[&[u8]] = &[
        br#"[{"type":"a","id":"1","data":{"x":[1,2.5e3,{"y":"z\"q"}],"t":true},"ext":5}]"#,
        b"[ {\"type\" : \"a\" , \"data\" : 1 , \"data\" : [ null ] } ,\n {\"ty\\u0070e\":\"b\"} ]",
        br#"{"type":"a","data":"\ud83d\ude00","x":"","x":"y"}"#,
        br#"[{"type":"a","data":{}},7,"s",[],{"id":"i"}]"#,
        br#"[{"type":"a","\ud910":1},{"\ud83d\ude00x":"y","type":"b"}]"#,
    ];
    let limits = LimitsConfig {
        max_depth: 8,
        max_events: 8,
        ..LimitsConfig::default()
    };
    let specials = b"{}[]\"\\,:\n\t\x01u0e-.1 ";
    let mut next = xorshift(0x2545_F491_4F6C_DD1D);
    let mut accepted = 0;
    for i in 0..30_000 {
        let mut body = seeds[i % seeds.len()].to_vec();
        for _ in 0..(next() % 3) {
            let pos = (next() as usize) % (body.len() + 1);
            match next() % 3 {
                0 if pos < body.len() => body[pos] = specials[(next() as usize) % specials.len()],
                1 => body.insert(pos, specials[(next() as usize) % specials.len()]),
                _ if pos < body.len() => {
                    body.remove(pos);
                }
                _ => {}
            }
        }
        let serde = serde_json::from_slice::<serde::de::IgnoredAny>(&body);
        let format = if body.first() == Some(&b'[') {
            BodyFormat::Batch
        } else {
            BodyFormat::Structured
        };
        let text = String::from_utf8_lossy(&body);
        match decode_body(format, &Bytes::from(body.clone()), &limits) {
            Err(RequestError::Malformed(m)) => {
                assert!(
                    serde.is_err(),
                    "refused what serde_json reads ({m}): {text}"
                )
            }
            Err(RequestError::TooDeep { .. } | RequestError::TooManyEvents { .. }) => {}
            Err(e) => assert!(serde.is_ok(), "{e} for JSON serde_json refuses: {text}"),
            Ok(events) => {
                serde.unwrap_or_else(|e| panic!("accepted {text}: {e}"));
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
                    continue;
                };
                let items = match value {
                    serde_json::Value::Array(items) => items,
                    one => vec![one],
                };
                assert_eq!(items.len(), events.len(), "{text}");
                for (item, event) in items.iter().zip(&events) {
                    let Ok(event) = event else { continue };
                    accepted += 1;
                    assert_eq!(item["type"], event.ty.as_str(), "{text}");
                    match &event.data {
                        None => assert!(item.get("data").is_none(), "{text}"),
                        Some(data) => assert_eq!(
                            serde_json::from_slice::<serde_json::Value>(data).unwrap(),
                            item["data"],
                            "{text}"
                        ),
                    }
                }
            }
        }
    }
    assert!(accepted > 1_000, "{accepted}");
}

/// A member name that is JSON but not Unicode (a lone surrogate escape) refuses its event, not
/// the request, as serde_json's reading of the body would.
#[test]
fn a_name_that_is_not_unicode_refuses_only_its_event() {
    let out = decode(
        BodyFormat::Batch,
        r#"[{"type":"a","\ud910":1},{"type":"b","\ud83d\ude00":"y"}]"#,
    )
    .unwrap();
    assert_eq!(out[0].as_ref().unwrap_err().error.code, "invalid_event");
    // A surrogate pair is Unicode: read, then refused as an extension's name.
    let e = &out[1].as_ref().unwrap_err().error;
    assert_eq!(
        (e.code.as_str(), e.pointer.as_str()),
        ("invalid_attribute", "/😀")
    );
}
