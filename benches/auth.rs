//! The cost of authentication on the hot path: one `Authenticator::authenticate` call per
//! request, from the `Authorization` header to a `Principal`.
//!
//!     cargo bench --bench auth
//!
//! Keys are the test fixtures in `tests/it/fixtures/keys` (throwaway, test-only).

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sluice::auth::{generate_key, Authenticator};
use sluice::config::{ApiKeyConfig, AuthConfig, KeyClass, Secret, StaticKeyConfig};

const SECRET: &str = "bench-secret-bench-secret-bench-32";

fn fixture(name: &str) -> std::path::PathBuf {
    format!(
        "{}/tests/it/fixtures/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
    .into()
}

fn token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    let claims = json!({"iss": "https://idp.bench", "aud": "sluice", "sub": "user-1", "tenant": "acme",
                        "scope": "events:write:checkout.* events:write:app.*", "iat": now, "exp": now + 3600});
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

fn bearer(credential: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {credential}")).unwrap(),
    );
    h
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let api_key = generate_key(KeyClass::Server).unwrap();
    let mut config = AuthConfig {
        issuer: vec!["https://idp.bench".into()],
        audience: vec!["sluice".into()],
        ..AuthConfig::default()
    };
    config.keys = vec![
        StaticKeyConfig {
            kid: Some("hs".into()),
            algorithm: "HS256".into(),
            secret: Some(Secret::from(SECRET.to_string())),
            ..Default::default()
        },
        StaticKeyConfig {
            kid: Some("rs".into()),
            algorithm: "RS256".into(),
            pem_file: Some(fixture("rsa1.pub.pem")),
            ..Default::default()
        },
        StaticKeyConfig {
            kid: Some("es".into()),
            algorithm: "ES256".into(),
            pem_file: Some(fixture("ec256.pub.pem")),
            ..Default::default()
        },
    ];
    config.api_keys = vec![ApiKeyConfig {
        id: api_key.id.clone(),
        hash: api_key.hash.clone(),
        tenant: "acme".into(),
        scopes: vec!["events:write:*".into()],
        class: KeyClass::Server,
        origins: vec![],
        expires: None,
        name: None,
    }];
    let cached = Authenticator::from_config(&config).unwrap();
    config.token_cache_size = 0;
    let uncached = Authenticator::from_config(&config).unwrap();

    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa1.key.pem")).unwrap()).unwrap();
    let ec = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec256.key.pem")).unwrap()).unwrap();
    let cases = [
        (
            "hs256",
            bearer(&token(
                Algorithm::HS256,
                "hs",
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )),
        ),
        ("rs256", bearer(&token(Algorithm::RS256, "rs", &rsa))),
        ("es256", bearer(&token(Algorithm::ES256, "es", &ec))),
        ("api_key", bearer(&api_key.key)),
    ];
    // Every request verifies its signature (a client that mints a token per request).
    let mut group = c.benchmark_group("authenticate_uncached");
    for (name, headers) in &cases {
        let p = rt
            .block_on(uncached.authenticate(headers, None, None))
            .unwrap();
        assert!(p.is_some(), "{name}");
        group.bench_function(*name, |b| {
            b.iter(|| {
                rt.block_on(uncached.authenticate(black_box(headers), None, None))
                    .unwrap()
            })
        });
    }
    group.finish();
    // The usual case: a client reusing its token, found in the verified-token cache.
    let mut group = c.benchmark_group("authenticate_cached");
    for (name, headers) in &cases[..3] {
        group.bench_function(*name, |b| {
            b.iter(|| {
                rt.block_on(cached.authenticate(black_box(headers), None, None))
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
