//! Counts and drops. For benchmarks of the gateway alone: nothing sent here is kept, so it is
//! never the default and its name says so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{DeliveryError, Receipts, Record, Sink};

#[derive(Default)]
pub struct BlackholeSink {
    records: AtomicU64,
    bytes: AtomicU64,
}

impl BlackholeSink {
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Sink for BlackholeSink {
    fn kind(&self) -> &'static str {
        "blackhole"
    }

    async fn publish(&self, records: Vec<Record>) -> Receipts {
        let bytes: usize = records.iter().map(Record::size).sum();
        self.records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        records.iter().map(|_| Ok(())).collect()
    }

    fn is_ready(&self) -> bool {
        true
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), DeliveryError> {
        Ok(())
    }
}
