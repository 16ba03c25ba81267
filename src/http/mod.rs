//! HTTP surface: the router, its layers, and the shared [`App`] state. Handlers stay thin:
//! decoding lives in `event`, policy in `pipeline`, I/O in `sink`.

mod health;
mod idle;
mod ingest;
mod registry;
pub mod serve;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::auth::cors::{self, Cors};
use crate::auth::{self, Authenticator};
use crate::config::Config;
use crate::error::{ApiError, Code};
use crate::pipeline::Pipeline;
use crate::telemetry;

/// Everything a request may need, shared by all of them.
pub struct App {
    pub config: Config,
    pub pipeline: Pipeline,
    pub admission: crate::pipeline::admission::AdmissionControl,
    pub rate_limits: crate::pipeline::ratelimit::RateLimiter,
    pub registry: Arc<dyn crate::registry::store::RegistryStore>,
    /// Where schema compilation and compatibility checks run (off the async workers).
    pub schema_work: Arc<crate::registry::SchemaWork>,
    pub auth: Arc<Authenticator>,
    pub cors: Arc<Cors>,
    pub metrics: PrometheusHandle,
    /// The listeners' TLS (rustls, reloaded from its files), when `tls.cert_file` is set.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Set on the shutdown signal: readiness fails first so load balancers stop sending.
    pub shutting_down: AtomicBool,
}

impl App {
    /// Whether events can be made durable now: the sink is up, or the spool has room.
    pub fn sink_ready(&self) -> bool {
        self.pipeline.sink.is_ready()
            || self
                .pipeline
                .spool
                .as_ref()
                .is_some_and(|s| s.has_room(self.config.limits.max_body_bytes.0))
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

/// Routes clients use. Admin routes are merged in unless `server.admin_listen` moves them.
pub fn router(app: Arc<App>, with_admin: bool) -> axum::Router {
    let events = post(ingest::ingest)
        // Credentials are checked before the body is read: refusing costs no upload.
        .layer(middleware::from_fn_with_state(
            app.auth.clone(),
            auth::authenticate,
        ))
        .options(cors::options)
        // Outside auth, so that browsers can read our 401s and 403s, and preflights (which
        // carry no credentials) are answered here.
        .layer(middleware::from_fn_with_state(
            cors::CorsState {
                cors: app.cors.clone(),
                auth: app.auth.clone(),
            },
            cors::cors,
        ));
    let mut r = axum::Router::new()
        .route("/v1/events", events)
        .route("/openapi.yaml", get(openapi));
    if with_admin {
        r = r.merge(admin_routes()).merge(registry::routes(app.clone()));
    }
    layered(r, app)
}

/// The API description (the repository's `openapi.yaml`, compiled in).
async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
        include_str!("../../openapi.yaml"),
    )
}

/// /healthz, /readyz, /metrics and the registry API on their own, for `server.admin_listen`.
pub fn admin_router(app: Arc<App>) -> axum::Router {
    layered(admin_routes().merge(registry::routes(app.clone())), app)
}

fn admin_routes() -> axum::Router<Arc<App>> {
    axum::Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
}

fn layered(routes: axum::Router<Arc<App>>, app: Arc<App>) -> axum::Router {
    routes
        .fallback(|| async { ApiError::new(Code::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(Code::MethodNotAllowed, "method not allowed on this route")
        })
        // Oversized headers are refused before auth reads a credential out of them.
        .route_layer(middleware::from_fn_with_state(app.clone(), header_limit))
        // Per-route metrics need the matched route template, known only after routing
        // (outside the header check, so its 431s are counted).
        .route_layer(middleware::from_fn(track_metrics))
        .layer(
            ServiceBuilder::new()
                // The client's header bytes, measured before any layer adds a header of its
                // own (the request id); `header_limit` decides on them after routing.
                .map_request(|mut req: Request| {
                    let n = ClientHeaderBytes::of(&req);
                    req.extensions_mut().insert(n);
                    req
                })
                // Every request gets an id first, so the trace span and the answer carry it.
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                // One span per request, carrying that id.
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = id)
                })
                // A 503 is backpressure doing its job, not a fault: at the default level
                // every refused request under overload would be an ERROR line. Causes worth
                // an operator's eye are logged where they are known (`ApiError::internal`,
                // the sink), inside this span.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)))
                // Clients get the id back to quote in bug reports.
                .layer(PropagateRequestIdLayer::x_request_id())
                // A bug in a handler becomes our JSON 500, not a dropped connection.
                .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
                    ApiError::internal("handler panicked").into_response()
                })),
        )
        .with_state(app)
}

/// The size of the headers the client sent, counted as on the wire in HTTP/1.1 (name, `: `,
/// value, CRLF each).
#[derive(Clone, Copy)]
struct ClientHeaderBytes(usize);

impl ClientHeaderBytes {
    fn of(req: &Request) -> ClientHeaderBytes {
        ClientHeaderBytes(
            req.headers()
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum(),
        )
    }
}

/// `limits.max_header_bytes`, on what the client sent.
async fn header_limit(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let limit = app.config.limits.max_header_bytes.as_usize();
    let size = req
        .extensions()
        .get::<ClientHeaderBytes>()
        .copied()
        .unwrap_or_else(|| ClientHeaderBytes::of(&req))
        .0;
    if size > limit {
        metrics::counter!(telemetry::EVENTS_REJECTED, "reason" => "headers_too_large").increment(1);
        return ApiError::new(
            Code::HeadersTooLarge,
            format!("the request headers are {size} bytes; at most {limit} are accepted"),
        )
        .into_response();
    }
    next.run(req).await
}

async fn track_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::histogram!(telemetry::HTTP_REQUEST_DURATION, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(telemetry::HTTP_REQUESTS, "route" => route, "status" => status).increment(1);
    resp
}
