//! Apache Kafka: the shared broker scripts/test starts, or nodes of a test's own (one combined
//! broker+controller behind a proxy, or a cluster of brokers with a controller) for tests that
//! cut, kill or restart them. Records are read back with an rdkafka consumer.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// The shared broker's bootstrap address.
pub fn brokers() -> String {
    std::env::var("SLUICE_TEST_KAFKA_BROKERS").expect(
        "Kafka tests need a real broker: run them with scripts/test, which starts one and sets SLUICE_TEST_KAFKA_BROKERS",
    )
}

pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    create_topic_replicated(brokers, topic, partitions, 1).await
}

/// Creates `topic` with `replicas` copies of each partition.
pub async fn create_topic_replicated(brokers: &str, topic: &str, partitions: i32, replicas: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let res = admin
        .create_topics(
            &[NewTopic::new(
                topic,
                partitions,
                TopicReplication::Fixed(replicas),
            )],
            &opts,
        )
        .await
        .expect("CreateTopics request");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// A record as read back from the topic.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub key: String,
    /// The value as JSON (`Null` when it is not JSON, e.g. in Confluent's wire format).
    pub value: serde_json::Value,
    pub raw_value: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl Consumed {
    pub fn id(&self) -> &str {
        &self.headers["ce_id"]
    }
}

/// Reads `topic` from the beginning until `expected` records arrived (then `linger` more, to
/// catch duplicates) or `timeout` passed.
pub async fn consume(
    brokers: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let brokers = brokers.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        consume_blocking(&brokers, &topic, Until::Count(expected), timeout)
    })
    .await
    .unwrap()
}

/// Reads `topic` from the beginning until every id in `ids` arrived (then a second more, to
/// catch duplicates) or `timeout` passed. Records not in `ids` are returned too.
pub async fn consume_ids(
    brokers: &str,
    topic: &str,
    ids: &[String],
    timeout: Duration,
) -> Vec<Consumed> {
    let brokers = brokers.to_string();
    let topic = topic.to_string();
    let wanted: HashSet<String> = ids.iter().cloned().collect();
    tokio::task::spawn_blocking(move || {
        consume_blocking(&brokers, &topic, Until::Ids(wanted), timeout)
    })
    .await
    .unwrap()
}

enum Until {
    Count(usize),
    Ids(HashSet<String>),
}

