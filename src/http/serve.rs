//! The accept loop: each accepted connection is served by hyper (HTTP/1.1 or HTTP/2, by what
//! the client speaks) in its own task, as `axum::serve` does, plus a connection lifetime, a
//! cap on open connections (`server.max_connections`), header and idle timeouts
//! ([`super::idle`]) and a cap on concurrent HTTP/2 streams.
//!
//! With `server.max_connection_age`, a connection that has lived that long (±10 %, so that
//! clients connected together do not all reconnect together) is closed gracefully: HTTP/2
//! gets a GOAWAY and finishes its open streams, HTTP/1.1 finishes the request in progress and
//! closes. Clients then reconnect, through the load balancer, so long-lived connections spread
//! over replicas added since (an autoscaler's new pods get traffic) and a client certificate
//! revoked since the handshake stops working. A connection still busy `server.shutdown_grace`
//! after it was told to close is cut, as at shutdown.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use super::idle::{Activity, Verdict, Watched};
use crate::pipeline::admission::ConnectionShare;

use crate::telemetry;
use crate::tls;

/// How many connections, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// `server.max_connection_age`; `None`: as long as the client keeps it.
    pub max_age: Option<Duration>,
    /// After being told to close for its age, how long a connection may take to finish.
    pub close_grace: Duration,
    /// `server.header_read_timeout` and `server.idle_timeout` ([`super::idle`]).
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// `server.max_connections`: past it, new connections are closed at once.
    pub max_connections: usize,
    /// `server.max_streams_per_connection`: concurrent HTTP/2 streams of one connection.
    pub max_streams: u32,
    /// HTTP/2's bound on a decoded header list (HTTP/1's is hyper's read buffer).
    pub max_header_list_bytes: u32,
    /// `limits.max_inflight_bytes_per_connection`.
    pub inflight_bytes_per_connection: u64,
}

impl ConnectionLimits {
    pub fn from_config(config: &crate::config::Config, close_grace: Duration) -> Self {
        let s = &config.server;
        ConnectionLimits {
            max_age: Some(s.max_connection_age.0).filter(|d| !d.is_zero()),
            close_grace,
            header_read_timeout: s.header_read_timeout.0,
            idle_timeout: s.idle_timeout.0,
            max_connections: s.max_connections,
            max_streams: s.max_streams_per_connection,
            // Room for HPACK's per-field overhead (32 bytes each) over the header limit.
            max_header_list_bytes: u32::try_from(config.limits.max_header_bytes.0)
                .unwrap_or(u32::MAX)
                .saturating_mul(2),
            inflight_bytes_per_connection: config.limits.max_inflight_bytes_per_connection.0,
        }
    }
}

/// Serves `router` on `listener` until `stop` turns true; then stops accepting, tells every
/// connection to close gracefully, and returns once all have.
pub async fn serve(
    mut listener: tls::Listener,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
    limits: ConnectionLimits,
) {
    // Connections watch `closing`; each holds a clone of `open_rx`, so `open_tx.closed()`
    // resolves when the last one has ended.
    let (closing_tx, closing_rx) = watch::channel(false);
    let (open_tx, open_rx) = watch::channel(());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let (io, peer) = tokio::select! {
            conn = axum::serve::Listener::accept(&mut listener) => conn,
            _ = stop.wait_for(|s| *s) => break,
        };
        // At the cap a new connection is closed at once: the client (or its load balancer)
        // learns now and tries elsewhere, rather than waiting in the kernel's backlog.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!(telemetry::HTTP_CONNECTIONS_REFUSED).increment(1);
            drop(io);
            continue;
        };
        let activity = Activity::new();
        let seen = activity.clone();
        let share = ConnectionShare::new(limits.inflight_bytes_per_connection);
        let router = router.clone();
        let service = tower::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer.clone()));
            req.extensions_mut().insert(share.clone());
            let guard = seen.request();
            let router = router.clone();
            async move {
                let resp = router.oneshot(req).await;
                drop(guard);
                resp
            }
        });
        let max_age = limits.max_age.map(jittered);
        let closing = closing_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let io = Watched::new(io, activity.clone());
            connection(io, service, closing, max_age, activity, limits).await;
            drop(slot);
            drop(open);
        });
    }
    // Stop accepting (the TLS accept task ends with it), then close what is open.
    drop(listener);
    let _ = closing_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
}

async fn connection<S>(
    io: Watched<tls::Stream>,
    service: S,
    mut closing: watch::Receiver<bool>,
    max_age: Option<Duration>,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
) where
    S: tower::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    metrics::gauge!(telemetry::HTTP_CONNECTIONS).increment(1.0);
    let close_grace = limits.close_grace;
    let mut builder = Builder::new(TokioExecutor::new());
    // The timer serves HTTP/2's own timeouts; HTTP/1's header timeout is [`Activity`]'s.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(limits.max_header_list_bytes);
    let watchdog = activity.watch(limits.header_read_timeout, limits.idle_timeout);
    let mut conn =
        pin!(builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service)));
    let aged = async move {
        match max_age {
            Some(age) => tokio::time::sleep(age).await,
            None => std::future::pending().await,
        }
    };
    let ended = |res: Result<(), Box<dyn std::error::Error + Send + Sync>>| {
        if let Err(e) = res {
            tracing::trace!(error = %e, "connection ended with an error");
        }
    };
    let mut closing_later = closing.clone();
    tokio::select! {
        biased;
        res = conn.as_mut() => ended(res),
        verdict = watchdog => match verdict {
            Verdict::SlowHead => {
                metrics::counter!(telemetry::HTTP_CONNECTIONS_TIMED_OUT, "why" => "header").increment(1);
            }
            Verdict::Idle => {
                metrics::counter!(telemetry::HTTP_CONNECTIONS_TIMED_OUT, "why" => "idle").increment(1);
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    res = conn.as_mut() => ended(res),
                    () = tokio::time::sleep(close_grace) => {}
                }
            }
        },
        () = closed(&mut closing) => {
            // Shutdown: `run` bounds the whole drain by server.shutdown_grace.
            conn.as_mut().graceful_shutdown();
            ended(conn.await);
        }
        () = aged => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                res = conn.as_mut() => {
                    ended(res);
                    metrics::counter!(telemetry::HTTP_CONNECTIONS_AGED, "how" => "graceful")
                        .increment(1);
                }
                // Shutdown meanwhile: finish as any connection does then.
                () = closed(&mut closing_later) => ended(conn.await),
                () = tokio::time::sleep(close_grace) => {
                    metrics::counter!(telemetry::HTTP_CONNECTIONS_AGED, "how" => "cut").increment(1);
                    tracing::warn!(
                        ?close_grace,
                        "connection past server.max_connection_age still busy; closed"
                    );
                }
            }
        }
    }
    metrics::gauge!(telemetry::HTTP_CONNECTIONS).decrement(1.0);
}

/// Resolves once `closing` turns true (or its sender is gone).
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

/// `age` ±10 %.
fn jittered(age: Duration) -> Duration {
    let r = getrandom::u64().unwrap_or(0) % 2001; // 0..=2000 → -10.00 % ..= +10.00 %
    age.mul_f64(0.9 + r as f64 / 10_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let age = Duration::from_secs(600);
        for _ in 0..1000 {
            let j = jittered(age);
            assert!(
                j >= Duration::from_secs(540) && j <= Duration::from_secs(660),
                "{j:?}"
            );
        }
    }
}
