//! augur-bench: load drivers and comparison benchmarks.
pub mod vs_redis;
