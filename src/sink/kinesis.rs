//! Kinesis through PutRecords. Records from every request queue per stream; one batcher task
//! packs them into calls (at most `max_batch_records` / `max_batch_bytes`, after `linger`),
//! runs up to `max_in_flight_calls` at once, and answers each record from its own entry in the
//! response: PutRecords succeeds as a call while failing some records, so only those are sent
//! again, with jittered exponential backoff, until the record's deadline.
//!
//! **Order per partition key.** A key has at most one record in flight, and a record waits
//! while an earlier record of its key is in flight or waiting to be retried. So a retry never
//! lets a later record of the key overtake an earlier one. The cost: one record per key per
//! call round trip (Kinesis accepts 1 000 records/s per shard anyway).
//!
//! **Throttling** (`ProvisionedThroughputExceededException`, `LimitExceededException`) pauses
//! calls to that stream for the backoff; the records stay queued and hold their admission,
//! so admission control refuses new work (503) instead of a queue growing without bound.
//!
//! Data: the `kinesis.format` envelope (CloudEvents JSON with `sluice*` extensions) or the
//! raw value. The SDK's own retries are off: this module owns retries and deadlines.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use base64::Engine;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{DeliveryError, Receipts, Record, Sink};
use crate::config::{KinesisConfig, KinesisFormat};
use crate::telemetry;

/// Kinesis's cap on one record: data plus partition key.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Kinesis's cap on a partition key, in Unicode characters.
const MAX_KEY_CHARS: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct KinesisSink {
    tx: mpsc::Sender<Item>,
    ready: Arc<AtomicBool>,
    /// Records handed over and not answered yet (for `flush`).
    pending: Arc<AtomicUsize>,
    delivery_timeout: Duration,
    format: KinesisFormat,
}

struct Item {
    stream: String,
    key: String,
    hash: Option<String>,
    data: Bytes,
    deadline: Instant,
    queued: Instant,
    not_before: Instant,
    attempts: u32,
    last_error: Option<DeliveryError>,
    done: oneshot::Sender<Result<(), DeliveryError>>,
}

impl Item {
    fn size(&self) -> usize {
        self.data.len() + self.key.len()
    }
}

#[derive(Clone, Copy)]
struct Limits {
    linger: Duration,
    records: usize,
    bytes: usize,
    in_flight: usize,
}

impl KinesisSink {
    pub async fn new(config: &KinesisConfig) -> anyhow::Result<KinesisSink> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(config.call_timeout.0)
                    .build(),
            );
        if let Some(r) = &config.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &config.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            anyhow::bail!("no AWS region for the Kinesis sink: set kinesis.region or AWS_REGION");
        }
        let client = aws_sdk_kinesis::Client::new(&sdk);
        let limits = Limits {
            linger: config.linger.0,
            records: config.max_batch_records,
            bytes: config.max_batch_bytes.as_usize(),
            in_flight: config.max_in_flight_calls,
        };
        // Admission control bounds what is queued; this is a second fence.
        let (tx, rx) = mpsc::channel(100_000);
        let ready = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(AtomicUsize::new(0));
        tokio::spawn(batcher(client.clone(), rx, limits, pending.clone()));
        tokio::spawn(probe(
            client,
            Arc::downgrade(&ready),
            config.streams.clone(),
            config.probe_interval.0,
        ));
        Ok(KinesisSink {
            tx,
            ready,
            pending,
            delivery_timeout: config.delivery_timeout.0,
            format: config.format,
        })
    }

    fn data(&self, r: &Record) -> Bytes {
        match self.format {
            KinesisFormat::Raw => r.value.clone(),
            KinesisFormat::Envelope => envelope(r),
        }
    }
}

