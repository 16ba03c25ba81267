//! Probes and metrics. `/healthz` says the process serves HTTP (liveness: restart me if not);
//! `/readyz` says this replica should get traffic: events can be made durable (the sink is
//! reachable, or the spool has room), the authentication keys are loaded, and it is not
//! shutting down. The schema count is reported, not required. Neither does I/O: they read
//! state kept current in the background.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::App;
use crate::telemetry;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let sink = app.pipeline.sink.is_ready();
    let durable = app.sink_ready();
    let schemas = app.pipeline.validators.catalog().len();
    let shutting_down = app.is_shutting_down();
    let auth = app.auth.is_ready();
    let ready = durable && auth && !shutting_down;
    metrics::gauge!(telemetry::READY).set(if ready { 1.0 } else { 0.0 });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "sink": {"kind": app.pipeline.sink.kind(), "ready": sink, "reason": app.pipeline.sink.problem()},
            "spool": app.pipeline.spool.as_ref().map(|s| json!({
                "bytes": s.bytes(),
                "backlog_bytes": s.backlog_bytes(),
                "has_room": s.has_room(app.config.limits.max_body_bytes.0),
            })),
            "schemas": {"loaded": schemas},
            "auth": {"keys_loaded": auth},
            "shutting_down": shutting_down,
        }
    });
    (status, Json(body))
}

pub async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    app.auth.report_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
