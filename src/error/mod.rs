//! The one error shape clients see: `{"error": {"code": "...", "message": "..."}}` with a
//! stable [`Code`] from [`codes`], the one list of them (checked against openapi.yaml and
//! docs/api.md). Each module's own error enum names its code; the message is sent as given,
//! so it must be text a client may read. Causes a client must not see (a bug, a broker's
//! words) are logged with the request's id instead: see [`ApiError::internal`].

pub mod codes;

pub use codes::Code;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    /// Seconds, sent as `Retry-After` (503 and 429 always carry one).
    pub retry_after: Option<u64>,
    /// (limit per second, remaining, seconds to reset), sent as `RateLimit-*` headers.
    /// `RateLimit-*`: limit, remaining, reset, and whether they count bytes.
    pub rate_limit: Option<(u64, u64, u64, bool)>,
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub code: Code,
    pub message: &'a str,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: ErrorBody<'a>,
}

impl ApiError {
    /// An answer with `code`'s status.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            status: code.status_code(),
            code,
            message: message.into(),
            retry_after: None,
            rate_limit: None,
        }
    }

    /// A 503 (or 429) that tells the client when to come back.
    pub fn unavailable(code: Code, message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(code, message)
        }
    }

    /// A 500 whose cause goes to the log, not to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        // Logged inside the request's span, so the line carries the id the client was sent.
        tracing::error!(%cause, "internal error");
        ApiError::new(
            Code::Internal,
            "internal error; the cause is in the server log under this request's x-request-id",
        )
    }
}

/// A module's own error that a client is told about: it names its [`Code`] (and with it the
/// status), and says what the client may read. Every such error becomes the answer through
/// the one `From` below, so the shape, status and code cannot drift apart per call site.
pub trait ClientError: std::error::Error {
    fn code(&self) -> Code;

    /// The text sent. By default the error's own words; an error whose words carry causes a
    /// client must not see (a broker's text) says something else, and whoever handles it logs
    /// the cause.
    fn client_message(&self) -> String {
        self.to_string()
    }
}

impl<E: ClientError> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError::new(e.code(), e.client_message())
    }
}

/// `RateLimit-*` headers (draft-ietf-httpapi-ratelimit-headers) for a per-second budget of
/// events, or of body bytes (`in_bytes`), which the policy says with the draft's quota-unit
/// parameter so that a client does not pace events by a count of bytes.
pub fn rate_limit_headers(
    h: &mut axum::http::HeaderMap,
    limit: u64,
    remaining: u64,
    reset: u64,
    in_bytes: bool,
) {
    h.insert("ratelimit-limit", HeaderValue::from(limit));
    h.insert("ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("ratelimit-reset", HeaderValue::from(reset));
    let unit = if in_bytes {
        ";qu=\"content-bytes\""
    } else {
        ""
    };
    if let Ok(v) = HeaderValue::from_str(&format!("{limit};w=1{unit}")) {
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
        if let Some((limit, remaining, reset, in_bytes)) = self.rate_limit {
            rate_limit_headers(resp.headers_mut(), limit, remaining, reset, in_bytes);
        }
        resp
    }
}
