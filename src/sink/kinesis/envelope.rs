//! The `kinesis.format: envelope` encoding of a record's data.

use base64::Engine;
use bytes::Bytes;

use crate::sink::Record;

/// The record as a CloudEvents JSON event: `ce_*` headers become attributes, `content-type`
/// becomes `datacontenttype`, `sluice_*` headers become `sluice*` extensions (CloudEvents
/// extension names are lowercase letters and digits), and the value is `data` when it is JSON,
/// else `data_base64`.
pub fn envelope(r: &Record) -> Bytes {
    let mut m = serde_json::Map::new();
    // The client's extensions first, Sluice's own headers last: should a client's attribute
    // ever map to one of Sluice's names, Sluice's value is the one kept.
    let headers = r
        .extension_headers
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .chain(r.headers.iter().map(|(k, v)| (*k, v)));
    for (k, v) in headers {
        let v = serde_json::Value::String(String::from_utf8_lossy(v).into_owned());
        if let Some(attr) = k.strip_prefix("ce_") {
            m.insert(attr.to_string(), v);
        } else if k == "content-type" {
            m.insert("datacontenttype".into(), v);
        } else if let Some(rest) = k.strip_prefix("sluice_") {
            m.insert(format!("sluice{}", rest.replace('_', "")), v);
        }
    }
    match serde_json::from_slice::<Box<serde_json::value::RawValue>>(&r.value) {
        Ok(raw) => {
            m.insert(
                "data".into(),
                serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null),
            );
        }
        Err(_) => {
            m.insert(
                "data_base64".into(),
                serde_json::Value::String(
                    base64::engine::general_purpose::STANDARD.encode(&r.value),
                ),
            );
        }
    }
    Bytes::from(serde_json::to_vec(&m).expect("a JSON map serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &'static [u8]) -> Record {
        Record {
            topic: "s".into(),
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(value),
            headers: vec![
                ("ce_id", Bytes::from_static(b"e1")),
                ("ce_type", Bytes::from_static(b"app.signup")),
                ("content-type", Bytes::from_static(b"application/json")),
                ("sluice_schema_id", Bytes::from_static(b"7")),
                (
                    "sluice_received_time",
                    Bytes::from_static(b"2026-11-23T00:00:00.000Z"),
                ),
            ],
            extension_headers: vec![("ce_region".into(), Bytes::from_static(b"eu"))],
        }
    }

    #[test]
    fn the_envelope_is_a_cloudevent_with_sluice_extensions() {
        let e: serde_json::Value =
            serde_json::from_slice(&envelope(&record(br#"{"plan":"team"}"#))).unwrap();
        assert_eq!(
            e,
            serde_json::json!({
                "id": "e1", "type": "app.signup", "datacontenttype": "application/json",
                "sluiceschemaid": "7", "sluicereceivedtime": "2026-11-23T00:00:00.000Z",
                "region": "eu", "data": {"plan": "team"}
            })
        );
        // Not JSON (Confluent's framing): base64.
        let e: serde_json::Value =
            serde_json::from_slice(&envelope(&record(b"\x00\x00\x00\x00\x07{}"))).unwrap();
        assert_eq!(e["data_base64"], "AAAAAAd7fQ==");
        assert!(e.get("data").is_none());
    }

    #[test]
    fn sluices_own_attributes_win_over_the_clients_in_the_envelope() {
        let mut r = record(b"{}");
        r.headers
            .push(("sluice_tenant", Bytes::from_static(b"acme")));
        r.extension_headers
            .push(("ce_sluicetenant".into(), Bytes::from_static(b"other")));
        r.extension_headers
            .push(("ce_sluiceschemaid".into(), Bytes::from_static(b"1")));
        let e: serde_json::Value = serde_json::from_slice(&envelope(&r)).unwrap();
        assert_eq!(e["sluicetenant"], "acme");
        assert_eq!(e["sluiceschemaid"], "7");
    }
}
