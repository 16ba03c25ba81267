//! Credentials as clients send them: any bytes after `Bearer ` (or in `X-API-Key`) against
//! HS256, RS256 and ES256 keys: accepted only when they verify, refused with a reason
//! otherwise, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice::auth::Authenticator;
use sluice::config::{AuthConfig, Secret, StaticKeyConfig};

fn auth() -> &'static (Authenticator, tokio::runtime::Runtime) {
    static AUTH: OnceLock<(Authenticator, tokio::runtime::Runtime)> = OnceLock::new();
    AUTH.get_or_init(|| {
        let key = |alg: &str| StaticKeyConfig {
            kid: Some(alg.to_lowercase()),
            algorithm: alg.into(),
            ..Default::default()
        };
        let config = AuthConfig {
            keys: vec![
                StaticKeyConfig {
                    secret: Some(Secret::from("fuzz-secret-fuzz-secret-fuzz-sec".to_string())),
                    ..key("HS256")
                },
                StaticKeyConfig {
                    pem: Some(include_str!("../../tests/it/fixtures/keys/rsa1.pub.pem").into()),
                    ..key("RS256")
                },
                StaticKeyConfig {
                    pem: Some(include_str!("../../tests/it/fixtures/keys/ec256.pub.pem").into()),
                    ..key("ES256")
                },
            ],
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (Authenticator::from_config(&config).unwrap(), rt)
    })
}

fuzz_target!(|data: &[u8]| {
    let (auth, rt) = auth();
    let text = String::from_utf8_lossy(data);
    let mut headers = axum::http::HeaderMap::new();
    let (name, value) = match text.strip_prefix('k') {
        Some(key) => ("x-api-key", key.to_string()),
        None => ("authorization", format!("Bearer {text}")),
    };
    let Ok(value) = axum::http::HeaderValue::from_str(&value) else {
        return;
    };
    headers.insert(name, value);
    let _ = rt.block_on(auth.authenticate_any(&headers, None));
});
