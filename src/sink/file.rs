//! The embedded default: one NDJSON file per topic under `file.dir`, each line
//! `{"topic", "key", "headers", "value"}`. A record is acknowledged only after the file is
//! fsynced. One writer thread does all the I/O and commits whatever queued up while it was
//! syncing in one fsync (group commit), so concurrent requests share the cost of a sync.
//! Each topic's file succeeds or fails on its own: a topic that cannot be written fails only
//! its records, and what a failed write left of them is cut off again, so a client that
//! retries them does not store them twice.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::{DeliveryError, Receipts, Record, Sink};

/// Batches waiting for the writer; a full queue pushes back on requests.
const QUEUE_DEPTH: usize = 1024;
/// Most batches committed by one fsync, to bound the latency of the first one.
const MAX_GROUP: usize = 256;

enum Job {
    Write {
        records: Vec<Record>,
        /// One result per record, in order.
        reply: oneshot::Sender<Vec<Result<(), String>>>,
    },
    Flush(oneshot::Sender<()>),
}

pub struct FileSink {
    jobs: mpsc::Sender<Job>,
}

impl FileSink {
    pub fn open(dir: &Path) -> anyhow::Result<FileSink> {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the data folder {} (config field `file.dir`): {e}",
                dir.display()
            )
        })?;
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        let dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("sluice-file-sink".into())
            .spawn(move || writer_loop(dir, rx))?;
        Ok(FileSink { jobs })
    }
}

#[async_trait]
impl Sink for FileSink {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn publish(&self, records: Vec<Record>) -> Receipts {
        let n = records.len();
        let (reply, done) = oneshot::channel();
        let stopped = || DeliveryError::Failed("the file writer has stopped".into());
        let outcome = match self.jobs.try_send(Job::Write { records, reply }) {
            Err(mpsc::error::TrySendError::Full(_)) => Err(DeliveryError::QueueFull),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(stopped()),
            Ok(()) => match done.await {
                Ok(results) => {
                    return results
                        .into_iter()
                        .map(|r| r.map_err(DeliveryError::Failed))
                        .collect()
                }
                Err(_) => Err(stopped()),
            },
        };
        vec![outcome; n]
    }

    fn is_ready(&self) -> bool {
        !self.jobs.is_closed()
    }

    async fn flush(&self, timeout: Duration) -> Result<(), DeliveryError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Flush(tx))
            .await
            .map_err(|_| DeliveryError::Failed("the file writer has stopped".into()))?;
        tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| DeliveryError::TimedOut("file flush".into()))?
            .map_err(|_| DeliveryError::Failed("the file writer has stopped".into()))
    }
}

#[derive(Serialize)]
struct Line<'a> {
    topic: &'a str,
    key: std::borrow::Cow<'a, str>,
    headers: BTreeMap<&'a str, std::borrow::Cow<'a, str>>,
    value: &'a RawValue,
}

fn encode(record: &Record, out: &mut Vec<u8>) -> Result<(), String> {
    let value: &RawValue = serde_json::from_slice(&record.value)
        .map_err(|e| format!("record value is not JSON: {e}"))?;
    let mut headers: BTreeMap<&str, _> = record
        .headers
        .iter()
        .map(|(k, v)| (*k, String::from_utf8_lossy(v)))
        .collect();
    for (k, v) in &record.extension_headers {
        headers.insert(k.as_str(), String::from_utf8_lossy(v));
    }
    let line = Line {
        topic: &record.topic,
        key: String::from_utf8_lossy(&record.key),
        headers,
        value,
    };
    serde_json::to_writer(&mut *out, &line).map_err(|e| e.to_string())?;
    out.push(b'\n');
    Ok(())
}

/// Topic files kept open between commits.
const MAX_OPEN_FILES: usize = 256;

fn writer_loop(dir: PathBuf, mut rx: mpsc::Receiver<Job>) {
    let mut files: HashMap<String, File> = HashMap::new();
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut writes = Vec::new();
        let mut flushes = Vec::new();
        for job in group {
            match job {
                Job::Write { records, reply } => writes.push((records, reply)),
                Job::Flush(reply) => flushes.push(reply),
            }
        }
        let results = commit(&dir, &mut files, writes.iter().flat_map(|(r, _)| r.iter()));
        let answers: Vec<Vec<_>> = writes
            .iter()
            .map(|(records, _)| {
                records
                    .iter()
                    .map(|r| results[r.topic.as_str()].clone())
                    .collect()
            })
            .collect();
        drop(results);
        for ((_, reply), answer) in writes.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
        for reply in flushes {
            let _ = reply.send(());
        }
    }
}

