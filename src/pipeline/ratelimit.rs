//! Per-tenant rate limits: token buckets for events/s and bytes/s. A request over its
//! tenant's budget is refused whole (429) with the time until it would fit, so clients back
//! off instead of retrying at once. Buckets are created on first use and forgotten once
//! full again, so an unbounded set of tenants cannot grow memory without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::{RateLimitConfig, RateLimitsConfig};

/// Buckets kept before full (idle) ones are dropped.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    per_second: f64,
    burst: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Limits {
    events: Option<Rate>,
    bytes: Option<Rate>,
}

impl Limits {
    fn from_config(c: &RateLimitConfig, burst_secs: f64) -> Limits {
        let rate = |v: u64| {
            (v > 0).then(|| Rate {
                per_second: v as f64,
                burst: (v as f64 * burst_secs).max(1.0),
            })
        };
        Limits {
            events: rate(c.events_per_second),
            bytes: rate(c.bytes_per_second.0),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: Rate, now: Instant) {
        let dt = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate.per_second).min(rate.burst);
        self.at = now;
    }
}

/// What the client is told, allowed or not (the `RateLimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Per second allowed: events when the tenant has an events budget, else bytes (`unit`).
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset: u64,
    /// Seconds until this request would fit (0 when allowed).
    pub retry_after: u64,
    /// Whether `limit` and `remaining` count body bytes (a tenant with only a bytes budget).
    pub in_bytes: bool,
}

pub struct RateLimiter {
    default: Limits,
    tenants: HashMap<String, Limits>,
    buckets: Mutex<HashMap<String, [Option<Bucket>; 2]>>,
}

