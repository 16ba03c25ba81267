//! Test support: the real server in-process on port 0, per-test schema folders, a real Kafka
//! broker reached over TCP, and a TCP proxy the tests control for outages.

pub mod auth;
pub mod certs;
pub mod kafka;
pub mod kafka_secure;
pub mod kinesis;
pub mod load;
pub mod process;
pub mod proxy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use sluice::config::{Config, HumanDuration, SinkKind};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Accepts any data.
pub const ANY: &str = "test.any";
/// `{"n": integer}` and nothing else.
pub const STRICT: &str = "test.strict";

pub fn strict_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": false
    })
}

/// A temporary folder holding `schemas/` (with [`ANY`] and [`STRICT`]) and `data/`.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        let ws = Workspace {
            dir: tempfile::tempdir().unwrap(),
        };
        ws.schema(ANY, 1, json!({}));
        ws.schema(STRICT, 1, strict_schema());
        ws
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn schemas(&self) -> PathBuf {
        self.path().join("schemas")
    }

    pub fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    pub fn schema(&self, ty: &str, version: u32, schema: Value) {
        let d = self.schemas().join(ty);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("{version}.json")), schema.to_string()).unwrap();
    }

    /// Defaults, except: port 0, this workspace's folders, no drain delay.
    pub fn config(&self) -> Config {
        let mut c = Config::load(None, Vec::new()).unwrap();
        c.server.listen = "127.0.0.1:0".parse().unwrap();
        c.server.drain_delay = HumanDuration(Duration::ZERO);
        c.server.shutdown_grace = HumanDuration::from_secs(10);
        c.schemas.dir = self.schemas();
        c.file.dir = self.data();
        c.registry.url = format!("sqlite://{}", self.data().join("registry.db").display());
        c
    }

    pub fn kinesis_config(&self, endpoint: &str) -> Config {
        let mut c = self.config();
        c.sink.kind = SinkKind::Kinesis;
        c.kinesis.endpoint_url = Some(endpoint.to_string());
        c.kinesis.region = Some("us-east-1".into());
        c.kinesis.probe_interval = HumanDuration(Duration::from_millis(300));
        c
    }

    pub fn kafka_config(&self, brokers: &str) -> Config {
        let mut c = self.config();
        c.sink.kind = SinkKind::Kafka;
        c.kafka.brokers = vec![brokers.to_string()];
        c.kafka.probe_interval = HumanDuration(Duration::from_millis(500));
        c
    }
}

/// Sluice running in this process; shut down (gracefully) on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The admin listener's address, when the config sets `server.admin_listen` (bind it to
    /// port 0: the harness binds it and passes it in).
    pub admin_addr: Option<SocketAddr>,
    pub url: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        // SLUICE_TEST_LOG=1 shows the in-process servers' logs (RUST_LOG filters them).
        static LOGGING: std::sync::Once = std::sync::Once::new();
        if std::env::var_os("SLUICE_TEST_LOG").is_some() {
            LOGGING.call_once(|| sluice::telemetry::init_logging(&config.log));
        }
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = match config.server.admin_listen {
            Some(a) => Some(tokio::net::TcpListener::bind(a).await.unwrap()),
            None => None,
        };
        let admin_addr = admin.as_ref().map(|l| l.local_addr().unwrap());
        // Over TLS, the helpers (metrics, readiness) trust any certificate: the TLS tests
        // check certificates with clients of their own.
        let (url, client) = if config.tls.enabled() {
            let client = reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .build()
                .unwrap();
            (format!("https://localhost:{}", addr.port()), client)
        } else {
            (format!("http://{addr}"), reqwest::Client::new())
        };
        let (tx, rx) = oneshot::channel::<()>();
        let app = sluice::build(config).await.expect("server builds");
        let listeners = sluice::Listeners {
            main: listener,
            admin,
        };
        let task = tokio::spawn(sluice::run(app, listeners, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            admin_addr,
            url,
            client,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Starts and waits until /readyz answers 200.
    pub async fn start_ready(config: Config) -> TestServer {
        let s = TestServer::start(config).await;
        s.wait_ready(true, Duration::from_secs(20)).await;
        s
    }

    /// GETs `path` and returns the answer (the body must be JSON).
    pub async fn get(&self, path: &str) -> Answer {
        Answer::from(
            self.client
                .get(format!("{}{path}", self.url))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// The /metrics text.
    pub async fn metrics(&self) -> String {
        let resp = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap();
        resp.text().await.unwrap()
    }

    /// The value of one series on /metrics (`name{labels}` exactly as exposed, or a bare
    /// name); 0 when it has not been exported yet (a counter not yet moved).
    pub async fn metric(&self, series: &str) -> f64 {
        metric_in(&self.metrics().await, series)
    }

    /// Waits until `series` has grown by at least `by` from `from` (read it before the
    /// action): the metrics registry is the process's, so tests assert deltas.
    pub async fn wait_metric_delta(&self, series: &str, from: f64, by: f64, within: Duration) {
        let what = format!("{series} to grow by {by} from {from}");
        eventually(&what, within, || async {
            self.metric(series).await - from >= by
        })
        .await;
    }

    pub async fn readyz(&self) -> u16 {
        self.client
            .get(format!("{}/readyz", self.url))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn wait_ready(&self, ready: bool, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if (self.readyz().await == 200) == ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/readyz did not become ready={ready} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the spool has replayed everything (`/readyz` shows no backlog).
    pub async fn wait_spool_drained(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let r = self.get("/readyz").await.body;
            if r["checks"]["spool"]["backlog_bytes"] == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "spool not drained within {within:?}: {r}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn post(&self) -> reqwest::RequestBuilder {
        self.client.post(format!("{}/v1/events", self.url))
    }

    /// POSTs `body` with `content_type` and returns (status, Retry-After, JSON body).
    pub async fn send(&self, content_type: &str, body: impl Into<reqwest::Body>) -> Answer {
        Answer::from(
            self.post()
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn send_json(&self, body: &Value) -> Answer {
        let ct = if body.is_array() {
            "application/cloudevents-batch+json"
        } else {
            "application/cloudevents+json"
        };
        self.send(ct, body.to_string()).await
    }

    /// Sends the shutdown signal without waiting (the drain delay starts now).
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.signal_shutdown();
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.signal_shutdown();
    }
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Answer {
    pub async fn from(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("answer {status} is not JSON: {text:?}"));
        Answer {
            status,
            retry_after,
            body,
        }
    }

    /// The machine-readable error code, for request-level errors.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.body))
    }

    pub fn result(&self, i: usize) -> &Value {
        &self.body["results"][i]
    }

    pub fn ids_with_status(&self, status: u64) -> Vec<String> {
        self.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == status)
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Polls `condition` every 20 ms until it holds; fails the test naming `what` after `within`.
/// What a test waits for is a condition (a metric delta, readiness, a file's content), never
/// a bare sleep.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {within:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that `condition` holds throughout `span` (polled every 20 ms): for what must stay
/// true while background work (probes, reloads) runs.
pub async fn holds<F, Fut>(what: &str, span: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + span;
    while tokio::time::Instant::now() < end {
        assert!(condition().await, "{what} stopped holding");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of `series` in a /metrics text (0 when absent).
pub fn metric_in(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            rest.starts_with(' ').then(|| rest.trim().parse().ok())?
        })
        .unwrap_or(0.0)
}

/// A free port on loopback (bound, then released: racy, so only for processes that must be
/// told their port before they start, or for an address where nothing listens).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}
