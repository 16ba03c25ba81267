//! Content-Encoding handling. Decompression writes into a buffer that refuses to grow past
//! the configured cap, so a bomb costs at most `max_decompressed_bytes` of memory and the
//! time to inflate that much, never more.

use std::io::{self, Read};

use bytes::Bytes;

use crate::error::{ClientError, Code};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("unsupported Content-Encoding `{0}`; use gzip, zstd or identity")]
    UnsupportedEncoding(String),
    #[error("the body inflates to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body is not valid {encoding}: {reason}")]
    Corrupt {
        encoding: &'static str,
        reason: String,
    },
}

impl ClientError for BodyError {
    fn code(&self) -> Code {
        match self {
            BodyError::UnsupportedEncoding(_) => Code::UnsupportedEncoding,
            BodyError::TooLarge { .. } => Code::DecompressedTooLarge,
            BodyError::Corrupt { .. } => Code::InvalidCompression,
        }
    }
}

impl Encoding {
    /// Parses a `Content-Encoding` value. Stacked encodings (`gzip, zstd`) are refused: no
    /// client needs them and each layer would multiply the inflation ratio.
    pub fn parse(header: Option<&str>) -> Result<Encoding, BodyError> {
        match header.map(|h| h.trim().to_ascii_lowercase()) {
            None => Ok(Encoding::Identity),
            Some(h) => match h.as_str() {
                "" | "identity" => Ok(Encoding::Identity),
                "gzip" | "x-gzip" => Ok(Encoding::Gzip),
                "zstd" => Ok(Encoding::Zstd),
                _ => Err(BodyError::UnsupportedEncoding(h)),
            },
        }
    }
}

/// Returns the decoded body, or an error as soon as the output would pass `limit`.
pub fn decode(encoding: Encoding, body: Bytes, limit: usize) -> Result<Bytes, BodyError> {
    if encoding == Encoding::Identity {
        if body.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        return Ok(body);
    }
    let mut inflater = Inflater::new(encoding, body, limit)?;
    while !inflater.step(STEP)? {}
    Ok(inflater.into_bytes())
}

/// Inflates a compressed body a step at a time, so that the caller can admit the memory each
/// step will hold before it is taken, and run the steps where it likes.
pub struct Inflater {
    reader: Box<dyn Read + Send>,
    out: Vec<u8>,
    limit: usize,
    encoding: &'static str,
}

impl Inflater {
    pub fn new(encoding: Encoding, body: Bytes, limit: usize) -> Result<Inflater, BodyError> {
        use bytes::Buf;
        let (reader, name): (Box<dyn Read + Send>, _) = match encoding {
            Encoding::Identity => (Box::new(body.reader()), "identity"),
            Encoding::Gzip => (
                Box::new(flate2::read::MultiGzDecoder::new(body.reader())),
                "gzip",
            ),
            Encoding::Zstd => {
                // A frame that declares its size up front is refused before any work.
                if let Ok(Some(declared)) = zstd::zstd_safe::get_frame_content_size(&body) {
                    if declared > limit as u64 {
                        return Err(BodyError::TooLarge { limit });
                    }
                }
                let decoder = zstd::stream::read::Decoder::with_buffer(body.reader())
                    .map_err(|e| corrupt("zstd", e))?;
                (Box::new(decoder), "zstd")
            }
        };
        Ok(Inflater {
            reader,
            out: Vec::new(),
            limit,
            encoding: name,
        })
    }

    /// Bytes inflated so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// The memory the output may hold after `step(max)`: what to admit before calling it. The
    /// buffer grows by doubling, as needed, within that bound.
    pub fn next_capacity(&self, max: usize) -> usize {
        let len = self.out.len();
        let room = self.limit - len;
        (len + max.min(room))
            .saturating_mul(2)
            .min(self.limit)
            .max(self.out.capacity())
    }

