//! One integration-test binary: the real server on port 0 against real parts (Apache Kafka over
//! TCP, PostgreSQL, a Kinesis API emulator, the file system, processes and signals). Run
//! through `scripts/test`, which starts them.

mod abuse;
mod auth;
mod conformance;
mod connections;
mod faults;
mod helm;
mod ingest;
mod kafka;
mod kafka_security;
mod kinesis;
mod loadtest;
mod metrics;
mod openapi;
mod process;
mod process_faults;
mod registry;
mod registry_api;
mod registry_store;
mod replication;
mod support;
mod tls;
