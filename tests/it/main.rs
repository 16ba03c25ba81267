//! One integration-test binary: the real server on port 0 against real parts (a Kafka-protocol
//! broker over TCP, the file system, processes and signals). Run through `scripts/test`.

mod auth;
mod conformance;
mod connections;
mod faults;
mod helm;
mod ingest;
mod kafka;
mod kinesis;
mod loadtest;
mod metrics;
mod openapi;
mod process;
mod process_faults;
mod registry;
mod registry_api;
mod registry_store;
mod support;
mod tls;
