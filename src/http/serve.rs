//! The accept loop: each accepted connection is served by hyper (HTTP/1.1 or HTTP/2, by what
//! the client speaks) in its own task, as `axum::serve` does, plus a connection lifetime.
//!
//! With `server.max_connection_age`, a connection that has lived that long (±10 %, so that
//! clients connected together do not all reconnect together) is closed gracefully: HTTP/2
//! gets a GOAWAY and finishes its open streams, HTTP/1.1 finishes the request in progress and
//! closes. Clients then reconnect, through the load balancer, so long-lived connections spread
//! over replicas added since (an autoscaler's new pods get traffic) and a client certificate
//! revoked since the handshake stops working. A connection still busy `server.shutdown_grace`
//! after it was told to close is cut, as at shutdown.

use std::pin::pin;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::telemetry;
use crate::tls;

/// How long connections may live.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// `server.max_connection_age`; `None`: as long as the client keeps it.
    pub max_age: Option<Duration>,
    /// After being told to close for its age, how long a connection may take to finish.
    pub close_grace: Duration,
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
    loop {
        let (io, peer) = tokio::select! {
            conn = axum::serve::Listener::accept(&mut listener) => conn,
            _ = stop.wait_for(|s| *s) => break,
        };
        let service = router
            .clone()
            .map_request(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnectInfo(peer.clone()));
                req
            });
        let max_age = limits.max_age.map(jittered);
        let closing = closing_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            connection(io, service, closing, max_age, limits.close_grace).await;
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
    io: tls::Stream,
    service: S,
    mut closing: watch::Receiver<bool>,
    max_age: Option<Duration>,
    close_grace: Duration,
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
    let builder = Builder::new(TokioExecutor::new());
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