/// The record as a CloudEvents JSON event: `ce_*` headers become attributes, `content-type`
/// becomes `datacontenttype`, `sluice_*` headers become `sluice*` extensions (CloudEvents
/// extension names are lowercase letters and digits), and the value is `data` when it is JSON,
/// else `data_base64`.
pub fn envelope(r: &Record) -> Bytes {
    let mut m = serde_json::Map::new();
    // The client's extensions first, Sluice's own headers last: should a client's attribute
    // ever map to one of Sluice's names, Sluice's value is the one kept.
    let headers = r
        .extension_headers
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .chain(r.headers.iter().map(|(k, v)| (*k, v)));
    for (k, v) in headers {
        let v = serde_json::Value::String(String::from_utf8_lossy(v).into_owned());
        if let Some(attr) = k.strip_prefix("ce_") {
            m.insert(attr.to_string(), v);
        } else if k == "content-type" {
            m.insert("datacontenttype".into(), v);
        } else if let Some(rest) = k.strip_prefix("sluice_") {
            m.insert(format!("sluice{}", rest.replace('_', "")), v);
        }
    }
    match serde_json::from_slice::<Box<serde_json::value::RawValue>>(&r.value) {
        Ok(raw) => {
            m.insert(
                "data".into(),
                serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null),
            );
        }
        Err(_) => {
            m.insert(
                "data_base64".into(),
                serde_json::Value::String(
                    base64::engine::general_purpose::STANDARD.encode(&r.value),
                ),
            );
        }
    }
    Bytes::from(serde_json::to_vec(&m).expect("a JSON map serializes"))
}

