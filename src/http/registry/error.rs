//! The Confluent-shaped answers: `{"error_code": 40401, "message": "..."}` for errors,
//! the registry media type for successes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::CONTENT_TYPE;
use crate::registry::store::StoreError;
use crate::registry::WorkError;

/// A Confluent-shaped error.
pub(super) struct SrError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl SrError {
    pub(super) fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        SrError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for SrError {
    fn into_response(self) -> Response {
        // Busy answers (503) are the registry protecting itself, not a fault to log.
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(code = self.code, error = %self.message, "registry request failed");
        }
        let body = json!({"error_code": self.code, "message": self.message});
        let mut resp = (self.status, body.to_string()).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// Every check slot stayed busy: try again.
pub(super) fn busy(e: WorkError) -> SrError {
    SrError::new(StatusCode::SERVICE_UNAVAILABLE, 50002, e.to_string())
}

impl From<StoreError> for SrError {
    fn from(e: StoreError) -> Self {
        let nf = StatusCode::NOT_FOUND;
        match &e {
            StoreError::SubjectNotFound(s) => {
                SrError::new(nf, 40401, format!("Subject '{s}' not found."))
            }
            StoreError::VersionNotFound(_, v) => {
                SrError::new(nf, 40402, format!("Version {v} not found."))
            }
            StoreError::SchemaNotFound => SrError::new(nf, 40403, "Schema not found"),
            StoreError::SubjectSoftDeleted(_) => SrError::new(nf, 40404, e.to_string()),
            StoreError::SubjectNotSoftDeleted(_) => SrError::new(nf, 40405, e.to_string()),
            StoreError::VersionSoftDeleted(..) => SrError::new(nf, 40406, e.to_string()),
            StoreError::VersionNotSoftDeleted(..) => SrError::new(nf, 40407, e.to_string()),
            StoreError::NoSubjectConfig(s) => SrError::new(
                nf,
                40408,
                format!("Subject '{s}' does not have subject-level compatibility configured"),
            ),
            StoreError::Incompatible(m) => SrError::new(
                StatusCode::CONFLICT,
                40901,
                format!(
                    "Schema being registered is incompatible with an earlier schema; details: [{}]",
                    m.join("; ")
                ),
            ),
            StoreError::Busy(m) => SrError::new(StatusCode::SERVICE_UNAVAILABLE, 50002, m.clone()),
            StoreError::Backend(m) => SrError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                50001,
                format!("Error in the backend data store: {m}"),
            ),
        }
    }
}

pub(super) fn ok(v: Value) -> Response {
    let mut resp = (StatusCode::OK, v.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

/// The raw schema text as a JSON body.
pub(super) fn raw(schema: String) -> Response {
    let mut resp = (StatusCode::OK, schema).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}