fn consume_blocking(
    brokers: &str,
    topic: &str,
    mut until: Until,
    timeout: Duration,
) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", super::unique("it-"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = md.topics()[0].partitions().len();
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut linger_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= deadline || linger_until.is_some_and(|t| now >= t) {
            break;
        }
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            // A broker of the bootstrap list that is down (a replication test killed it) is
            // reported here; the consumer goes on with the others.
            let Ok(msg) = msg else { continue };
            let mut headers = HashMap::new();
            if let Some(h) = msg.headers() {
                for hd in h.iter() {
                    headers.insert(
                        hd.key.to_string(),
                        String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            let consumed = Consumed {
                partition: msg.partition(),
                key: String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned(),
                value: serde_json::from_slice(msg.payload().unwrap_or(b"null"))
                    .unwrap_or(serde_json::Value::Null),
                raw_value: msg.payload().unwrap_or_default().to_vec(),
                headers,
            };
            let done = match &mut until {
                Until::Count(n) => out.len() + 1 >= *n,
                Until::Ids(ids) => {
                    if let Some(id) = consumed.headers.get("ce_id") {
                        ids.remove(id);
                    }
                    ids.is_empty()
                }
            };
            out.push(consumed);
            if done && linger_until.is_none() {
                linger_until = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }
    out
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka-broker");

/// A port for a node of the tests' own: below the kernel's ephemeral range (32768 and up), so
/// that while a killed node is down its port is not handed to some client socket, and the node
/// comes back on the same port. Each test binary walks its own stretch of the range.
pub fn node_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = (std::process::id() % 60) * 200;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + ((base + n) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One Kafka node, run by `scripts/kafka-broker node` from a folder holding its `node.env`,
/// data and log. Killed on drop; its log's tail is printed when the test failed.
pub struct Node {
    pub id: i32,
    /// The client listener (brokers only).
    pub port: Option<u16>,
    dir: PathBuf,
    heap: &'static str,
    child: Option<Child>,
    /// Where this run's lines start in `node.log`.
    log_from: u64,
}

impl Node {
    fn new(dir: PathBuf, id: i32, port: Option<u16>, heap: &'static str, env: &str) -> Node {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("node.env"), env).unwrap();
        Node {
            id,
            port,
            dir,
            heap,
            child: None,
            log_from: 0,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// Starts the node's process (again, on the same ports and data); see [`Node::start`].
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} is running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        self.log_from = log.metadata().unwrap().len();
        let child = Command::new(SCRIPT)
            .arg("node")
            .arg(&self.dir)
            .env("KAFKA_HEAP_OPTS", self.heap)
            .env("SLUICE_KAFKA_WATCH_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("run scripts/kafka-broker node");
        self.child = Some(child);
    }

    /// Waits until this run of the node says it started (for a broker: registered and unfenced
    /// by the controller).
    pub async fn wait_started(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let log = std::fs::read(self.log_path()).unwrap_or_default();
            let this_run = String::from_utf8_lossy(&log[(self.log_from as usize).min(log.len())..]);
            if this_run.contains("Kafka Server started") {
                return;
            }
            let exited = self.child.as_mut().map(|c| c.try_wait().unwrap());
            assert!(
                matches!(exited, Some(None)),
                "Kafka node {} exited ({exited:?}); {}",
                self.id,
                self.log_tail(30)
            );
            assert!(
                Instant::now() < deadline,
                "Kafka node {} did not start within {within:?}; {}",
                self.id,
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts the node (again, on the same ports and data) and waits until it started.
    pub async fn start(&mut self) {
        self.spawn();
        self.wait_started(Duration::from_secs(90)).await;
    }

    /// SIGKILL, as a crash would: no controlled shutdown, nothing flushed by the JVM.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: a controlled shutdown (leadership moves to other brokers first), then waits
    /// until the process is gone.
    pub async fn terminate(&mut self, within: Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + within;
        while c.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "Kafka node {} still running {within:?} after SIGTERM",
                self.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log
            .lines()
            .filter(|l| !l.trim_start().starts_with("at "))
            .rev()
            .take(lines)
            .collect();
        format!(
            "node {} logged (last lines first):\n{}",
            self.id,
            tail.join("\n")
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(40));
        }
    }
}

/// Kafka nodes of a test's own, in a temporary folder: one combined broker+controller
/// ([`Cluster::single`]) or `n` brokers and one controller ([`Cluster::start`]).
pub struct Cluster {
    pub brokers: Vec<Node>,
    pub controller: Option<Node>,
    _dir: tempfile::TempDir,
    /// Held by multi-broker clusters: one at a time, since four JVMs and a load fill 2 cores.
    _slot: Option<tokio::sync::MutexGuard<'static, ()>>,
}

static MULTI_BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A KRaft cluster id: 16 random bytes, base64url without padding, never starting with `-`
/// (which `kafka-storage format -t` would read as an option), as `kafka-storage random-uuid`
/// makes them.
fn cluster_id() -> String {
    use base64::Engine;
    loop {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(uuid::Uuid::new_v4().as_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

impl Cluster {
    /// One broker+controller listening on `port`, whose clients are told to connect to
    /// `advertised` (a proxy in front of it) instead.
    pub async fn single_on(port: u16, advertised: Option<u16>) -> Cluster {
        Cluster::single_with(tempfile::tempdir().unwrap(), port, advertised, "").await
    }

    /// [`Cluster::single_on`] in `dir`, with more `node.env` lines (see scripts/kafka-broker).
    pub async fn single_with(
        dir: tempfile::TempDir,
        port: u16,
        advertised: Option<u16>,
        more_env: &str,
    ) -> Cluster {
        let cport = node_port();
        let env = format!(
            "NODE_ID=1\nROLES=broker,controller\nPORT={port}\nADVERTISED_PORT={}\n\
             CONTROLLER_PORT={cport}\nVOTERS=1@127.0.0.1:{cport}\nCLUSTER_ID={}\n{more_env}",
            advertised.unwrap_or(port),
            cluster_id()
        );
        let mut node = Node::new(dir.path().join("node-1"), 1, Some(port), HEAP, &env);
        node.start().await;
        Cluster {
            brokers: vec![node],
            controller: None,
            _dir: dir,
            _slot: None,
        }
    }

    /// `n` brokers (ids 1..=n) and a controller; new topics get min(n, 3) replicas and
    /// `min.insync.replicas` 2. Returns once the metadata lists every broker.
    pub async fn start(n: usize) -> Cluster {
        let slot = MULTI_BROKER.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let id = cluster_id();
        let cport = node_port();
        let common = format!(
            "CLUSTER_ID={id}\nVOTERS=100@127.0.0.1:{cport}\nRF={}\nMIN_ISR={}\n",
            n.min(3),
            if n >= 3 { 2 } else { 1 }
        );
        let controller = Node::new(
            dir.path().join("controller"),
            100,
            None,
            CONTROLLER_HEAP,
            &format!("NODE_ID=100\nROLES=controller\nCONTROLLER_PORT={cport}\n{common}"),
        );
        let brokers = (1..=n as i32)
            .map(|i| {
                let port = node_port();
                Node::new(
                    dir.path().join(format!("broker-{i}")),
                    i,
                    Some(port),
                    HEAP,
                    &format!("NODE_ID={i}\nROLES=broker\nPORT={port}\n{common}"),
                )
            })
            .collect();
        let mut c = Cluster {
            brokers,
            controller: Some(controller),
            _dir: dir,
            _slot: Some(slot),
        };
        // All at once: the JVMs' start-up is most of the wait.
        c.controller.as_mut().unwrap().spawn();
        for b in &mut c.brokers {
            b.spawn();
        }
        c.controller
            .as_mut()
            .unwrap()
            .wait_started(Duration::from_secs(90))
            .await;
        for b in &mut c.brokers {
            b.wait_started(Duration::from_secs(90)).await;
        }
        c.wait_brokers(n, Duration::from_secs(30)).await;
        c
    }

    /// Every broker's address, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| format!("127.0.0.1:{}", b.port.unwrap()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn broker(&mut self, id: i32) -> &mut Node {
        self.brokers.iter_mut().find(|b| b.id == id).unwrap()
    }

    /// Waits until the metadata lists `n` live brokers.
    pub async fn wait_brokers(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let seen = metadata(&self.bootstrap(), None)
                .await
                .map(|m| m.brokers)
                .unwrap_or_default();
            if seen.len() >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the metadata lists brokers {seen:?}, not {n}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every partition of `topic` has a leader and all `replicas` in sync.
    pub async fn wait_in_sync(&self, topic: &str, replicas: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let md = metadata(&self.bootstrap(), Some(topic)).await;
            if let Some(m) = &md {
                if !m.partitions.is_empty()
                    && m.partitions
                        .iter()
                        .all(|p| p.leader >= 0 && p.isr.len() >= replicas)
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{topic} is not fully in sync after {within:?}: {md:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

const HEAP: &str = "-Xms64m -Xmx384m";
const CONTROLLER_HEAP: &str = "-Xms32m -Xmx192m";

/// What the metadata says of the brokers and of one topic's partitions.
#[derive(Debug, Default)]
pub struct Metadata {
    pub brokers: Vec<i32>,
    pub partitions: Vec<PartitionState>,
}

#[derive(Debug)]
pub struct PartitionState {
    pub id: i32,
    pub leader: i32,
    pub isr: Vec<i32>,
}

/// Asks `brokers` for metadata (of `topic`, if given); `None` when no broker answered.
pub async fn metadata(brokers: &str, topic: Option<&str>) -> Option<Metadata> {
    let brokers = brokers.to_string();
    let topic = topic.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("log_level", "3")
            .create()
            .unwrap();
        let md = consumer
            .fetch_metadata(topic.as_deref(), Duration::from_secs(3))
            .ok()?;
        Some(Metadata {
            brokers: md.brokers().iter().map(|b| b.id()).collect(),
            partitions: md
                .topics()
                .iter()
                .flat_map(|t| t.partitions())
                .map(|p| PartitionState {
                    id: p.id(),
                    leader: p.leader(),
                    isr: p.isr().to_vec(),
                })
                .collect(),
        })
    })
    .await
    .unwrap()
}

/// Records in each partition of `topic` (high watermark minus low), by partition id.
pub async fn partition_sizes(brokers: &str, topic: &str) -> Vec<(i32, i64)> {
    let brokers = brokers.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(5))
            .unwrap();
        md.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                let (lo, hi) = consumer
                    .fetch_watermarks(&topic, p.id(), Duration::from_secs(5))
                    .unwrap();
                (p.id(), hi - lo)
            })
            .collect()
    })
    .await
    .unwrap()
}

/// A broker of the test's own behind a proxy the test controls; clients only ever reach it
/// through the proxy (`proxy.addr` is the bootstrap address). Its log is on disk, so it
/// survives `kill()` + `start()`.
pub async fn broker_behind_proxy() -> (Cluster, super::proxy::Proxy) {
    let port = node_port();
    let proxy = super::proxy::Proxy::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SocketAddr::from(([127, 0, 0, 1], port)),
    )
    .await;
    let cluster = Cluster::single_on(port, Some(proxy.addr.port())).await;
    (cluster, proxy)
}
