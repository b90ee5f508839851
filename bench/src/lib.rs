//! augur-bench: load drivers, local clusters and comparison benchmarks.
pub mod client;
pub mod cluster;
pub mod driver;
pub mod hotspot;
pub mod latency;
pub mod lincheck;
pub mod migration;
pub mod report;
pub mod scenario;
pub mod vs_redis;
pub mod workload;
