//! The real broker: the shared one started by scripts/test, or a private tansu for tests that
//! break or restart it. Records are read back with an rdkafka consumer.

use std::collections::HashMap;
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
    tokio::task::spawn_blocking(move || consume_blocking(&brokers, &topic, expected, timeout))
        .await
        .unwrap()
}

fn consume_blocking(
    brokers: &str,
    topic: &str,
    expected: usize,
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
            out.push(Consumed {
                partition: msg.partition(),
                key: String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned(),
                value: serde_json::from_slice(msg.payload().unwrap_or(b"null"))
                    .unwrap_or(serde_json::Value::Null),
                raw_value: msg.payload().unwrap_or_default().to_vec(),
                headers,
            });
            if out.len() >= expected && linger_until.is_none() {
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

    /// Starts the broker (again) on the same storage and waits until it listens.
    pub fn restart(&mut self) {
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
    }
}
