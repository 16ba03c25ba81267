//! What a run measured, as text for people and JSON for scripts.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: String,
    pub seconds: f64,
    pub requests: u64,
    pub requests_per_second: f64,
    pub events_sent: u64,
    pub events_accepted: u64,
    pub events_per_second: f64,
    pub megabytes_per_second: f64,
    /// Answers by class: `2xx`, `4xx`, `5xx`, `error` (no answer).
    pub statuses: BTreeMap<String, u64>,
    /// Milliseconds.
    pub latency_ms: Latency,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// From a histogram of microseconds.
    pub fn from(h: &Histogram<u64>) -> Latency {
        let ms = |v: u64| v as f64 / 1000.0;
        Latency {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// A histogram of microseconds up to an hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

impl Report {
    pub fn new(
        mode: String,
        elapsed: Duration,
        h: &Histogram<u64>,
        statuses: BTreeMap<String, u64>,
        events_sent: u64,
        events_accepted: u64,
        bytes: u64,
    ) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let requests = statuses.values().sum();
        Report {
            mode,
            seconds: secs,
            requests,
            requests_per_second: requests as f64 / secs,
            events_sent,
            events_accepted,
            events_per_second: events_accepted as f64 / secs,
            megabytes_per_second: bytes as f64 / secs / 1e6,
            statuses,
            latency_ms: Latency::from(h),
        }
    }

    pub fn text(&self) -> String {
        let l = &self.latency_ms;
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!(
            "{mode}: {req} requests in {secs:.1}s = {rps:.0} req/s; {acc} of {sent} events accepted = {eps:.0} events/s; {mbs:.1} MB/s sent\n\
             latency ms: p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}  p99.9 {p999:.2}  max {max:.2}\n\
             answers: {statuses}",
            mode = self.mode,
            req = self.requests,
            secs = self.seconds,
            rps = self.requests_per_second,
            acc = self.events_accepted,
            sent = self.events_sent,
            eps = self.events_per_second,
            mbs = self.megabytes_per_second,
            p50 = l.p50,
            p90 = l.p90,
            p99 = l.p99,
            p999 = l.p999,
            max = l.max,
            statuses = statuses.join(", "),
        )
    }
}
