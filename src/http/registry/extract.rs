//! Reading requests: the body within its limits, query flags, path parameters, subject
//! names, version references and schema bodies.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::error::{busy, SrError};
use crate::http::App;
use crate::registry::store::{canonical, VersionRef};
use crate::registry::WorkError;

/// In characters (the spec's maxLength). Confluent's limit is of the same order; event types are much shorter.
pub(super) const MAX_SUBJECT_LEN: usize = 255;

/// A request body, read up to `registry.max_schema_bytes` within `server.body_timeout`;
/// past either, a Confluent-shaped 413 or 408.
pub(super) struct Body(pub(super) Bytes);

impl axum::extract::FromRequest<Arc<App>> for Body {
    type Rejection = SrError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, SrError> {
        let timeout = app.config.server.body_timeout.0;
        let read = tokio::time::timeout(timeout, Bytes::from_request(req, app));
        let Ok(read) = read.await else {
            return Err(SrError::new(
                StatusCode::REQUEST_TIMEOUT,
                40801,
                format!("the body was not received within server.body_timeout ({timeout:?})"),
            ));
        };
        read.map(Body).map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                SrError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    41301,
                    "the request body is larger than registry.max_schema_bytes",
                )
            } else {
                SrError::new(e.status(), 40001, e.body_text())
            }
        })
    }
}

/// The query flags of the registry API. Booleans are `true` or `false` in any case
/// (Confluent's clients send `True`/`False`); anything else, or a flag given twice, is a 400
/// rather than a silent `false` (a `?permanent=yes` must not quietly soft-delete). Parameters
/// Sluice does not use (Confluent's `normalize`, `format`, ...) are ignored.
#[derive(Default)]
pub(super) struct Flags {
    pub(super) deleted: bool,
    pub(super) deleted_only: bool,
    pub(super) permanent: bool,
    pub(super) verbose: bool,
    pub(super) default_to_global: bool,
    pub(super) subject_prefix: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Flags {
    type Rejection = SrError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, SrError> {
        let bad = |m: String| SrError::new(StatusCode::BAD_REQUEST, 400, m);
        let mut f = Flags::default();
        let mut seen: Vec<&'static str> = Vec::new();
        let query = parts.uri.query().unwrap_or("");
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let (name, slot): (&'static str, Option<&mut bool>) = match &*k {
                "deleted" => ("deleted", Some(&mut f.deleted)),
                "deletedOnly" => ("deletedOnly", Some(&mut f.deleted_only)),
                "permanent" => ("permanent", Some(&mut f.permanent)),
                "verbose" => ("verbose", Some(&mut f.verbose)),
                "defaultToGlobal" => ("defaultToGlobal", Some(&mut f.default_to_global)),
                "subjectPrefix" => ("subjectPrefix", None),
                _ => continue,
            };
            if seen.contains(&name) {
                return Err(bad(format!(
                    "query parameter {name} is given more than once"
                )));
            }
            seen.push(name);
            match slot {
                Some(b) if v.eq_ignore_ascii_case("true") => *b = true,
                Some(b) if v.eq_ignore_ascii_case("false") => *b = false,
                Some(_) => {
                    return Err(bad(format!("query parameter {name} must be true or false")))
                }
                None => f.subject_prefix = Some(v.into_owned()),
            }
        }
        Ok(f)
    }
}

/// `Path`, with a path that does not decode (invalid percent-encoding or UTF-8) answered in
/// Confluent's error body instead of axum's plain-text rejection.
pub(super) struct SrPath<T>(pub(super) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for SrPath<T> {
    type Rejection = SrError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, SrError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(SrPath(t)),
            Err(e) => Err(SrError::new(StatusCode::BAD_REQUEST, 400, e.body_text())),
        }
    }
}

pub(super) fn subject_ok(s: &str) -> Result<&str, SrError> {
    if s.is_empty() || s.chars().count() > MAX_SUBJECT_LEN || s.chars().any(char::is_control) {
        return Err(SrError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42208,
            "Invalid subject name",
        ));
    }
    Ok(s)
}

pub(super) fn version_ref(v: &str) -> Result<VersionRef, SrError> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("latest") || v == "-1" {
        return Ok(VersionRef::Latest);
    }
    match v.parse::<i64>() {
        Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => Ok(VersionRef::Number(n as u32)),
        _ => Err(SrError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
            format!("The specified version '{v}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""),
        )),
    }
}

#[derive(Deserialize)]
pub(super) struct SchemaRequest {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

/// Every body the registry reads must say it is JSON (Confluent's media types, or
/// `application/octet-stream`, which Confluent also takes). A body without a Content-Type, or
/// with `text/plain`, is what a page on any other site can send with `fetch(..., {mode:
/// "no-cors"})` without the browser asking first (a CORS "simple request"): accepted, a page a
/// developer happens to visit could register `{}` for a type (no more validation), delete
/// subjects or set compatibility to NONE.
pub(super) fn json_content_type(headers: &HeaderMap) -> Result<(), SrError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if matches!(
        ct.as_str(),
        "application/vnd.schemaregistry.v1+json"
            | "application/vnd.schemaregistry+json"
            | "application/json"
            | "application/octet-stream"
    ) {
        return Ok(());
    }
    let what = if ct.is_empty() {
        "a body without a Content-Type is not accepted".to_string()
    } else {
        format!("Content-Type {ct} is not accepted")
    };
    Err(SrError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        415,
        format!("{what}: send application/vnd.schemaregistry.v1+json or application/json"),
    ))
}

/// The body of register, lookup and compatibility calls: a JSON Schema, compiled to make sure
/// it is one, as (parsed, canonical text).
pub(super) async fn schema_body(
    app: &App,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Arc<Value>, String), SrError> {
    json_content_type(headers)?;
    let invalid = |m: String| SrError::new(StatusCode::UNPROCESSABLE_ENTITY, 42201, m);
    let req: SchemaRequest = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body is not a schema request ({{\"schema\": \"...\", \"schemaType\": \"JSON\"}}): {e}")))?;
    match req.schema_type.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("JSON") => {}
        Some(t) => return Err(invalid(format!("Invalid schema type {t}: Sluice stores JSON Schema only"))),
        // Confluent reads a missing type as AVRO.
        None => return Err(invalid("schemaType is missing (Confluent's default is AVRO); Sluice stores JSON Schema only: send \"schemaType\": \"JSON\"".into())),
    }
    if !req.references.is_empty() {
        return Err(invalid(
            "schema references are not supported; inline the referenced definitions under $defs"
                .into(),
        ));
    }
    let schema: Value = serde_json::from_str(&req.schema).map_err(|e| {
        invalid(format!(
            "Invalid schema of type JSON, details: not JSON: {e}"
        ))
    })?;
    let schema = Arc::new(schema);
    match app.schema_work.compile(schema.clone()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(invalid(format!(
                "Invalid schema of type JSON, details: {e}"
            )))
        }
        Err(e @ WorkError::TimedOut(_)) => {
            return Err(invalid(format!(
                "Invalid schema of type JSON, details: {e}"
            )))
        }
        Err(e @ WorkError::Busy) => return Err(busy(e)),
    }
    let text = canonical(&schema);
    Ok((schema, text))
}

pub(super) fn schema_id(id: &str) -> Result<u32, SrError> {
    id.parse::<u32>()
        .ok()
        .filter(|n| *n > 0 && *n <= i32::MAX as u32)
        .ok_or_else(|| {
            SrError::new(
                StatusCode::NOT_FOUND,
                40403,
                format!("Schema {id} not found"),
            )
        })
}
