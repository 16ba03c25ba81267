//! The real broker: the shared one started by scripts/test, or a private tansu for tests that
//! break or restart it. Records are read back with an rdkafka consumer.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let res = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
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
            let msg = msg.expect("consumer error");
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

/// A tansu broker of the test's own, listening on `port` and advertising `advertised` (a
/// proxy's port, so every client connection goes through the proxy). Killed on drop.
pub struct OwnBroker {
    child: Option<Child>,
    pub port: u16,
    advertised: u16,
    storage: &'static str,
    dir: tempfile::TempDir,
}

impl OwnBroker {
    /// In memory: fast, gone when the process goes.
    pub fn start(port: u16, advertised: u16) -> OwnBroker {
        Self::start_on(port, advertised, "memory://tansu/")
    }

    /// On SQLite in a folder of its own, so that it survives `kill()` + `restart()`.
    pub fn start_durable(port: u16, advertised: u16) -> OwnBroker {
        Self::start_on(port, advertised, "sqlite://tansu.db")
    }

    fn start_on(port: u16, advertised: u16, storage: &'static str) -> OwnBroker {
        let mut b = OwnBroker {
            child: None,
            port,
            advertised,
            storage,
            dir: tempfile::tempdir().unwrap(),
        };
        b.restart();
        b
    }

    /// SIGKILL, as a crash would: no flush, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same storage, on a new port (a port freed a moment ago
    /// may have gone to another test's broker), and waits until it listens. Point the proxy
    /// at the new `port`.
    pub fn restart_on_new_port(&mut self) {
        self.kill();
        self.port = super::free_port();
        self.restart();
    }

    /// Starts the broker (again) on the same storage and port, and waits until it listens.
    fn restart(&mut self) {
        self.kill();
        let tansu = PathBuf::from(
            std::env::var("SLUICE_TEST_TANSU")
                .expect("run with scripts/test, which sets SLUICE_TEST_TANSU to the tansu binary"),
        );
        let child = Command::new(tansu)
            .current_dir(self.dir.path())
            .args(["broker", "--listener-url"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{}", self.advertised))
            .args(["--storage-engine", self.storage])
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("tansu.log"))
                    .unwrap(),
            ))
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], self.port))).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Listening, but is it ours? A tansu that could not bind exits.
        std::thread::sleep(Duration::from_millis(200));
        let exited = self.child.as_mut().unwrap().try_wait().unwrap();
        assert!(
            exited.is_none(),
            "tansu on {} exited: {exited:?}",
            self.port
        );
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "tansu on {} logged (last lines first):\n{}",
                self.port,
                tail.join("\n")
            );
        }
    }
}

/// A broker of the test's own behind a proxy the test controls; clients only ever reach it
/// through the proxy (`proxy.addr` is the bootstrap address). `durable`: SQLite storage, so the
/// broker survives `kill()` + `restart_on_new_port()`.
pub async fn broker_behind_proxy(durable: bool) -> (OwnBroker, super::proxy::Proxy) {
    let proxy_port = super::free_port();
    let port = super::free_port();
    let broker = if durable {
        OwnBroker::start_durable(port, proxy_port)
    } else {
        OwnBroker::start(port, proxy_port)
    };
    let proxy = super::proxy::Proxy::start(
        SocketAddr::from(([127, 0, 0, 1], proxy_port)),
        SocketAddr::from(([127, 0, 0, 1], port)),
    )
    .await;
    (broker, proxy)
}
