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
    let mut tally = Tally::new(run_prefix, acked);
    let deadline = Instant::now() + timeout;
    let mut linger: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if tally.missing.is_empty() && linger.is_none() {
            // Everything acknowledged is there: one more second for late duplicates.
            linger = Some(now + Duration::from_secs(1));
        }
        if now >= deadline || linger.is_some_and(|l| now >= l) {
            break;
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg?;
        if let Some(id) = msg.headers().and_then(|h| {
            h.iter()
                .find(|hd| hd.key == "ce_id")
                .and_then(|hd| hd.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        }) {
            tally.add(&id);
        }
    }
    Ok(tally.finish(acked.len()))
}

/// Tallies ids of this run as they are read.
struct Tally<'a> {
    prefix: String,
    missing: HashSet<&'a str>,
    acked: HashSet<&'a str>,
    seen: HashMap<String, u32>,
    read: usize,
}

impl<'a> Tally<'a> {
    fn new(run_prefix: &str, acked: &'a [String]) -> Tally<'a> {
        let set: HashSet<&str> = acked.iter().map(String::as_str).collect();
        Tally {
            prefix: format!("{run_prefix}-"),
            missing: set.clone(),
            acked: set,
            seen: HashMap::new(),
            read: 0,
        }
    }

    fn add(&mut self, id: &str) {
        if !id.starts_with(&self.prefix) {
            return;
        }
        self.read += 1;
        self.missing.remove(id);
        *self.seen.entry(id.to_string()).or_default() += 1;
    }

    fn finish(self, acknowledged: usize) -> Audit {
        let mut lost_sample: Vec<String> = self
            .missing
            .iter()
            .take(10)
            .map(|s| s.to_string())
            .collect();
        lost_sample.sort();
        Audit {
            acknowledged,
            read: self.read,
            lost: self.missing.len(),
            duplicates: self.seen.values().map(|n| (n - 1) as usize).sum(),
            unacknowledged_found: self
                .seen
                .keys()
                .filter(|id| !self.acked.contains(id.as_str()))
                .count(),
            lost_sample,
        }
    }
}

/// Reads every shard of `streams` from the start (Sluice's envelope format: the id is the
/// JSON's `id`). `endpoint`: an emulator; credentials and region from the AWS chain.
pub async fn kinesis(
    endpoint: Option<&str>,
    streams: &[String],
    run_prefix: &str,
    acked: &[String],
    timeout: Duration,
) -> anyhow::Result<Audit> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    let client = aws_sdk_kinesis::Client::new(&loader.load().await);
    let deadline = Instant::now() + timeout;
    let mut tally = Tally::new(run_prefix, acked);
    for stream in streams {
        let shards = client.list_shards().stream_name(stream).send().await?;
        for shard in shards.shards() {
            let mut it = client
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(shard.shard_id())
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await?
                .shard_iterator()
                .map(str::to_string);
            while let Some(i) = it {
                if Instant::now() >= deadline {
                    break;
                }
                let r = client.get_records().shard_iterator(&i).send().await?;
                for rec in r.records() {
                    let v: serde_json::Value =
                        serde_json::from_slice(rec.data().as_ref()).unwrap_or_default();
                    if let Some(id) = v["id"].as_str() {
                        tally.add(id);
                    }
                }
                // Caught up with this shard.
                if r.records().is_empty() || r.millis_behind_latest() == Some(0) {
                    break;
                }
                it = r.next_shard_iterator().map(str::to_string);
            }
        }
    }
    Ok(tally.finish(acked.len()))
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
