//! Compatibility checks of a candidate schema against a subject's versions.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;

use super::config::level_for;
use super::error::{busy, ok, SrError};
use super::extract::{schema_body, subject_ok, version_ref, Body, Flags, SrPath};
use crate::http::App;
use crate::registry::compat::{self, Level};
use crate::registry::store::{StoreError, VersionRef};

pub(super) fn compat_answer(verdict: compat::Verdict, verbose: bool) -> Response {
    let mut body = json!({"is_compatible": verdict.is_compatible()});
    if verbose {
        body["messages"] = json!(verdict.messages());
    }
    ok(body)
}

/// Against one version: the subject's level, without the transitive part.
pub(super) async fn check_version(
    State(app): State<Arc<App>>,
    SrPath((subject, v)): SrPath<(String, String)>,
    f: Flags,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, SrError> {
    let subject = subject_ok(&subject)?;
    let v = version_ref(&v)?;
    let (schema, _) = schema_body(&app, &headers, &body).await?;
    let old = match app.registry.version(subject, v, false).await {
        Ok(old) => old,
        Err(StoreError::SubjectNotFound(_)) | Err(StoreError::VersionNotFound(..))
            if v == VersionRef::Latest =>
        {
            return Ok(compat_answer(compat::Verdict::Compatible, f.verbose));
        }
        Err(StoreError::SubjectNotFound(s)) => {
            return Err(StoreError::VersionNotFound(s, "?".into()).into())
        }
        Err(e) => return Err(e.into()),
    };
    let level = match level_for(&app, subject).await? {
        Level::BackwardTransitive => Level::Backward,
        Level::ForwardTransitive => Level::Forward,
        Level::FullTransitive => Level::Full,
        l => l,
    };
    let verdict = app
        .schema_work
        .check(level, schema, vec![old.schema])
        .await
        .map_err(busy)?;
    Ok(compat_answer(verdict, f.verbose))
}

/// Against every live version, as registration would check.
pub(super) async fn check_all(
    State(app): State<Arc<App>>,
    SrPath(subject): SrPath<String>,
    f: Flags,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, SrError> {
    let subject = subject_ok(&subject)?;
    let (schema, _) = schema_body(&app, &headers, &body).await?;
    let mut previous = Vec::new();
    if let Ok(versions) = app.registry.versions(subject, false).await {
        for n in versions {
            let v = app
                .registry
                .version(subject, VersionRef::Number(n), false)
                .await?;
            previous.push(v.schema);
        }
    }
    let level = level_for(&app, subject).await?;
    let verdict = app
        .schema_work
        .check(level, schema, previous)
        .await
        .map_err(busy)?;
    Ok(compat_answer(verdict, f.verbose))
}
