//! Replication faults on a cluster of three Apache Kafka brokers (a controller of their own,
//! topics with three replicas, `min.insync.replicas` 2), under load: the partition leader
//! killed, two of three brokers killed, every broker restarted in turn. Every test records each
//! id answered 200 and audits the topic afterwards: nothing acknowledged may be missing;
//! duplicates are counted and printed.

use std::time::{Duration, Instant};

use sluice::config::{Config, HumanDuration};

use crate::support::kafka::{create_topic_replicated, metadata, partition_sizes, Cluster};
use crate::support::load::{audit_topic, Load, Report, Shape};
use crate::support::{strict_schema, unique, TestServer, Workspace};

struct Setup {
    kafka: Cluster,
    ws: Workspace,
    ty: String,
    topic: String,
}

const PARTITIONS: i32 = 3;

async fn setup() -> Setup {
    let kafka = Cluster::start(3).await;
    let ws = Workspace::new();
    let ty = unique("it.repl.");
    ws.schema(&ty, 1, strict_schema());
    let topic = format!("events.{ty}");
    create_topic_replicated(&kafka.bootstrap(), &topic, PARTITIONS, 3).await;
    kafka.wait_in_sync(&topic, 3, Duration::from_secs(30)).await;
    Setup {
        kafka,
        ws,
        ty,
        topic,
    }
}

impl Setup {
    fn config(&self, delivery_timeout: Duration) -> Config {
        let mut c = self.ws.kafka_config(&self.kafka.bootstrap());
        c.kafka.delivery_timeout_ms = delivery_timeout.as_millis() as u64;
        c.kafka.probe_interval = HumanDuration(Duration::from_millis(300));
        if let Ok(d) = std::env::var("SLUICE_TEST_KAFKA_DEBUG") {
            c.kafka.properties.insert("debug".into(), d);
        }
        c
    }

    async fn leader_of(&self, partition: i32) -> i32 {
        metadata(&self.kafka.bootstrap(), Some(&self.topic))
            .await
            .expect("metadata")
            .partitions
            .iter()
            .find(|p| p.id == partition)
            .expect("the partition")
            .leader
    }

    /// Nothing acknowledged is missing from the topic; every refusal was a 503 or 429 with
    /// Retry-After; duplicates are printed.
    async fn audit(&self, test: &str, report: &Report) {
        eprintln!(
            "[{test}] statuses {:?}, events refused {:?}",
            report.statuses, report.refusals
        );
        assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
        assert_eq!(report.missing_retry_after, 0, "every 503 has Retry-After");
        audit_topic(&self.kafka.bootstrap(), &self.topic, report)
            .await
            .assert_nothing_lost(test);
    }
}

/// Six clients with keys of their own, so that every partition is busy.
fn shape() -> Shape {
    Shape {
        clients: 6,
        batch: 10,
        pause: Duration::from_millis(20),
        tolerate_connection_errors: false,
    }
}

#[tokio::test]
async fn replication_leader_killed_under_load_loses_nothing_and_traffic_returns_within_seconds() {
    let mut t = setup().await;
    let s = TestServer::start_ready(t.config(Duration::from_secs(10))).await;
    let load = Load::start(&s.url, &t.ty, shape());
    let before = load.rate(Duration::from_secs(3)).await;

    // The leader of the partition that took the most records so far.
    let sizes = partition_sizes(&t.kafka.bootstrap(), &t.topic).await;
    let busiest = sizes.iter().max_by_key(|(_, n)| *n).unwrap().0;
    let leader = t.leader_of(busiest).await;
    let at_kill = load.acked_per_client();
    t.kafka.broker(leader).kill();
    // Traffic is back when every client (every key, including those on the dead leader's
    // partitions) had two more batches acknowledged.
    let back = load
        .wait_every_client_acked(&at_kill, 2 * shape().batch, Duration::from_secs(30))
        .await;
    let after = load.rate(Duration::from_secs(3)).await;
    let report = load.stop().await;
    let new_leader = t.leader_of(busiest).await;
    eprintln!(
        "[leader -9] partition {busiest} led by broker {leader}, now by {new_leader}; every \
         client acknowledged again {back:?} after the kill; {before:.0} events/s before, \
         {after:.0} after"
    );
    assert_ne!(new_leader, leader, "another replica took over");
    assert!(
        back < Duration::from_secs(15),
        "traffic back within seconds, took {back:?}"
    );
    assert!(
        after >= before / 3.0,
        "throughput recovered: {before:.0} events/s before, {after:.0} after"
    );
    assert!(
        !report
            .refusals
            .keys()
            .any(|k| k.contains("sink_unavailable")),
        "two brokers of three kept taking writes, so the gateway stayed ready: {:?}",
        report.refusals
    );
    t.audit("leader -9", &report).await;
}

