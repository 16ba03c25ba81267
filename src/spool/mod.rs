//! The disk spool: a write-ahead log of records on local disk, for when the sink is down or
//! slow, and for routes acknowledged on spool (`ack = "spool"`).
//!
//! - **Appends** go through one writer thread that takes every append waiting, writes them and
//!   fsyncs once (group commit): when [`Spool::append`] returns `Ok`, the records survive a
//!   crash of the process or the machine. A quota (`spool.max_bytes`) refuses whole appends.
//! - **Replay** ([`replay`]) reads records back in append order from a cursor, publishes them
//!   and moves the cursor only once the sink acknowledged them. A segment file is deleted once
//!   it is sealed (the writer moved on) and the cursor has passed its end.
//! - **Recovery**: on open, every segment found is kept for replay. The cursor is persisted
//!   (`cursor`, not fsynced: after a power loss it may lag, which replays a few records twice,
//!   never skips one). A torn last record is skipped; a record whose CRC does not match is
//!   skipped and counted.
//!
//! Layout: `<dir>/<seq:020>.seg`, records framed as in [`format`]; `<dir>/cursor`;
//! `<dir>/rejected.log` for records the sink refused for good during replay; `<dir>/lock` holds
//! an exclusive lock so that two processes never share a spool.

pub mod format;
pub mod replay;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, Notify};

use crate::sink::Record;
use crate::telemetry;
pub use format::Frames;

/// A group commit writes at most this much before its fsync.
const GROUP_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({used} of {max} bytes used)")]
    Full { used: u64, max: u64 },
    #[error("spool I/O: {0}")]
    Io(#[from] io::Error),
    #[error("the spool writer has stopped")]
    Closed,
    #[error("spool folder {0} is in use by another process (its lock file is held)")]
    Locked(PathBuf),
}

/// What opening found on disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub bytes: u64,
    /// Bytes not yet replayed, from the persisted cursor.
    pub backlog_bytes: u64,
}

#[derive(Debug, Clone)]
struct Segment {
    seq: u64,
    /// Bytes durable on disk (fsynced); readers never go past this.
    size: u64,
    created: SystemTime,
}

struct State {
    /// Oldest first. The last one may be open for appends (`open`).
    segments: VecDeque<Segment>,
    /// The segment the writer appends to, if any: not deletable yet.
    open: Option<u64>,
    next_seq: u64,
    /// Where replay resumes: segment and offset of the next unacknowledged record.
    cursor: (u64, u64),
    /// Size of `rejected.log`: on the same disk, under the same quota, until an operator
    /// has looked at it and deleted it.
    rejected: u64,
}

impl State {
    fn used(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum::<u64>() + self.rejected
    }

    fn backlog(&self) -> u64 {
        let (cseq, coff) = self.cursor;
        self.segments
            .iter()
            .filter(|s| s.seq >= cseq)
            .map(|s| {
                if s.seq == cseq {
                    s.size.saturating_sub(coff)
                } else {
                    s.size
                }
            })
            .sum()
    }
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Woken after every group commit, for the replayer.
    appended: Notify,
    cursor_file: File,
    _lock: File,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.seg"))
    }
}

struct Job {
    frames: Vec<u8>,
    done: oneshot::Sender<Result<(), SpoolError>>,
}

