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

/// Parse `args` as the flags of one benchmark, as `augur bench <name>` would (for the
/// benchmarks' option tests).
#[cfg(test)]
pub(crate) fn parse_flags<T: clap::Args>(name: &str, args: &[&str]) -> Result<T, clap::Error> {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli<T: clap::Args> {
        #[command(flatten)]
        opts: T,
    }

    Cli::<T>::try_parse_from(std::iter::once(name).chain(args.iter().copied())).map(|c| c.opts)
}
