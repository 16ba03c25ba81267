//! Authentication and authorization against the real server: JWTs from static keys and from
//! a JWKS served over HTTP (with rotation), the attack suite, scopes per event, API keys,
//! browser keys and CORS.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use sluice::config::{Config, HumanDuration, KeyClass};

use crate::support::auth::{
    api_key_entry, claims, fixture, now, static_key, with_jwt, JwksServer, Signer, AUDIENCE, ISSUER,
};
use crate::support::kafka::{brokers, consume, create_topic};
use crate::support::{eventually, unique, Answer, TestServer, Workspace, ANY, STRICT};

fn event(ty: &str, data: Value) -> Value {
    json!({"type": ty, "data": data})
}

async fn send_as(s: &TestServer, auth: Option<&str>, body: &Value) -> Answer {
    let ct = if body.is_array() {
        "application/cloudevents-batch+json"
    } else {
        "application/cloudevents+json"
    };
    let mut req = s.post().header("content-type", ct).body(body.to_string());
    if let Some(token) = auth {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    Answer::from(req.send().await.unwrap()).await
}

/// Static keys of every family, each with its own `kid`.
fn static_keys_config(ws: &Workspace) -> Config {
    let mut c = with_jwt(ws.config());
    c.auth.keys = vec![
        static_key(Algorithm::RS256, "rsa"),
        static_key(Algorithm::PS256, "ps"),
        static_key(Algorithm::ES256, "ec"),
        static_key(Algorithm::ES384, "ec384"),
        static_key(Algorithm::EdDSA, "ed"),
        static_key(Algorithm::HS256, "hs"),
    ];
    c
}

#[tokio::test]
async fn jwt_every_algorithm_family_verifies_with_its_static_key() {
    let ws = Workspace::new();
    let s = TestServer::start_ready(static_keys_config(&ws)).await;
    for (alg, kid) in [
        (Algorithm::RS256, "rsa"),
        (Algorithm::PS256, "ps"),
        (Algorithm::ES256, "ec"),
        (Algorithm::ES384, "ec384"),
        (Algorithm::EdDSA, "ed"),
        (Algorithm::HS256, "hs"),
    ] {
        let token = Signer::new(alg, Some(kid)).sign(&claims("events:write:*"));
        let a = send_as(&s, Some(&token), &event(ANY, json!({}))).await;
        assert_eq!(a.status, 200, "{alg:?}: {}", a.body);
    }
    // No `kid`: the keys with the token's algorithm are tried.
    let token = Signer::new(Algorithm::ES256, None).sign(&claims("events:write:*"));
    assert_eq!(
        send_as(&s, Some(&token), &event(ANY, json!({})))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn jwt_attack_suite_each_refused_with_its_reason() {
    let ws = Workspace::new();
    let mut c = static_keys_config(&ws);
    c.auth.max_token_bytes = sluice::config::ByteSize(16 * 1024);
    let s = TestServer::start_ready(c).await;
    let rsa = Signer::new(Algorithm::RS256, Some("rsa"));
    let good = claims("events:write:*");
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    // A server that would hand out an attacker's keys; it must never be asked.
    let attacker = Signer::rsa2(Algorithm::RS256, "evil");
    let attacker_jwks = JwksServer::start(vec![attacker.jwk()]).await;

    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    cases.push((
        "alg none, unsigned",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": "rsa"})),
            b64(&good)
        ),
        "algorithm_not_allowed",
    ));
    cases.push((
        "alg none with a signature",
        format!("{}.{}.c2ln", b64(&json!({"alg": "none"})), b64(&good)),
        "algorithm_not_allowed",
    ));
    // HS256 signed with the RSA public key's PEM bytes as the secret.
    let confused = jsonwebtoken::encode(
        &{
            let mut h = jsonwebtoken::Header::new(Algorithm::HS256);
            h.kid = Some("rsa".into());
            h
        },
        &good,
        &jsonwebtoken::EncodingKey::from_secret(&fixture("rsa1.pub.pem")),
    )
    .unwrap();
    cases.push((
        "HS256 over the RSA public key",
        confused,
        "algorithm_not_allowed",
    ));
    let confused_no_kid = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &good,
        &jsonwebtoken::EncodingKey::from_secret(&fixture("rsa1.pub.pem")),
    )
    .unwrap();
    cases.push((
        "HS256 over the RSA public key, no kid",
        confused_no_kid,
        "bad_signature",
    ));
    let switched = Signer::new(Algorithm::ES256, Some("rsa")).sign(&good);
    cases.push((
        "ES256 header on the RSA key",
        switched,
        "algorithm_not_allowed",
    ));
    let mut c = good.clone();
    c["exp"] = json!(now() - 3600);
    cases.push(("expired", rsa.sign(&c), "token_expired"));
    let mut c = good.clone();
    c["nbf"] = json!(now() + 3600);
    cases.push(("nbf in the future", rsa.sign(&c), "token_not_yet_valid"));
    let mut c = good.clone();
    c["exp"] = json!((now() + 600).to_string());
    cases.push(("exp as a string", rsa.sign(&c), "invalid_claim"));
    let mut c = good.clone();
    c["exp"] = json!((now() - 3600).to_string());
    cases.push(("expired exp as a string", rsa.sign(&c), "invalid_claim"));
    let mut c = good.clone();
    c["iss"] = json!("https://evil.test");
    cases.push(("wrong iss", rsa.sign(&c), "wrong_issuer"));
    let mut c = good.clone();
    c["aud"] = json!("someone-else");
    cases.push(("wrong aud", rsa.sign(&c), "wrong_audience"));
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("exp");
    cases.push(("missing exp", rsa.sign(&c), "missing_claim"));
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("tenant");
    cases.push(("missing tenant", rsa.sign(&c), "missing_claim"));
    let valid = rsa.sign(&good);
    let parts: Vec<&str> = valid.split('.').collect();
    let mut c = good.clone();
    c["tenant"] = json!("someone-else");
    cases.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], b64(&c), parts[2]),
        "bad_signature",
    ));
    cases.push((
        "truncated signature",
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            &parts[2][..parts[2].len() - 10]
        ),
        "bad_signature",
    ));
    cases.push((
        "two segments",
        format!("{}.{}", parts[0], parts[1]),
        "malformed_token",
    ));
    cases.push((
        "non-base64 segment",
        format!("{}.{}!!.{}", parts[0], parts[1], parts[2]),
        "malformed_token",
    ));
    cases.push((
        "header not JSON",
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode("nope"),
            parts[1],
            parts[2]
        ),
        "malformed_token",
    ));
    // Over auth.max_token_bytes (16 KiB), under limits.max_header_bytes (64 KiB).
    cases.push(("a 32 KiB token", "a".repeat(32 * 1024), "token_too_long"));
    let mut h = attacker.header();
    h.jku = Some(attacker_jwks.url.clone());
    cases.push((
        "jku pointing elsewhere",
        attacker.sign_with(&h, &good),
        "unknown_key",
    ));
    let mut h = attacker.header();
    h.x5u = Some(attacker_jwks.url.clone());
    cases.push((
        "x5u pointing elsewhere",
        attacker.sign_with(&h, &good),
        "unknown_key",
    ));
    // The attacker's public key embedded in the header, under our key's kid.
    let mut h = attacker.header();
    h.kid = Some("rsa".into());
    h.jwk = Some(serde_json::from_value(attacker.jwk()).unwrap());
    cases.push((
        "embedded jwk",
        attacker.sign_with(&h, &good),
        "bad_signature",
    ));

    for (name, token, code) in &cases {
        let a = send_as(&s, Some(token), &event(ANY, json!({}))).await;
        assert_eq!(a.status, 401, "{name}: {}", a.body);
        assert_eq!(a.code(), *code, "{name}");
        let msg = a.body["error"]["message"].as_str().unwrap();
        assert!(
            token.len() < 20 || !msg.contains(&token[token.len() - 20..]),
            "{name}: the message quotes the token"
        );
    }
    assert_eq!(attacker_jwks.fetches(), 0, "jku/x5u must never be fetched");

    // A 1 MB token never reaches authentication: the HTTP layer refuses headers that large
    // (431) before reading them into a request, and the server carries on.
    let resp = s
        .post()
        .header(
            "authorization",
            format!("Bearer {}", "a".repeat(1024 * 1024)),
        )
        .header("content-type", "application/cloudevents+json")
        .body(event(ANY, json!({})).to_string())
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 431);
    }
    assert_eq!(
        send_as(&s, Some(&valid), &event(ANY, json!({})))
            .await
            .status,
        200
    );

    // Within the leeway (30 s) an expired token still passes.
    let mut c = good.clone();
    c["exp"] = json!(now() - 10);
    assert_eq!(
        send_as(&s, Some(&rsa.sign(&c)), &event(ANY, json!({})))
            .await
            .status,
        200
    );

    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"sluice_auth_failures_total{reason="algorithm_not_allowed"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn missing_credentials_get_401_with_a_bearer_challenge() {
    let ws = Workspace::new();
    let s = TestServer::start_ready(static_keys_config(&ws)).await;
    let resp = s
        .post()
        .header("content-type", "application/cloudevents+json")
        .body(event(ANY, json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        r#"Bearer realm="sluice""#
    );
    assert_eq!(Answer::from(resp).await.code(), "missing_credentials");

    let expired = {
        let mut c = claims("events:write:*");
        c["exp"] = json!(now() - 3600);
        Signer::new(Algorithm::HS256, Some("hs")).sign(&c)
    };
    let resp = s
        .post()
        .header("authorization", format!("Bearer {expired}"))
        .header("content-type", "application/cloudevents+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(challenge.contains("token_expired"), "{challenge}");
}

#[tokio::test]
async fn jwks_key_rotation_is_picked_up_without_restart() {
    let old = Signer::new(Algorithm::RS256, Some("k-old"));
    let new = Signer::rsa2(Algorithm::RS256, "k-new");
    let jwks = JwksServer::start(vec![old.jwk()]).await;
    let ws = Workspace::new();
    let mut c = with_jwt(ws.config());
    c.auth.jwks_urls = vec![jwks.url.clone()];
    let s = TestServer::start_ready(c).await;
    let body = event(ANY, json!({}));
    let good = claims("events:write:*");

    let seen = old.sign(&good);
    assert_eq!(send_as(&s, Some(&seen), &body).await.status, 200);
    let a = send_as(&s, Some(&new.sign(&good)), &body).await;
    assert_eq!((a.status, a.code()), (401, "unknown_key"));

    // The issuer rotates: the new key is published, the old one withdrawn.
    jwks.set_keys(vec![new.jwk()]);
    // The new kid is unknown until a refetch (at most one per jwks_min_refetch_interval).
    let rotated = new.sign(&good);
    eventually(
        "the rotated key to be accepted",
        Duration::from_secs(10),
        || async {
            let a = send_as(&s, Some(&rotated), &body).await;
            assert!(a.status == 200 || a.code() == "unknown_key", "{}", a.body);
            a.status == 200
        },
    )
    .await;
    let mut fresh = claims("events:write:*");
    fresh["jti"] = json!("another-token");
    let a = send_as(&s, Some(&old.sign(&fresh)), &body).await;
    assert_eq!((a.status, a.code()), (401, "unknown_key"));
    // A token verified before the rotation stays trusted until auth.token_cache_ttl (60 s).
    assert_eq!(send_as(&s, Some(&seen), &body).await.status, 200);
    assert!(s.metrics().await.contains("sluice_jwks_fetches_total"));
}

#[tokio::test]
async fn jwks_flood_of_unknown_kids_fetches_at_most_once_per_interval() {
    let known = Signer::new(Algorithm::ES256, Some("known"));
    let jwks = JwksServer::start(vec![known.jwk()]).await;
    let ws = Workspace::new();
    let mut c = with_jwt(ws.config());
    c.auth.jwks_urls = vec![jwks.url.clone()];
    c.auth.jwks_min_refetch_interval = HumanDuration(Duration::from_secs(60));
    let s = TestServer::start_ready(c).await;
    assert_eq!(jwks.fetches(), 1, "fetched once at start");

    let body = event(ANY, json!({}));
    let mut sends = Vec::new();
    for i in 0..200 {
        let token = Signer::new(Algorithm::ES256, Some(&format!("made-up-{i}")))
            .sign(&claims("events:write:*"));
        let (s, body) = (&s, &body);
        sends.push(async move { send_as(s, Some(&token), body).await });
    }
    for a in futures_util::future::join_all(sends).await {
        assert_eq!((a.status, a.code()), (401, "unknown_key"));
    }
    // The start-up fetch was less than the interval ago: no refetch may happen at all.
    assert_eq!(
        jwks.fetches(),
        1,
        "a flood of unknown kids must not hammer the IdP"
    );
    let token = known.sign(&claims("events:write:*"));
    assert_eq!(send_as(&s, Some(&token), &body).await.status, 200);
}

#[tokio::test]
async fn scopes_are_enforced_per_event_inside_one_batch() {
    let ws = Workspace::new();
    let s = TestServer::start_ready(static_keys_config(&ws)).await;
    let hs = Signer::new(Algorithm::HS256, Some("hs"));
    let only_any = hs.sign(&claims(&format!("openid events:write:{ANY}")));
    let batch = json!([
        event(ANY, json!({"x": 1})),
        event(STRICT, json!({"n": 1})),
        event(ANY, json!({"x": 2})),
    ]);
    let a = send_as(&s, Some(&only_any), &batch).await;
    assert_eq!(a.status, 207, "{}", a.body);
    assert_eq!(a.result(0)["status"], 200);
    assert_eq!(a.result(1)["status"], 403);
    assert_eq!(a.result(1)["error"]["code"], "type_not_allowed");
    assert_eq!(a.result(1)["error"]["pointer"], "/type");
    assert_eq!(a.result(2)["status"], 200);

    let a = send_as(
        &s,
        Some(&only_any),
        &json!([event(STRICT, json!({"n": 1}))]),
    )
    .await;
    assert_eq!(
        (a.status, a.body["rejected"].as_u64()),
        (403, Some(1)),
        "{}",
        a.body
    );

    // `scp` as an array works the same; scopes for other services are ignored.
    let mut c = claims("");
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["registry:read", "events:write:test.*"]);
    let a = send_as(&s, Some(&hs.sign(&c)), &batch).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // No write scope at all: refused before the body is read.
    let a = send_as(&s, Some(&hs.sign(&claims("registry:read"))), &batch).await;
    assert_eq!((a.status, a.code()), (403, "insufficient_scope"));
}