impl RateLimiter {
    pub fn from_config(c: &RateLimitsConfig) -> RateLimiter {
        let burst = c.burst.0.as_secs_f64().max(0.001);
        RateLimiter {
            default: Limits::from_config(&c.default, burst),
            tenants: c
                .tenants
                .iter()
                .map(|t| {
                    let c = RateLimitConfig {
                        events_per_second: t.events_per_second,
                        bytes_per_second: t.bytes_per_second,
                    };
                    (t.tenant.clone(), Limits::from_config(&c, burst))
                })
                .collect(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// One process-wide bucket of `per_second` events (bursting one second's worth), the
    /// same for every key: the dead-letter cap.
    pub fn events_per_second(per_second: u64) -> RateLimiter {
        RateLimiter {
            default: Limits::from_config(
                &RateLimitConfig {
                    events_per_second: per_second.max(1),
                    ..Default::default()
                },
                1.0,
            ),
            tenants: HashMap::new(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_active(&self) -> bool {
        self.default != Limits::default() || !self.tenants.is_empty()
    }

    /// Takes `events` and `bytes` from the tenant's buckets, all or nothing. `None`: the
    /// tenant has no limit.
    pub fn check(
        &self,
        tenant: &str,
        events: u64,
        bytes: u64,
        now: Instant,
    ) -> Option<Result<Budget, Budget>> {
        let limits = self.tenants.get(tenant).copied().unwrap_or(self.default);
        if limits == Limits::default() {
            return None;
        }
        let mut map = self.buckets.lock().ok()?;
        if map.len() >= MAX_TRACKED && !map.contains_key(tenant) {
            let (default, tenants) = (self.default, &self.tenants);
            map.retain(|t, b| {
                let l = tenants.get(t).copied().unwrap_or(default);
                !is_full(b, l, now)
            });
        }
        let entry = map.entry(tenant.to_string()).or_insert([None, None]);
        let wants = [(limits.events, events as f64), (limits.bytes, bytes as f64)];
        let mut wait = 0.0f64;
        for (i, (rate, want)) in wants.iter().enumerate() {
            let Some(rate) = rate else { continue };
            let b = entry[i].get_or_insert(Bucket {
                tokens: rate.burst,
                at: now,
            });
            b.refill(*rate, now);
            if *want > rate.burst {
                // Never fits: say so with the longest sensible wait.
                wait = wait.max(rate.burst / rate.per_second);
            } else if b.tokens < *want {
                wait = wait.max((*want - b.tokens) / rate.per_second);
            }
        }
        let allowed = wait == 0.0;
        if allowed {
            for (i, (rate, want)) in wants.iter().enumerate() {
                if rate.is_some() {
                    if let Some(b) = entry[i].as_mut() {
                        b.tokens -= want;
                    }
                }
            }
        }
        let (limit, remaining, reset, in_bytes) = match (limits.events, entry[0]) {
            (Some(r), Some(b)) => (
                r.per_second as u64,
                b.tokens.max(0.0) as u64,
                ((r.burst - b.tokens) / r.per_second).ceil() as u64,
                false,
            ),
            _ => {
                let r = limits.bytes.expect("some limit is set");
                let b = entry[1].expect("bucket just made");
                (
                    r.per_second as u64,
                    b.tokens.max(0.0) as u64,
                    ((r.burst - b.tokens) / r.per_second).ceil() as u64,
                    true,
                )
            }
        };
        let budget = Budget {
            limit,
            remaining,
            reset,
            retry_after: if allowed {
                0
            } else {
                (wait.ceil() as u64).max(1)
            },
            in_bytes,
        };
        Some(if allowed { Ok(budget) } else { Err(budget) })
    }
}

fn is_full(b: &[Option<Bucket>; 2], l: Limits, now: Instant) -> bool {
    [l.events, l.bytes]
        .iter()
        .zip(b)
        .all(|(rate, bucket)| match (rate, bucket) {
            (Some(r), Some(bk)) => {
                let mut bk = *bk;
                bk.refill(*r, now);
                bk.tokens >= r.burst
            }
            _ => true,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, HumanDuration, TenantRateLimit};
    use std::time::Duration;

    fn limiter() -> RateLimiter {
        RateLimiter::from_config(&RateLimitsConfig {
            default: RateLimitConfig {
                events_per_second: 10,
                bytes_per_second: ByteSize(0),
            },
            burst: HumanDuration::from_secs(1),
            tenants: vec![TenantRateLimit {
                tenant: "big".into(),
                events_per_second: 0,
                bytes_per_second: ByteSize(1000),
            }],
        })
    }

    #[test]
    fn buckets_refill_and_refuse_all_or_nothing() {
        let l = limiter();
        let t0 = Instant::now();
        let ok = l.check("a", 8, 0, t0).unwrap().unwrap();
        assert_eq!((ok.limit, ok.remaining), (10, 2));
        let no = l.check("a", 5, 0, t0).unwrap().unwrap_err();
        assert_eq!(no.retry_after, 1);
        // Nothing was taken by the refusal: 2 left, plus 10/s.
        assert!(l
            .check("a", 5, 0, t0 + Duration::from_millis(200))
            .unwrap()
            .is_err());
        assert!(l
            .check("a", 5, 0, t0 + Duration::from_millis(310))
            .unwrap()
            .is_ok());
        // Tenants are separate; an override replaces the default.
        assert!(l.check("b", 10, 0, t0).unwrap().is_ok());
        assert!(
            l.check("big", 500, 900, t0).unwrap().is_ok(),
            "no event limit for big"
        );
        assert!(
            l.check("big", 1, 200, t0).unwrap().is_err(),
            "its byte budget is spent"
        );
        let never = l.check("c", 11, 0, t0).unwrap().unwrap_err();
        assert_eq!(never.retry_after, 1, "more than the burst never fits");
    }

    #[test]
    fn no_limits_means_no_check() {
        let l = RateLimiter::from_config(&RateLimitsConfig::default());
        assert!(!l.is_active());
        assert!(l.check("a", 1_000_000, 1 << 30, Instant::now()).is_none());
    }
}
