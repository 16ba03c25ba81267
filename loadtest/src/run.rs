//! Sending: closed loop (each connection sends its next request when the last is answered) or
//! open loop (requests are due at a fixed rate; a request's latency runs from when it was due,
//! so time spent waiting for a free connection counts, as a real client would feel it).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::time::Instant;

use crate::gen::Generator;
use crate::report::{histogram, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One event per request (`application/cloudevents+json`); `--batch` must be 1.
    Single,
    /// A JSON array (`application/cloudevents-batch+json`).
    Array,
    /// One event per line (`application/x-ndjson`).
    Ndjson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone)]
pub enum Auth {
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `X-API-Key: <key>`.
    ApiKey(String),
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Sluice's base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub duration: Duration,
    /// Closed loop: concurrent connections. Open loop: the most requests in flight.
    pub connections: usize,
    /// Requests per second: open loop. `None`: closed loop.
    pub rate: Option<f64>,
    pub batch: usize,
    pub format: Format,
    /// Approximate size of a page view's data, in bytes.
    pub size: usize,
    pub compression: Compression,
    pub auth: Auth,
    /// Keep the ids answered 2xx, for the audit.
    pub record_ids: bool,
    /// Prefix of every event id of this run.
    pub run_id: String,
    /// For `https://` URLs: PEM certificates to trust besides the system roots (a private CA,
    /// or the server's own self-signed certificate).
    pub ca_cert: Option<Vec<u8>>,
}

/// A run's figures, and the ids answered 2xx when asked for.
pub struct Outcome {
    pub report: Report,
    pub acked: Vec<String>,
}

#[derive(Default)]
struct Stats {
    statuses: BTreeMap<String, u64>,
    events_sent: u64,
    events_accepted: u64,
    bytes: u64,
    acked: Vec<String>,
}

struct Shared {
    opts: Options,
    client: reqwest::Client,
    stats: Mutex<Stats>,
    hist: Mutex<Histogram<u64>>,
    /// Set once the first request without an answer has been reported on stderr.
    told_error: std::sync::atomic::AtomicBool,
}

pub async fn run(opts: Options) -> anyhow::Result<Outcome> {
    if opts.format == Format::Single && opts.batch != 1 {
        anyhow::bail!("--format single sends one event per request: use --batch 1");
    }
    let mut client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.connections)
        .http1_only()
        .timeout(Duration::from_secs(60));
    if let Some(pem) = &opts.ca_cert {
        for cert in reqwest::Certificate::from_pem_bundle(pem)? {
            client = client.add_root_certificate(cert);
        }
    }
    let client = client.build()?;
    let shared = Arc::new(Shared {
        opts: opts.clone(),
        client,
        stats: Mutex::new(Stats::default()),
        hist: Mutex::new(histogram()),
        told_error: Default::default(),
    });
    let started = Instant::now();
    let deadline = started + opts.duration;
    let mode = match opts.rate {
        None => {
            let workers: Vec<_> = (0..opts.connections)
                .map(|w| {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let mut gen = Generator::new(&shared.opts.run_id, w, shared.opts.size);
                        let mut conn = Conn::for_url(&shared.opts.url);
                        while Instant::now() < deadline {
                            let (body, ids) = build(&shared.opts, &mut gen);
                            let due = Instant::now();
                            send(&shared, &mut conn, body, ids, due).await;
                        }
                    })
                })
                .collect();
            for w in workers {
                w.await?;
            }
            format!("closed loop, {} connections", opts.connections)
        }
        Some(rate) => {
            let slots = Arc::new(tokio::sync::Semaphore::new(opts.connections));
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut gen = Generator::new(&opts.run_id, 0, opts.size);
            let mut tasks = Vec::new();
            let mut k: u32 = 0;
            loop {
                let due = started + interval * k;
                if due >= deadline {
                    break;
                }
                k += 1;
                tokio::time::sleep_until(due).await;
                let permit = slots.clone().acquire_owned().await?;
                let (body, ids) = build(&opts, &mut gen);
                let shared = shared.clone();
                tasks.push(tokio::spawn(async move {
                    send(&shared, &mut Conn::Pooled, body, ids, due).await;
                    drop(permit);
                }));
                if tasks.len() > 10_000 {
                    tasks.retain(|t| !t.is_finished());
                }
            }
            for t in tasks {
                t.await?;
            }
            format!(
                "open loop, {rate:.0} req/s, up to {} in flight",
                opts.connections
            )
        }
    };
    let elapsed = started.elapsed();
    let shared = Arc::try_unwrap(shared).map_err(|_| anyhow::anyhow!("workers still running"))?;
    let stats = shared.stats.into_inner().expect("not poisoned");
    let hist = shared.hist.into_inner().expect("not poisoned");
    let report = Report::new(
        mode,
        elapsed,
        &hist,
        stats.statuses,
        stats.events_sent,
        stats.events_accepted,
        stats.bytes,
    );
    Ok(Outcome {
        report,
        acked: stats.acked,
    })
}