    /// Inflates at most `max` more bytes, holding at most [`Self::next_capacity`]; true when
    /// the body is done. Past the limit: `TooLarge`, before the excess is held.
    pub fn step(&mut self, max: usize) -> Result<bool, BodyError> {
        let room = self.limit - self.out.len();
        // One byte past the limit tells "exactly at the limit" from "over it".
        let want = max.min(room.saturating_add(1));
        let bound = self.next_capacity(max);
        let mut chunk = [0u8; CHUNK];
        let mut produced = 0;
        while produced < want {
            let n = match self.reader.read(&mut chunk[..CHUNK.min(want - produced)]) {
                Ok(0) => return Ok(true),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(corrupt(self.encoding, e)),
            };
            let len = self.out.len();
            if len + n > self.limit {
                return Err(BodyError::TooLarge { limit: self.limit });
            }
            if len + n > self.out.capacity() {
                let grown = (self.out.capacity() * 2).max(len + n).max(CHUNK).min(bound);
                self.out.reserve_exact(grown - len);
            }
            self.out.extend_from_slice(&chunk[..n]);
            produced += n;
        }
        Ok(false)
    }

    pub fn into_bytes(self) -> Bytes {
        Bytes::from(self.out)
    }
}

const CHUNK: usize = 32 * 1024;
/// How much a caller inflates between admissions.
pub const STEP: usize = 1024 * 1024;

fn corrupt(encoding: &'static str, e: io::Error) -> BodyError {
    BodyError::Corrupt {
        encoding,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        Bytes::from(e.finish().unwrap())
    }

    #[test]
    fn round_trips_and_caps() {
        let data = vec![b'a'; 10_000];
        assert_eq!(
            decode(Encoding::Gzip, gzip(&data), 10_000).unwrap().len(),
            10_000
        );
        assert_eq!(
            decode(Encoding::Gzip, gzip(&data), 9_999),
            Err(BodyError::TooLarge { limit: 9_999 })
        );
        let z = Bytes::from(zstd::encode_all(&data[..], 3).unwrap());
        assert_eq!(
            decode(Encoding::Zstd, z.clone(), 10_000).unwrap().len(),
            10_000
        );
        assert!(matches!(
            decode(Encoding::Zstd, z, 100),
            Err(BodyError::TooLarge { .. })
        ));
        assert!(matches!(
            decode(Encoding::Gzip, Bytes::from_static(b"not gzip"), 100),
            Err(BodyError::Corrupt { .. })
        ));
    }

    #[test]
    fn streaming_zstd_bomb_without_declared_size_is_cut_at_the_cap() {
        // Streamed frames carry no content size, so the cap has to hold while inflating.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
        enc.include_contentsize(false).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = Bytes::from(enc.finish().unwrap());
        assert!(bomb.len() < 20_000, "bomb is {} bytes", bomb.len());
        assert!(matches!(
            decode(Encoding::Zstd, bomb, 1 << 20),
            Err(BodyError::TooLarge { .. })
        ));
    }

    #[test]
    fn encodings_parse() {
        assert_eq!(Encoding::parse(None), Ok(Encoding::Identity));
        assert_eq!(Encoding::parse(Some("GZIP")), Ok(Encoding::Gzip));
        assert!(Encoding::parse(Some("br")).is_err());
        assert!(Encoding::parse(Some("gzip, zstd")).is_err());
    }

    #[test]
    fn inflating_step_by_step_holds_no_more_than_it_said() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut inflater = Inflater::new(Encoding::Gzip, gzip(&data), 4 << 20).unwrap();
        let mut steps = 0;
        loop {
            let bound = inflater.next_capacity(STEP);
            let done = inflater.step(STEP).unwrap();
            assert!(
                inflater.out.capacity() <= bound,
                "{} > {bound}",
                inflater.out.capacity()
            );
            steps += 1;
            if done {
                break;
            }
        }
        assert!(steps >= 3, "{steps}");
        assert_eq!(inflater.into_bytes(), Bytes::from(data));
        // Exactly at the limit is accepted; one byte over is not.
        let exact = vec![7u8; 100_000];
        assert_eq!(
            decode(Encoding::Gzip, gzip(&exact), 100_000).unwrap().len(),
            100_000
        );
        assert_eq!(
            decode(
                Encoding::Zstd,
                Bytes::from(zstd::encode_all(&exact[..], 3).unwrap()),
                99_999
            ),
            Err(BodyError::TooLarge { limit: 99_999 })
        );
    }
}
