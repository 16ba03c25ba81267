//! Content-Encoding handling. Decompression writes into a buffer that refuses to grow past
//! the configured cap, so a bomb costs at most `max_decompressed_bytes` of memory and the
//! time to inflate that much, never more.

use std::io::{self, Read, Write};

use bytes::Bytes;

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
    match encoding {
        Encoding::Identity => {
            if body.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            Ok(body)
        }
        Encoding::Gzip => {
            let mut out = CappedBuf::new(limit, body.len());
            let mut decoder = flate2::read::MultiGzDecoder::new(&body[..]);
            copy(&mut decoder, &mut out, "gzip", limit)?;
            Ok(out.into_bytes())
        }
        Encoding::Zstd => {
            // A frame that declares its size up front is refused before any work.
            if let Ok(Some(declared)) = zstd::zstd_safe::get_frame_content_size(&body) {
                if declared > limit as u64 {
                    return Err(BodyError::TooLarge { limit });
                }
            }
            let mut out = CappedBuf::new(limit, body.len());
            let mut decoder = zstd::stream::read::Decoder::with_buffer(&body[..])
                .map_err(|e| corrupt("zstd", e))?;
            copy(&mut decoder, &mut out, "zstd", limit)?;
            Ok(out.into_bytes())
        }
    }
}

fn corrupt(encoding: &'static str, e: io::Error) -> BodyError {
    BodyError::Corrupt {
        encoding,
        reason: e.to_string(),
    }
}

fn copy(
    reader: &mut impl Read,
    out: &mut CappedBuf,
    encoding: &'static str,
    limit: usize,
) -> Result<(), BodyError> {
    let mut chunk = [0u8; 32 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(encoding, e)),
        };
        out.write_all(&chunk[..n])
            .map_err(|_| BodyError::TooLarge { limit })?;
    }
}

struct CappedBuf {
    buf: Vec<u8>,
    limit: usize,
}

impl CappedBuf {
    fn new(limit: usize, compressed_len: usize) -> Self {
        // Typical JSON compresses 5-10x; start there rather than at the cap.
        let guess = compressed_len.saturating_mul(8).min(limit);
        Self {
            buf: Vec::with_capacity(guess),
            limit,
        }
    }

    fn into_bytes(self) -> Bytes {
        Bytes::from(self.buf)
    }
}

impl Write for CappedBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            return Err(io::Error::other("decompressed size limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
