//! The registry behind ingest: schema files registered at start, global ids on records, and
//! changes made through one replica enforced by another sharing PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice::config::{Config, OnConflict};
use sluice::registry::store::{canonical, PostgresStore};
use sluice::registry::SchemaWork;

use crate::registry_store::PgSchema;
use crate::support::{unique, TestServer, Workspace, STRICT};

fn stored_line(ws: &Workspace, ty: &str) -> Value {
    let text = std::fs::read_to_string(ws.data().join(format!("events.{ty}.ndjson"))).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[tokio::test]
async fn registry_schema_files_are_registered_once_and_records_carry_the_global_id() {
    let ws = Workspace::new();
    let s = TestServer::start_ready(ws.config()).await;
    let a = s
        .send_json(&json!({"type": STRICT, "data": {"n": 1}}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let first = stored_line(&ws, STRICT);
    let id = first["headers"]["sluice_schema_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.parse::<u32>().unwrap() > 0);
    assert_eq!(first["headers"]["sluice_schema_version"], "1");
    s.stop().await.unwrap();

    // A restart finds the files registered and keeps the ids.
    let s = TestServer::start_ready(ws.config()).await;
    assert_eq!(
        s.send_json(&json!({"type": STRICT, "data": {"n": 2}}))
            .await
            .status,
        200
    );
    assert_eq!(
        stored_line(&ws, STRICT)["headers"]["sluice_schema_id"],
        id.as_str()
    );
    s.stop().await.unwrap();

    // A file that now disagrees with the registry stops start-up, naming the file...
    ws.schema(STRICT, 1, json!({"type": "object"}));
    let err = match sluice::build(ws.config()).await {
        Ok(_) => panic!("a conflicting schema file must stop start-up"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("1.json") && err.contains("different schema"),
        "{err}"
    );
    // ...or is skipped with a warning when conflicts are warnings.
    let mut c = ws.config();
    c.registry.on_conflict = OnConflict::Warn;
    let s = TestServer::start_ready(c).await;
    assert_eq!(
        s.send_json(&json!({"type": STRICT, "data": {"n": 3}}))
            .await
            .status,
        200
    );
    assert_eq!(
        s.send_json(&json!({"type": STRICT, "data": {"x": 3}}))
            .await
            .status,
        400,
        "the registered v1 still rules"
    );
}

fn pg_config(ws: &Workspace, url: &str) -> Config {
    let mut c = ws.config();
    c.registry.url = url.to_string();
    c
}

#[tokio::test]
async fn registry_postgres_change_through_one_replica_is_enforced_by_another_within_a_second() {
    let pg = PgSchema::new().await;
    let ws = Workspace::new();
    let ty = unique("it.prop.");
    let v1 = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false});
    ws.schema(&ty, 1, v1);
    let a = TestServer::start_ready(pg_config(&ws, &pg.url)).await;
    let b = TestServer::start_ready(pg_config(&ws, &pg.url)).await;
    let only_v2 = json!({"type": ty, "data": {"n": 1, "m": "new"}});
    assert_eq!(
        b.send_json(&only_v2).await.status,
        400,
        "v1 is closed: `m` is refused"
    );

    // Replica A's registry (its own connection to the shared database) gains v2.
    let store = PostgresStore::open(&pg.url).await.unwrap();
    let v2 = json!({"type": "object", "properties": {"n": {"type": "integer"}, "m": {"type": "string"}}, "required": ["n"], "additionalProperties": false});
    let registered_at = Instant::now();
    let r = SchemaWork::new(&sluice::config::Config::default())
        .register(&store, &ty, Arc::new(v2.clone()), &canonical(&v2))
        .await
        .unwrap();
    assert_eq!(r.version, 2);
    let mut took = None;
    while registered_at.elapsed() < Duration::from_secs(3) {
        if b.send_json(&only_v2).await.status == 200 {
            took = Some(registered_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = took.expect("replica B never accepted an event valid only under v2");
    eprintln!("propagation: replica B enforced v2 {took:?} after it was registered");
    assert!(took < Duration::from_secs(1), "replica B took {took:?}");
    assert_eq!(a.send_json(&only_v2).await.status, 200);
}

#[tokio::test]
async fn kafka_route_with_confluent_wire_format_frames_values_with_the_schema_id() {
    use crate::support::kafka::{brokers, consume, create_topic};
    let brokers = brokers();
    let ws = Workspace::new();
    let ty = unique("it.wire.");
    ws.schema(&ty, 1, json!({"type": "object"}));
    let topic = format!("events.{ty}");
    create_topic(&brokers, &topic, 1).await;
    let mut c = ws.kafka_config(&brokers);
    c.routes.rules = vec![sluice::config::RouteRule {
        type_pattern: ty.clone(),
        tenant: None,
        topic: "events.{type}".into(),
        confluent_wire_format: true,
        dead_letter_topic: None,
        ack: None,
    }];
    let s = TestServer::start_ready(c).await;
    let a = s
        .send_json(&json!({"type": ty, "id": "w1", "data": {"k": 1}}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let records = consume(&brokers, &topic, 1, Duration::from_secs(30)).await;
    let id: u32 = records[0].headers["sluice_schema_id"].parse().unwrap();
    let raw = &records[0].raw_value;
    assert_eq!(raw[0], 0, "magic byte");
    assert_eq!(u32::from_be_bytes(raw[1..5].try_into().unwrap()), id);
    assert_eq!(
        serde_json::from_slice::<Value>(&raw[5..]).unwrap(),
        json!({"k": 1})
    );
}
