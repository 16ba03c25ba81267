//! The spool's record framing: `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`,
//! the payload being topic, key, value and headers, each length-prefixed.

use std::io::{self, Read};

use bytes::Bytes;

use crate::sink::Record;

/// Frames larger than this are taken for corruption (no record can be: events are capped).
pub const MAX_FRAME: u32 = 64 * 1024 * 1024;
pub const HEADER: u64 = 8;

fn put_u16(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&b[..n]);
}

fn put_u32(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Appends `r`'s frame to `out`.
pub fn frame(out: &mut Vec<u8>, r: &Record) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER as usize]);
    put_u16(out, r.topic.as_bytes());
    put_u32(out, &r.key);
    put_u32(out, &r.value);
    let n = r.headers.len() + r.extension_headers.len();
    out.extend_from_slice(&(n as u16).to_le_bytes());
    for (k, v) in &r.headers {
        put_u16(out, k.as_bytes());
        put_u32(out, v);
    }
    for (k, v) in &r.extension_headers {
        put_u16(out, k.as_bytes());
        put_u32(out, v);
    }
    let payload = start + HEADER as usize;
    let len = (out.len() - payload) as u32;
    let crc = crc32fast::hash(&out[payload..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..payload].copy_from_slice(&crc.to_le_bytes());
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

/// A payload back to a record. Header names are not `'static` any more, so every header
/// comes back as an extension header; sinks treat both the same.
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

/// Frames read from one segment.
#[derive(Debug, Default)]
pub struct Frames {
    pub records: Vec<Record>,
    /// Offset after the last frame consumed (the next read starts here).
    pub end: u64,
    /// The bytes left before the read's end could not be a frame (a write cut short by a
    /// crash, or a damaged length): they were skipped, `end` is the read's end.
    pub torn_tail: bool,
    /// Frames skipped because their CRC or content did not check out.
    pub corrupt: usize,
}

/// Reads frames from `r` (positioned at `pos`) until `max` records or offset `end`.
pub fn read_frames(r: &mut impl Read, mut pos: u64, end: u64, max: usize) -> io::Result<Frames> {
    let mut out = Frames::default();
    let mut header = [0u8; HEADER as usize];
    let mut payload = Vec::new();
    while out.records.len() < max && pos < end {
        if end - pos < HEADER {
            out.torn_tail = true;
            pos = end;
            break;
        }
        r.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_FRAME || pos + HEADER + u64::from(len) > end {
            out.torn_tail = true;
            pos = end;
            break;
        }
        payload.resize(len as usize, 0);
        r.read_exact(&mut payload)?;
        pos += HEADER + u64::from(len);
        match (crc32fast::hash(&payload) == crc)
            .then(|| decode(&payload))
            .flatten()
        {
            Some(rec) => out.records.push(rec),
            None => out.corrupt += 1,
        }
    }
    out.end = pos;
    Ok(out)
}
