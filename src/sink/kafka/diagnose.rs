//! What the brokers refuse, in words an operator can act on: our credentials
//! (authentication), our trust in their certificate or theirs in ours (certificate), the TLS
//! session itself, or a permission (authorization). Kept for `/readyz`, logged once per
//! distinct cause and counted in `sluice_kafka_security_errors_total`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::telemetry;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    Authentication,
    Certificate,
    Tls,
    Authorization,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Authentication => "authentication",
            Cause::Certificate => "certificate",
            Cause::Tls => "tls",
            Cause::Authorization => "authorization",
        }
    }
}

/// The security cause of a librdkafka error, if it has one.
pub fn cause_of(code: Option<RDKafkaErrorCode>, reason: &str) -> Option<Cause> {
    use RDKafkaErrorCode as C;
    match code? {
        C::Authentication | C::SaslAuthenticationFailed => Some(Cause::Authentication),
        // librdkafka reports every TLS failure as _SSL; the text tells a certificate one
        // (ours refused, theirs unverifiable, a name mismatch) from the rest.
        C::SSL if reason.to_ascii_lowercase().contains("certificate") => Some(Cause::Certificate),
        C::SSL => Some(Cause::Tls),
        // A TLS alert after the handshake, e.g. a broker refusing our client certificate
        // (TLS 1.3 checks it after the client's Finished): "Receive failed: error:0A000412:SSL
        // routines::ssl/tls alert bad certificate".
        // A protocol mismatch: TLS to a plaintext listener ("SSL handshake failed:
        // Disconnected: connecting to a PLAINTEXT broker listener?") or plaintext to a TLS one
        // ("... might be caused by incorrect security.protocol configuration").
        C::BrokerTransportFailure
            if [
                "SSL routines",
                "SSL handshake failed",
                "incorrect security.protocol",
            ]
            .iter()
            .any(|s| reason.contains(s)) =>
        {
            if reason.to_ascii_lowercase().contains("certificate") {
                Some(Cause::Certificate)
            } else {
                Some(Cause::Tls)
            }
        }
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed => Some(Cause::Authorization),
        _ => None,
    }
}

/// Readiness and the last refusal, shared by the producer, the probe and their callbacks.
#[derive(Default)]
pub struct Health {
    /// A broker answered the probe's last metadata request.
    pub ready: AtomicBool,
    /// Some topic is denied: [`Health::delivered`] takes the lock only then.
    any_denied: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last connection-level refusal (authentication, certificate, TLS) since the probe
    /// last succeeded.
    refusal: Option<(Cause, String)>,
    /// What was logged at error level since the last success, so each is logged once.
    logged: BTreeSet<(Cause, String)>,
    /// Topics whose writes the brokers refused for want of permission.
    denied_topics: BTreeSet<String>,
}

impl Health {
    /// A librdkafka error callback. Returns whether it was a security refusal (logged here).
    pub fn client_error(&self, error: &KafkaError, reason: &str) -> bool {
        let Some(cause) = cause_of(error.rdkafka_error_code(), reason) else {
            return false;
        };
        metrics::counter!(telemetry::KAFKA_SECURITY_ERRORS, "cause" => cause.as_str()).increment(1);
        let message = clean(reason);
        let mut s = self.lock();
        if cause != Cause::Authorization {
            s.refusal = Some((cause, message.clone()));
        }
        if s.logged.insert((cause, message.clone())) {
            tracing::error!(
                cause = cause.as_str(),
                "Kafka refuses this gateway ({}): {message}",
                cause.as_str()
            );
        } else {
            tracing::debug!(cause = cause.as_str(), "Kafka refusal again: {message}");
        }
        true
    }

    /// A produce request to `topic` was refused for want of permission.
    pub fn denied(&self, topic: &str, reason: &str) {
        metrics::counter!(telemetry::KAFKA_SECURITY_ERRORS, "cause" => "authorization")
            .increment(1);
        let mut s = self.lock();
        self.any_denied.store(true, Ordering::Relaxed);
        if s.denied_topics.insert(topic.to_string()) {
            tracing::error!(
                topic,
                cause = "authorization",
                "Kafka refuses this gateway's writes to {topic} (authorization): {reason}"
            );
        }
    }

