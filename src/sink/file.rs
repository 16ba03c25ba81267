//! The embedded default: one NDJSON file per topic under `file.dir`, each line
//! `{"topic", "key", "headers", "value"}`. A record is acknowledged only after the file is
//! fsynced. One writer thread does all the I/O and commits whatever queued up while it was
//! syncing in one fsync (group commit), so concurrent requests share the cost of a sync.

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
        reply: oneshot::Sender<Result<(), String>>,
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
        let outcome = match self.jobs.try_send(Job::Write { records, reply }) {
            Err(mpsc::error::TrySendError::Full(_)) => Err(DeliveryError::QueueFull),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(DeliveryError::Failed("the file writer has stopped".into()))
            }
            Ok(()) => match done.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(DeliveryError::Failed(e)),
                Err(_) => Err(DeliveryError::Failed("the file writer has stopped".into())),
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
        let result = commit(&dir, &mut files, writes.iter().flat_map(|(r, _)| r.iter()));
        if result.is_err() {
            // Reopen on the next write: the handle may be the problem.
            files.clear();
        }
        for (_, reply) in writes {
            let _ = reply.send(result.clone());
        }
        for reply in flushes {
            let _ = reply.send(());
        }
    }
}

/// Appends every record to its topic's file, then fsyncs each file it touched.
fn commit<'a>(
    dir: &Path,
    files: &mut HashMap<String, File>,
    records: impl Iterator<Item = &'a Record>,
) -> Result<(), String> {
    let mut by_topic: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for r in records {
        encode(r, by_topic.entry(r.topic.as_str()).or_default())?;
    }
    for (topic, bytes) in &by_topic {
        if topic.is_empty() || topic.contains(['/', '\\']) || *topic == "." || *topic == ".." {
            return Err(format!("topic `{topic}` cannot name a file"));
        }
        if !files.contains_key(*topic) {
            // At the bound, close the files this commit does not write (each was fsynced by
            // the commit that wrote it): open files stay bounded however many topics come.
            if files.len() >= MAX_OPEN_FILES {
                files.retain(|t, _| by_topic.contains_key(t.as_str()));
            }
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
        let file = files.get_mut(*topic).expect("just inserted");
        file.write_all(bytes).map_err(|e| format!("{topic}: {e}"))?;
    }
    for topic in by_topic.keys() {
        files[*topic]
            .sync_data()
            .map_err(|e| format!("{topic}: fsync: {e}"))?;
    }
    Ok(())
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
            commit(dir.path(), &mut files, std::iter::once(&r)).unwrap();
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
        commit(dir.path(), &mut files, std::iter::once(&again)).unwrap();
        let text = std::fs::read_to_string(dir.path().join("events.t0.ndjson")).unwrap();
        assert_eq!(text.lines().count(), 2);
        for i in 0..n {
            assert!(dir.path().join(format!("events.t{i}.ndjson")).exists());
        }
    }
}
