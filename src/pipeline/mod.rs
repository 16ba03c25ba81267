//! The path from decoded events to per-event outcomes: validate against the registry, route,
//! build records, publish, and match each receipt back to its event in request order.
//!
//! It owns policy (which topic, which key, which headers) and leaves mechanism to the sink.
//! It knows nothing of HTTP: the caller turns outcomes into a status and a body.

pub mod admission;
pub mod ratelimit;
mod route;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

pub use route::{routable_tenant, TopicRouter, MAX_TENANT_LEN};

use crate::auth::Principal;
use crate::config::Ack;
use crate::error::{ClientError, Code};
use crate::event::{Decoded, Event, EventError, Text};
use crate::registry::{Catalog, CompiledSchema, ValidatorCache};
use crate::sink::{DeliveryError, Record, Sink};
use crate::spool::{Spool, SpoolError};
use crate::telemetry;
pub use ratelimit::RateLimiter;

/// What happened to one event of a request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: Option<Text>,
    /// 200 when durable; otherwise the status of `error`.
    pub status: u16,
    pub error: Option<EventError>,
    /// Whether retrying the same event later may succeed (delivery failures).
    pub retriable: bool,
}

impl Outcome {
    fn accepted(id: Text) -> Self {
        Outcome {
            id: Some(id),
            status: 200,
            error: None,
            retriable: false,
        }
    }

    fn rejected(id: Option<Text>, error: EventError) -> Self {
        Outcome {
            id,
            status: error.status(),
            error: Some(error),
            retriable: false,
        }
    }
}

pub struct Pipeline {
    pub validators: Arc<ValidatorCache>,
    pub router: TopicRouter,
    pub sink: Arc<dyn Sink>,
    /// Caps dead letters per second, so that a broken client cannot flood the topic.
    pub dead_letter_cap: ratelimit::RateLimiter,
    /// The disk spool, when enabled: for `ack = "spool"` routes, and for the others while the
    /// sink is down, slow, or still replaying what was spooled before.
    pub spool: Option<Arc<Spool>>,
    /// `ack = "broker"` with a spool: how long to wait for the sink before spooling instead.
    pub ack_timeout: Duration,
}

/// Where an accepted record became durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durable {
    Sink,
    Spool,
}

/// What `{type}` is in the dead-letter topic of an event whose type has no schema: all of them
/// share one topic.
pub const UNREGISTERED: &str = "_unregistered";

impl Pipeline {
    /// `principal` is `None` only when authentication is disabled.
    pub async fn process(&self, decoded: Decoded, principal: Option<&Principal>) -> Vec<Outcome> {
        // One copy per request, shared by every record's header.
        let received = Bytes::from(rfc3339_millis(SystemTime::now()));
        // The source of events that name none: the client's, shared by all of them.
        let principal_source = principal.map(|p| Text::from(p.source.as_str()));
        let catalog = self.validators.catalog();
        let mut outcomes = Vec::with_capacity(decoded.len());
        let mut records = Vec::with_capacity(decoded.len());
        let mut acks = Vec::with_capacity(decoded.len());
        let mut record_index = Vec::with_capacity(decoded.len());
        let mut dead = Vec::new();
        for item in decoded {
            let mut event = match item {
                Ok(ev) => ev,
                Err(r) => {
                    outcomes.push(Outcome::rejected(r.id, r.error));
                    continue;
                }
            };
            if let Some(p) = principal {
                if !p.scopes.may_write(&event.ty) {
                    let e = EventError::new(
                        Code::TypeNotAllowed,
                        "/type",
                        "the credentials do not allow writing this event type",
                    );
                    dead.extend(self.dead_letter(&event, &e, &received, principal, &catalog));
                    outcomes.push(Outcome::rejected(Some(event.id), e));
                    continue;
                }
                if let (false, Some(source)) = (event.source_given, &principal_source) {
                    event.source = source.clone();
                }
            }
            match ValidatorCache::validate(&catalog, &event) {
                Ok(schema) => {
                    let (record, ack) = self.record(&event, schema, &received, principal);
                    if let Some(why) = self.sink.refuses(&record) {
                        let e = EventError::new(Code::RecordTooLarge, "", why);
                        outcomes.push(Outcome::rejected(Some(event.id), e));
                        continue;
                    }
                    record_index.push(outcomes.len());
                    records.push(record);
                    acks.push(ack);
                    outcomes.push(Outcome::accepted(event.id));
                }
                Err(e) => {
                    dead.extend(self.dead_letter(&event, &e, &received, principal, &catalog));
                    outcomes.push(Outcome::rejected(Some(event.id), e));
                }
            }
        }
        for o in &outcomes {
            if let Some(e) = &o.error {
                metrics::counter!(telemetry::EVENTS_REJECTED, "reason" => e.code.as_str())
                    .increment(1);
            }
        }
        if records.is_empty() && dead.is_empty() {
            return outcomes;
        }
        let sink = self.sink.kind();
        metrics::counter!(telemetry::EVENTS_ACCEPTED).increment(records.len() as u64);
        let started = Instant::now();
        // Dead letters ride in the same batch, after the events; their receipts only count.
        acks.resize(records.len() + dead.len(), Ack::Broker);
        records.extend(dead);
        let mut receipts = self.deliver(records, &acks).await;
        for r in receipts.split_off(record_index.len().min(receipts.len())) {
            let result = if r.is_ok() { "published" } else { "failed" };
            metrics::counter!(telemetry::DEAD_LETTERS, "result" => result).increment(1);
        }
        metrics::histogram!(telemetry::PUBLISH_DURATION, "sink" => sink)
            .record(started.elapsed().as_secs_f64());
        let mut published = 0u64;
        for (i, receipt) in record_index.into_iter().zip(receipts) {
            match receipt {
                Ok(Durable::Sink) => published += 1,
                Ok(Durable::Spool) => {}
                Err(e) => {
                    metrics::counter!(telemetry::PUBLISH_FAILURES, "sink" => sink, "reason" => e.code().as_str()).increment(1);
                    // Retriable failures are the sink being unavailable (503 + Retry-After);
                    // a sink refusing a record for good is a server-side problem (500). The
                    // client gets the code; the cause is logged, inside the request's span.
                    if e.retriable() {
                        tracing::debug!(sink, error = %e, "record not delivered");
                    } else {
                        tracing::error!(sink, error = %e, "sink refused a record");
                    }
                    let o = &mut outcomes[i];
                    o.status = e.status();
                    o.retriable = e.retriable();
                    o.error = Some(EventError::new(e.code(), "", e.client_message()));
                }
            }
        }
        metrics::counter!(telemetry::EVENTS_PUBLISHED, "sink" => sink).increment(published);
        outcomes
    }

