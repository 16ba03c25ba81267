//! `POST /v1/events`: check encoding and type before reading, read the body under its cap and
//! timeout, inflate under the decompressed cap, decode, hand to the pipeline, and answer only
//! once every accepted event is durable.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Serialize;

use super::App;
use crate::auth::Principal;
use crate::error::{retry_after_header, ApiError, Code, ErrorBody};
use crate::event::body::{self, BodyError, Encoding};
use crate::event::{self, BodyFormat, Decoded};
use crate::pipeline::admission::ConnectionShare;
use crate::pipeline::ratelimit::Budget;
use crate::pipeline::Outcome;
use crate::telemetry;

/// Bodies above this (as inflated) are inflated and parsed on the blocking pool, so that
/// megabytes of work do not stall other requests on the same runtime thread.
const INLINE_DECODE_MAX: usize = 256 * 1024;

#[derive(Serialize)]
struct IngestBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody<'a>>,
    accepted: usize,
    rejected: usize,
    results: Vec<EventResult<'a>>,
}

#[derive(Serialize)]
struct EventResult<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ItemError<'a>>,
}

#[derive(Serialize)]
struct ItemError<'a> {
    code: Code,
    pointer: &'a str,
    message: &'a str,
}

pub async fn ingest(
    State(app): State<Arc<App>>,
    principal: Option<Extension<Arc<Principal>>>,
    share: Option<Extension<ConnectionShare>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let principal = principal.map(|Extension(p)| p);
    let share = share.map(|Extension(s)| s);
    match accept(&app, principal.as_deref(), share.as_ref(), &headers, body).await {
        Ok((outcomes, budget)) => {
            let mut resp = respond(&outcomes, app.admission.retry_after());
            // Clients see their budget on every answer, not only when it runs out.
            if let Some(b) = budget {
                crate::error::rate_limit_headers(
                    resp.headers_mut(),
                    b.limit,
                    b.remaining,
                    b.reset,
                    b.in_bytes,
                );
            }
            resp
        }
        Err(e) => {
            // Nothing in the request was accepted; count it once, under the code sent.
            metrics::counter!(telemetry::EVENTS_REJECTED, "reason" => e.code.as_str()).increment(1);
            e.into_response()
        }
    }
}