#[tokio::test]
async fn replication_two_of_three_brokers_killed_gives_503_retry_after_then_recovers_losing_nothing(
) {
    let mut t = setup().await;
    let delivery_timeout = Duration::from_secs(3);
    let s = TestServer::start_ready(t.config(delivery_timeout)).await;
    let load = Load::start(&s.url, &t.ty, shape());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(load.acked_so_far() > 0);

    t.kafka.broker(2).kill();
    t.kafka.broker(3).kill();
    // Whatever was in flight is settled within the delivery timeout. From then on one replica
    // of three is left, below min.insync.replicas: no write can be acknowledged.
    tokio::time::sleep(delivery_timeout + Duration::from_secs(1)).await;
    let (acked, refused) = (load.acked_so_far(), load.count_so_far(503));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (acked_later, refused_later) = (load.acked_so_far(), load.count_so_far(503));
    assert_eq!(
        acked_later, acked,
        "acknowledged with one in-sync replica of three"
    );
    assert!(
        refused_later > refused,
        "writes were refused with 503 while the cluster could not take them"
    );

    let at_restart = load.acked_per_client();
    let restarted = Instant::now();
    let mut up = Duration::ZERO;
    // Both at once, as after a power cut; each recovers its log from disk.
    t.kafka.broker(2).spawn();
    t.kafka.broker(3).spawn();
    for id in [2, 3] {
        t.kafka
            .broker(id)
            .wait_started(Duration::from_secs(90))
            .await;
        up = restarted.elapsed();
    }
    load.wait_every_client_acked(&at_restart, 2 * shape().batch, Duration::from_secs(90))
        .await;
    eprintln!(
        "[2 of 3 -9] {} answers 503 in the 5 s checked; the brokers were up again {up:?} \
         after their restart began, and every client acknowledged again after {:?}",
        refused_later - refused,
        restarted.elapsed()
    );
    t.kafka
        .wait_in_sync(&t.topic, 3, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.stop().await;
    t.audit("2 of 3 -9", &report).await;
}

#[tokio::test]
async fn replication_rolling_restart_of_every_broker_under_load_loses_nothing() {
    let mut t = setup().await;
    let s = TestServer::start_ready(t.config(Duration::from_secs(10))).await;
    let load = Load::start(&s.url, &t.ty, shape());
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in 1..=3 {
        let before = load.acked_so_far();
        // Controlled shutdown: the broker hands its leaderships over before it exits.
        t.kafka.broker(id).terminate(Duration::from_secs(60)).await;
        let down = load.acked_so_far();
        t.kafka.broker(id).start().await;
        t.kafka
            .wait_in_sync(&t.topic, 3, Duration::from_secs(60))
            .await;
        let after = load.acked_so_far();
        eprintln!(
            "[rolling] broker {id}: {} events acknowledged while it shut down, {} while it \
             was down and caught up",
            down - before,
            after - down
        );
        assert!(after > down, "writes went on while broker {id} was away");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.stop().await;
    t.audit("rolling restart", &report).await;
}
