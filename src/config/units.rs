//! Units in config values: byte sizes (`5MiB`) and durations (`200ms`).

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub const KIB: u64 = 1024;
/// The largest `limits.max_header_bytes`: below hyper's fixed HTTP/1.1 read buffer
/// (8 KiB + 400 KiB), so that Sluice's own, explained 431 is the one clients get.
pub const MAX_HEADER_BYTES_CAP: u64 = 256 * KIB;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// A size in bytes, written as an integer or as `512KiB`, `5MiB`, `1GB` (SI and IEC units).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Splits `512KiB` into `(512, "KiB")`.
fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (n, unit) = number_and_unit(s)
            .ok_or_else(|| format!("`{s}` is not a size (write 1048576, 512KiB or 5MiB)"))?;
        let mult = match unit {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "KiB" => KIB,
            "MB" => 1000 * 1000,
            "MiB" => MIB,
            "GB" => 1000 * 1000 * 1000,
            "GiB" => GIB,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` (use B, KiB, MiB, GiB, KB, MB, GB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration written with its unit: `30s`, `500ms`, `2m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (n, unit) = number_and_unit(s)
            .ok_or_else(|| format!("`{s}` is not a duration (write 30s, 500ms, 2m)"))?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "" => return Err(format!("`{s}` needs a unit (ms, s, m, h)")),
            other => return Err(format!("unknown duration unit `{other}` (use ms, s, m, h)")),
        };
        Ok(HumanDuration(d))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