#[async_trait]
impl Sink for KinesisSink {
    fn kind(&self) -> &'static str {
        "kinesis"
    }

    fn refuses(&self, r: &Record) -> Option<String> {
        let key = r.key.len().clamp(1, MAX_KEY_CHARS * 4);
        // The envelope holds the value and every header, each escaped at most six-fold:
        // only records near the limit are encoded to find out.
        let bound = r.value.len() * 6 + (r.size() - r.value.len()) * 6 + 4096 + key;
        if bound <= MAX_RECORD_BYTES {
            return None;
        }
        let size = self.data(r).len() + key;
        (size > MAX_RECORD_BYTES).then(|| {
            format!("{size} bytes with its partition key; Kinesis takes at most {MAX_RECORD_BYTES}")
        })
    }

    async fn publish(&self, records: Vec<Record>) -> Receipts {
        let deadline = Instant::now() + self.delivery_timeout;
        self.publish_until(records, deadline).await
    }

    async fn publish_until(&self, records: Vec<Record>, deadline: Instant) -> Receipts {
        let deadline = deadline.min(Instant::now() + self.delivery_timeout);
        let now = Instant::now();
        let mut waits = Vec::with_capacity(records.len());
        for r in &records {
            let data = self.data(r);
            let key = String::from_utf8_lossy(&r.key).into_owned();
            let key = if key.is_empty() { "-".to_string() } else { key };
            let key: String = key.chars().take(MAX_KEY_CHARS).collect();
            if data.len() + key.len() > MAX_RECORD_BYTES {
                waits.push(Err(DeliveryError::TooLarge(format!(
                    "{} bytes with its partition key; Kinesis takes at most {MAX_RECORD_BYTES}",
                    data.len() + key.len()
                ))));
                continue;
            }
            let hash = r
                .extension_headers
                .iter()
                .find(|(k, _)| k == "ce_explicithashkey")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
            let (done, rx) = oneshot::channel();
            let item = Item {
                stream: r.topic.clone(),
                key,
                hash,
                data,
                deadline,
                queued: now,
                not_before: now,
                attempts: 0,
                last_error: None,
                done,
            };
            self.pending.fetch_add(1, Ordering::Relaxed);
            match self.tx.try_send(item) {
                Ok(()) => waits.push(Ok(rx)),
                Err(e) => {
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                    waits.push(Err(match e {
                        mpsc::error::TrySendError::Full(_) => DeliveryError::QueueFull,
                        mpsc::error::TrySendError::Closed(_) => {
                            DeliveryError::Failed("the Kinesis batcher has stopped".into())
                        }
                    }));
                }
            }
        }
        let mut out = Vec::with_capacity(waits.len());
        for w in waits {
            out.push(match w {
                Err(e) => Err(e),
                Ok(rx) => match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(DeliveryError::Failed("the Kinesis batcher stopped".into())),
                    Err(_) => Err(DeliveryError::TimedOut(
                        "no PutRecords acknowledgement within kinesis.delivery_timeout".into(),
                    )),
                },
            });
        }
        out
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    async fn flush(&self, timeout: Duration) -> Result<(), DeliveryError> {
        let deadline = Instant::now() + timeout;
        while self.pending.load(Ordering::Relaxed) > 0 {
            if Instant::now() >= deadline {
                return Err(DeliveryError::TimedOut("Kinesis flush".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// What one PutRecords call says about each of its records.
struct CallDone {
    stream: String,
    items: Vec<Item>,
    /// Per record: `None` put, `Some(code, message)` failed; `Err` when the whole call failed.
    result: Result<Vec<Option<(String, String)>>, CallError>,
}

struct CallError {
    code: String,
    message: String,
    retriable: bool,
    throttled: bool,
}

/// Packs queued records into calls and answers them. Ends when the sink is dropped and
/// everything queued is answered.
async fn batcher(
    client: aws_sdk_kinesis::Client,
    mut rx: mpsc::Receiver<Item>,
    limits: Limits,
    pending: Arc<AtomicUsize>,
) {
    let mut queues: HashMap<String, VecDeque<Item>> = HashMap::new();
    // Per stream, the partition keys with a record in flight.
    let mut in_flight_keys: HashMap<String, HashSet<String>> = HashMap::new();
    let mut paused: HashMap<String, Instant> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<CallDone>();
    let mut in_flight = 0usize;
    let mut open = true;
    let answer = |item: Item, r: Result<(), DeliveryError>| {
        pending.fetch_sub(1, Ordering::Relaxed);
        let _ = item.done.send(r);
    };
    loop {
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        let mut soonest = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        for (stream, q) in queues.iter_mut() {
            // Records past their deadline are answered now (their client has its answer).
            let mut kept = VecDeque::with_capacity(q.len());
            for item in q.drain(..) {
                if item.deadline <= now {
                    let e = item.last_error.clone().unwrap_or_else(|| {
                        DeliveryError::TimedOut("not put within kinesis.delivery_timeout".into())
                    });
                    answer(item, Err(e));
                } else {
                    kept.push_back(item);
                }
            }
            *q = kept;
            if q.is_empty() {
                continue;
            }
            if let Some(&until) = paused.get(stream) {
                if until > now {
                    soonest(until);
                    continue;
                }
            }
            while in_flight < limits.in_flight {
                let busy = in_flight_keys.entry(stream.clone()).or_default();
                let Some((batch, next)) = take_batch(q, busy, limits, now) else {
                    break;
                };
                if let Some(t) = next {
                    soonest(t);
                }
                if batch.is_empty() {
                    break;
                }
                for item in &batch {
                    busy.insert(item.key.clone());
                }
                in_flight += 1;
                tokio::spawn(call(client.clone(), stream.clone(), batch, done_tx.clone()));
            }
            if let Some(first) = q.iter().map(|i| i.deadline).min() {
                soonest(first);
            }
        }
        queues.retain(|_, q| !q.is_empty());
        if !open && queues.is_empty() && in_flight == 0 {
            return;
        }
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = rx.recv(), if open => match item {
                Some(item) => {
                    queues.entry(item.stream.clone()).or_default().push_back(item);
                    // Take everything already waiting before packing.
                    while let Ok(item) = rx.try_recv() {
                        queues.entry(item.stream.clone()).or_default().push_back(item);
                    }
                }
                None => open = false,
            },
            Some(done) = done_rx.recv() => {
                in_flight -= 1;
                let now = Instant::now();
                let q = queues.entry(done.stream.clone()).or_default();
                let mut retry = Vec::new();
                let mut throttled = false;
                let results: Vec<Option<(String, String, bool, bool)>> = match done.result {
                    Ok(per) => per.into_iter().map(|r| r.map(|(code, msg)| {
                        let t = code == "ProvisionedThroughputExceededException";
                        (code, msg, true, t)
                    })).collect(),
                    Err(e) => vec![Some((e.code, e.message, e.retriable, e.throttled)); done.items.len()],
                };
                for (item, r) in done.items.into_iter().zip(results) {
                    if let Some(busy) = in_flight_keys.get_mut(&done.stream) {
                        busy.remove(&item.key);
                    }
                    match r {
                        None => {
                            metrics::counter!(telemetry::KINESIS_RECORDS_PUT).increment(1);
                            answer(item, Ok(()));
                        }
                        Some((code, message, retriable, is_throttle)) => {
                            metrics::counter!(telemetry::KINESIS_RECORDS_FAILED, "code" => code.clone()).increment(1);
                            if is_throttle {
                                throttled = true;
                                metrics::counter!(telemetry::KINESIS_THROTTLES).increment(1);
                            }
                            if !retriable {
                                answer(item, Err(DeliveryError::Rejected(format!("{code}: {message}"))));
                                continue;
                            }
                            let mut item = item;
                            item.attempts += 1;
                            item.last_error = Some(DeliveryError::Failed(format!("{code}: {message}")));
                            item.not_before = now + backoff(item.attempts);
                            if item.not_before >= item.deadline {
                                let e = item.last_error.clone().expect("just set");
                                answer(item, Err(e));
                            } else {
                                metrics::counter!(telemetry::KINESIS_RETRIES).increment(1);
                                retry.push(item);
                            }
                        }
                    }
                }
                // Failed records go back in front, in their order: they are older than
                // anything queued behind them.
                for item in retry.into_iter().rev() {
                    q.push_front(item);
                }
                if throttled {
                    let until = now + backoff(1 + q.front().map_or(0, |i| i.attempts));
                    paused.insert(done.stream, until);
                }
            },
            _ = sleep => {}
        }
    }
}

/// The next call's records for one stream: the oldest eligible record of each key not in
/// flight, up to the limits. `None` when nothing may go yet; the `Instant` is when to look
/// again (linger or backoff). Records taken leave the queue.
fn take_batch(
    q: &mut VecDeque<Item>,
    in_flight: &HashSet<String>,
    limits: Limits,
    now: Instant,
) -> Option<(Vec<Item>, Option<Instant>)> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut picks = Vec::new();
    let mut bytes = 0;
    let mut oldest: Option<Instant> = None;
    let mut retry_due = false;
    let mut next: Option<Instant> = None;
    for (i, item) in q.iter().enumerate() {
        // The first record of a key blocks the later ones, whether it may go or not.
        if !seen.insert(item.key.as_str()) {
            continue;
        }
        if in_flight.contains(&item.key) {
            continue;
        }
        if item.not_before > now {
            next = Some(next.map_or(item.not_before, |n: Instant| n.min(item.not_before)));
            continue;
        }
        if picks.len() == limits.records || bytes + item.size() > limits.bytes {
            break;
        }
        bytes += item.size();
        picks.push(i);
        retry_due |= item.attempts > 0;
        oldest = Some(oldest.map_or(item.queued, |o: Instant| o.min(item.queued)));
    }
    let oldest = oldest?;
    let full = picks.len() == limits.records || bytes * 10 >= limits.bytes * 9;
    let due = oldest + limits.linger;
    if !full && !retry_due && due > now {
        let next = Some(next.map_or(due, |n| n.min(due)));
        return Some((Vec::new(), next));
    }
    let mut taken = Vec::with_capacity(picks.len());
    let mut rest = VecDeque::with_capacity(q.len() - picks.len());
    let mut picks = picks.into_iter().peekable();
    for (i, item) in q.drain(..).enumerate() {
        if picks.peek() == Some(&i) {
            picks.next();
            taken.push(item);
        } else {
            rest.push_back(item);
        }
    }
    *q = rest;
    Some((taken, next))
}

fn backoff(attempts: u32) -> Duration {
    let base = MIN_BACKOFF
        .saturating_mul(1 << attempts.min(10))
        .min(MAX_BACKOFF);
    // Full jitter between half and all of it, so throttled replicas do not retry in step.
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let frac = 0.5 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0;
    base.mul_f64(frac)
}

async fn call(
    client: aws_sdk_kinesis::Client,
    stream: String,
    items: Vec<Item>,
    done: mpsc::UnboundedSender<CallDone>,
) {
    metrics::histogram!(telemetry::KINESIS_BATCH_RECORDS).record(items.len() as f64);
    let entries: Vec<PutRecordsRequestEntry> = items
        .iter()
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .data(Blob::new(i.data.to_vec()))
                .partition_key(i.key.clone())
                .set_explicit_hash_key(i.hash.clone())
                .build()
                .expect("data and partition key are set")
        })
        .collect();
    let started = Instant::now();
    let res = client
        .put_records()
        .stream_name(&stream)
        .set_records(Some(entries))
        .send()
        .await;
    metrics::histogram!(telemetry::KINESIS_CALL_DURATION).record(started.elapsed().as_secs_f64());
    let result = match res {
        Ok(out) if out.records().len() == items.len() => Ok(out
            .records()
            .iter()
            .map(|r| {
                r.error_code().map(|c| {
                    (
                        c.to_string(),
                        r.error_message().unwrap_or_default().to_string(),
                    )
                })
            })
            .collect()),
        Ok(out) => Err(CallError {
            code: "MalformedResponse".into(),
            message: format!(
                "{} results for {} records",
                out.records().len(),
                items.len()
            ),
            retriable: true,
            throttled: false,
        }),
        Err(e) => {
            let c = classify(&e);
            tracing::debug!(stream, code = %c.code, message = %c.message, records = items.len(), "PutRecords failed");
            Err(c)
        }
    };
    let _ = done.send(CallDone {
        stream,
        items,
        result,
    });
}

fn classify<E, R>(e: &aws_sdk_kinesis::error::SdkError<E, R>) -> CallError
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error,
{
    use aws_sdk_kinesis::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().unwrap_or("Unknown").to_string();
            let throttled = matches!(
                code.as_str(),
                "ProvisionedThroughputExceededException"
                    | "LimitExceededException"
                    | "ThrottlingException"
                    | "KMSThrottlingException"
            );
            // Refused for good: the stream, the request or the credentials are wrong.
            let permanent = matches!(
                code.as_str(),
                "ResourceNotFoundException"
                    | "InvalidArgumentException"
                    | "AccessDeniedException"
                    | "ValidationException"
                    | "KMSAccessDeniedException"
                    | "KMSDisabledException"
                    | "KMSNotFoundException"
                    | "KMSInvalidStateException"
                    | "KMSOptInRequired"
            );
            CallError {
                message: err.message().unwrap_or_default().to_string(),
                code,
                retriable: !permanent,
                throttled,
            }
        }
        other => CallError {
            code: match other {
                SdkError::TimeoutError(_) => "Timeout",
                SdkError::DispatchFailure(_) => "DispatchFailure",
                SdkError::ResponseError(_) => "ResponseError",
                _ => "SdkError",
            }
            .into(),
            message: format!("{other}"),
            retriable: true,
            throttled: false,
        },
    }
}