async fn accept(
    app: &App,
    principal: Option<&Principal>,
    share: Option<&ConnectionShare>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Vec<Outcome>, Option<Budget>), ApiError> {
    let limits = &app.config.limits;
    let header_str = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());

    // A tenant that goes into topic names must not be able to spell another's topic: with
    // `events.{tenant}.{type}`, tenant `a.b` and type `c` would write to tenant `a`'s `b.c`.
    if let Some(p) = principal {
        if app.pipeline.router.uses_tenant() && !crate::pipeline::routable_tenant(&p.tenant) {
            return Err(ApiError::new(Code::TenantNotRoutable, format!(
                    "topics here are named after the tenant, and tenant names may only hold letters, digits, `_` and `-` (at most {} characters)",
                    crate::pipeline::MAX_TENANT_LEN
                ),
            ));
        }
    }

    // Refuse what we cannot read before reading it.
    let encoding = Encoding::parse(header_str(header::CONTENT_ENCODING))?;
    let content_type = header_str(header::CONTENT_TYPE).map(str::to_owned);
    let binary = headers.contains_key("ce-specversion") || headers.contains_key("ce-type");
    let format = BodyFormat::detect(content_type.as_deref(), binary)?;
    let max_body = limits.max_body_bytes.as_usize();
    if let Some(len) = header_str(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()) {
        if len > max_body as u64 {
            return Err(ApiError::new(
                Code::BodyTooLarge,
                format!("the body is {len} bytes; at most {max_body} are accepted"),
            ));
        }
    }

    if !app.sink_ready() {
        return Err(ApiError::unavailable(Code::SinkUnavailable, "the event sink is unreachable (and the spool, if enabled, is full); nothing was accepted",
            app.admission.retry_after(),
        ));
    }
    // Bound memory before reading: the body's declared length, else the most it may be.
    let declared = header_str(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    let first = declared.unwrap_or(max_body as u64);
    // What is held from here on, in the whole KiB admission counts.
    let mut admitted = first.div_ceil(1024).max(1) * 1024;
    let _bytes = app
        .admission
        .admit_bytes_on(share, first)
        .await
        .map_err(overloaded)?;
    let raw = read_body(body, max_body, app.config.server.body_timeout.0).await?;
    let raw_len = raw.len();

    let ce_headers: Vec<(String, Vec<u8>)> = if binary {
        headers
            .iter()
            .filter_map(|(k, v)| {
                k.as_str()
                    .strip_prefix("ce-")
                    .map(|a| (a.to_string(), v.as_bytes().to_vec()))
            })
            .collect()
    } else {
        Vec::new()
    };
    // A compressed body is admitted as it inflates, before each step holds more memory.
    let mut inflation = Vec::new();
    let inflated = match encoding {
        Encoding::Identity => {
            let limit = limits.max_decompressed_bytes.as_usize();
            if raw.len() > limit {
                return Err(BodyError::TooLarge { limit }.into());
            }
            raw
        }
        _ => inflate(app, share, encoding, raw, &mut admitted, &mut inflation).await?,
    };
    let limits2 = limits.clone();
    let big = inflated.len() > INLINE_DECODE_MAX;
    let decode = move || -> Result<Decoded, ApiError> {
        if format == BodyFormat::Binary {
            let iter = ce_headers.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
            event::decode_binary(iter, content_type.as_deref(), inflated, &limits2)
        } else {
            event::decode_body(format, &inflated, &limits2)
        }
        .map_err(ApiError::from)
    };
    let decoded = if big {
        tokio::task::spawn_blocking(decode)
            .await
            .map_err(ApiError::internal)??
    } else {
        decode()?
    };

    let n = decoded.len();
    let mut budget = None;
    if app.rate_limits.is_active() {
        let tenant = principal.map_or("", |p| p.tenant.as_str());
        match app
            .rate_limits
            .check(tenant, n as u64, raw_len as u64, std::time::Instant::now())
        {
            Some(Err(b)) => return Err(rate_limited(b)),
            Some(Ok(b)) => budget = Some(b),
            None => {}
        }
    }
    let _events = app.admission.admit_events(n).await.map_err(overloaded)?;
    let _inflight = InflightGuard::new(n);
    Ok((app.pipeline.process(decoded, principal).await, budget))
}

/// Inflates `raw` under `limits.max_decompressed_bytes`, admitting (into `permits`, beyond
/// the `admitted` bytes held already) the memory each step may hold before it runs: a 19 KB
/// gzip body that inflates to 20 MiB is charged 20 MiB as it grows, not 19 KB. The first
/// steps, up to [`INLINE_DECODE_MAX`], run here; larger bodies inflate on the blocking pool.
async fn inflate<'a>(
    app: &'a App,
    share: Option<&ConnectionShare>,
    encoding: Encoding,
    raw: Bytes,
    admitted: &mut u64,
    permits: &mut Vec<crate::pipeline::admission::BytesPermit<'a>>,
) -> Result<Bytes, ApiError> {
    let raw_len = raw.len() as u64;
    let limit = app.config.limits.max_decompressed_bytes.as_usize();
    let max_inflight = app
        .config
        .limits
        .max_inflight_bytes
        .0
        .min(app.config.limits.max_inflight_bytes_per_connection.0);
    let mut inflater = body::Inflater::new(encoding, raw, limit)?;
    loop {
        let inline = inflater.len() < INLINE_DECODE_MAX;
        let max = if inline {
            (INLINE_DECODE_MAX - inflater.len()).min(inflater.len().max(16 * 1024))
        } else {
            body::STEP
        };
        // Admission counts whole KiB. At most the whole process budget, so that one request
        // alone is always admitted.
        let need = (raw_len + inflater.next_capacity(max) as u64)
            .div_ceil(1024)
            .min(max_inflight.div_ceil(1024))
            * 1024;
        if need > *admitted {
            let more = app
                .admission
                .admit_bytes_on(share, need - *admitted)
                .await
                .map_err(overloaded)?;
            permits.push(more);
            *admitted = need;
        }
        let done = if inline {
            inflater.step(max)
        } else {
            let (done, back) = tokio::task::spawn_blocking(move || {
                let done = inflater.step(max);
                (done, inflater)
            })
            .await
            .map_err(ApiError::internal)?;
            inflater = back;
            done
        }?;
        if done {
            return Ok(inflater.into_bytes());
        }
    }
}