/// Appends every record to its topic's file, then fsyncs each file it touched. The result of
/// each topic: a record is durable when its topic's is `Ok`.
fn commit<'a>(
    dir: &Path,
    files: &mut HashMap<String, File>,
    records: impl Iterator<Item = &'a Record>,
) -> BTreeMap<&'a str, Result<(), String>> {
    let mut by_topic: BTreeMap<&str, Result<Vec<u8>, String>> = BTreeMap::new();
    for r in records {
        if let Ok(bytes) = by_topic.entry(r.topic.as_str()).or_insert(Ok(Vec::new())) {
            if let Err(e) = encode(r, bytes) {
                by_topic.insert(r.topic.as_str(), Err(e));
            }
        }
    }
    // At the bound, close the files this commit does not write (each was fsynced by the
    // commit that wrote it): open files stay bounded however many topics come.
    if files.len() >= MAX_OPEN_FILES {
        files.retain(|t, _| by_topic.contains_key(t.as_str()));
    }
    let mut results = BTreeMap::new();
    let mut written = Vec::new();
    for (topic, bytes) in by_topic {
        let result = bytes.and_then(|bytes| append(dir, files, topic, &bytes));
        match result {
            Ok(()) => written.push(topic),
            Err(e) => {
                // Reopen on the next write: the handle may be the problem.
                files.remove(topic);
                results.insert(topic, Err(e));
            }
        }
    }
    for topic in written {
        let synced = files[topic]
            .sync_data()
            .map_err(|e| format!("{topic}: fsync: {e}"));
        if synced.is_err() {
            files.remove(topic);
        }
        results.insert(topic, synced);
    }
    results
}

/// Appends `bytes` to `topic`'s file. A write that fails part way is cut off again.
fn append(
    dir: &Path,
    files: &mut HashMap<String, File>,
    topic: &str,
    bytes: &[u8],
) -> Result<(), String> {
    if topic.is_empty() || topic.contains(['/', '\\']) || topic == "." || topic == ".." {
        return Err(format!("topic `{topic}` cannot name a file"));
    }
    if !files.contains_key(topic) {
        let path = dir.join(format!("{topic}.ndjson"));
        let created = !path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if created {
            // The new directory entry must be durable too, or a crash can lose the file.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        files.insert(topic.to_string(), file);
    }
    let file = files.get_mut(topic).expect("just inserted");
    let before = file.metadata().map_err(|e| format!("{topic}: {e}"))?.len();
    file.write_all(bytes).map_err(|e| {
        // Half a batch left in the file would be stored again when the client retries it.
        let _ = file.set_len(before);
        format!("{topic}: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_files_stay_bounded_however_many_topics_come() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = HashMap::new();
        let n = MAX_OPEN_FILES + 50;
        for i in 0..n {
            let r = Record {
                topic: format!("events.t{i}"),
                key: bytes::Bytes::from_static(b"k"),
                value: bytes::Bytes::from_static(b"{}"),
                headers: Vec::new(),
                extension_headers: Vec::new(),
            };
            assert!(commit(dir.path(), &mut files, std::iter::once(&r))
                .values()
                .all(Result::is_ok));
            assert!(files.len() <= MAX_OPEN_FILES, "{}", files.len());
        }
        // A topic whose file was closed is appended to, not truncated.
        let again = Record {
            topic: "events.t0".into(),
            key: bytes::Bytes::from_static(b"k"),
            value: bytes::Bytes::from_static(b"{}"),
            headers: Vec::new(),
            extension_headers: Vec::new(),
        };
        assert!(commit(dir.path(), &mut files, std::iter::once(&again))
            .values()
            .all(Result::is_ok));
        let text = std::fs::read_to_string(dir.path().join("events.t0.ndjson")).unwrap();
        assert_eq!(text.lines().count(), 2);
        for i in 0..n {
            assert!(dir.path().join(format!("events.t{i}.ndjson")).exists());
        }
    }

    fn record(topic: &str, value: &'static str) -> Record {
        Record {
            topic: topic.into(),
            key: bytes::Bytes::from_static(b"k"),
            value: bytes::Bytes::from_static(value.as_bytes()),
            headers: Vec::new(),
            extension_headers: Vec::new(),
        }
    }

    /// A topic that cannot be written fails its own records only: the others of the same
    /// group commit are durable and answered so, and retrying the failed ones stores each once.
    #[tokio::test]
    async fn a_topic_that_cannot_be_written_fails_only_its_own_records() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the file should be: opening it for appending fails.
        std::fs::create_dir(dir.path().join("events.bad.ndjson")).unwrap();
        let sink = FileSink::open(dir.path()).unwrap();
        let receipts = sink
            .publish(vec![
                record("events.good", r#"{"n":1}"#),
                record("events.bad", r#"{"n":2}"#),
                record("events.good", r#"{"n":3}"#),
            ])
            .await;
        assert!(receipts[0].is_ok() && receipts[2].is_ok(), "{receipts:?}");
        assert!(receipts[1].is_err(), "{receipts:?}");
        std::fs::remove_dir(dir.path().join("events.bad.ndjson")).unwrap();
        let again = sink.publish(vec![record("events.bad", r#"{"n":2}"#)]).await;
        assert!(again[0].is_ok(), "{again:?}");
        let lines = |topic: &str| {
            std::fs::read_to_string(dir.path().join(format!("{topic}.ndjson")))
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["value"]["n"].clone()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(lines("events.good"), [1, 3]);
        assert_eq!(lines("events.bad"), [2]);
    }
}
