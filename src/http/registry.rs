//! The schema registry API, compatible with Confluent Schema Registry for `schemaType: JSON`,
//! so that its clients and tools work unchanged. Errors use Confluent's body
//! (`{"error_code": 40401, "message": "..."}`) and codes. Subjects are event types.
//!
//! Writes reload this replica's validators before answering; other replicas follow through
//! the store's epoch. Authentication: writes need `registry:write`; reads need
//! `registry:read` unless `registry.open_reads` is set.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{json, Value};

use super::App;
use crate::registry::compat::{self, Level};
use crate::registry::store::{canonical, StoreError, VersionRef};
use crate::registry::WorkError;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// In characters (the spec's maxLength). Confluent's limit is of the same order; event types are much shorter.
const MAX_SUBJECT_LEN: usize = 255;

pub fn routes(app: Arc<App>) -> axum::Router<Arc<App>> {
    axum::Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(id_versions))
        .route("/schemas/types", get(types))
        .route(
            "/config",
            get(global_config)
                .put(set_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(set_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_version),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_all),
        )
        // Request bodies (schemas) are bounded before they are read into memory.
        .layer(DefaultBodyLimit::max(
            usize::try_from(app.config.registry.max_schema_bytes.0).unwrap_or(usize::MAX),
        ))
        // Credentials and scopes before any handler runs.
        .route_layer(middleware::from_fn_with_state(app, authorize))
}

/// A request body, read up to `registry.max_schema_bytes` within `server.body_timeout`;
/// past either, a Confluent-shaped 413 or 408.
pub struct Body(Bytes);

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