    /// A record reached `topic`: whatever was denied there is granted now.
    pub fn delivered(&self, topic: &str) {
        if !self.any_denied.load(Ordering::Relaxed) {
            return;
        }
        let mut s = self.lock();
        if s.denied_topics.remove(topic) {
            tracing::info!(topic, "Kafka takes this gateway's writes to {topic} again");
        }
        self.any_denied
            .store(!s.denied_topics.is_empty(), Ordering::Relaxed);
    }

    /// The probe's result. A success clears the refusal: the brokers take us again.
    pub fn probed(&self, ok: bool) -> bool {
        if ok {
            let mut s = self.lock();
            if s.refusal.take().is_some() {
                tracing::info!("Kafka accepts this gateway's credentials again");
            }
            s.logged.retain(|(c, _)| *c == Cause::Authorization);
        }
        self.ready.swap(ok, Ordering::Relaxed)
    }

    /// The kind of the last refusal, if any.
    pub fn cause(&self) -> Option<Cause> {
        let s = self.lock();
        s.refusal
            .as_ref()
            .map(|(c, _)| *c)
            .or((!s.denied_topics.is_empty()).then_some(Cause::Authorization))
    }

    /// Why the sink is not ready, or what it cannot do while ready.
    pub fn problem(&self) -> Option<String> {
        let s = self.lock();
        let ready = self.ready.load(Ordering::Relaxed);
        let mut parts = Vec::new();
        if !ready {
            match &s.refusal {
                Some((cause, message)) => parts.push(format!("{}: {message}", cause.as_str())),
                None => parts.push("no Kafka broker answered a metadata request".to_string()),
            }
        }
        if !s.denied_topics.is_empty() {
            let topics: Vec<&str> = s.denied_topics.iter().map(String::as_str).collect();
            parts.push(format!(
                "authorization: writes refused to {}",
                topics.join(", ")
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// librdkafka appends timings and counts repeats ("(after 12ms in state ..., 3 identical
/// error(s) suppressed)"): dropped, so one cause is one message. The broker's address it puts
/// first stays: it says which listener refused.
fn clean(reason: &str) -> String {
    let mut s = reason.trim();
    if let Some(i) = s.find(" (after ") {
        s = &s[..i];
    }
    if let Some(i) = s.find(" identical error(s) suppressed") {
        // "... (3 identical error(s) suppressed)": cut at the opening parenthesis.
        s = s[..i]
            .rsplit_once('(')
            .map_or(s, |(head, _)| head.trim_end());
    }
    s.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_come_from_the_code_and_the_text() {
        use RDKafkaErrorCode as C;
        assert_eq!(
            cause_of(
                Some(C::SSL),
                "SSL handshake failed: certificate verify failed"
            ),
            Some(Cause::Certificate)
        );
        assert_eq!(
            cause_of(Some(C::SSL), "SSL handshake failed: wrong version number"),
            Some(Cause::Tls)
        );
        assert_eq!(
            cause_of(Some(C::Authentication), "SASL authentication error"),
            Some(Cause::Authentication)
        );
        assert_eq!(
            cause_of(
                Some(C::BrokerTransportFailure),
                "Receive failed: error:0A000412:SSL routines::ssl/tls alert bad certificate: SSL alert number 42"
            ),
            Some(Cause::Certificate)
        );
        assert_eq!(
            cause_of(
                Some(C::BrokerTransportFailure),
                "SSL handshake failed: Disconnected: connecting to a PLAINTEXT broker listener?"
            ),
            Some(Cause::Tls)
        );
        assert_eq!(
            cause_of(Some(C::BrokerTransportFailure), "Connection refused"),
            None
        );
        assert_eq!(cause_of(Some(C::AllBrokersDown), "down"), None);
        assert_eq!(cause_of(None, "certificate"), None);
    }

    #[test]
    fn a_refusal_is_reported_until_the_probe_succeeds() {
        let h = Health::default();
        let e = KafkaError::Global(RDKafkaErrorCode::Authentication);
        assert!(h.client_error(&e, "sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error: Authentication failed (after 5ms in state AUTH_REQ)"));
        h.probed(false);
        assert_eq!(
            h.problem().unwrap(),
            "authentication: sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error: Authentication failed"
        );
        h.probed(true);
        assert_eq!(h.problem(), None);
        h.denied("events.a", "Broker: Topic authorization failed");
        assert_eq!(
            h.problem().unwrap(),
            "authorization: writes refused to events.a"
        );
        h.delivered("events.a");
        assert_eq!(h.problem(), None);
    }
}
