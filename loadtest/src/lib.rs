//! A load generator for Sluice with an end-to-end loss audit.
//!
//! - [`gen`]: realistic events (a mix of types, ~1 KB page views by default), unique ids.
//! - [`run`]: closed loop (N connections, each sending as fast as answered) or open loop
//!   (a target rate; latency counted from when each request was due, so a stalled server
//!   cannot hide its stall: no coordinated omission).
//! - [`report`]: throughput, HDR latency percentiles, statuses by class, as text and JSON.
//! - [`audit`]: reads the topics back and compares with what was answered 2xx.

pub mod audit;
pub mod gen;
pub mod report;
pub mod run;

pub use run::{run, Auth, Compression, Format, Options};
