//! The tower side: authenticate before the body is read, and put the principal in the
//! request's extensions for the handler.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Authenticator;
use crate::error::ClientError;
use crate::telemetry;
use crate::tls::{ClientIdentity, Peer};

pub async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    let client = client_identity(&req);
    match auth
        .authenticate(req.headers(), client.as_deref(), peer_ip(&req))
        .await
    {
        Ok(Some(principal)) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(e) => {
            // The reason, never the credential.
            tracing::debug!(
                reason = e.code().as_str(),
                "request refused by authentication"
            );
            // Nothing in the request was accepted; counted like other whole-request refusals.
            metrics::counter!(telemetry::EVENTS_REJECTED, "reason" => e.code().as_str())
                .increment(1);
            e.into_response()
        }
    }
}

/// The address of the request's client (the TCP peer).
pub fn peer_ip(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .map(|c| c.0.addr.ip())
}

/// The verified client certificate of the request's connection, if any.
pub fn client_identity(req: &Request) -> Option<Arc<ClientIdentity>> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .and_then(|c| c.0.client.clone())
}
