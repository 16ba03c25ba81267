//! The Confluent-compatible registry API over HTTP, against SQLite and the real PostgreSQL,
//! and its scopes when authentication is on.

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use crate::registry_store::PgSchema;
use crate::support::auth::{claims, static_key, with_jwt, Signer};
use crate::support::{unique, TestServer, Workspace};

const SR: &str = "application/vnd.schemaregistry.v1+json";

struct Call<'a> {
    s: &'a TestServer,
    token: Option<String>,
}

impl Call<'_> {
    async fn req(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .s
            .client
            .request(method, format!("{}{path}", self.s.url));
        if let Some(t) = &self.token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            r = r.header("content-type", SR).body(b.to_string());
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.req(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.req(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.req(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> (u16, Value) {
        self.req(reqwest::Method::DELETE, path, None).await
    }
}

fn schema_req(v: &Value) -> Value {
    json!({"schema": v.to_string(), "schemaType": "JSON"})
}

fn code(body: &Value) -> u64 {
    body["error_code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no error_code in {body}"))
}

async fn exercise(s: &TestServer) {
    let c = Call { s, token: None };
    let subject = unique("it.api.");
    let enc = subject.clone();
    let v1 = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false});
    let v2 = json!({"type": "object", "properties": {"n": {"type": "integer"}, "m": {"type": "string"}}, "required": ["n"], "additionalProperties": false});
    let breaking =
        json!({"type": "object", "properties": {"n": {"type": "string"}}, "required": ["n"]});

    let (st, b) = c
        .post(&format!("/subjects/{enc}/versions"), schema_req(&v1))
        .await;
    assert_eq!(st, 200, "{b}");
    let id1 = b["id"].as_u64().unwrap();
    // Identical schema, whitespace aside: same id, no new version.
    let (st, b) = c
        .post(
            &format!("/subjects/{enc}/versions"),
            json!({"schema": serde_json::to_string_pretty(&v1).unwrap(), "schemaType": "JSON"}),
        )
        .await;
    assert_eq!((st, b["id"].as_u64()), (200, Some(id1)));
    let (_, b) = c
        .post(&format!("/subjects/{enc}/versions"), schema_req(&v2))
        .await;
    let id2 = b["id"].as_u64().unwrap();
    assert_ne!(id1, id2);
    let (st, b) = c
        .post(&format!("/subjects/{enc}/versions"), schema_req(&breaking))
        .await;
    assert_eq!((st, code(&b)), (409, 40901), "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("TYPE_NARROWED")
            || b["message"].as_str().unwrap().contains("at #/properties/n"),
        "{b}"
    );

    let (st, b) = c.get("/subjects").await;
    assert!(
        st == 200 && b.as_array().unwrap().contains(&json!(subject)),
        "{b}"
    );
    assert_eq!(
        c.get(&format!("/subjects/{enc}/versions")).await.1,
        json!([1, 2])
    );
    let (_, b) = c.get(&format!("/subjects/{enc}/versions/latest")).await;
    assert_eq!(
        (
            b["version"].as_u64(),
            b["id"].as_u64(),
            b["schemaType"].as_str()
        ),
        (Some(2), Some(id2), Some("JSON"))
    );
    assert_eq!(
        serde_json::from_str::<Value>(b["schema"].as_str().unwrap()).unwrap(),
        v2
    );
    let (st, b) = c.get(&format!("/subjects/{enc}/versions/1/schema")).await;
    assert_eq!((st, b), (200, v1.clone()));
    let (st, b) = c.get(&format!("/subjects/{enc}/versions/9")).await;
    assert_eq!((st, code(&b)), (404, 40402));
    let (st, b) = c.get(&format!("/subjects/{enc}/versions/zero")).await;
    assert_eq!((st, code(&b)), (422, 42202));
    let (st, b) = c.get("/subjects/no.such.subject/versions").await;
    assert_eq!((st, code(&b)), (404, 40401));

    let (st, b) = c.post(&format!("/subjects/{enc}"), schema_req(&v1)).await;
    assert_eq!(
        (st, b["version"].as_u64(), b["id"].as_u64()),
        (200, Some(1), Some(id1))
    );
    let (st, b) = c
        .post(
            &format!("/subjects/{enc}"),
            schema_req(&json!({"type": "null"})),
        )
        .await;
    assert_eq!((st, code(&b)), (404, 40403));
    let (st, b) = c.get(&format!("/schemas/ids/{id2}")).await;
    assert_eq!((st, b["schemaType"].as_str()), (200, Some("JSON")));
    assert_eq!(
        serde_json::from_str::<Value>(b["schema"].as_str().unwrap()).unwrap(),
        v2
    );
    assert_eq!(
        c.get(&format!("/schemas/ids/{id2}/versions")).await.1,
        json!([{"subject": subject, "version": 2}])
    );
    let (st, b) = c.get("/schemas/ids/987654").await;
    assert_eq!((st, code(&b)), (404, 40403));
    assert_eq!(c.get("/schemas/types").await.1, json!(["JSON"]));

    // Invalid bodies.
    let (st, b) = c
        .post(
            &format!("/subjects/{enc}/versions"),
            json!({"schema": "{\"type\": 12}", "schemaType": "JSON"}),
        )
        .await;
    assert_eq!((st, code(&b)), (422, 42201), "{b}");
    let (st, b) = c
        .post(
            &format!("/subjects/{enc}/versions"),
            json!({"schema": v1.to_string()}),
        )
        .await;
    assert_eq!(
        (st, code(&b)),
        (422, 42201),
        "a missing schemaType means AVRO to Confluent clients: {b}"
    );

    // Config and compatibility.
    assert_eq!(
        c.get("/config").await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    let (st, b) = c.get(&format!("/config/{enc}")).await;
    assert_eq!((st, code(&b)), (404, 40408));
    assert_eq!(
        c.get(&format!("/config/{enc}?defaultToGlobal=true"))
            .await
            .1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    let (st, b) = c
        .put(
            &format!("/config/{enc}"),
            json!({"compatibility": "nonsense"}),
        )
        .await;
    assert_eq!((st, code(&b)), (422, 42203));
    let (_, b) = c
        .post(
            &format!("/compatibility/subjects/{enc}/versions/latest?verbose=true"),
            schema_req(&breaking),
        )
        .await;
    assert_eq!(b["is_compatible"], false);
    assert!(!b["messages"].as_array().unwrap().is_empty(), "{b}");
    let (_, b) = c
        .post(
            &format!("/compatibility/subjects/{enc}/versions/latest"),
            schema_req(&v2),
        )
        .await;
    assert_eq!(b, json!({"is_compatible": true}));
    let (_, b) = c
        .post(
            "/compatibility/subjects/brand.new/versions/latest",
            schema_req(&v2),
        )
        .await;
    assert_eq!(b["is_compatible"], true, "no versions yet: compatible");
    assert_eq!(
        c.put(&format!("/config/{enc}"), json!({"compatibility": "none"}))
            .await
            .1,
        json!({"compatibility": "NONE"})
    );
    let (st, b) = c
        .post(&format!("/subjects/{enc}/versions"), schema_req(&breaking))
        .await;
    assert_eq!((st, b["version"].as_u64()), (200, Some(3)), "{b}");
    assert_eq!(
        c.delete(&format!("/config/{enc}")).await.1,
        json!({"compatibilityLevel": "NONE"})
    );
    let (st, b) = c.delete(&format!("/config/{enc}")).await;
    assert_eq!((st, code(&b)), (404, 40401));

    // Deletes: soft, then permanent.
    let (st, b) = c
        .delete(&format!("/subjects/{enc}/versions/3?permanent=true"))
        .await;
    assert_eq!((st, code(&b)), (404, 40407));
    assert_eq!(
        c.delete(&format!("/subjects/{enc}/versions/3")).await,
        (200, json!(3))
    );
    let (st, b) = c.delete(&format!("/subjects/{enc}/versions/3")).await;
    assert_eq!((st, code(&b)), (404, 40406));
    assert_eq!(
        c.delete(&format!("/subjects/{enc}/versions/3?permanent=True"))
            .await,
        (200, json!(3))
    );
    let (st, b) = c.delete(&format!("/subjects/{enc}?permanent=true")).await;
    assert_eq!((st, code(&b)), (404, 40405));
    assert_eq!(
        c.delete(&format!("/subjects/{enc}")).await,
        (200, json!([1, 2]))
    );
    let (st, b) = c.delete(&format!("/subjects/{enc}")).await;
    assert_eq!((st, code(&b)), (404, 40404));
    // Lookup finds a soft-deleted version only when asked to.
    let (st, b) = c.post(&format!("/subjects/{enc}"), schema_req(&v1)).await;
    assert_eq!((st, code(&b)), (404, 40401));
    let (st, b) = c
        .post(&format!("/subjects/{enc}?deleted=true"), schema_req(&v1))
        .await;
    assert_eq!((st, b["version"].as_u64()), (200, Some(1)), "{b}");
    // A flag that is not a boolean, or given twice, is refused rather than read as false.
    for q in ["deleted=yes", "deleted=1", "deleted=true&deleted=false"] {
        let (st, b) = c.get(&format!("/subjects?{q}")).await;
        assert_eq!((st, code(&b)), (400, 400), "{q}: {b}");
    }
    let (st, b) = c.get("/subjects/%FF/versions").await;
    assert_eq!((st, code(&b)), (400, 400), "{b}");
    // Subject names are limited in characters, not bytes: 255 two-byte characters are a name
    // (unknown here: 404), 256 are not (422).
    let (st, b) = c
        .get(&format!("/subjects/{}/versions", "é".repeat(255)))
        .await;
    assert_eq!((st, code(&b)), (404, 40401), "{b}");
    let (st, b) = c
        .get(&format!("/subjects/{}/versions", "é".repeat(256)))
        .await;
    assert_eq!((st, code(&b)), (422, 42208), "{b}");
    assert!(c
        .get("/subjects?deleted=true")
        .await
        .1
        .as_array()
        .unwrap()
        .contains(&json!(subject)));
    assert!(!c
        .get("/subjects")
        .await
        .1
        .as_array()
        .unwrap()
        .contains(&json!(subject)));
    assert_eq!(
        c.delete(&format!("/subjects/{enc}?permanent=true")).await,
        (200, json!([1, 2]))
    );
    let (st, b) = c.get(&format!("/subjects/{enc}/versions")).await;
    assert_eq!((st, code(&b)), (404, 40401));
}

#[tokio::test]
async fn registry_api_on_sqlite() {
    let ws = Workspace::new();
    let s = TestServer::start_ready(ws.config()).await;
    exercise(&s).await;
}

#[tokio::test]
async fn registry_api_on_postgres() {
    let pg = PgSchema::new().await;
    let ws = Workspace::new();
    let mut c = ws.config();
    c.registry.url = pg.url.clone();
    let s = TestServer::start_ready(c).await;
    exercise(&s).await;
}

#[tokio::test]
async fn registry_api_writes_need_a_json_content_type_so_no_other_site_can_send_them() {
    let ws = Workspace::new();
    let s = TestServer::start_ready(ws.config()).await;
    let c = Call { s: &s, token: None };
    let subject = unique("it.ct.");
    let register = format!("{}/subjects/{subject}/versions", s.url);
    let body = schema_req(&json!({})).to_string();
    // What a page elsewhere can send without a CORS preflight: no Content-Type (a Blob body),
    // or text/plain.
    for content_type in [None, Some("text/plain;charset=UTF-8")] {
        let typed = |r: reqwest::RequestBuilder| match content_type {
            Some(ct) => r.header("content-type", ct),
            None => r,
        };
        let resp = typed(s.client.post(&register).body(body.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 415, "{content_type:?}");
        let b: Value = resp.json().await.unwrap();
        assert_eq!(code(&b), 415, "{b}");
        let put = typed(
            s.client
                .put(format!("{}/config", s.url))
                .body(r#"{"compatibility":"NONE"}"#),
        );
        assert_eq!(put.send().await.unwrap().status().as_u16(), 415);
    }
    assert_eq!(c.get(&format!("/subjects/{subject}/versions")).await.0, 404);
    assert_eq!(
        c.get("/config").await.1["compatibilityLevel"],
        "BACKWARD",
        "the level is unchanged"
    );
    // Confluent's media types and plain JSON are taken.
    let r = s
        .client
        .post(&register)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn registry_api_registration_is_enforced_by_ingest_at_once() {
    let ws = Workspace::new();
    let s = TestServer::start_ready(ws.config()).await;
    let c = Call { s: &s, token: None };
    let ty = unique("it.api.ingest.");
    let ev = json!({"type": ty, "data": {"k": "v"}});
    assert_eq!(
        s.send_json(&ev).await.status,
        400,
        "unknown type before registration"
    );
    let (st, b) = c
        .post(
            &format!("/subjects/{ty}/versions"),
            schema_req(&json!({"type": "object", "properties": {"k": {"type": "string"}}})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        s.send_json(&ev).await.status,
        200,
        "the registering replica reloads before answering"
    );
}

#[tokio::test]
async fn registry_api_needs_registry_scopes_when_auth_is_on() {
    let ws = Workspace::new();
    let mut cfg = with_jwt(ws.config());
    cfg.auth.keys = vec![static_key(Algorithm::HS256, "hs")];
    let s = TestServer::start_ready(cfg).await;
    let hs = Signer::new(Algorithm::HS256, Some("hs"));
    let subject = unique("it.api.auth.");
    let body = schema_req(&json!({"type": "object"}));

    let anon = Call { s: &s, token: None };
    let (st, b) = anon.get("/subjects").await;
    assert_eq!((st, code(&b)), (401, 40101), "{b}");
    let writer_of_events = Call {
        s: &s,
        token: Some(hs.sign(&claims("events:write:*"))),
    };
    let (st, b) = writer_of_events
        .post(&format!("/subjects/{subject}/versions"), body.clone())
        .await;
    assert_eq!((st, code(&b)), (403, 40301));
    let reader = Call {
        s: &s,
        token: Some(hs.sign(&claims("registry:read"))),
    };
    assert_eq!(reader.get("/subjects").await.0, 200);
    let (st, _) = reader
        .post(&format!("/subjects/{subject}/versions"), body.clone())
        .await;
    assert_eq!(st, 403, "reading is not writing");
    let writer = Call {
        s: &s,
        token: Some(hs.sign(&claims("registry:write"))),
    };
    assert_eq!(
        writer
            .post(&format!("/subjects/{subject}/versions"), body.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        reader.post(&format!("/subjects/{subject}"), body).await.0,
        200,
        "a lookup is a read"
    );
}

/// Every registry route and the scope it needs: lookups and compatibility checks are POSTs
/// that only read.
const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/subjects", "read"),
    ("POST", "/subjects/{s}", "read"),
    ("GET", "/subjects/{s}/versions", "read"),
    ("GET", "/subjects/{s}/versions/1", "read"),
    ("GET", "/subjects/{s}/versions/1/schema", "read"),
    ("GET", "/schemas/ids/1", "read"),
    ("GET", "/schemas/ids/1/schema", "read"),
    ("GET", "/schemas/ids/1/versions", "read"),
    ("GET", "/schemas/types", "read"),
    ("GET", "/config", "read"),
    ("GET", "/config/{s}", "read"),
    (
        "POST",
        "/compatibility/subjects/{s}/versions/latest",
        "read",
    ),
    ("POST", "/compatibility/subjects/{s}/versions", "read"),
    ("POST", "/subjects/{s}/versions", "write"),
    ("DELETE", "/subjects/{s}", "write"),
    ("DELETE", "/subjects/{s}/versions/1", "write"),
    ("PUT", "/config", "write"),
    ("DELETE", "/config", "write"),
    ("PUT", "/config/{s}", "write"),
    ("DELETE", "/config/{s}", "write"),
];

#[tokio::test]
async fn registry_api_each_route_needs_its_scope_and_open_reads_opens_only_reads() {
    let ws = Workspace::new();
    let subject = unique("it.api.scopes.");
    let body = |method: &str, path: &str| {
        (method != "GET" && method != "DELETE").then(|| {
            if path.starts_with("/config") {
                json!({"compatibility": "NONE"})
            } else {
                schema_req(&json!({"type": "object"}))
            }
        })
    };
    for open_reads in [false, true] {
        let mut cfg = with_jwt(ws.config());
        cfg.auth.keys = vec![static_key(Algorithm::HS256, "hs")];
        cfg.registry.open_reads = open_reads;
        let s = TestServer::start_ready(cfg).await;
        let hs = Signer::new(Algorithm::HS256, Some("hs"));
        let anon = Call { s: &s, token: None };
        let events_only = Call {
            s: &s,
            token: Some(hs.sign(&claims("events:write:*"))),
        };
        let reader = Call {
            s: &s,
            token: Some(hs.sign(&claims("registry:read"))),
        };
        for (method, path, need) in ROUTES {
            let path = path.replace("{s}", &subject);
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let what = format!("{method} {path} (open_reads {open_reads})");
            let read = *need == "read";
            let (st, b) = anon.req(m.clone(), &path, body(method, &path)).await;
            if read && open_reads {
                assert!(
                    st != 401 && st != 403,
                    "{what}: anonymous reads are open: {st} {b}"
                );
            } else {
                assert_eq!((st, code(&b)), (401, 40101), "{what}: anonymous: {b}");
            }
            let (st, b) = events_only.req(m.clone(), &path, body(method, &path)).await;
            if read && open_reads {
                assert!(st != 401 && st != 403, "{what}: reads are open: {st} {b}");
            } else {
                assert_eq!(
                    (st, code(&b)),
                    (403, 40301),
                    "{what}: events:write only: {b}"
                );
            }
            let (st, b) = reader.req(m, &path, body(method, &path)).await;
            if read {
                assert!(
                    st != 401 && st != 403,
                    "{what}: registry:read reads: {st} {b}"
                );
            } else {
                assert_eq!(
                    (st, code(&b)),
                    (403, 40301),
                    "{what}: registry:read writes: {b}"
                );
                assert!(
                    b["message"].as_str().unwrap().contains("registry:write"),
                    "{what}: {b}"
                );
            }
        }
    }
}

#[tokio::test]
async fn registry_api_confluent_python_client_works_against_sluice() {
    let python = std::env::var("SLUICE_TEST_PYTHON").expect(
        "SLUICE_TEST_PYTHON names a python with confluent-kafka installed: run the tests through scripts/test",
    );
    let ws = Workspace::new();
    let s = TestServer::start_ready(ws.config()).await;
    let script = format!(
        "{}/tests/it/python/confluent_client.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let subject = unique("it.confluent.");
    let url = s.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args([script.as_str(), url.as_str(), subject.as_str()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "Confluent's client failed against Sluice:\n{text}"
    );
    assert!(text.contains("confluent client: ok"), "{text}");
}

#[tokio::test]
async fn registry_api_two_replicas_registering_at_once_get_distinct_ids_and_one_version_order() {
    let pg = PgSchema::new().await;
    let ws = Workspace::new();
    let mut cfg = ws.config();
    cfg.registry.url = pg.url.clone();
    let a = TestServer::start_ready(cfg.clone()).await;
    let b = TestServer::start_ready(cfg).await;
    let subject = unique("it.api.race.");
    let (st, _) = Call { s: &a, token: None }
        .put(
            &format!("/config/{subject}"),
            json!({"compatibility": "NONE"}),
        )
        .await;
    assert_eq!(st, 200);
    let mut calls = Vec::new();
    for i in 0..20 {
        let server = if i % 2 == 0 { &a } else { &b };
        let subject = subject.clone();
        calls.push(async move {
            let c = Call {
                s: server,
                token: None,
            };
            let schema =
                json!({"type": "object", "properties": {format!("p{i}"): {"type": "integer"}}});
            c.post(
                &format!("/subjects/{subject}/versions"),
                schema_req(&schema),
            )
            .await
        });
    }
    let answers = futures_util::future::join_all(calls).await;
    let mut ids: Vec<u64> = answers
        .iter()
        .map(|(st, b)| {
            assert_eq!(*st, 200, "{b}");
            b["id"].as_u64().unwrap()
        })
        .collect();
    let mut versions: Vec<u64> = answers
        .iter()
        .map(|(_, b)| b["version"].as_u64().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    versions.sort();
    assert_eq!(ids.len(), 20, "distinct schemas, distinct ids");
    assert_eq!(versions, (1..=20).collect::<Vec<u64>>());
    let list_a = Call { s: &a, token: None }
        .get(&format!("/subjects/{subject}/versions"))
        .await
        .1;
    let list_b = Call { s: &b, token: None }
        .get(&format!("/subjects/{subject}/versions"))
        .await
        .1;
    assert_eq!(list_a, list_b);
}

/// `depth` levels, each an `allOf` naming the level below twice (2^depth routes to the leaf):
/// the 2 KB shape that used to stop the server.
fn doubling(depth: usize, leaf: Value) -> Value {
    let mut defs = serde_json::Map::new();
    defs.insert("l0".into(), leaf);
    for i in 1..=depth {
        let below = json!({"$ref": format!("#/$defs/l{}", i - 1)});
        defs.insert(format!("l{i}"), json!({"allOf": [below.clone(), below]}));
    }
    json!({"$defs": defs, "$ref": format!("#/$defs/l{depth}")})
}

#[tokio::test]
async fn registry_api_schemas_that_would_multiply_validation_work_are_refused() {
    let ws = Workspace::new();
    let s = TestServer::start_ready(ws.config()).await;
    let c = Call { s: &s, token: None };
    let subject = unique("it.fanout.");
    let path = format!("/subjects/{subject}/versions");
    // Validating one event against this took minutes: 2^32 applications to one value.
    let (st, b) = c
        .post(&path, schema_req(&doubling(32, json!({"type": "object"}))))
        .await;
    assert_eq!((st, code(&b)), (422, 42201), "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("registry.max_schema_fanout"),
        "{b}"
    );
    // Doubling with each level of the event's nesting instead.
    let twin = |me: &str| json!({"type": "array", "items": {"oneOf": [{"$ref": "#/$defs/n"}, {"$ref": "#/$defs/m"}]}, "title": me});
    let nested = json!({"$defs": {"n": twin("n"), "m": twin("m")}, "$ref": "#/$defs/n"});
    let (st, b) = c.post(&path, schema_req(&nested)).await;
    assert_eq!((st, code(&b)), (422, 42201), "{b}");
    assert_eq!(c.get(&path).await.0, 404, "nothing was registered");
    // A few levels of it are fine.
    let (st, b) = c
        .post(&path, schema_req(&doubling(4, json!({"type": "object"}))))
        .await;
    assert_eq!(st, 200, "{b}");
    let ok = json!({"type": subject, "data": {}});
    assert_eq!(s.send_json(&ok).await.status, 200);
}

#[tokio::test]
async fn registry_api_costly_schemas_are_bounded_and_the_server_keeps_answering() {
    let ws = Workspace::new();
    let mut cfg = ws.config();
    cfg.registry.max_schema_bytes = sluice::config::ByteSize(8 * 1024);
    // Let the compatibility checker meet the shape (no event is sent).
    cfg.registry.max_schema_fanout = u64::MAX;
    let s = TestServer::start_ready(cfg).await;
    let c = Call { s: &s, token: None };
    let subject = unique("it.costly.");
    let path = format!("/subjects/{subject}/versions");
    let v1 = doubling(32, json!({"type": "object"}));
    let v2 = doubling(32, json!({"type": ["object", "null"]}));
    assert_eq!(c.post(&path, schema_req(&v1)).await.0, 200);
    // Compared pair by pair with memory: decided (v2 reads all of v1's data), while the
    // server answers everything else.
    let (health, (st, b)) = tokio::join!(c.get("/healthz"), c.post(&path, schema_req(&v2)));
    assert_eq!(health.0, 200);
    assert_eq!(st, 200, "{b}");
    let check = format!("/compatibility/subjects/{subject}/versions/latest?verbose=true");
    let (st, b) = c.post(&check, schema_req(&v1)).await;
    assert_eq!((st, &b["is_compatible"]), (200, &json!(false)), "{b}");

    // Bodies past registry.max_schema_bytes are refused before they are parsed.
    let big = json!({"type": "object", "description": "x".repeat(9 * 1024)});
    let (st, b) = c.post(&path, schema_req(&big)).await;
    assert_eq!((st, code(&b)), (413, 41301), "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("registry.max_schema_bytes"),
        "{b}"
    );
}

#[tokio::test]
async fn registry_api_a_check_past_its_budget_is_cannot_decide_not_a_guess() {
    let ws = Workspace::new();
    let mut cfg = ws.config();
    cfg.registry.compat_budget = 50;
    cfg.registry.max_schema_fanout = u64::MAX;
    let s = TestServer::start_ready(cfg).await;
    let c = Call { s: &s, token: None };
    let subject = unique("it.budget.");
    let path = format!("/subjects/{subject}/versions");
    assert_eq!(
        c.post(&path, schema_req(&doubling(8, json!({"type": "object"}))))
            .await
            .0,
        200
    );
    let wider = doubling(8, json!({"type": ["object", "null"]}));
    let check = format!("/compatibility/subjects/{subject}/versions/latest?verbose=true");
    let (st, b) = c.post(&check, schema_req(&wider)).await;
    assert_eq!((st, &b["is_compatible"]), (200, &json!(false)), "{b}");
    assert!(
        b["messages"][0]
            .as_str()
            .unwrap()
            .contains("UNDECIDED_BUDGET"),
        "{b}"
    );
    let (st, b) = c.post(&path, schema_req(&wider)).await;
    assert_eq!((st, code(&b)), (409, 40901), "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("registry.compat_budget"),
        "{b}"
    );
}
