//! The Kinesis API emulator (moto, started by scripts/test), read back with the AWS SDK, and an
//! HTTP proxy in front of it that counts PutRecords calls and fails chosen records the way
//! Kinesis does (the call succeeds, the record carries an ErrorCode and is not written).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use serde_json::{json, Value};

pub fn endpoint() -> String {
    std::env::var("SLUICE_TEST_KINESIS_ENDPOINT").expect(
        "Kinesis tests need the emulator: run them with scripts/test, which starts moto and sets SLUICE_TEST_KINESIS_ENDPOINT",
    )
}

pub async fn client(endpoint: &str) -> aws_sdk_kinesis::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await;
    aws_sdk_kinesis::Client::new(&conf)
}

pub async fn create_stream(endpoint: &str, name: &str, shards: i32) {
    let c = client(endpoint).await;
    c.create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    for _ in 0..50 {
        let d = c
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .unwrap();
        if d.stream_description_summary().unwrap().stream_status()
            == &aws_sdk_kinesis::types::StreamStatus::Active
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("stream {name} did not become ACTIVE");
}

#[derive(Debug, Clone)]
pub struct KRecord {
    pub shard: String,
    pub key: String,
    pub data: Vec<u8>,
}

impl KRecord {
    /// The envelope (CloudEvents JSON) this record holds.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.data).unwrap()
    }
}

/// Every record of every shard, each shard in order.
pub async fn read_stream(endpoint: &str, name: &str) -> Vec<KRecord> {
    let c = client(endpoint).await;
    let shards = c.list_shards().stream_name(name).send().await.unwrap();
    let mut out = Vec::new();
    for shard in shards.shards() {
        let mut it = c
            .get_shard_iterator()
            .stream_name(name)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_string);
        while let Some(i) = it {
            let r = c
                .get_records()
                .shard_iterator(&i)
                .limit(10_000)
                .send()
                .await
                .unwrap();
            if r.records().is_empty() {
                break;
            }
            for rec in r.records() {
                out.push(KRecord {
                    shard: shard.shard_id().to_string(),
                    key: rec.partition_key().unwrap_or_default().to_string(),
                    data: rec.data().as_ref().to_vec(),
                });
            }
            it = r.next_shard_iterator().map(str::to_string);
        }
    }
    out
}

/// What the proxy saw of PutRecords.
#[derive(Debug, Default)]
pub struct Seen {
    /// Per call: the partition keys sent, in order, and the call's data bytes.
    pub calls: Vec<(Vec<String>, usize)>,
    /// Records failed on purpose.
    pub failed: usize,
}

#[derive(Default)]
struct ProxyState {
    seen: Mutex<Seen>,
    /// Partition key -> how many more times its records fail.
    fail: Mutex<HashMap<String, usize>>,
}

pub struct KinesisProxy {
    pub url: String,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl KinesisProxy {
    pub async fn start(upstream: &str) -> KinesisProxy {
        let state = Arc::new(ProxyState::default());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.to_string();
        let http = reqwest::Client::new();
        let st = state.clone();
        let app = axum::Router::new()
            .fallback(move |headers: HeaderMap, body: Bytes| {
                let (st, http, upstream) = (st.clone(), http.clone(), upstream.clone());
                async move { forward(&st, &http, &upstream, headers, body).await }
            })
            // PutRecords bodies reach ~7 MB in base64; axum's default cap is 2 MB.
            .layer(axum::extract::DefaultBodyLimit::disable());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        KinesisProxy { url, state, task }
    }

    /// Records with partition key `key` fail the next `times` times they are sent.
    pub fn fail(&self, key: &str, times: usize) {
        self.state
            .fail
            .lock()
            .unwrap()
            .insert(key.to_string(), times);
    }

    pub fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.state.seen.lock().unwrap()
    }
}

impl Drop for KinesisProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    st: &ProxyState,
    http: &reqwest::Client,
    upstream: &str,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // Which records of a PutRecords call fail here, and never reach the emulator.
    let mut failed_at = Vec::new();
    if target.ends_with(".PutRecords") {
        let records = req["Records"].as_array().cloned().unwrap_or_default();
        let keys: Vec<String> = records
            .iter()
            .map(|r| r["PartitionKey"].as_str().unwrap_or_default().to_string())
            .collect();
        let bytes: usize = records
            .iter()
            .map(|r| {
                base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap_or_default())
                    .map_or(0, |d| d.len())
            })
            .sum();
        let mut fail = st.fail.lock().unwrap();
        let mut kept = Vec::new();
        for (i, (r, k)) in records.into_iter().zip(&keys).enumerate() {
            match fail.get_mut(k) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    failed_at.push(i);
                }
                _ => kept.push(r),
            }
        }
        drop(fail);
        let mut seen = st.seen.lock().unwrap();
        seen.calls.push((keys, bytes));
        seen.failed += failed_at.len();
        drop(seen);
        req["Records"] = Value::Array(kept);
        if req["Records"].as_array().unwrap().is_empty() {
            let n = failed_at.len();
            return answer(json!({
                "FailedRecordCount": n,
                "Records": (0..n).map(|_| failed_entry()).collect::<Vec<_>>(),
            }));
        }
    }
    let mut up = http.post(upstream).body(if failed_at.is_empty() {
        body.to_vec()
    } else {
        serde_json::to_vec(&req).unwrap()
    });
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            up = up.header(k, v);
        }
    }
    let resp = up.send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-amz-json-1.1")
        .to_string();
    let bytes = resp.bytes().await.unwrap();
    if failed_at.is_empty() || !status.is_success() {
        return (status, [("content-type", ct)], bytes.to_vec()).into_response();
    }
    // Put the injected failures back in their places.
    let out: Value = serde_json::from_slice(&bytes).unwrap();
    let mut results = out["Records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter();
    let total = results.len() + failed_at.len();
    let merged: Vec<Value> = (0..total)
        .map(|i| {
            if failed_at.contains(&i) {
                failed_entry()
            } else {
                results.next().unwrap()
            }
        })
        .collect();
    let failed = out["FailedRecordCount"].as_u64().unwrap_or(0) as usize + failed_at.len();
    answer(json!({"FailedRecordCount": failed, "Records": merged}))
}

fn failed_entry() -> Value {
    json!({
        "ErrorCode": "ProvisionedThroughputExceededException",
        "ErrorMessage": "Rate exceeded for shard (injected by the test proxy)"
    })
}

fn answer(v: Value) -> axum::response::Response {
    (
        StatusCode::OK,
        [("content-type", "application/x-amz-json-1.1")],
        serde_json::to_vec(&v).unwrap(),
    )
        .into_response()
}
