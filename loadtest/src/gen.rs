//! Events that look like telemetry: mostly page views of a configurable size, some sign-ups,
//! each with a unique id (`<run>-<worker>-<seq>`) and a partition key drawn from a user pool.

use serde_json::{json, Value};

/// The event types sent and their share, matching the repository's `schemas/`.
pub const TYPES: &[(&str, u32)] = &[("app.page_view", 9), ("app.signup", 1)];

pub struct Generator {
    run: String,
    worker: usize,
    seq: u64,
    /// Approximate JSON size of a page view's `data`.
    size: usize,
    pad: String,
    rng: u64,
}

impl Generator {
    pub fn new(run: &str, worker: usize, size: usize) -> Generator {
        Generator {
            run: run.to_string(),
            worker,
            seq: 0,
            size,
            pad: "abcdefghijklmnopqrstuvwxyz0123456789-".repeat(size / 37 + 1),
            rng: 0x9E37_79B9_7F4A_7C15 ^ (worker as u64).wrapping_mul(0x2545_F491_4F6C_DD1D),
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: cheap and good enough to pick types and users.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The next event's id, random draw and type.
    fn next_event(&mut self) -> (String, u64, &'static str) {
        self.seq += 1;
        let id = format!("{}-{}-{}", self.run, self.worker, self.seq);
        let r = self.next_rand();
        let total: u32 = TYPES.iter().map(|(_, w)| w).sum();
        let mut pick = (r >> 32) as u32 % total;
        let mut ty = TYPES[0].0;
        for (t, w) in TYPES {
            if pick < *w {
                ty = t;
                break;
            }
            pick -= w;
        }
        (id, r, ty)
    }

    /// The next event, with its id.
    pub fn event(&mut self) -> (String, Value) {
        let (id, r, ty) = self.next_event();
        let user = format!("user-{}", r % 10_000);
        let data = match ty {
            "app.signup" => {
                let plan = ["free", "team", "enterprise"][(r % 3) as usize];
                json!({"user_id": user, "plan": plan})
            }
            _ => {
                let base = json!({
                    "url": format!("https://shop.example.com/products/{}?utm_source=newsletter&utm_medium=email", r % 5000),
                    "referrer": "https://www.example.org/search?q=running+shoes",
                    "duration_ms": r % 30_000,
                    "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
                    "screen": {"w": 1920, "h": 1080, "dpr": 1.5},
                    "locale": "en-GB",
                });
                let len = base.to_string().len();
                let mut data = base;
                if self.size > len + 12 {
                    data["props"] = json!({"note": &self.pad[..self.size - len - 12]});
                }
                data
            }
        };
        let event = json!({
            "type": ty,
            "id": id,
            "source": "/loadtest",
            "partitionkey": user,
            "data": data,
        });
        (id, event)
    }

    /// The next event written straight into `out` as JSON (the bytes `serde_json::to_vec` makes
    /// of [`Generator::event`]'s, with no tree in between: the load generator's hot path), and
    /// its id.
    pub fn write_event(&mut self, out: &mut Vec<u8>) -> String {
        use std::io::Write;
        let (id, r, ty) = self.next_event();
        let user = r % 10_000;
        let string = |out: &mut Vec<u8>, s: &str| serde_json::to_writer(out, s).expect("in memory");
        // Members in serde_json's (sorted) order.
        out.extend_from_slice(b"{\"data\":");
        if ty == "app.signup" {
            let plan = ["free", "team", "enterprise"][(r % 3) as usize];
            write!(out, "{{\"plan\":\"{plan}\",\"user_id\":\"user-{user}\"}}").expect("in memory");
        } else {
            let start = out.len();
            write!(
                out,
                "{{\"duration_ms\":{},\"locale\":\"en-GB\",",
                r % 30_000
            )
            .expect("in memory");
            let head = out.len() - start;
            let mut tail = Vec::with_capacity(320);
            write!(
                tail,
                "\"referrer\":\"https://www.example.org/search?q=running+shoes\",\"screen\":{{\"dpr\":1.5,\"h\":1080,\"w\":1920}},\"url\":\"https://shop.example.com/products/{}?utm_source=newsletter&utm_medium=email\",\"user_agent\":\"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36\"}}",
                r % 5000
            )
            .expect("in memory");
            // `base.to_string().len()` of `event`: the data without `props`.
            let len = head + tail.len();
            if self.size > len + 12 {
                out.extend_from_slice(b"\"props\":{\"note\":");
                string(out, &self.pad[..self.size - len - 12]);
                out.extend_from_slice(b"},");
            }
            out.extend_from_slice(&tail);
        }
        out.extend_from_slice(b",\"id\":");
        string(out, &id);
        write!(
            out,
            ",\"partitionkey\":\"user-{user}\",\"source\":\"/loadtest\",\"type\":\"{ty}\"}}"
        )
        .expect("in memory");
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_unique_ids_a_type_mix_and_about_the_size_asked() {
        let mut g = Generator::new("r1", 3, 1024);
        let mut ids = std::collections::HashSet::new();
        let mut signups = 0;
        for _ in 0..1000 {
            let (id, e) = g.event();
            assert!(ids.insert(id.clone()));
            assert_eq!(e["id"], id);
            if e["type"] == "app.signup" {
                signups += 1;
            } else {
                let n = e["data"].to_string().len();
                assert!((1000..1100).contains(&n), "{n}");
            }
        }
        assert!((50..200).contains(&signups), "{signups}");
    }

    #[test]
    fn written_events_are_the_bytes_serde_json_makes() {
        for size in [0, 200, 1024, 4096] {
            let (mut a, mut b) = (Generator::new("r", 1, size), Generator::new("r", 1, size));
            for _ in 0..500 {
                let (id, event) = a.event();
                let mut out = Vec::new();
                assert_eq!(b.write_event(&mut out), id);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    serde_json::to_string(&event).unwrap()
                );
            }
        }
    }
}
