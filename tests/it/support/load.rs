//! Load for fault tests: clients that each send batches in a loop, with their own partition
//! key, recording every event id answered 200 (in the order answered) and every refusal; and
//! the audit of a topic against what was acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::kafka::{consume_ids, Consumed};

#[derive(Debug, Default)]
pub struct Report {
    /// Ids answered 200, per client, in the order the answers came.
    pub acked: BTreeMap<usize, Vec<String>>,
    /// Answers by HTTP status (0: no answer, e.g. connection refused).
    pub statuses: BTreeMap<u16, usize>,
    /// 429/503 answers without a usable `Retry-After`.
    pub missing_retry_after: usize,
    /// Any other status than 200/207/429/503 or a connection error, with a sample.
    pub unexpected: Vec<String>,
    /// Events not accepted, by their status and error code (`503 delivery_timeout`), from the
    /// per-event results: what the clients were told and why.
    pub refusals: BTreeMap<String, usize>,
}

impl Report {
    pub fn acked_ids(&self) -> Vec<String> {
        self.acked.values().flatten().cloned().collect()
    }

    pub fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    pub fn refused(&self) -> usize {
        self.count(429) + self.count(503)
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<Report>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How the clients behave.
#[derive(Clone)]
pub struct Shape {
    pub clients: usize,
    pub batch: usize,
    /// Pause between a client's requests.
    pub pause: Duration,
    /// Whether connection errors are expected (a server going away) rather than failures.
    pub tolerate_connection_errors: bool,
}

impl Load {
    /// Starts `shape.clients` clients POSTing `ty` events to `url`/v1/events. Ids are
    /// `c<client>-<seq:08>`; the partition key is `c<client>`.
    pub fn start(url: &str, ty: &str, shape: Shape) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(Report::default()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let tasks = (0..shape.clients)
            .map(|c| {
                let (client, url, ty, stop, report, shape) = (
                    client.clone(),
                    url.to_string(),
                    ty.to_string(),
                    stop.clone(),
                    report.clone(),
                    shape.clone(),
                );
                tokio::spawn(async move {
                    let mut seq = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let events: Vec<Value> = (0..shape.batch)
                            .map(|_| {
                                seq += 1;
                                json!({"type": ty, "id": format!("c{c}-{seq:08}"),
                                       "partitionkey": format!("c{c}"), "data": {"n": seq}})
                            })
                            .collect();
                        let resp = client
                            .post(format!("{url}/v1/events"))
                            .header("content-type", "application/cloudevents-batch+json")
                            .body(Value::from(events).to_string())
                            .send()
                            .await;
                        let answered = match resp {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let retry = r
                                    .headers()
                                    .get("retry-after")
                                    .and_then(|v| v.to_str().ok())
                                    .and_then(|v| v.parse::<u64>().ok());
                                let body: Value = r.json().await.unwrap_or(Value::Null);
                                (status, retry, body)
                            }
                            Err(e) => {
                                {
                                    let mut rep = report.lock().unwrap();
                                    *rep.statuses.entry(0).or_default() += 1;
                                    if !shape.tolerate_connection_errors && rep.unexpected.len() < 5
                                    {
                                        rep.unexpected.push(format!("connection: {e}"));
                                    }
                                }
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        };
                        let (status, retry, body) = answered;
                        {
                            let mut rep = report.lock().unwrap();
                            *rep.statuses.entry(status).or_default() += 1;
                            for r in body["results"].as_array().into_iter().flatten() {
                                if r["status"] != 200 {
                                    let why = format!("{} {}", r["status"], r["error"]["code"]);
                                    *rep.refusals.entry(why.replace('"', "")).or_default() += 1;
                                }
                            }
                            match status {
                                200 | 207 => {
                                    let ids = body["results"]
                                        .as_array()
                                        .map(|a| {
                                            a.iter()
                                                .filter(|r| r["status"] == 200)
                                                .map(|r| r["id"].as_str().unwrap().to_string())
                                                .collect::<Vec<_>>()
                                        })
                                        .unwrap_or_default();
                                    rep.acked.entry(c).or_default().extend(ids);
                                }
                                429 | 503 => {
                                    if body["results"].is_null() {
                                        let why = format!(
                                            "{status} {} (whole request)",
                                            body["error"]["code"]
                                        );
                                        *rep.refusals.entry(why.replace('"', "")).or_default() += 1;
                                    }
                                    if retry.is_none_or(|s| s < 1) {
                                        rep.missing_retry_after += 1;
                                    }
                                }
                                _ => {
                                    if rep.unexpected.len() < 5 {
                                        rep.unexpected.push(format!("{status}: {body}"));
                                    }
                                }
                            }
                        }
                        if status == 429 || status == 503 {
                            // A real client honours Retry-After; a short pause keeps the test fast.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        tokio::time::sleep(shape.pause).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            report,
            tasks,
        }
    }

    /// Events answered 200 so far, per client (index = client).
    pub fn acked_per_client(&self) -> Vec<usize> {
        let rep = self.report.lock().unwrap();
        (0..self.tasks.len())
            .map(|c| rep.acked.get(&c).map_or(0, Vec::len))
            .collect()
    }

    /// Answers with `status` so far.
    pub fn count_so_far(&self, status: u16) -> usize {
        self.report.lock().unwrap().count(status)
    }

    /// Events answered 200 per second, over the next `window`.
    pub async fn rate(&self, window: Duration) -> f64 {
        let before = self.acked_so_far();
        tokio::time::sleep(window).await;
        (self.acked_so_far() - before) as f64 / window.as_secs_f64()
    }

    /// Waits until every client had `events` more events answered 200 than in `since` (from
    /// [`Load::acked_per_client`]): traffic is back for every key, not just some. Returns how
    /// long that took; panics after `within`.
    pub async fn wait_every_client_acked(
        &self,
        since: &[usize],
        events: usize,
        within: Duration,
    ) -> Duration {
        let started = std::time::Instant::now();
        loop {
            let now = self.acked_per_client();
            if now.iter().zip(since).all(|(n, s)| *n >= s + events) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "not every client got {events} more events acknowledged within {within:?}: \
                 {since:?} then, {now:?} now"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Events answered 200 so far.
    pub fn acked_so_far(&self) -> usize {
        self.report
            .lock()
            .unwrap()
            .acked
            .values()
            .map(Vec::len)
            .sum()
    }

    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.report)
            .unwrap_or_else(|_| panic!("clients still hold the report"))
            .into_inner()
            .unwrap()
    }
}

/// What a topic holds compared with what was acknowledged.
#[derive(Debug)]
pub struct Audit {
    pub acked: usize,
    pub lost: Vec<String>,
    /// Records beyond the first copy of each id.
    pub duplicates: usize,
    /// Keys whose acknowledged events' first copies are not in the order they were sent.
    pub out_of_order_keys: Vec<String>,
}

pub fn audit(report: &Report, records: &[Consumed]) -> Audit {
    let acked: Vec<String> = report.acked_ids();
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    // Per key, the acknowledged ids' sequence numbers in topic order (first copies only).
    let acked_set: HashSet<&str> = acked.iter().map(String::as_str).collect();
    let mut per_key: HashMap<&str, Vec<u64>> = HashMap::new();
    for r in records {
        let id = r.id();
        if !seen.insert(id) {
            duplicates += 1;
            continue;
        }
        if acked_set.contains(id) {
            let seq: u64 = id.rsplit('-').next().unwrap().parse().unwrap();
            per_key.entry(r.key.as_str()).or_default().push(seq);
        }
    }
    let lost = acked
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .cloned()
        .collect();
    let mut out_of_order_keys: Vec<String> = per_key
        .into_iter()
        .filter(|(_, seqs)| seqs.windows(2).any(|w| w[0] > w[1]))
        .map(|(k, _)| k.to_string())
        .collect();
    out_of_order_keys.sort();
    Audit {
        acked: acked.len(),
        lost,
        duplicates,
        out_of_order_keys,
    }
}

impl Audit {
    /// Panics unless nothing acknowledged is missing; prints the figures either way.
    pub fn assert_nothing_lost(&self, test: &str) {
        eprintln!(
            "[{test}] acknowledged {}, lost {}, duplicates {}, keys out of order {}",
            self.acked,
            self.lost.len(),
            self.duplicates,
            self.out_of_order_keys.len()
        );
        assert!(
            self.lost.is_empty(),
            "{test}: {} acknowledged events are not in the topic, e.g. {:?}",
            self.lost.len(),
            &self.lost[..self.lost.len().min(5)]
        );
    }
}

/// Reads `topic` until every acknowledged id of `report` arrived (or a minute passed) and
/// audits it.
pub async fn audit_topic(brokers: &str, topic: &str, report: &Report) -> Audit {
    let records = consume_ids(brokers, topic, &report.acked_ids(), Duration::from_secs(60)).await;
    audit(report, &records)
}
