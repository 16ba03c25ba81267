//! Schema work that a request's input can make expensive (compiling a schema, comparing two)
//! runs here: on blocking threads, never on the async workers; at most one job per core at
//! once, so registrations cannot take every thread; under a time limit, after which the
//! caller is answered even though the job runs on to the end of its step budget.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;

use super::compat::{self, Finding, Level, Verdict};
use super::store::{self, Registered, RegistryStore, StoreError};
use crate::config::Config;

/// Why a job was not run to an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkError {
    /// Every slot stayed taken for the whole time limit.
    #[error("the registry is busy checking other schemas; try again shortly")]
    Busy,
    #[error("the schema took longer than registry.compat_timeout ({0:?}) to process")]
    TimedOut(Duration),
}

pub struct SchemaWork {
    budget: u64,
    timeout: Duration,
    /// `registry.max_schema_fanout` and the event nesting it is counted to.
    fanout: u64,
    max_depth: usize,
    slots: Arc<Semaphore>,
    /// One registration per subject at a time in this replica: concurrent ones would only
    /// invalidate each other's checks. (Replicas still race, and the store settles it.)
    subjects: std::sync::Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl SchemaWork {
    pub fn new(config: &Config) -> SchemaWork {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let r = &config.registry;
        SchemaWork {
            fanout: r.max_schema_fanout,
            max_depth: config.limits.max_depth,
            ..SchemaWork::with(r.compat_budget, r.compat_timeout.0, cores)
        }
    }

    pub fn with(budget: u64, timeout: Duration, slots: usize) -> SchemaWork {
        let defaults = Config::default();
        SchemaWork {
            budget,
            timeout,
            fanout: defaults.registry.max_schema_fanout,
            max_depth: defaults.limits.max_depth,
            slots: Arc::new(Semaphore::new(slots.max(1))),
            subjects: Default::default(),
        }
    }

    /// Runs `f` on a blocking thread once a slot is free, answering within the time limit.
    /// The slot is held until `f` returns, even when the caller was answered first.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WorkError> {
        let deadline = Instant::now() + self.timeout;
        let permit = tokio::time::timeout_at(deadline.into(), self.slots.clone().acquire_owned())
            .await
            .map_err(|_| WorkError::Busy)?
            .expect("the semaphore is never closed");
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        });
        match tokio::time::timeout_at(deadline.into(), job).await {
            Ok(Ok(v)) => Ok(v),
            // A panic in a check is a bug; the request gets an answer, not a hang.
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(WorkError::TimedOut(self.timeout)),
        }
    }

    /// Whether a schema may be registered: it compiles as the ingest path would, and
    /// validating an event against it is bounded ([`super::cost::fanout`]).
    pub async fn compile(&self, schema: Arc<Value>) -> Result<Result<(), String>, WorkError> {
        let (limit, depth) = (self.fanout, self.max_depth);
        self.run(move || {
            super::cost::fanout(&schema, depth, limit)?;
            super::compile_schema(&schema).map(drop)
        })
        .await
    }

    /// Compares `new` with a subject's schemas (stored texts, oldest first) at `level`. Out of
    /// time, the verdict is undecided; only a busy registry is an error.
    pub async fn check(
        &self,
        level: Level,
        new: Arc<Value>,
        previous: Vec<String>,
    ) -> Result<Verdict, WorkError> {
        let budget = self.budget;
        let job = self.run(move || {
            let parsed: Result<Vec<Value>, _> =
                previous.iter().map(|t| serde_json::from_str(t)).collect();
            match parsed {
                Ok(prev) => {
                    let prev: Vec<&Value> = prev.iter().collect();
                    compat::check_within(level, &new, &prev, budget)
                }
                Err(e) => Verdict::Undecided(vec![Finding {
                    kind: "UNDECIDED_SCHEMA",
                    path: String::new(),
                    detail: format!("a registered schema is not JSON: {e}"),
                    decided: false,
                }]),
            }
        });
        match job.await {
            Ok(v) => Ok(v),
            Err(WorkError::TimedOut(t)) => Ok(Verdict::Undecided(vec![Finding {
                kind: "UNDECIDED_TIMEOUT",
                path: String::new(),
                detail: format!("the comparison took longer than registry.compat_timeout ({t:?})"),
                decided: false,
            }])),
            Err(e) => Err(e),
        }
    }
}

impl SchemaWork {
    fn subject_lock(&self, subject: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.subjects.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = map.get(subject).and_then(Weak::upgrade) {
            return l;
        }
        // Entries of subjects no registration holds any more go as new ones come.
        map.retain(|_, w| w.strong_count() > 0);
        let l = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(subject.to_string(), Arc::downgrade(&l));
        l
    }

    /// Registers `schema` (with `text`, its canonical form) under `subject`, checked here
    /// with nothing locked ([`store::register`]).
    pub async fn register(
        &self,
        store: &dyn RegistryStore,
        subject: &str,
        schema: Arc<Value>,
        text: &str,
    ) -> Result<Registered, StoreError> {
        let turn = self.subject_lock(subject);
        let _turn = turn.lock().await;
        store::register(store, subject, "JSON", text, |level, previous| {
            let schema = schema.clone();
            async move {
                let verdict = self
                    .check(level, schema, previous)
                    .await
                    .map_err(|e| StoreError::Busy(e.to_string()))?;
                if verdict.is_compatible() {
                    Ok(())
                } else {
                    Err(StoreError::Incompatible(verdict.messages()))
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn slots_bound_the_jobs_and_time_bounds_the_wait() {
        let work = SchemaWork::with(1_000, Duration::from_millis(200), 1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // The only slot, held past the time limit: its caller is answered, the slot is not
        // given back until the job ends, and meanwhile others are told the registry is busy.
        let first = work.run(move || rx.recv().ok());
        assert_eq!(
            first.await,
            Err(WorkError::TimedOut(Duration::from_millis(200)))
        );
        assert_eq!(work.run(|| 1).await, Err(WorkError::Busy));
        tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(work.run(|| 2).await, Ok(2));
    }

    #[tokio::test]
    async fn checks_parse_stored_texts_and_run_within_the_budget() {
        let work = SchemaWork::with(1_000_000, Duration::from_secs(10), 2);
        let old = r#"{"type":"object","properties":{"a":{"type":"string"}}}"#.to_string();
        let new = Arc::new(json!({"type": "object", "properties": {"a": {"type": "integer"}}}));
        let v = work
            .check(Level::Backward, new.clone(), vec![old.clone()])
            .await;
        assert!(matches!(v, Ok(Verdict::Incompatible(_))), "{v:?}");
        let starved = SchemaWork::with(1, Duration::from_secs(10), 2);
        match starved.check(Level::Backward, new, vec![old]).await {
            Ok(Verdict::Undecided(f)) => assert_eq!(f.last().unwrap().kind, "UNDECIDED_BUDGET"),
            v => panic!("{v:?}"),
        }
    }
}
