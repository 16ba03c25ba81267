//! Compatibility levels: the global one and per subject.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::error::{ok, SrError};
use super::extract::{json_content_type, subject_ok, Body, Flags, SrPath};
use crate::http::App;
use crate::registry::compat::Level;
use crate::registry::store::StoreError;

#[derive(Deserialize)]
pub(super) struct ConfigRequest {
    compatibility: String,
}

pub(super) fn level_body(headers: &HeaderMap, body: &Bytes) -> Result<Level, SrError> {
    json_content_type(headers)?;
    let bad = || {
        SrError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            "Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive",
        )
    };
    let req: ConfigRequest = serde_json::from_slice(body).map_err(|_| bad())?;
    Level::parse(&req.compatibility.to_ascii_uppercase()).ok_or_else(bad)
}

pub(super) async fn global(State(app): State<Arc<App>>) -> Result<Response, SrError> {
    let level = app
        .registry
        .config(None)
        .await?
        .unwrap_or(crate::registry::store::DEFAULT_LEVEL);
    Ok(ok(json!({"compatibilityLevel": level.as_str()})))
}

pub(super) async fn set_global(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, SrError> {
    let level = level_body(&headers, &body)?;
    app.registry.set_config(None, level).await?;
    Ok(ok(json!({"compatibility": level.as_str()})))
}

pub(super) async fn delete_global(State(app): State<Arc<App>>) -> Result<Response, SrError> {
    let old = app
        .registry
        .config(None)
        .await?
        .unwrap_or(crate::registry::store::DEFAULT_LEVEL);
    app.registry
        .set_config(None, crate::registry::store::DEFAULT_LEVEL)
        .await?;
    Ok(ok(json!({"compatibilityLevel": old.as_str()})))
}

pub(super) async fn subject(
    State(app): State<Arc<App>>,
    SrPath(subject): SrPath<String>,
    f: Flags,
) -> Result<Response, SrError> {
    let subject = subject_ok(&subject)?;
    let level = match app.registry.config(Some(subject)).await? {
        Some(l) => l,
        None if f.default_to_global => app
            .registry
            .config(None)
            .await?
            .unwrap_or(crate::registry::store::DEFAULT_LEVEL),
        None => return Err(StoreError::NoSubjectConfig(subject.into()).into()),
    };
    Ok(ok(json!({"compatibilityLevel": level.as_str()})))
}

pub(super) async fn set_subject(
    State(app): State<Arc<App>>,
    SrPath(subject): SrPath<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, SrError> {
    let subject = subject_ok(&subject)?;
    let level = level_body(&headers, &body)?;
    app.registry.set_config(Some(subject), level).await?;
    Ok(ok(json!({"compatibility": level.as_str()})))
}

pub(super) async fn delete_subject(
    State(app): State<Arc<App>>,
    SrPath(subject): SrPath<String>,
) -> Result<Response, SrError> {
    let subject = subject_ok(&subject)?;
    match app.registry.delete_config(subject).await {
        Ok(old) => Ok(ok(json!({"compatibilityLevel": old.as_str()}))),
        // Confluent answers 40401 here, not 40408.
        Err(StoreError::NoSubjectConfig(s)) => Err(StoreError::SubjectNotFound(s).into()),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn level_for(app: &App, subject: &str) -> Result<Level, SrError> {
    Ok(match app.registry.config(Some(subject)).await? {
        Some(l) => l,
        None => app
            .registry
            .config(None)
            .await?
            .unwrap_or(crate::registry::store::DEFAULT_LEVEL),
    })
}
