//! The disk spool: a write-ahead log of records on local disk, for when the sink is down or
//! slow. This module owns the files: appending with one fsync per batch (group commit),
//! reading segments back in order, and deleting a segment once the sink has acknowledged
//! every record in it. Replay and the choice of when to spool belong to the caller.
//!
//! Layout: `<dir>/<seq:020>.seg`, appended in sequence order, a new segment once the current
//! one passes `segment_bytes`. Each record is framed as
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`. A crash can leave a torn
//! last record (a short frame): reading stops there and the rest of that segment is ignored.
//! A frame whose CRC does not match is skipped and counted; the next frame follows it.
//!
//! TODO(issue 5): wire into the pipeline (ack = broker | spool per route), replay loop,
//! metrics, fault tests. Only the file format and its recovery exist so far.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use crate::sink::Record;

/// Frames larger than this are taken for corruption (no record can be: events are capped).
const MAX_FRAME: u32 = 64 * 1024 * 1024;
const HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({used} of {max} bytes)")]
    Full { used: u64, max: u64 },
    #[error("spool I/O: {0}")]
    Io(#[from] io::Error),
}

/// What opening found on disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub bytes: u64,
}

/// One segment read back.
#[derive(Debug, Default)]
pub struct SegmentRead {
    pub records: Vec<Record>,
    /// The segment ended in a partial frame (a crash mid-write); it was ignored.
    pub torn_tail: bool,
    /// Frames skipped because their CRC did not match.
    pub corrupt: usize,
}

struct Current {
    seq: u64,
    file: File,
    size: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
}

struct State {
    current: Option<Current>,
    /// Sealed segments and their sizes, oldest first (the current one excluded).
    sealed: Vec<(u64, u64)>,
    next_seq: u64,
}

impl Spool {
    /// Opens the spool folder, creating it; existing segments are kept for replay.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> Result<(Spool, Recovery), SpoolError> {
        std::fs::create_dir_all(dir)?;
        let mut sealed = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let seq = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(seq) = seq {
                sealed.push((seq, std::fs::metadata(&path)?.len()));
            }
        }
        sealed.sort();
        let next_seq = sealed.last().map_or(1, |(s, _)| s + 1);
        let recovery = Recovery {
            segments: sealed.len(),
            bytes: sealed.iter().map(|(_, b)| b).sum(),
        };
        Ok((
            Spool {
                dir: dir.to_path_buf(),
                max_bytes,
                segment_bytes: segment_bytes.max(1),
                state: Mutex::new(State {
                    current: None,
                    sealed,
                    next_seq,
                }),
            },
            recovery,
        ))
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.seg"))
    }

    /// Bytes on disk, every segment included.
    pub fn bytes(&self) -> u64 {
        let st = self.state.lock().expect("not poisoned");
        st.sealed.iter().map(|(_, b)| b).sum::<u64>() + st.current.as_ref().map_or(0, |c| c.size)
    }

    /// Appends `records` and fsyncs once: when this returns `Ok`, they survive a crash.
    /// Refused whole when they would pass `max_bytes`.
    pub fn append(&self, records: &[Record]) -> Result<(), SpoolError> {
        let mut buf = Vec::new();
        for r in records {
            frame(&mut buf, r);
        }
        let mut st = self.state.lock().expect("not poisoned");
        let used = st.sealed.iter().map(|(_, b)| b).sum::<u64>()
            + st.current.as_ref().map_or(0, |c| c.size);
        if used + buf.len() as u64 > self.max_bytes {
            return Err(SpoolError::Full {
                used,
                max: self.max_bytes,
            });
        }
        if st
            .current
            .as_ref()
            .is_none_or(|c| c.size >= self.segment_bytes)
        {
            if let Some(c) = st.current.take() {
                st.sealed.push((c.seq, c.size));
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(self.path(seq))?;
            // The new file's name must survive a crash too.
            File::open(&self.dir)?.sync_all()?;
            st.current = Some(Current { seq, file, size: 0 });
        }
        let c = st.current.as_mut().expect("just ensured");
        c.file.write_all(&buf)?;
        c.file.sync_data()?;
        c.size += buf.len() as u64;
        Ok(())
    }

    /// Segment sequence numbers, oldest first: sealed ones, then the current one.
    pub fn segments(&self) -> Vec<u64> {
        let st = self.state.lock().expect("not poisoned");
        st.sealed
            .iter()
            .map(|(s, _)| *s)
            .chain(st.current.as_ref().map(|c| c.seq))
            .collect()
    }

    /// Reads a segment back. Appends continue in a new segment afterwards if it was the
    /// current one, so that what was read can be deleted as a whole.
    pub fn read(&self, seq: u64) -> Result<SegmentRead, SpoolError> {
        {
            let mut st = self.state.lock().expect("not poisoned");
            if st.current.as_ref().is_some_and(|c| c.seq == seq) {
                let c = st.current.take().expect("checked");
                st.sealed.push((c.seq, c.size));
            }
        }
        let mut bytes = Vec::new();
        File::open(self.path(seq))?.read_to_end(&mut bytes)?;
        Ok(parse(&bytes))
    }

    /// Deletes a segment whose records the sink has all acknowledged.
    pub fn remove(&self, seq: u64) -> Result<(), SpoolError> {
        let mut st = self.state.lock().expect("not poisoned");
        if st.current.as_ref().is_some_and(|c| c.seq == seq) {
            st.current = None;
        }
        st.sealed.retain(|(s, _)| *s != seq);
        std::fs::remove_file(self.path(seq))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

fn put_u16(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(&b[..b.len().min(u16::MAX as usize)]);
}

fn put_u32(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// `[len][crc][topic, key, value, headers]`.
fn frame(out: &mut Vec<u8>, r: &Record) {
    let mut p = Vec::with_capacity(r.size() + 64);
    put_u16(&mut p, r.topic.as_bytes());
    put_u32(&mut p, &r.key);
    put_u32(&mut p, &r.value);
    let n = r.headers.len() + r.extension_headers.len();
    p.extend_from_slice(&(n as u16).to_le_bytes());
    for (k, v) in &r.headers {
        put_u16(&mut p, k.as_bytes());
        put_u32(&mut p, v);
    }
    for (k, v) in &r.extension_headers {
        put_u16(&mut p, k.as_bytes());
        put_u32(&mut p, v);
    }
    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
    out.extend_from_slice(&p);
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    }
    fn u32(&mut self) -> Option<usize> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn str16(&mut self) -> Option<String> {
        let n = self.u16()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn bytes32(&mut self) -> Option<Bytes> {
        let n = self.u32()?;
        Some(Bytes::copy_from_slice(self.take(n)?))
    }
}

fn decode(payload: &[u8]) -> Option<Record> {
    let mut c = Cursor(payload);
    let topic = c.str16()?;
    let key = c.bytes32()?;
    let value = c.bytes32()?;
    let n = c.u16()?;
    let mut extension_headers = Vec::with_capacity(n);
    for _ in 0..n {
        extension_headers.push((c.str16()?, c.bytes32()?));
    }
    c.0.is_empty().then_some(Record {
        topic,
        key,
        value,
        headers: Vec::new(),
        extension_headers,
    })
}

fn parse(mut bytes: &[u8]) -> SegmentRead {
    let mut out = SegmentRead::default();
    while !bytes.is_empty() {
        if bytes.len() < HEADER {
            out.torn_tail = true;
            break;
        }
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if len > MAX_FRAME || bytes.len() < HEADER + len as usize {
            // A short or absurd frame: the tail of a write cut by a crash.
            out.torn_tail = true;
            break;
        }
        let payload = &bytes[HEADER..HEADER + len as usize];
        match (crc32fast::hash(payload) == crc)
            .then(|| decode(payload))
            .flatten()
        {
            Some(r) => out.records.push(r),
            None => out.corrupt += 1,
        }
        bytes = &bytes[HEADER + len as usize..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> Record {
        Record {
            topic: format!("events.t{}", i % 3),
            key: Bytes::from(format!("k{i}")),
            value: Bytes::from(format!("{{\"i\":{i}}}")),
            headers: vec![("ce_id", Bytes::from(format!("id-{i}")))],
            extension_headers: vec![("ce_x".into(), Bytes::from_static(b"y"))],
        }
    }

    fn ids(r: &SegmentRead) -> Vec<String> {
        r.records
            .iter()
            .map(|r| {
                let v = &r
                    .extension_headers
                    .iter()
                    .find(|(k, _)| k == "ce_id")
                    .unwrap()
                    .1;
                String::from_utf8_lossy(v).into_owned()
            })
            .collect()
    }

    #[test]
    fn appends_roll_segments_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, rec) = Spool::open(dir.path(), 1 << 20, 300).unwrap();
        assert_eq!(rec, Recovery::default());
        for batch in 0..5 {
            spool
                .append(&(0..3).map(|i| record(batch * 3 + i)).collect::<Vec<_>>())
                .unwrap();
        }
        let segs = spool.segments();
        assert!(segs.len() > 1, "segments roll at segment_bytes: {segs:?}");
        let mut all = Vec::new();
        for s in &segs {
            let r = spool.read(*s).unwrap();
            assert!(!r.torn_tail && r.corrupt == 0);
            all.extend(ids(&r));
        }
        assert_eq!(all, (0..15).map(|i| format!("id-{i}")).collect::<Vec<_>>());
        let r0 = spool.read(segs[0]).unwrap();
        assert_eq!(r0.records[0].topic, "events.t0");
        assert_eq!(&r0.records[0].value[..], b"{\"i\":0}");

        // Reopening finds everything; removing acknowledged segments frees the quota.
        let before = spool.bytes();
        drop(spool);
        let (spool, rec) = Spool::open(dir.path(), 1 << 20, 300).unwrap();
        assert_eq!((rec.segments, rec.bytes), (segs.len(), before));
        for s in spool.segments() {
            spool.remove(s).unwrap();
        }
        assert_eq!(spool.bytes(), 0);
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn a_full_spool_refuses_whole_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 200, 1 << 20).unwrap();
        spool.append(&[record(1)]).unwrap();
        let err = spool
            .append(&(0..10).map(record).collect::<Vec<_>>())
            .unwrap_err();
        assert!(matches!(err, SpoolError::Full { .. }), "{err}");
        assert_eq!(ids(&spool.read(spool.segments()[0]).unwrap()), ["id-1"]);
    }

    #[test]
    fn torn_tails_and_corrupt_frames_are_survived() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        spool
            .append(&(0..4).map(record).collect::<Vec<_>>())
            .unwrap();
        let seq = spool.segments()[0];
        drop(spool);
        let path = dir.path().join(format!("{seq:020}.seg"));
        let mut bytes = std::fs::read(&path).unwrap();
        // Flip a byte inside the second record's payload, then cut the last record short.
        let first_len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
        bytes[HEADER + first_len + HEADER + 3] ^= 0xff;
        bytes.truncate(bytes.len() - 5);
        std::fs::write(&path, &bytes).unwrap();

        let (spool, rec) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        assert_eq!(rec.segments, 1);
        let r = spool.read(seq).unwrap();
        assert_eq!(ids(&r), ["id-0", "id-2"]);
        assert_eq!((r.corrupt, r.torn_tail), (1, true));
        // Garbage where a length should be is a torn tail too, never a panic or a huge read.
        assert!(parse(&[0xff; 12]).torn_tail);
        assert!(parse(&[1, 0]).torn_tail);
        // New appends go to a new segment after the damaged one.
        spool.append(&[record(9)]).unwrap();
        assert_eq!(spool.segments().len(), 2);
    }
}
