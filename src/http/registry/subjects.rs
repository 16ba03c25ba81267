//! Subjects (event types) and their versions: list, register, look up, read, delete.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use super::error::{ok, raw, SrError};
use super::extract::{schema_body, subject_ok, version_ref, Body, Flags, SrPath};
use super::reload;
use crate::http::App;
use crate::registry::store::SubjectVersion;

pub(super) fn version_json(v: &SubjectVersion) -> Value {
    json!({"subject": v.subject, "version": v.version, "id": v.id, "schemaType": v.schema_type, "schema": v.schema})
}

pub(super) async fn list(State(app): State<Arc<App>>, f: Flags) -> Result<Response, SrError> {
    let only = f.deleted_only;
    let mut all = app.registry.subjects(f.deleted || only).await?;
    if only {
        let live = app.registry.subjects(false).await?;
        all.retain(|s| !live.contains(s));
    }
    if let Some(p) = &f.subject_prefix {
        all.retain(|s| s.starts_with(p.as_str()));
    }
    Ok(ok(json!(all)))
}

pub(super) async fn versions(
    State(app): State<Arc<App>>,
    SrPath(subject): SrPath<String>,
    f: Flags,
) -> Result<Response, SrError> {
    Ok(ok(json!(
        app.registry
            .versions(subject_ok(&subject)?, f.deleted)
            .await?
    )))
}

pub(super) async fn register(
    State(app): State<Arc<App>>,
    SrPath(subject): SrPath<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, SrError> {
    let subject = subject_ok(&subject)?;
    let (schema, text) = schema_body(&app, &headers, &body).await?;
    let r = app
        .schema_work
        .register(&*app.registry, subject, schema, &text)
        .await?;
    if !r.existed {
        tracing::info!(subject, version = r.version, id = r.id, "schema registered");
        reload(&app).await;
    }
    Ok(ok(
        json!({"id": r.id, "version": r.version, "schemaType": "JSON"}),
    ))
}

pub(super) async fn version(
    State(app): State<Arc<App>>,
    SrPath((subject, v)): SrPath<(String, String)>,
    f: Flags,
) -> Result<Response, SrError> {
    Ok(ok(version_json(
        &find(&app, &subject, &v, f.deleted).await?,
    )))
}

pub(super) async fn version_schema(
    State(app): State<Arc<App>>,
    SrPath((subject, v)): SrPath<(String, String)>,
    f: Flags,
) -> Result<Response, SrError> {
    Ok(raw(find(&app, &subject, &v, f.deleted).await?.schema))
}

/// One version of a subject, by number or `latest`, as the path names them.
async fn find(app: &App, subject: &str, v: &str, deleted: bool) -> Result<SubjectVersion, SrError> {
    Ok(app
        .registry
        .version(subject_ok(subject)?, version_ref(v)?, deleted)
        .await?)
}

pub(super) async fn lookup(
    State(app): State<Arc<App>>,
    SrPath(subject): SrPath<String>,
    f: Flags,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, SrError> {
    let subject = subject_ok(&subject)?;
    let (_, text) = schema_body(&app, &headers, &body).await?;
    Ok(ok(version_json(
        &app.registry.lookup(subject, &text, f.deleted).await?,
    )))
}

pub(super) async fn delete_subject(
    State(app): State<Arc<App>>,
    SrPath(subject): SrPath<String>,
    f: Flags,
) -> Result<Response, SrError> {
    let deleted = app
        .registry
        .delete_subject(subject_ok(&subject)?, f.permanent)
        .await?;
    reload(&app).await;
    Ok(ok(json!(deleted)))
}

pub(super) async fn delete_version(
    State(app): State<Arc<App>>,
    SrPath((subject, v)): SrPath<(String, String)>,
    f: Flags,
) -> Result<Response, SrError> {
    let n = app
        .registry
        .delete_version(subject_ok(&subject)?, version_ref(&v)?, f.permanent)
        .await?;
    reload(&app).await;
    Ok(ok(json!(n)))
}