async fn read_body(
    body: Body,
    max: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await {
        Err(_) => Err(ApiError::new(
            Code::BodyTimeout,
            format!("the body was not received within {}s", timeout.as_secs()),
        )),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let inner = e.into_inner();
            if inner
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::new(
                    Code::BodyTooLarge,
                    format!("the body exceeds {max} bytes"),
                ))
            } else {
                Err(ApiError::new(
                    Code::BodyReadFailed,
                    format!("the body could not be read: {inner}"),
                ))
            }
        }
    }
}

fn rate_limited(b: Budget) -> ApiError {
    let mut e = ApiError::new(
        Code::RateLimited,
        format!(
            "the tenant's rate limit ({} per second) is used up; retry after {} s",
            b.limit, b.retry_after
        ),
    );
    e.retry_after = Some(b.retry_after);
    e.rate_limit = Some((b.limit, b.remaining, b.reset, b.in_bytes));
    e
}

fn overloaded(o: crate::pipeline::admission::Overloaded) -> ApiError {
    ApiError::unavailable(
        Code::Overloaded,
        "Sluice is at its in-flight limit; retry after Retry-After seconds",
        o.retry_after,
    )
}

/// 200 all durable; 207 some; otherwise one status for the whole request: 503 when any
/// event could succeed on retry, the events' common status when they share one, else 400.
fn respond(outcomes: &[Outcome], retry_after: u64) -> Response {
    let accepted = outcomes.iter().filter(|o| o.status == 200).count();
    let rejected = outcomes.len() - accepted;
    let results = outcomes
        .iter()
        .enumerate()
        .map(|(index, o)| EventResult {
            index,
            id: o.id.as_deref(),
            status: o.status,
            error: o.error.as_ref().map(|e| ItemError {
                code: e.code,
                pointer: &e.pointer,
                message: &e.message,
            }),
        })
        .collect();
    let (status, error, retry) = if rejected == 0 {
        (StatusCode::OK, None, false)
    } else if accepted > 0 {
        (
            StatusCode::MULTI_STATUS,
            None,
            outcomes.iter().any(|o| o.retriable),
        )
    } else if outcomes.iter().any(|o| o.retriable) {
        let spool_full = outcomes
            .iter()
            .filter(|o| o.retriable)
            .all(|o| o.error.as_ref().is_some_and(|e| e.code == Code::SpoolFull));
        let e = if spool_full {
            ErrorBody {
                code: Code::SpoolFull,
                message: "the sink is unavailable and the spool is full; retry later",
            }
        } else {
            ErrorBody {
                code: Code::SinkUnavailable,
                message: "no event could be made durable; retry later",
            }
        };
        (StatusCode::SERVICE_UNAVAILABLE, Some(e), true)
    } else {
        let first = outcomes[0].status;
        let same = outcomes.iter().all(|o| o.status == first);
        let status = if same {
            StatusCode::from_u16(first).unwrap_or(StatusCode::BAD_REQUEST)
        } else {
            StatusCode::BAD_REQUEST
        };
        let e = match (outcomes.len(), outcomes[0].error.as_ref()) {
            (1, Some(err)) => ErrorBody {
                code: err.code,
                message: &err.message,
            },
            _ => ErrorBody {
                code: Code::EventsRejected,
                message: "every event in the request was rejected; see results",
            },
        };
        (status, Some(e), false)
    };
    let body = IngestBody {
        error,
        accepted,
        rejected,
        results,
    };
    let mut resp = (status, Json(body)).into_response();
    if retry {
        let (k, v) = retry_after_header(retry_after);
        resp.headers_mut().insert(k, v);
    }
    resp
}

/// Counts events from decoding until the answer, including while waiting on the sink.
struct InflightGuard(usize);

impl InflightGuard {
    fn new(n: usize) -> Self {
        metrics::gauge!(telemetry::INFLIGHT_EVENTS).increment(n as f64);
        InflightGuard(n)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        metrics::gauge!(telemetry::INFLIGHT_EVENTS).decrement(self.0 as f64);
    }
}
