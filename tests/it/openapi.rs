//! openapi.yaml: valid OpenAPI 3.1 (openapi-spec-validator), served at /openapi.yaml as is, and
//! every path it lists is routed by the server (not our `not_found` fallback).

use std::process::Command;

use serde_json::Value;

use crate::support::{TestServer, Workspace};

const SPEC: &str = include_str!("../../openapi.yaml");

/// Validates the spec with openapi-spec-validator and returns its paths and methods.
fn validate_and_list() -> Vec<(String, Vec<String>)> {
    let python = std::env::var("SLUICE_TEST_PYTHON")
        .expect("run with scripts/test, which sets SLUICE_TEST_PYTHON (a virtualenv with openapi-spec-validator)");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.yaml");
    let out = Command::new(python)
        .arg("-c")
        .arg(
            r#"
import json, sys, yaml
from openapi_spec_validator import validate
spec = yaml.safe_load(open(sys.argv[1]))
validate(spec)
methods = {"get", "put", "post", "delete", "options", "patch", "head"}
print(json.dumps([[p, sorted(m for m in ops if m in methods)] for p, ops in spec["paths"].items()]))
"#,
        )
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi.yaml is not valid OpenAPI: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn openapi_is_valid_served_and_every_path_is_routed() {
    let paths = validate_and_list();
    assert!(paths.len() >= 15, "{paths:?}");
    let s = TestServer::start_ready(Workspace::new().config()).await;
    let r = s
        .client
        .get(format!("{}/openapi.yaml", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/yaml");
    assert_eq!(r.text().await.unwrap(), SPEC);

    for (path, methods) in paths {
        let url = format!(
            "{}{}",
            s.url,
            path.replace("{subject}", "no-such-subject")
                .replace("{version}", "1")
                .replace("{id}", "987654")
        );
        for m in methods {
            let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let resp = s
                .client
                .request(method, &url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(
                !(status == 404 && body["error"]["code"] == "not_found"
                    || status == 405 && body["error"]["code"] == "method_not_allowed"),
                "{m} {path} is in openapi.yaml but not routed: {status} {body}"
            );
        }
    }
}