/// A request body (compressed as asked) and the ids of its events. Events are written as
/// JSON text directly (no tree per event): the generator must not be what limits a run.
fn build(opts: &Options, gen: &mut Generator) -> (Vec<u8>, Vec<String>) {
    let mut ids = Vec::with_capacity(opts.batch);
    let mut raw = Vec::with_capacity(opts.batch * (opts.size + 200) + 2);
    if opts.format == Format::Array {
        raw.push(b'[');
    }
    for i in 0..opts.batch {
        if i > 0 && opts.format == Format::Array {
            raw.push(b',');
        }
        ids.push(gen.write_event(&mut raw));
        if opts.format == Format::Ndjson {
            raw.push(b'\n');
        }
    }
    if opts.format == Format::Array {
        raw.push(b']');
    }
    let body = match opts.compression {
        Compression::None => raw,
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&raw).expect("in memory");
            enc.finish().expect("in memory")
        }
        Compression::Zstd => zstd::bulk::compress(&raw, 1).expect("in memory"),
    };
    (body, ids)
}

/// How a worker reaches the server.
enum Conn {
    /// reqwest's pooled client: HTTPS, and the open loop (requests from many tasks).
    Pooled,
    /// One plain-HTTP/1.1 connection of hyper's own, without a pool, URL parsing or middleware
    /// per request: the closed loop's path, so that the generator costs less than the server
    /// it measures. Reconnects after an error.
    Lean {
        authority: String,
        path: String,
        sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    },
}

impl Conn {
    fn for_url(url: &str) -> Conn {
        match url.strip_prefix("http://") {
            Some(rest) => {
                let authority = rest.split('/').next().unwrap_or(rest).to_string();
                Conn::Lean {
                    authority,
                    path: "/v1/events".into(),
                    sender: None,
                }
            }
            None => Conn::Pooled,
        }
    }
}

/// The error and its causes, in one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut why = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        why.push_str(&format!(": {c}"));
        cause = c.source();
    }
    why
}

/// Sends one request; the answer's status and body, or why there was none.
async fn exchange(
    shared: &Shared,
    conn: &mut Conn,
    body: Vec<u8>,
    headers: &[(&'static str, &str)],
) -> Result<(u16, Bytes), String> {
    let opts = &shared.opts;
    match conn {
        Conn::Pooled => {
            let mut req = shared.client.post(format!("{}/v1/events", opts.url));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let resp = req.body(body).send().await.map_err(|e| describe(&e))?;
            let status = resp.status().as_u16();
            Ok((status, resp.bytes().await.unwrap_or_default()))
        }
        Conn::Lean {
            authority,
            path,
            sender,
        } => {
            if sender.is_none() {
                let stream = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .map_err(|e| describe(&e))?;
                stream.set_nodelay(true).map_err(|e| describe(&e))?;
                let (s, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .map_err(|e| describe(&e))?;
                tokio::spawn(connection);
                *sender = Some(s);
            }
            let s = sender.as_mut().expect("connected above");
            let mut req = hyper::Request::post(path.as_str()).header("host", authority.as_str());
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| describe(&e))?;
            let answer = async {
                let resp = s.send_request(req).await?;
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body))
            };
            answer.await.map_err(|e| {
                *sender = None;
                describe(&e)
            })
        }
    }
}

async fn send(shared: &Shared, conn: &mut Conn, body: Vec<u8>, ids: Vec<String>, due: Instant) {
    let opts = &shared.opts;
    let content_type = match opts.format {
        Format::Single => "application/cloudevents+json",
        Format::Array => "application/cloudevents-batch+json",
        Format::Ndjson => "application/x-ndjson",
    };
    let len = body.len() as u64;
    let mut headers: Vec<(&'static str, &str)> = vec![("content-type", content_type)];
    match opts.compression {
        Compression::None => {}
        Compression::Gzip => headers.push(("content-encoding", "gzip")),
        Compression::Zstd => headers.push(("content-encoding", "zstd")),
    }
    let bearer;
    match &opts.auth {
        Auth::None => {}
        Auth::Bearer(t) => {
            bearer = format!("Bearer {t}");
            headers.push(("authorization", &bearer));
        }
        Auth::ApiKey(k) => headers.push(("x-api-key", k)),
    }
    let result = exchange(shared, conn, body, &headers).await;
    // Accepted events: how many, and their ids when the audit needs them.
    let (class, accepted, accepted_ids): (String, usize, Vec<String>) = match result {
        Err(why) => {
            // Counted as `error`; the first one is told with its causes (a refused connection,
            // an untrusted certificate, ...), or a run of errors would say nothing of why.
            if !shared
                .told_error
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                eprintln!("sluice-load: a request got no answer (the first of its kind): {why}");
            }
            ("error".into(), 0, Vec::new())
        }
        Ok((status, bytes)) => {
            let (accepted, accepted_ids) = match status {
                200 if opts.record_ids => (ids.len(), ids.clone()),
                200 => (ids.len(), Vec::new()),
                207 => {
                    let ids: Vec<String> = serde_json::from_slice::<Value>(&bytes)
                        .ok()
                        .and_then(|v| v["results"].as_array().cloned())
                        .map(|results| {
                            results
                                .iter()
                                .filter(|r| r["status"] == 200)
                                .filter_map(|r| r["id"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    (ids.len(), ids)
                }
                _ => (0, Vec::new()),
            };
            (format!("{}xx", status / 100), accepted, accepted_ids)
        }
    };
    let micros = due.elapsed().as_micros().max(1) as u64;
    shared
        .hist
        .lock()
        .expect("not poisoned")
        .saturating_record(micros);
    let mut st = shared.stats.lock().expect("not poisoned");
    *st.statuses.entry(class).or_default() += 1;
    st.events_sent += ids.len() as u64;
    st.events_accepted += accepted as u64;
    st.bytes += len;
    if opts.record_ids {
        st.acked.extend(accepted_ids);
    }
}
