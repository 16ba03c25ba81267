//! The schema registry API, compatible with Confluent Schema Registry for `schemaType: JSON`,
//! so that its clients and tools work unchanged. Errors use Confluent's body
//! (`{"error_code": 40401, "message": "..."}`) and codes. Subjects are event types.
//!
//! Writes reload this replica's validators before answering; other replicas follow through
//! the store's epoch. Authentication: writes need `registry:write`; reads need
//! `registry:read` unless `registry.open_reads` is set.
//!
//! Where things are: the routes and their scopes here (a read router and a write router,
//! each behind its own [`authorize`] layer); [`subjects`], [`schemas`], [`config`] and
//! [`compatibility`] by resource; [`extract`] reads paths, flags and bodies; [`error`] is the
//! Confluent-shaped answer.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};

use super::App;
use crate::auth::Authenticator;
use crate::error::ClientError;
use error::SrError;

mod compatibility;
mod config;
mod error;
mod extract;
mod schemas;
mod subjects;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The registry API: reads need `registry:read` (or `registry:write`) unless
/// `registry.open_reads`; writes need `registry:write`.
pub fn routes(app: Arc<App>) -> axum::Router<Arc<App>> {
    let guard = |need| {
        middleware::from_fn_with_state(
            Arc::new(Guard {
                auth: app.auth.clone(),
                need,
                open_reads: app.config.registry.open_reads,
            }),
            authorize,
        )
    };
    reads()
        .route_layer(guard(Need::Read))
        .merge(writes().route_layer(guard(Need::Write)))
        // Request bodies (schemas) are bounded before they are read into memory.
        .layer(DefaultBodyLimit::max(
            usize::try_from(app.config.registry.max_schema_bytes.0).unwrap_or(usize::MAX),
        ))
}

/// Routes that change nothing. Lookups and compatibility checks are POSTs, but only read.
fn reads() -> axum::Router<Arc<App>> {
    axum::Router::new()
        .route("/subjects", get(subjects::list))
        .route("/subjects/{subject}", post(subjects::lookup))
        .route("/subjects/{subject}/versions", get(subjects::versions))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(subjects::version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(subjects::version_schema),
        )
        .route("/schemas/ids/{id}", get(schemas::by_id))
        .route("/schemas/ids/{id}/schema", get(schemas::raw_by_id))
        .route("/schemas/ids/{id}/versions", get(schemas::versions))
        .route("/schemas/types", get(schemas::types))
        .route("/config", get(config::global))
        .route("/config/{subject}", get(config::subject))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility::check_version),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility::check_all),
        )
}

/// Routes that register, delete or configure.
fn writes() -> axum::Router<Arc<App>> {
    axum::Router::new()
        .route("/subjects/{subject}", delete(subjects::delete_subject))
        .route("/subjects/{subject}/versions", post(subjects::register))
        .route(
            "/subjects/{subject}/versions/{version}",
            delete(subjects::delete_version),
        )
        .route(
            "/config",
            put(config::set_global).delete(config::delete_global),
        )
        .route(
            "/config/{subject}",
            put(config::set_subject).delete(config::delete_subject),
        )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Write,
}

/// The state of one router's auth layer.
struct Guard {
    auth: Arc<Authenticator>,
    need: Need,
    open_reads: bool,
}

/// An authentication refusal in Confluent's shape (`error_code` = status * 100 + 1).
fn auth_refusal(e: crate::auth::AuthError) -> Response {
    let status = e.status();
    let code = u32::from(status.as_u16()) * 100 + 1;
    SrError::new(status, code, format!("{} ({})", e, e.code())).into_response()
}

/// Credentials and scopes, before any handler runs.
async fn authorize(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    match guard.auth.open_to(crate::auth::peer_ip(&req)) {
        Ok(true) => return next.run(req).await,
        Ok(false) => {}
        Err(e) => return auth_refusal(e),
    }
    let read = guard.need == Need::Read;
    if read && guard.open_reads {
        return next.run(req).await;
    }
    let client = crate::auth::client_identity(&req);
    let principal = match guard
        .auth
        .authenticate_any(req.headers(), client.as_deref())
        .await
    {
        Ok(p) => p,
        Err(e) => return auth_refusal(e),
    };
    let scopes = &principal.scopes;
    let (allowed, need) = match guard.need {
        Need::Read => (
            scopes.registry_read || scopes.registry_write,
            "registry:read",
        ),
        Need::Write => (scopes.registry_write, "registry:write"),
    };
    if !allowed {
        return SrError::new(
            StatusCode::FORBIDDEN,
            40301,
            format!("the credentials lack the {need} scope"),
        )
        .into_response();
    }
    next.run(req).await
}

/// After a write: this replica's validators follow before the answer goes out.
async fn reload(app: &App) {
    if let Err(e) = app.pipeline.validators.reload().await {
        tracing::error!(error = %e, "registry changed but reloading the validators failed");
    }
}