/// A Confluent-shaped error.
pub struct SrError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl SrError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
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
fn busy(e: WorkError) -> SrError {
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

fn ok(v: Value) -> Response {
    let mut resp = (StatusCode::OK, v.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

/// An authentication refusal in Confluent's shape (`error_code` = status * 100 + 1).
fn auth_refusal(e: crate::auth::AuthError) -> Response {
    let status = e.status();
    let code = u32::from(status.as_u16()) * 100 + 1;
    SrError::new(status, code, format!("{} ({})", e, e.code())).into_response()
}

/// Reads need `registry:read` (unless open), writes `registry:write`. Lookups and
/// compatibility checks are POSTs but only read.
async fn authorize(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    match app.auth.open_to(crate::auth::peer_ip(&req)) {
        Ok(true) => return next.run(req).await,
        Ok(false) => {}
        Err(e) => return auth_refusal(e),
    }
    let path = req.uri().path();
    let read = req.method() == Method::GET
        || path.starts_with("/compatibility/")
        || (req.method() == Method::POST && path.matches('/').count() == 2);
    if read && app.config.registry.open_reads {
        return next.run(req).await;
    }
    let client = crate::auth::client_identity(&req);
    let principal = match app
        .auth
        .authenticate_any(req.headers(), client.as_deref())
        .await
    {
        Ok(p) => p,
        Err(e) => return auth_refusal(e),
    };
    let allowed = if read {
        principal.scopes.registry_read || principal.scopes.registry_write
    } else {
        principal.scopes.registry_write
    };
    if !allowed {
        let need = if read {
            "registry:read"
        } else {
            "registry:write"
        };
        return SrError::new(
            StatusCode::FORBIDDEN,
            40301,
            format!("the credentials lack the {need} scope"),
        )
        .into_response();
    }
    next.run(req).await
}

/// The query flags of the registry API. Booleans are `true` or `false` in any case
/// (Confluent's clients send `True`/`False`); anything else, or a flag given twice, is a 400
/// rather than a silent `false` (a `?permanent=yes` must not quietly soft-delete). Parameters
/// Sluice does not use (Confluent's `normalize`, `format`, ...) are ignored.
#[derive(Default)]
struct Flags {
    deleted: bool,
    deleted_only: bool,
    permanent: bool,
    verbose: bool,
    default_to_global: bool,
    subject_prefix: Option<String>,
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
struct SrPath<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for SrPath<T> {
    type Rejection = SrError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, SrError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(SrPath(t)),
            Err(e) => Err(SrError::new(StatusCode::BAD_REQUEST, 400, e.body_text())),
        }
    }
}

fn subject_ok(s: &str) -> Result<&str, SrError> {
    if s.is_empty() || s.chars().count() > MAX_SUBJECT_LEN || s.chars().any(char::is_control) {
        return Err(SrError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42208,
            "Invalid subject name",
        ));
    }
    Ok(s)
}

fn version_ref(v: &str) -> Result<VersionRef, SrError> {
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
struct SchemaRequest {
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
fn json_content_type(headers: &HeaderMap) -> Result<(), SrError> {
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
async fn schema_body(
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

fn version_json(v: &crate::registry::store::SubjectVersion) -> Value {
    json!({"subject": v.subject, "version": v.version, "id": v.id, "schemaType": v.schema_type, "schema": v.schema})
}

/// The raw schema text as a JSON body.
fn raw(schema: String) -> Response {
    let mut resp = (StatusCode::OK, schema).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

async fn reload(app: &App) {
    if let Err(e) = app.pipeline.validators.reload().await {
        tracing::error!(error = %e, "registry changed but reloading the validators failed");
    }
}

async fn subjects(State(app): State<Arc<App>>, f: Flags) -> Result<Response, SrError> {
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

async fn versions(
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

async fn register(
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

async fn version(
    State(app): State<Arc<App>>,
    SrPath((subject, v)): SrPath<(String, String)>,
    f: Flags,
) -> Result<Response, SrError> {
    let v = app
        .registry
        .version(subject_ok(&subject)?, version_ref(&v)?, f.deleted)
        .await?;
    Ok(ok(version_json(&v)))
}

async fn version_schema(
    State(app): State<Arc<App>>,
    SrPath((subject, v)): SrPath<(String, String)>,
    f: Flags,
) -> Result<Response, SrError> {
    let v = app
        .registry
        .version(subject_ok(&subject)?, version_ref(&v)?, f.deleted)
        .await?;
    Ok(raw(v.schema))
}

async fn lookup(
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

async fn delete_subject(
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

async fn delete_version(
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

fn schema_id(id: &str) -> Result<u32, SrError> {
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

async fn schema_by_id(
    State(app): State<Arc<App>>,
    SrPath(id): SrPath<String>,
) -> Result<Response, SrError> {
    let (ty, schema) = app.registry.schema_by_id(schema_id(&id)?).await?;
    Ok(ok(json!({"schema": schema, "schemaType": ty})))
}

async fn raw_schema_by_id(
    State(app): State<Arc<App>>,
    SrPath(id): SrPath<String>,
) -> Result<Response, SrError> {
    let (_, schema) = app.registry.schema_by_id(schema_id(&id)?).await?;
    Ok(raw(schema))
}

async fn id_versions(
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

async fn types() -> Response {
    ok(json!(["JSON"]))
}

#[derive(Deserialize)]
struct ConfigRequest {
    compatibility: String,
}

fn level_body(headers: &HeaderMap, body: &Bytes) -> Result<Level, SrError> {
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

async fn global_config(State(app): State<Arc<App>>) -> Result<Response, SrError> {
    let level = app
        .registry
        .config(None)
        .await?
        .unwrap_or(crate::registry::store::DEFAULT_LEVEL);
    Ok(ok(json!({"compatibilityLevel": level.as_str()})))
}

async fn set_global_config(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, SrError> {
    let level = level_body(&headers, &body)?;
    app.registry.set_config(None, level).await?;
    Ok(ok(json!({"compatibility": level.as_str()})))
}

async fn delete_global_config(State(app): State<Arc<App>>) -> Result<Response, SrError> {
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

async fn subject_config(
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

async fn set_subject_config(
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

async fn delete_subject_config(
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

async fn level_for(app: &App, subject: &str) -> Result<Level, SrError> {
    Ok(match app.registry.config(Some(subject)).await? {
        Some(l) => l,
        None => app
            .registry
            .config(None)
            .await?
            .unwrap_or(crate::registry::store::DEFAULT_LEVEL),
    })
}

fn compat_answer(verdict: compat::Verdict, verbose: bool) -> Response {
    let mut body = json!({"is_compatible": verdict.is_compatible()});
    if verbose {
        body["messages"] = json!(verdict.messages());
    }
    ok(body)
}

/// Against one version: the subject's level, without the transitive part.
async fn check_version(
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
async fn check_all(
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