/// Keeps `ready` current: every stream in `kinesis.streams` answers DescribeStreamSummary as
/// ACTIVE or UPDATING; with none listed, ListStreams answers (Kinesis is reachable and the
/// credentials work). Streams met only in traffic do not count: an event type routed to a
/// stream that does not exist fails its own events (500), not the whole replica.
async fn probe(
    client: aws_sdk_kinesis::Client,
    ready: std::sync::Weak<AtomicBool>,
    names: Vec<String>,
    interval: Duration,
) {
    use aws_sdk_kinesis::types::StreamStatus;
    loop {
        let ok = if names.is_empty() {
            client.list_streams().limit(1).send().await.is_ok()
        } else {
            let mut all = true;
            for name in &names {
                match client
                    .describe_stream_summary()
                    .stream_name(name)
                    .send()
                    .await
                {
                    Ok(out) => {
                        let status = out
                            .stream_description_summary()
                            .map(|d| d.stream_status().clone());
                        if !matches!(
                            status,
                            Some(StreamStatus::Active) | Some(StreamStatus::Updating)
                        ) {
                            tracing::warn!(stream = %name, ?status, "Kinesis stream not writable");
                            all = false;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(stream = %name, error = %aws_sdk_kinesis::error::DisplayErrorContext(&e), "Kinesis stream not reachable");
                        all = false;
                    }
                }
            }
            all
        };
        let Some(r) = ready.upgrade() else { return };
        if r.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!(streams = names.len(), "Kinesis reachable");
            } else {
                tracing::warn!("Kinesis unreachable");
            }
        }
        drop(r);
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &'static [u8]) -> Record {
        Record {
            topic: "s".into(),
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(value),
            headers: vec![
                ("ce_id", Bytes::from_static(b"e1")),
                ("ce_type", Bytes::from_static(b"app.signup")),
                ("content-type", Bytes::from_static(b"application/json")),
                ("sluice_schema_id", Bytes::from_static(b"7")),
                (
                    "sluice_received_time",
                    Bytes::from_static(b"2026-11-23T00:00:00.000Z"),
                ),
            ],
            extension_headers: vec![("ce_region".into(), Bytes::from_static(b"eu"))],
        }
    }

    #[test]
    fn the_envelope_is_a_cloudevent_with_sluice_extensions() {
        let e: serde_json::Value =
            serde_json::from_slice(&envelope(&record(br#"{"plan":"team"}"#))).unwrap();
        assert_eq!(
            e,
            serde_json::json!({
                "id": "e1", "type": "app.signup", "datacontenttype": "application/json",
                "sluiceschemaid": "7", "sluicereceivedtime": "2026-11-23T00:00:00.000Z",
                "region": "eu", "data": {"plan": "team"}
            })
        );
        // Not JSON (Confluent's framing): base64.
        let e: serde_json::Value =
            serde_json::from_slice(&envelope(&record(b"\x00\x00\x00\x00\x07{}"))).unwrap();
        assert_eq!(e["data_base64"], "AAAAAAd7fQ==");
        assert!(e.get("data").is_none());
    }

    #[test]
    fn sluices_own_attributes_win_over_the_clients_in_the_envelope() {
        let mut r = record(b"{}");
        r.headers
            .push(("sluice_tenant", Bytes::from_static(b"acme")));
        r.extension_headers
            .push(("ce_sluicetenant".into(), Bytes::from_static(b"other")));
        r.extension_headers
            .push(("ce_sluiceschemaid".into(), Bytes::from_static(b"1")));
        let e: serde_json::Value = serde_json::from_slice(&envelope(&r)).unwrap();
        assert_eq!(e["sluicetenant"], "acme");
        assert_eq!(e["sluiceschemaid"], "7");
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_capped() {
        for attempts in 1..20 {
            let b = backoff(attempts);
            let base = MIN_BACKOFF
                .saturating_mul(1 << attempts.min(10))
                .min(MAX_BACKOFF);
            assert!(b >= base / 2 && b <= base, "{attempts}: {b:?}");
        }
    }
}