#[tokio::test]
async fn kafka_tenant_header_and_tenant_route_land_in_the_real_broker() {
    let brokers = brokers();
    let ws = Workspace::new();
    let ty = unique("it.auth.");
    ws.schema(&ty, 1, json!({}));
    let topic = format!("t.acme.{ty}");
    create_topic(&brokers, &topic, 1).await;
    let mut c = with_jwt(ws.kafka_config(&brokers));
    c.auth.keys = vec![static_key(Algorithm::ES256, "ec")];
    c.routes.default_topic = "t.{tenant}.{type}".into();
    let s = TestServer::start_ready(c).await;

    let token = Signer::new(Algorithm::ES256, Some("ec")).sign(&claims("events:write:it.auth.*"));
    let a = send_as(
        &s,
        Some(&token),
        &json!([{"type": ty, "id": "a1", "data": {"k": 1}}, {"type": ty, "id": "a2", "source": "/mine", "data": {}},
                {"type": ty, "id": "a3", "sluicetenant": "other", "data": {}}]),
    )
    .await;
    assert_eq!(a.status, 207, "{}", a.body);
    assert_eq!(
        a.result(2)["error"]["code"],
        "reserved_attribute",
        "a client cannot claim another tenant: {}",
        a.body
    );
    let records = consume(&brokers, &topic, 2, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 2, "only a1 and a2 land: {records:?}");
    for r in &records {
        assert_eq!(r.headers["sluice_tenant"], "acme");
    }
    let by_id = |id: &str| records.iter().find(|r| r.id() == id).unwrap();
    assert_eq!(by_id("a1").headers["ce_source"], "sluice://acme/user-1");
    assert_eq!(
        by_id("a2").headers["ce_source"],
        "/mine",
        "a source the client sent is kept"
    );

    // A tenant that could spell another's topic: `acme.x` + type `y` would be `t.acme.x.y`,
    // which is tenant `acme`'s topic for type `x.y`. Refused before anything is read.
    for tenant in ["acme.it", "acme/x", "acme x"] {
        let mut c = claims("events:write:it.auth.*");
        c["tenant"] = json!(tenant);
        let token = Signer::new(Algorithm::ES256, Some("ec")).sign(&c);
        let a = send_as(
            &s,
            Some(&token),
            &json!({"type": ty, "id": "a4", "data": {}}),
        )
        .await;
        assert_eq!(
            (a.status, a.code()),
            (403, "tenant_not_routable"),
            "{tenant}"
        );
    }
    let records = consume(&brokers, &topic, 2, Duration::from_secs(10)).await;
    assert_eq!(records.len(), 2, "nothing more landed: {records:?}");
}

