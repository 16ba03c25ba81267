//! Schemas by their global id, and the schema types this registry stores.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};

use super::error::{ok, raw, SrError};
use super::extract::{schema_id, SrPath};
use crate::http::App;

pub(super) async fn by_id(
    State(app): State<Arc<App>>,
    SrPath(id): SrPath<String>,
) -> Result<Response, SrError> {
    let (ty, schema) = app.registry.schema_by_id(schema_id(&id)?).await?;
    Ok(ok(json!({"schema": schema, "schemaType": ty})))
}

pub(super) async fn raw_by_id(
    State(app): State<Arc<App>>,
    SrPath(id): SrPath<String>,
) -> Result<Response, SrError> {
    let (_, schema) = app.registry.schema_by_id(schema_id(&id)?).await?;
    Ok(raw(schema))
}

pub(super) async fn versions(
    State(app): State<Arc<App>>,
    SrPath(id): SrPath<String>,
) -> Result<Response, SrError> {
    let v = app.registry.id_versions(schema_id(&id)?).await?;
    Ok(ok(Value::Array(
        v.into_iter()
            .map(|(s, n)| json!({"subject": s, "version": n}))
            .collect(),
    )))
}

pub(super) async fn types() -> Response {
    ok(json!(["JSON"]))
}
