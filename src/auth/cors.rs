//! CORS for browsers posting events with browser keys (or JWTs from allowed web apps).
//! Preflights carry no credentials, so they are answered for the union of every browser
//! key's origins and `auth.cors.allowed_origins`; the key's own origin list is checked again
//! when the real request arrives.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use super::apikey::OriginPattern;
use super::Authenticator;
use crate::config::CorsConfig;
use crate::error::{ApiError, Code};
use crate::telemetry;

/// Headers a page may read from our answers.
const EXPOSED: &str = "retry-after, x-request-id, ratelimit-limit, ratelimit-remaining, ratelimit-reset, ratelimit-policy";

pub struct Cors {
    origins: Vec<OriginPattern>,
    allow_headers: HeaderValue,
    max_age: HeaderValue,
}

impl Cors {
    pub fn new(config: &CorsConfig) -> Result<Cors, (String, String)> {
        let field = |f: &str| format!("auth.cors.{f}");
        let origins = config
            .allowed_origins
            .iter()
            .map(|o| OriginPattern::parse(o).map_err(|m| (field("allowed_origins"), m)))
            .collect::<Result<Vec<_>, _>>()?;
        let allow_headers =
            HeaderValue::from_str(&config.allowed_headers.join(", ")).map_err(|_| {
                (
                    field("allowed_headers"),
                    "header names must be ASCII".to_string(),
                )
            })?;
        let max_age = HeaderValue::from(config.max_age.0.as_secs());
        Ok(Cors {
            origins,
            allow_headers,
            max_age,
        })
    }

    /// `auth.cors.allowed_origins`, or an origin of a browser key in use now (the keys file
    /// may have changed since start).
    fn allows(&self, origin: &str, auth: &Authenticator) -> bool {
        self.origins.iter().any(|p| p.matches(origin)) || auth.browser_origin_allowed(origin)
    }
}

/// The CORS layer's state: the configured origins, and the keys (browser keys add theirs).
#[derive(Clone)]
pub struct CorsState {
    pub cors: Arc<Cors>,
    pub auth: Arc<Authenticator>,
}

/// Answers preflights and adds `Access-Control-Allow-Origin` to answers for allowed
/// origins, errors included (a page must be able to read a 401 or a 429).
pub async fn cors(State(state): State<CorsState>, req: Request, next: Next) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let allowed = origin
        .to_str()
        .is_ok_and(|o| state.cors.allows(o, &state.auth));
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        if !allowed {
            metrics::counter!(telemetry::AUTH_FAILURES, "reason" => "origin_not_allowed")
                .increment(1);
            let mut resp = ApiError::new(
                Code::OriginNotAllowed,
                "this origin may not post events here",
            )
            .into_response();
            resp.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("origin"));
            return resp;
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            state.cors.allow_headers.clone(),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, state.cors.max_age.clone());
        resp
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    if allowed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if !preflight {
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED),
            );
        }
    }
    resp
}

/// `OPTIONS` that is not a CORS preflight: say what the route accepts.
pub async fn options() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"))],
    )
        .into_response()
}
