//! The end-to-end audit: read the topics back from the beginning and compare the ids of this
//! run (by prefix) with the ids Sluice answered 2xx.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Audit {
    /// Ids answered 2xx.
    pub acknowledged: usize,
    /// Records of this run found in the topics (copies included).
    pub read: usize,
    /// Acknowledged ids not found: must be 0.
    pub lost: usize,
    /// Copies beyond the first of an id of this run.
    pub duplicates: usize,
    /// Ids of this run found but not acknowledged (answered 503 yet written, for instance):
    /// allowed, reported for information.
    pub unacknowledged_found: usize,
    /// Up to 10 lost ids, to look for.
    pub lost_sample: Vec<String>,
}

/// Reads `topics` on `brokers` until every acknowledged id was seen (then one more second,
/// for late duplicates) or `timeout` passed. Blocking: call it from a blocking thread.
pub fn kafka(
    brokers: &str,
    topics: &[String],
    run_prefix: &str,
    acked: &[String],
    timeout: Duration,
) -> anyhow::Result<Audit> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("sluice-audit-{run_prefix}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    let mut missing: HashSet<&str> = acked.iter().map(String::as_str).collect();
    let acked_set: HashSet<&str> = missing.clone();
    let mut seen: HashMap<String, u32> = HashMap::new();
    let prefix = format!("{run_prefix}-");
    let deadline = Instant::now() + timeout;
    let mut linger: Option<Instant> = if missing.is_empty() {
        Some(Instant::now() + Duration::from_secs(1))
    } else {
        None
    };
    let mut read = 0;
    loop {
        let now = Instant::now();
        if now >= deadline || linger.is_some_and(|l| now >= l) {
            break;
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg?;
        let id = msg.headers().and_then(|h| {
            h.iter()
                .find(|hd| hd.key == "ce_id")
                .and_then(|hd| hd.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        let Some(id) = id else { continue };
        if !id.starts_with(&prefix) {
            continue;
        }
        read += 1;
        missing.remove(id.as_str());
        *seen.entry(id).or_default() += 1;
        if missing.is_empty() && linger.is_none() {
            linger = Some(Instant::now() + Duration::from_secs(1));
        }
    }
    let duplicates = seen.values().map(|n| (n - 1) as usize).sum();
    let unacknowledged_found = seen
        .keys()
        .filter(|id| !acked_set.contains(id.as_str()))
        .count();
    let mut lost_sample: Vec<String> = missing.iter().take(10).map(|s| s.to_string()).collect();
    lost_sample.sort();
    Ok(Audit {
        acknowledged: acked.len(),
        read,
        lost: missing.len(),
        duplicates,
        unacknowledged_found,
        lost_sample,
    })
}

impl Audit {
    pub fn text(&self) -> String {
        format!(
            "audit: {} acknowledged, {} read back; lost {}, duplicates {}, found but not acknowledged {}{}",
            self.acknowledged,
            self.read,
            self.lost,
            self.duplicates,
            self.unacknowledged_found,
            if self.lost > 0 {
                format!("; lost e.g. {:?}", self.lost_sample)
            } else {
                String::new()
            }
        )
    }
}
