//! The one error shape clients see: `{"error": {"code": "...", "message": "..."}}` with a
//! stable `code` (listed in openapi.yaml and docs/api.md). Handlers build it themselves and
//! the message is sent as given, so it must be text a client may read; nothing here logs.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, sent as `Retry-After` (503 and 429 always carry one).
    pub retry_after: Option<u64>,
    /// (limit per second, remaining, seconds to reset), sent as `RateLimit-*` headers.
    pub rate_limit: Option<(u64, u64, u64)>,
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: ErrorBody<'a>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            rate_limit: None,
        }
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            message: message.into(),
            retry_after: Some(retry_after),
            rate_limit: None,
        }
    }

    /// A 500 whose cause goes to the log, not to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

/// `RateLimit-*` headers (draft-ietf-httpapi-ratelimit-headers) for a per-second budget.
pub fn rate_limit_headers(h: &mut axum::http::HeaderMap, limit: u64, remaining: u64, reset: u64) {
    h.insert("ratelimit-limit", HeaderValue::from(limit));
    h.insert("ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("ratelimit-reset", HeaderValue::from(reset));
    if let Ok(v) = HeaderValue::from_str(&format!("{limit};w=1")) {
        h.insert("ratelimit-policy", v);
    }
}

pub fn retry_after_header(secs: u64) -> (header::HeaderName, HeaderValue) {
    (header::RETRY_AFTER, HeaderValue::from(secs))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope {
            error: ErrorBody {
                code: self.code,
                message: &self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            let (k, v) = retry_after_header(secs);
            resp.headers_mut().insert(k, v);
        }
        if let Some((limit, remaining, reset)) = self.rate_limit {
            rate_limit_headers(resp.headers_mut(), limit, remaining, reset);
        }
        resp
    }
}