pub struct Spool {
    inner: Arc<Inner>,
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Spool {
    /// Stops the writer after what it holds and waits for it, so that the folder's lock is
    /// free when this returns.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Records read back for replay; hand it to [`Spool::commit`] once the sink acknowledged them.
#[derive(Debug)]
pub struct Chunk {
    seq: u64,
    pub frames: Frames,
}

impl Spool {
    /// Opens (creating) the spool folder and starts its writer thread. Segments found are kept
    /// for replay, from the persisted cursor.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> Result<(Spool, Recovery), SpoolError> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked(dir.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let seq = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(seq) = seq {
                let meta = std::fs::metadata(&path)?;
                segments.push(Segment {
                    seq,
                    size: meta.len(),
                    // Written at or after the first record: the age reported is a lower bound.
                    created: meta.modified().unwrap_or_else(|_| SystemTime::now()),
                });
            }
        }
        segments.sort_by_key(|s| s.seq);
        let cursor_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join("cursor"))?;
        let first = segments.first().map_or(1, |s| s.seq);
        let cursor = match read_cursor(&cursor_file) {
            Some((seq, off)) => match segments.iter().find(|s| s.seq == seq) {
                Some(s) => (seq, off.min(s.size)),
                None => (first, 0),
            },
            None => (first, 0),
        };
        let state = State {
            next_seq: segments.last().map_or(1, |s| s.seq + 1),
            segments: segments.into(),
            open: None,
            cursor,
            rejected: rejected_size(dir),
        };
        let recovery = Recovery {
            segments: state.segments.len(),
            bytes: state.used(),
            backlog_bytes: state.backlog(),
        };
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: segment_bytes.max(1),
            state: Mutex::new(state),
            appended: Notify::new(),
            cursor_file,
            _lock: lock,
        });
        let (tx, rx) = mpsc::channel();
        let w = inner.clone();
        let writer = std::thread::Builder::new()
            .name("sluice-spool".into())
            .spawn(move || writer(w, rx))?;
        Ok((
            Spool {
                inner,
                tx: Some(tx),
                writer: Some(writer),
            },
            recovery,
        ))
    }

    /// Appends `records` in order; `Ok` once they are fsynced. Refused whole when they would
    /// pass the quota.
    pub async fn append(&self, records: &[Record]) -> Result<(), SpoolError> {
        let mut frames = Vec::with_capacity(records.iter().map(|r| r.size() + 64).sum());
        for r in records {
            format::frame(&mut frames, r);
        }
        let (done, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(SpoolError::Closed)?
            .send(Job { frames, done })
            .map_err(|_| SpoolError::Closed)?;
        rx.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Bytes of segment files on disk.
    pub fn bytes(&self) -> u64 {
        self.inner.state().used()
    }

    /// Bytes appended and not yet acknowledged by the sink.
    pub fn backlog_bytes(&self) -> u64 {
        self.inner.state().backlog()
    }

    /// Whether anything spooled awaits replay: new events must then queue behind it, or a
    /// key's later events would overtake its earlier ones.
    pub fn has_backlog(&self) -> bool {
        self.backlog_bytes() > 0
    }

    /// Whether an append of `bytes` would fit the quota now.
    pub fn has_room(&self, bytes: u64) -> bool {
        self.bytes() + bytes <= self.inner.max_bytes
    }

    pub fn segments(&self) -> usize {
        self.inner.state().segments.len()
    }

    /// Age of the oldest segment that holds unacknowledged records.
    pub fn oldest_age(&self) -> Duration {
        let st = self.inner.state();
        if st.backlog() == 0 {
            return Duration::ZERO;
        }
        st.segments
            .iter()
            .find(|s| s.seq >= st.cursor.0)
            .and_then(|s| s.created.elapsed().ok())
            .unwrap_or_default()
    }

    /// Sets the spool gauges.
    pub fn report_metrics(&self) {
        // An operator may have deleted (or truncated) rejected.log since: its room is back.
        let rejected = rejected_size(&self.inner.dir);
        let (bytes, backlog, segments) = {
            let mut st = self.inner.state();
            st.rejected = rejected;
            (st.used(), st.backlog(), st.segments.len())
        };
        metrics::gauge!(telemetry::SPOOL_REJECTED_BYTES).set(rejected as f64);
        metrics::gauge!(telemetry::SPOOL_BYTES).set(bytes as f64);
        metrics::gauge!(telemetry::SPOOL_BACKLOG_BYTES).set(backlog as f64);
        metrics::gauge!(telemetry::SPOOL_SEGMENTS).set(segments as f64);
        metrics::gauge!(telemetry::SPOOL_OLDEST_AGE).set(self.oldest_age().as_secs_f64());
    }

    /// Reads up to `max` records from the cursor on (blocking I/O). Deletes segments the cursor
    /// has passed once they are sealed. `None`: nothing to replay now.
    pub fn read_next(&self, max: usize) -> Result<Option<Chunk>, SpoolError> {
        loop {
            let (seq, off, size, sealed) = {
                let mut st = self.inner.state();
                let Some(first) = st.segments.front().cloned() else {
                    return Ok(None);
                };
                if st.cursor.0 < first.seq {
                    st.cursor = (first.seq, 0);
                }
                let (seq, off) = st.cursor;
                let Some(seg) = st.segments.iter().find(|s| s.seq == seq) else {
                    // The cursor's segment is gone; go on with the next one.
                    let next = st.segments.iter().find(|s| s.seq > seq).map(|s| s.seq);
                    match next {
                        Some(n) => {
                            st.cursor = (n, 0);
                            continue;
                        }
                        None => return Ok(None),
                    }
                };
                (seq, off, seg.size, st.open != Some(seq))
            };
            if off >= size {
                if !sealed {
                    return Ok(None);
                }
                self.remove_consumed(seq)?;
                continue;
            }
            let mut f = BufReader::with_capacity(256 * 1024, File::open(self.inner.path(seq))?);
            f.seek(SeekFrom::Start(off))?;
            let frames = format::read_frames(&mut f, off, size, max)?;
            return Ok(Some(Chunk { seq, frames }));
        }
    }

    /// Marks a chunk acknowledged: the cursor moves past it (persisted, without fsync).
    pub fn commit(&self, chunk: &Chunk) -> Result<(), SpoolError> {
        let cursor = (chunk.seq, chunk.frames.end);
        self.inner.state().cursor = cursor;
        write_cursor(&self.inner.cursor_file, cursor)?;
        Ok(())
    }

    /// Deletes a sealed segment the cursor has passed and moves the cursor to the next one.
    fn remove_consumed(&self, seq: u64) -> Result<(), SpoolError> {
        std::fs::remove_file(self.inner.path(seq)).or_else(|e| match e.kind() {
            io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        })?;
        let cursor = {
            let mut st = self.inner.state();
            st.segments.retain(|s| s.seq != seq);
            let next = st.segments.front().map_or(st.next_seq, |s| s.seq);
            st.cursor = (next, 0);
            st.cursor
        };
        write_cursor(&self.inner.cursor_file, cursor)?;
        Ok(())
    }

    /// Keeps records the sink refused for good in `rejected.log` (same framing), for an
    /// operator to inspect; they are not replayed again.
    pub fn quarantine(&self, records: &[Record]) -> Result<(), SpoolError> {
        let mut buf = Vec::new();
        for r in records {
            format::frame(&mut buf, r);
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.inner.dir.join("rejected.log"))?;
        f.write_all(&buf)?;
        f.sync_data()?;
        self.inner.state().rejected += buf.len() as u64;
        Ok(())
    }

    /// Resolves after the next group commit (or at once if one happened since the last call).
    pub async fn appended(&self) {
        self.inner.appended.notified().await
    }
}

fn rejected_size(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("rejected.log")).map_or(0, |m| m.len())
}