#[tokio::test]
async fn api_keys_work_in_either_header_and_wrong_ones_are_refused() {
    let ws = Workspace::new();
    let (key, entry) = api_key_entry(KeyClass::Server, &["events:write:test.*"], &[]);
    let mut c = ws.config();
    c.auth.api_keys = vec![entry];
    let s = TestServer::start_ready(c).await;
    let body = event(ANY, json!({}));

    assert_eq!(send_as(&s, Some(&key), &body).await.status, 200);
    let resp = s
        .post()
        .header("x-api-key", &key)
        .header("content-type", "application/cloudevents+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let mut wrong = key.clone();
    wrong.replace_range(key.len() - 4.., "AAAA");
    let a = send_as(&s, Some(&wrong), &body).await;
    assert_eq!((a.status, a.code()), (401, "invalid_api_key"));
    let a = send_as(&s, Some("sk_0000000000000000_nope"), &body).await;
    assert_eq!((a.status, a.code()), (401, "invalid_api_key"));
    // A JWT when only API keys are configured.
    let jwt = Signer::new(Algorithm::HS256, Some("hs")).sign(&claims("events:write:*"));
    assert_eq!(send_as(&s, Some(&jwt), &body).await.status, 401);

    let secret = &key[20..];
    let metrics = s.metrics().await;
    assert!(!metrics.contains(secret), "the key must not reach /metrics");
}

/// An `auth.api_keys_file` with these entries, replaced whole by a rename as the kubelet
/// swaps a Secret volume's files.
fn write_keys_file(path: &std::path::Path, entries: &[&sluice::config::ApiKeyConfig]) {
    let mut toml = String::new();
    for e in entries {
        let class = match e.class {
            KeyClass::Server => "server",
            KeyClass::Browser => "browser",
        };
        toml += &format!(
            "[[api_keys]]\nid = {:?}\nhash = {:?}\ntenant = {:?}\nscopes = {:?}\nclass = {class:?}\norigins = {:?}\n\n",
            e.id, e.hash, e.tenant, e.scopes, e.origins
        );
    }
    replace_file(path, toml.as_bytes());
}

fn replace_file(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn api_keys_file_changes_apply_without_restart_and_a_bad_file_keeps_the_last_keys() {
    let ws = Workspace::new();
    let (old_key, old) = api_key_entry(KeyClass::Server, &["events:write:test.*"], &[]);
    let (new_key, new) = api_key_entry(
        KeyClass::Browser,
        &["events:write:test.*"],
        &["https://new.example"],
    );
    let path = ws.path().join("api-keys.toml");
    write_keys_file(&path, &[&old]);
    let mut c = ws.config();
    c.auth.api_keys_file = Some(path.clone());
    c.auth.api_keys_reload_interval = HumanDuration(Duration::from_millis(100));
    let s = TestServer::start_ready(c).await;
    let post = |key: &str| {
        s.post()
            .header("x-api-key", key)
            .header("origin", "https://new.example")
            .header("content-type", "application/cloudevents+json")
            .body(event(ANY, json!({})).to_string())
            .send()
    };
    let preflight = || {
        s.client
            .request(reqwest::Method::OPTIONS, format!("{}/v1/events", s.url))
            .header("origin", "https://new.example")
            .header("access-control-request-method", "POST")
            .send()
    };
    assert_eq!(post(&old_key).await.unwrap().status(), 200);
    let a = Answer::from(post(&new_key).await.unwrap()).await;
    assert_eq!((a.status, a.code()), (401, "invalid_api_key"));
    assert_eq!(preflight().await.unwrap().status(), 403);

    // Rotation: the new key is added and the old one revoked, in one Secret update.
    write_keys_file(&path, &[&new]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = Answer::from(post(&old_key).await.unwrap()).await;
        if a.status == 401 {
            assert_eq!(a.code(), "invalid_api_key");
            break;
        }
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revoked key still works"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = post(&new_key).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://new.example"
    );
    // The new browser key's origin is allowed in preflights too.
    assert_eq!(preflight().await.unwrap().status(), 204);

    // A file that does not load (a typo, a half-written copy), then none at all: the last
    // keys that loaded stay in use, and each failure is counted.
    let failed = r#"sluice_api_keys_reloads_total{result="error"}"#;
    let before = s.metric(failed).await;
    replace_file(&path, b"[[api_keys]]\nid = \"nope\"\n");
    s.wait_metric_delta(failed, before, 1.0, Duration::from_secs(10))
        .await;
    assert_eq!(post(&new_key).await.unwrap().status(), 200);
    assert_eq!(post(&old_key).await.unwrap().status(), 401);
    std::fs::remove_file(&path).unwrap();
    s.wait_metric_delta(failed, before, 2.0, Duration::from_secs(10))
        .await;
    assert_eq!(post(&new_key).await.unwrap().status(), 200);

    // Exact counts: the metrics registry is the process's, and no other test here uses a
    // keys file.
    let m = s.metrics().await;
    let value = |line_start: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{m}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(value("sluice_api_keys_reloads_total{result=\"ok\"}"), 1.0);
    // Once per distinct failure, not once per tick.
    assert_eq!(
        value("sluice_api_keys_reloads_total{result=\"error\"}"),
        2.0
    );
    assert_eq!(value("sluice_api_keys "), 1.0);
}

#[tokio::test]
async fn browser_keys_cors_preflight_and_origin_checks() {
    let ws = Workspace::new();
    let (key, entry) = api_key_entry(
        KeyClass::Browser,
        &["events:write:test.*"],
        &["https://shop.example"],
    );
    let mut c = ws.config();
    c.auth.api_keys = vec![entry];
    c.auth.cors.max_age = HumanDuration(Duration::from_secs(900));
    let s = TestServer::start_ready(c).await;
    let preflight = |origin: &str| {
        s.client
            .request(reqwest::Method::OPTIONS, format!("{}/v1/events", s.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, x-api-key")
            .send()
    };

    let resp = preflight("https://shop.example").await.unwrap();
    assert_eq!(resp.status(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    assert_eq!(h["access-control-allow-methods"], "POST");
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(
        allowed.contains("x-api-key") && allowed.contains("content-type"),
        "{allowed}"
    );
    assert_eq!(h["access-control-max-age"], "900");
    assert_eq!(h["vary"], "origin");

    let resp = preflight("https://evil.example").await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert_eq!(Answer::from(resp).await.code(), "origin_not_allowed");

    let post = |origin: Option<&str>| {
        let mut r = s
            .post()
            .header("x-api-key", &key)
            .header("content-type", "application/cloudevents+json")
            .body(event(ANY, json!({})).to_string());
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let resp = post(Some("https://shop.example")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("retry-after"));
    for origin in [Some("https://evil.example"), None] {
        let a = Answer::from(post(origin).await.unwrap()).await;
        assert_eq!(
            (a.status, a.code()),
            (403, "origin_not_allowed"),
            "{origin:?}"
        );
    }
    // Errors for an allowed origin stay readable by the page.
    let resp = s
        .post()
        .header("origin", "https://shop.example")
        .header("content-type", "application/cloudevents+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
}

#[tokio::test]
async fn issuer_and_audience_lists_accept_any_listed_value() {
    let ws = Workspace::new();
    let mut c = static_keys_config(&ws);
    c.auth.issuer = vec![ISSUER.into(), "https://other-idp.test".into()];
    c.auth.audience = vec!["x".into(), AUDIENCE.into()];
    let s = TestServer::start_ready(c).await;
    let hs = Signer::new(Algorithm::HS256, Some("hs"));
    let mut c = claims("events:write:*");
    c["iss"] = json!("https://other-idp.test");
    c["aud"] = json!(["unrelated", AUDIENCE]);
    assert_eq!(
        send_as(&s, Some(&hs.sign(&c)), &event(ANY, json!({})))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn jwks_unreachable_at_start_means_not_ready_until_it_loads() {
    let signer = Signer::new(Algorithm::RS256, Some("k1"));
    let jwks = JwksServer::start(vec![signer.jwk()]).await;
    jwks.set_down(true);
    let ws = Workspace::new();
    let mut c = with_jwt(ws.config());
    c.auth.jwks_urls = vec![jwks.url.clone()];
    let s = TestServer::start(c).await;
    assert_eq!(s.readyz().await, 503);
    let ready = s.get("/readyz").await;
    assert_eq!(ready.body["checks"]["auth"]["keys_loaded"], false);
    let token = signer.sign(&claims("events:write:*"));
    let a = send_as(&s, Some(&token), &event(ANY, json!({}))).await;
    assert_eq!((a.status, a.code()), (503, "auth_keys_unavailable"));
    assert!(a.retry_after.is_some());

    // The background retry (1 s, then doubling) picks the keys up once the IdP is back.
    jwks.set_down(false);
    s.wait_ready(true, Duration::from_secs(10)).await;
    assert_eq!(
        send_as(&s, Some(&token), &event(ANY, json!({})))
            .await
            .status,
        200
    );

    // Later outages keep the keys already loaded.
    jwks.set_down(true);
    // An unknown kid makes Sluice refetch (rate-limited), which now fails.
    let unknown = Signer::new(Algorithm::RS256, Some("k2")).sign(&claims("events:write:*"));
    let fetched = jwks.fetches();
    eventually(
        "a refetch from the IdP that is down",
        Duration::from_secs(10),
        || async {
            let a = send_as(&s, Some(&unknown), &event(ANY, json!({}))).await;
            assert_eq!(a.status, 401, "{}", a.body);
            jwks.fetches() > fetched
        },
    )
    .await;
    assert_eq!(
        send_as(&s, Some(&token), &event(ANY, json!({})))
            .await
            .status,
        200
    );
    assert_eq!(s.readyz().await, 200);
}

#[tokio::test]
async fn rate_limits_are_per_tenant_with_429_retry_after_and_ratelimit_headers() {
    let ws = Workspace::new();
    let (key_a, mut entry_a) = api_key_entry(KeyClass::Server, &["events:write:*"], &[]);
    entry_a.tenant = "small".into();
    let (key_b, entry_b) = api_key_entry(KeyClass::Server, &["events:write:*"], &[]);
    let (key_c, mut entry_c) = api_key_entry(KeyClass::Server, &["events:write:*"], &[]);
    entry_c.tenant = "octets".into();
    let mut c = ws.config();
    c.auth.api_keys = vec![entry_a, entry_b, entry_c];
    c.rate_limits.default.events_per_second = 1000;
    c.rate_limits.tenants = vec![
        sluice::config::TenantRateLimit {
            tenant: "small".into(),
            events_per_second: 5,
            bytes_per_second: sluice::config::ByteSize(0),
        },
        // A bytes budget only: the headers count bytes, and the policy says so.
        sluice::config::TenantRateLimit {
            tenant: "octets".into(),
            events_per_second: 0,
            bytes_per_second: sluice::config::ByteSize(1 << 20),
        },
    ];
    let s = TestServer::start_ready(c).await;
    let batch = |n: usize| {
        json!((0..n)
            .map(|i| event(ANY, json!({"i": i})))
            .collect::<Vec<_>>())
    };

    // Four events with an API key in `X-API-Key`; the headers are what this test reads.
    let four_with_key = |key: &str| {
        s.post()
            .header("x-api-key", key)
            .header("content-type", "application/cloudevents-batch+json")
            .body(batch(4).to_string())
            .send()
    };

    let first = four_with_key(&key_a).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.headers()["ratelimit-remaining"],
        "1",
        "the budget is shown on success too"
    );
    let resp = s
        .post()
        .header("authorization", format!("Bearer {key_a}"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(batch(4).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let h = resp.headers().clone();
    let a = Answer::from(resp).await;
    assert_eq!(a.code(), "rate_limited");
    assert!(a.retry_after.as_deref().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(h["ratelimit-limit"], "5");
    assert_eq!(h["ratelimit-remaining"], "1");
    assert!(h.contains_key("ratelimit-reset"));
    assert_eq!(h["ratelimit-policy"], "5;w=1", "an events budget, no unit");
    let bytes = four_with_key(&key_c).await.unwrap();
    assert_eq!(bytes.status(), 200);
    assert_eq!(bytes.headers()["ratelimit-limit"], "1048576");
    assert_eq!(
        bytes.headers()["ratelimit-policy"],
        "1048576;w=1;qu=\"content-bytes\""
    );
    // The other tenant (globex) has the default budget.
    assert_eq!(send_as(&s, Some(&key_b), &batch(100)).await.status, 200);
    // The bucket refills (5 events/s): the small tenant may send again within about a second.
    // A refused request takes nothing from the bucket, so polling does not delay the refill.
    eventually("the bucket to refill", Duration::from_secs(5), || async {
        let status = send_as(&s, Some(&key_a), &batch(4)).await.status;
        assert!(status == 200 || status == 429, "{status}");
        status == 200
    })
    .await;
}

/// This machine's address on its first non-loopback interface (the one a route out would use;
/// nothing is sent).
fn non_loopback_ip() -> std::net::IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    ["10.255.255.254:9", "8.8.8.8:9", "192.0.2.1:9"]
        .iter()
        .find_map(|to| {
            s.connect(to).ok()?;
            let ip = s.local_addr().ok()?.ip();
            (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
        })
        .expect("the protected-mode test needs a non-loopback IPv4 interface with a route")
}

#[tokio::test]
async fn no_key_source_serves_only_this_machine_until_disabled_explicitly() {
    let ws = Workspace::new();
    let mut c = ws.config();
    c.server.listen = "0.0.0.0:0".parse().unwrap();
    assert_eq!(c.auth.effective_mode(), sluice::config::AuthMode::Protected);
    let s = TestServer::start_ready(c).await;
    let ev = event(ANY, json!({"k": 1})).to_string();
    let remote = format!("http://{}:{}", non_loopback_ip(), s.addr.port());
    let post = |base: &str| {
        s.client
            .post(format!("{base}/v1/events"))
            .header("content-type", "application/cloudevents+json")
            .body(ev.clone())
            .send()
    };
    // From this machine: served, as the quick start needs.
    assert_eq!(
        post(&format!("http://127.0.0.1:{}", s.addr.port()))
            .await
            .unwrap()
            .status(),
        200
    );
    // From elsewhere: 401 with what to configure, for events and for the registry.
    let a = Answer::from(post(&remote).await.unwrap()).await;
    assert_eq!((a.status, a.code()), (401, "protected_mode"), "{}", a.body);
    let msg = a.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("auth.mode = \"disabled\"") && msg.contains("auth.jwks_urls"),
        "{msg}"
    );
    let r = s
        .client
        .put(format!("{remote}/config"))
        .header("content-type", "application/json")
        .body(r#"{"compatibility":"NONE"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_code"], 40101, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("protected_mode"),
        "{body}"
    );
    let r = s
        .client
        .get(format!("{remote}/subjects"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "registry reads too");
    // Probes and scrapes stay open: load balancers and Prometheus are elsewhere.
    let r = s
        .client
        .get(format!("{remote}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    drop(s);

    // Chosen explicitly, open to anyone.
    let mut c = ws.config();
    c.server.listen = "0.0.0.0:0".parse().unwrap();
    c.auth.mode = Some(sluice::config::AuthMode::Disabled);
    let s = TestServer::start_ready(c).await;
    let remote = format!("http://{}:{}", non_loopback_ip(), s.addr.port());
    let r = s
        .client
        .post(format!("{remote}/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .body(ev.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