    /// Makes `records` durable: in the sink, or in the spool per route and sink health.
    /// One receipt per record, in order.
    async fn deliver(
        &self,
        records: Vec<Record>,
        acks: &[Ack],
    ) -> Vec<Result<Durable, DeliveryError>> {
        let Some(spool) = &self.spool else {
            let receipts = self.sink.publish(records).await;
            return receipts
                .into_iter()
                .map(|r| r.map(|()| Durable::Sink))
                .collect();
        };
        let mut out: Vec<Option<Result<Durable, DeliveryError>>> = vec![None; records.len()];
        // Anything still waiting in the spool goes first, or a key's newer events would
        // overtake its older ones; a sink known to be down is not worth the wait.
        let detour = if spool.has_backlog() {
            Some("backlog")
        } else if !self.sink.is_ready() {
            Some("sink_down")
        } else {
            None
        };
        let mut to_spool: Vec<(usize, &'static str)> = Vec::new();
        let mut direct = Vec::new();
        for (i, ack) in acks.iter().enumerate() {
            match (ack, detour) {
                (Ack::Spool, _) => to_spool.push((i, "ack_spool")),
                (Ack::Broker, Some(reason)) => to_spool.push((i, reason)),
                (Ack::Broker, None) => direct.push(i),
            }
        }
        if !direct.is_empty() {
            let batch = direct.iter().map(|&i| records[i].clone()).collect();
            let deadline = tokio::time::Instant::now() + self.ack_timeout;
            let receipts = self.sink.publish_until(batch, deadline).await;
            for (i, r) in direct.into_iter().zip(receipts) {
                match r {
                    Ok(()) => out[i] = Some(Ok(Durable::Sink)),
                    Err(e) if e.retriable() => to_spool.push((i, "sink_failed")),
                    Err(e) => out[i] = Some(Err(e)),
                }
            }
        }
        if !to_spool.is_empty() {
            to_spool.sort_by_key(|(i, _)| *i);
            let batch: Vec<Record> = to_spool.iter().map(|(i, _)| records[*i].clone()).collect();
            let result = match spool.append(&batch).await {
                Ok(()) => {
                    for (_, reason) in &to_spool {
                        metrics::counter!(telemetry::SPOOL_APPENDED, "reason" => *reason)
                            .increment(1);
                    }
                    Ok(Durable::Spool)
                }
                Err(SpoolError::Full { .. }) => {
                    metrics::counter!(telemetry::SPOOL_REFUSED, "reason" => "full")
                        .increment(batch.len() as u64);
                    Err(DeliveryError::SpoolFull)
                }
                Err(e) => {
                    metrics::counter!(telemetry::SPOOL_REFUSED, "reason" => "io")
                        .increment(batch.len() as u64);
                    Err(DeliveryError::SpoolFailed(e.to_string()))
                }
            };
            for (i, _) in to_spool {
                out[i] = Some(result.clone());
            }
        }
        out.into_iter()
            .map(|o| o.expect("every record has a receipt"))
            .collect()
    }

    /// The CloudEvents Kafka binding in binary mode: `data` is the value, attributes are
    /// `ce_`-prefixed headers, plus Sluice's own metadata.
    fn record(
        &self,
        ev: &Event,
        schema: &CompiledSchema,
        received: &Bytes,
        principal: Option<&Principal>,
    ) -> (Record, Ack) {
        let tenant = principal.map(|p| p.tenant.as_str());
        let mut headers = attribute_headers(ev, received, tenant);
        headers.push(("sluice_schema_version", schema.version_text.clone()));
        if let Some(id) = &schema.id_text {
            headers.push(("sluice_schema_id", id.clone()));
        }
        let route = self.router.route(&ev.ty, tenant);
        let data = data_bytes(ev);
        let value = match (route.confluent_wire_format, schema.id) {
            (true, Some(id)) => {
                let mut framed = Vec::with_capacity(5 + data.len());
                framed.push(0u8);
                framed.extend_from_slice(&id.to_be_bytes());
                framed.extend_from_slice(&data);
                Bytes::from(framed)
            }
            _ => data,
        };
        let record = Record {
            topic: route.topic,
            key: ev.partition_key().bytes(),
            value,
            headers,
            extension_headers: extension_headers(ev),
        };
        (record, route.ack)
    }

    /// A rejected event for its route's dead-letter topic, if the route has one and the cap
    /// allows: the bytes the client sent as `data`, its attributes, and why it was refused.
    fn dead_letter(
        &self,
        ev: &Event,
        error: &EventError,
        received: &Bytes,
        principal: Option<&Principal>,
        catalog: &Catalog,
    ) -> Option<Record> {
        let tenant = principal.map(|p| p.tenant.as_str());
        // A type nobody registered is the client's choice: routed by it, dead letters would
        // make (or look for) one topic per name a client cares to send.
        let routed_as = if catalog.knows(&ev.ty) {
            ev.ty.as_str()
        } else {
            UNREGISTERED
        };
        let topic = self.router.route(routed_as, tenant).dead_letter?;
        if let Some(Err(_)) = self.dead_letter_cap.check("", 1, 0, Instant::now()) {
            metrics::counter!(telemetry::DEAD_LETTERS, "result" => "capped").increment(1);
            return None;
        }
        let mut headers = attribute_headers(ev, received, tenant);
        headers.push((
            "sluice_error_code",
            Bytes::from_static(error.code.as_str().as_bytes()),
        ));
        headers.push((
            "sluice_error_pointer",
            Bytes::copy_from_slice(error.pointer.as_bytes()),
        ));
        headers.push((
            "sluice_error_message",
            Bytes::copy_from_slice(error.message.as_bytes()),
        ));
        Some(Record {
            topic,
            key: ev.partition_key().bytes(),
            value: data_bytes(ev),
            headers,
            extension_headers: extension_headers(ev),
        })
    }
}

fn data_bytes(ev: &Event) -> Bytes {
    ev.data
        .clone()
        .unwrap_or_else(|| Bytes::from_static(b"null"))
}

fn extension_headers(ev: &Event) -> Vec<(String, Bytes)> {
    ev.extensions
        .iter()
        .map(|(k, v)| {
            let mut name = String::with_capacity(3 + k.len());
            name.push_str("ce_");
            name.push_str(k);
            (name, v.bytes())
        })
        .collect()
}

/// The event's CloudEvents attributes and Sluice's receipt metadata as record headers.
fn attribute_headers(
    ev: &Event,
    received: &Bytes,
    tenant: Option<&str>,
) -> Vec<(&'static str, Bytes)> {
    let mut headers: Vec<(&'static str, Bytes)> = Vec::with_capacity(12);
    let mut put = |k: &'static str, v: &Text| headers.push((k, v.bytes()));
    put("ce_specversion", &ev.specversion);
    put("ce_id", &ev.id);
    put("ce_source", &ev.source);
    put("ce_type", &ev.ty);
    if let Some(t) = &ev.time {
        put("ce_time", t);
    }
    if let Some(s) = &ev.subject {
        put("ce_subject", s);
    }
    if let Some(s) = &ev.dataschema {
        put("ce_dataschema", s);
    }
    match &ev.datacontenttype {
        Some(ct) => put("content-type", ct),
        None => headers.push(("content-type", Bytes::from_static(b"application/json"))),
    }
    headers.push(("sluice_received_time", received.clone()));
    if let Some(t) = tenant {
        headers.push(("sluice_tenant", Bytes::copy_from_slice(t.as_bytes())));
    }
    headers
}

/// `2026-11-23T13:41:00.123Z`: UTC, milliseconds.
pub fn rfc3339_millis(t: SystemTime) -> String {
    use std::sync::OnceLock;
    use time::format_description::OwnedFormatItem;
    static FORMAT: OnceLock<OwnedFormatItem> = OnceLock::new();
    let format = FORMAT.get_or_init(|| {
        time::format_description::parse_owned::<2>(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z",
        )
        .expect("a valid format description")
    });
    // Times before 1970 are not ours to stamp (received times come from the clock).
    let t = t.max(UNIX_EPOCH);
    time::OffsetDateTime::from(t)
        .format(format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_440_060_123);
        assert_eq!(rfc3339_millis(t), "2026-11-23T13:21:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }
}