fn read_cursor(f: &File) -> Option<(u64, u64)> {
    let mut b = [0u8; 20];
    f.read_exact_at(&mut b, 0).ok()?;
    let crc = u32::from_le_bytes(b[16..20].try_into().ok()?);
    (crc32fast::hash(&b[..16]) == crc).then(|| {
        (
            u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
        )
    })
}

fn write_cursor(f: &File, (seq, off): (u64, u64)) -> io::Result<()> {
    let mut b = [0u8; 20];
    b[0..8].copy_from_slice(&seq.to_le_bytes());
    b[8..16].copy_from_slice(&off.to_le_bytes());
    let crc = crc32fast::hash(&b[..16]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&b, 0)
}

/// The writer thread: group commit. Ends when the [`Spool`] is dropped.
fn writer(inner: Arc<Inner>, rx: mpsc::Receiver<Job>) {
    // (seq, file, bytes written) of the segment being appended to.
    let mut open: Option<(u64, File, u64)> = None;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut bytes = jobs[0].frames.len();
        while bytes < GROUP_BYTES {
            match rx.try_recv() {
                Ok(j) => {
                    bytes += j.frames.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let mut used = inner.state().used();
        let mut accepted = Vec::with_capacity(jobs.len());
        for j in jobs {
            let n = j.frames.len() as u64;
            if used + n > inner.max_bytes {
                let _ = j.done.send(Err(SpoolError::Full {
                    used,
                    max: inner.max_bytes,
                }));
            } else {
                used += n;
                accepted.push(j);
            }
        }
        if accepted.is_empty() {
            continue;
        }
        let total: u64 = accepted.iter().map(|j| j.frames.len() as u64).sum();
        match write_group(&inner, &mut open, &accepted) {
            Ok(seq) => {
                {
                    let mut st = inner.state();
                    if let Some(s) = st.segments.iter_mut().find(|s| s.seq == seq) {
                        s.size += total;
                    }
                }
                inner.appended.notify_one();
                for j in accepted {
                    let _ = j.done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %inner.dir.display(), "spool write failed");
                // Whatever reached the file past the durable size is never read (readers stop
                // at the durable size); continue in a new segment.
                if let Some((seq, f, _)) = open.take() {
                    let durable = inner
                        .state()
                        .segments
                        .iter()
                        .find(|s| s.seq == seq)
                        .map_or(0, |s| s.size);
                    let _ = f.set_len(durable);
                    inner.state().open = None;
                }
                for j in accepted {
                    let _ = j
                        .done
                        .send(Err(SpoolError::Io(io::Error::new(e.kind(), e.to_string()))));
                }
            }
        }
    }
    inner.state().open = None;
}

/// Writes the jobs' frames to the open segment (rolling to a new one when it is full) and
/// fsyncs once. Returns the segment written to.
fn write_group(
    inner: &Inner,
    open: &mut Option<(u64, File, u64)>,
    jobs: &[Job],
) -> io::Result<u64> {
    if open
        .as_ref()
        .is_none_or(|(_, _, size)| *size >= inner.segment_bytes)
    {
        let seq = {
            let mut st = inner.state();
            let seq = st.next_seq;
            st.next_seq += 1;
            seq
        };
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(inner.path(seq))?;
        // The new file's name must survive a crash too.
        File::open(&inner.dir)?.sync_all()?;
        {
            let mut st = inner.state();
            st.segments.push_back(Segment {
                seq,
                size: 0,
                created: SystemTime::now(),
            });
            // The previous segment is sealed from now on: replay may delete it once passed.
            st.open = Some(seq);
        }
        *open = Some((seq, file, 0));
    }
    let (seq, file, size) = open.as_mut().expect("just ensured");
    for j in jobs {
        file.write_all(&j.frames)?;
        *size += j.frames.len() as u64;
    }
    file.sync_data()?;
    Ok(*seq)
}

#[cfg(test)]
mod tests;
