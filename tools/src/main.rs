//! `augur`: the one command line. `augur node` runs a storage node; `augur bench`
//! runs the comparison benchmarks.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "augur",
    version,
    about = "augur: predictive RDMA-backed key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start here: a 3-node local cluster, a hotspot that moves between client sites,
    /// predictive placement against reactive, a comparison table and an HTML report.
    Demo(augur_bench::scenario::DemoOptions),
    /// Run a storage node speaking the Redis protocol.
    Node(Box<NodeArgs>),
    /// Local clusters.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Nodes, fragments and owners of the cluster a node belongs to.
    Status(StatusArgs),
    /// Move a fragment (or the fragment holding a key) to another node, live.
    Migrate(MigrateArgs),
    /// Show or set how the cluster places fragments.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Benchmarks that print ratios against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Start n nodes as processes on this machine (loopback unless --bind); prints `node <id> <host>:<port>` as each
    /// serves; stops them all on Ctrl-C or SIGTERM.
    Up(ClusterUpArgs),
}

#[derive(Args)]
struct ClusterUpArgs {
    /// Nodes to start (ids 1..n).
    #[arg(short = 'n', long = "nodes", default_value_t = 3)]
    nodes: u32,
    /// Client port of node 1; node i gets base-port + i - 1, its bus port + 10000.
    #[arg(long, default_value_t = 7001)]
    base_port: u16,
    /// Fabric between the nodes (verbs: RDMA, needs a build with `--features verbs` and
    /// an RDMA device; each node uses the device holding its bind address, else
    /// $IBV_DEVICE or the first).
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "verbs"])]
    fabric: String,
    /// Addresses the nodes bind (clients, bus, fabric), comma-separated; node i takes
    /// the ((i - 1) mod count)-th. Default 127.0.0.1. With verbs, the addresses of the
    /// RoCE netdevs, e.g. 10.77.0.1,10.77.0.2 in the SoftRoCE VM.
    #[arg(long, value_delimiter = ',')]
    bind: Vec<IpAddr>,
    /// State directory; node i keeps its state in DIR/node-i.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Cores per node (the nodes share this machine).
    #[arg(long, default_value_t = 1)]
    cores: u32,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["fragment", "key"])))]
struct MigrateArgs {
    /// Table fragment id (see `augur status`).
    #[arg(long)]
    fragment: Option<u64>,
    /// A key: its fragment moves.
    #[arg(long)]
    key: Option<String>,
    /// Node id to move it to.
    #[arg(long)]
    to: u64,
    /// Client port of any node.
    #[arg(long, default_value_t = 6379)]
    port: u16,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Set the placement policy on every node: static, reactive or predictive.
    Set {
        policy: String,
        #[arg(long, default_value_t = 6379)]
        port: u16,
    },
    /// The policy in force.
    Get {
        #[arg(long, default_value_t = 6379)]
        port: u16,
    },
}

#[derive(Args)]
struct StatusArgs {
    /// Client port of any node of the cluster.
    #[arg(long, default_value_t = 6379)]
    port: u16,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// augur vs redis-server under the same redis-benchmark runs, plus bytes per key.
    VsRedis(augur_bench::vs_redis::Options),
    /// GET latency (p50/p99/p99.9) for a key on the connection's core, on another core,
    /// on another node (one-sided reads over TCP) and on redis-server, in one run.
    Latency(augur_bench::latency::Options),
    /// Live migration of one big fragment between nodes under client load: throughput
    /// against the fabric's raw READ bandwidth, write pause, client p99, source CPU.
    Migration(augur_bench::migration::Options),
    /// A hotspot rotating over the nodes, per placement policy (static, reactive,
    /// predictive): local-hit ratio overall and right after each shift, GET p50/p99,
    /// migrations.
    Hotspot(augur_bench::hotspot::Options),
    /// A workload (YCSB A-F, hotspot, sun, walk, flash, growth, mix) on a fresh local
    /// cluster per placement policy, open loop; writes a table, plots and report.html.
    Scenario(augur_bench::scenario::ScenarioOptions),
    /// A recorded trace (CSV `timestamp_ms,site,op,key,size`) replayed like a scenario.
    Replay(augur_bench::scenario::ReplayOptions),
}

/// Flags override the config file, which overrides the defaults.
#[derive(Args)]
struct NodeArgs {
    /// TOML config file (redis.conf names: port, bind, requirepass, maxmemory, ...).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    bind: Option<IpAddr>,
    #[arg(long)]
    port: Option<u16>,
    /// Cores to run (one pinned executor each); default all.
    #[arg(long)]
    cores: Option<usize>,
    #[arg(long)]
    requirepass: Option<String>,
    /// Memory limit for region bytes, e.g. 100mb; writes past it get -OOM.
    #[arg(long)]
    maxmemory: Option<String>,
    #[arg(long)]
    maxclients: Option<usize>,
    /// Largest bulk string a client may send, e.g. 512mb.
    #[arg(long)]
    proto_max_bulk_len: Option<String>,
    /// Longest inline command line, e.g. 64kb.
    #[arg(long)]
    max_inline_len: Option<String>,
    /// Most bytes of unparsed requests a client may have buffered, e.g. 1gb.
    #[arg(long)]
    client_query_buffer_limit: Option<String>,
    /// Close clients idle this many seconds (0: never).
    #[arg(long)]
    timeout: Option<u64>,
    /// Seconds a request may take to arrive from its first byte (also how long a client
    /// may leave its replies unread).
    #[arg(long)]
    partial_request_timeout: Option<u64>,
    /// Target bytes of one fragment's region, e.g. 16mb.
    #[arg(long)]
    region_size: Option<String>,
    /// Back regions with huge pages (falls back, with a log line, if none are reserved).
    #[arg(long)]
    hugepages: Option<bool>,
    /// Port of the Prometheus /metrics endpoint; 0 turns it off.
    #[arg(long)]
    admin_port: Option<u16>,
    /// Active expiry interval in milliseconds.
    #[arg(long)]
    expiry_interval_ms: Option<u64>,
    /// This node's id in the cluster (1, 2, ...), stable across restarts.
    #[arg(long)]
    node_id: Option<u64>,
    /// Directory for the node's state (the ownership table's Raft log).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Cluster bus address (HOST:PORT, the member's port + 10000 by default) to join.
    #[arg(long)]
    join: Option<SocketAddr>,
    /// Secret shared by the cluster's nodes (>= 16 bytes); also from AUGUR_CLUSTER_SECRET.
    #[arg(long, env = "AUGUR_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// Port of the cluster bus; default the client port + 10000.
    #[arg(long)]
    cluster_port: Option<u16>,
    /// Nodes to wait for before the key space is spread over them.
    #[arg(long)]
    cluster_size: Option<u32>,
    /// Seconds start-up waits for the cluster to form.
    #[arg(long)]
    cluster_form_timeout: Option<u64>,
    /// Telemetry tick in milliseconds.
    #[arg(long)]
    telemetry_interval_ms: Option<u64>,
    /// Most MiB/s that migrations to this node pull together (0: no limit).
    #[arg(long)]
    migration_max_mb_per_s: Option<u64>,
    /// Accesses per second above which a fragment splits (0: never).
    #[arg(long)]
    split_load: Option<u64>,
    /// Seconds of no access after which neighbouring fragments merge (0: never).
    #[arg(long)]
    merge_after_s: Option<u64>,
    /// Placement: static, reactive or predictive.
    #[arg(long)]
    placement_policy: Option<String>,
    /// Node-to-node fabric: tcp, or verbs (RDMA; needs a build with `--features verbs`).
    #[arg(long, value_parser = ["tcp", "verbs"])]
    fabric: Option<String>,
}

fn memory(flag: &str, value: &str) -> anyhow::Result<u64> {
    augur_node::config::parse_memory(value)
        .with_context(|| format!("--{flag}: invalid amount '{value}'"))
}

impl NodeArgs {
    fn into_config(self) -> anyhow::Result<augur_node::Config> {
        let mut c = match &self.config {
            Some(path) => augur_node::Config::load(path)?,
            None => augur_node::Config::default(),
        };
        if let Some(v) = self.bind {
            c.bind = v;
        }
        if let Some(v) = self.port {
            c.port = v;
        }
        if let Some(v) = self.cores {
            c.cores = v;
        }
        if let Some(v) = self.requirepass {
            c.requirepass = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = self.maxmemory {
            c.maxmemory = memory("maxmemory", &v)?;
        }
        if let Some(v) = self.maxclients {
            c.maxclients = v;
        }
        if let Some(v) = self.proto_max_bulk_len {
            c.proto_max_bulk_len = memory("proto-max-bulk-len", &v)?;
        }
        if let Some(v) = self.max_inline_len {
            c.max_inline_len = memory("max-inline-len", &v)?;
        }
        if let Some(v) = self.client_query_buffer_limit {
            c.client_query_buffer_limit = memory("client-query-buffer-limit", &v)?;
        }
        if let Some(v) = self.timeout {
            c.timeout = v;
        }
        if let Some(v) = self.partial_request_timeout {
            c.partial_request_timeout = v;
        }
        if let Some(v) = self.region_size {
            c.region_size = memory("region-size", &v)?;
        }
        if let Some(v) = self.hugepages {
            c.hugepages = v;
        }
        if let Some(v) = self.admin_port {
            c.admin_port = v;
        }
        if let Some(v) = self.expiry_interval_ms {
            c.expiry_interval_ms = v;
        }
        if let Some(v) = self.node_id {
            c.node_id = v;
        }
        if let Some(v) = self.dir {
            c.dir = Some(v);
        }
        if let Some(v) = self.join {
            c.join = Some(v);
        }
        if let Some(v) = self.cluster_secret {
            c.cluster_secret = Some(v);
        }
        if let Some(v) = self.cluster_port {
            c.cluster_port = v;
        }
        if let Some(v) = self.cluster_size {
            c.cluster_size = v;
        }
        if let Some(v) = self.cluster_form_timeout {
            c.cluster_form_timeout = v;
        }
        if let Some(v) = self.telemetry_interval_ms {
            c.telemetry_interval_ms = v;
        }
        if let Some(v) = self.migration_max_mb_per_s {
            c.migration_max_mb_per_s = v;
        }
        if let Some(v) = self.split_load {
            c.split_load = v;
        }
        if let Some(v) = self.merge_after_s {
            c.merge_after_s = v;
        }
        if let Some(v) = self.placement_policy {
            c.placement_policy = v;
        }
        if let Some(v) = self.fabric {
            c.fabric = v.parse()?;
        }
        c.validate()?;
        Ok(c)
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Node(args) => {
            let config = args.into_config()?;
            let node = augur_node::start(config).context("starting the node")?;
            println!("augur node listening on port {}", node.port);
            if let Some(p) = node.admin_port {
                println!("metrics on http://{}:{p}/metrics", node.shared.config.bind);
            }
            node.wait();
            Ok(())
        }
        Command::Cluster(ClusterCommand::Up(args)) => cluster_up(args),
        Command::Status(args) => status(args),
        Command::Migrate(args) => migrate(args),
        Command::Policy(PolicyCommand::Set { policy, port }) => {
            print_reply(port, &[b"AUGUR", b"POLICY", b"SET", policy.as_bytes()])
        }
        Command::Policy(PolicyCommand::Get { port }) => {
            print_reply(port, &[b"AUGUR", b"POLICY", b"GET"])
        }
        Command::Bench(BenchCommand::VsRedis(opts)) => augur_bench::vs_redis::run(&opts),
        Command::Bench(BenchCommand::Latency(opts)) => augur_bench::latency::run(&opts),
        Command::Bench(BenchCommand::Migration(opts)) => augur_bench::migration::run(&opts),
        Command::Bench(BenchCommand::Hotspot(opts)) => augur_bench::hotspot::run(&opts),
        Command::Bench(BenchCommand::Scenario(opts)) => augur_bench::scenario::run_scenario(&opts),
        Command::Bench(BenchCommand::Replay(opts)) => augur_bench::scenario::run_replay(&opts),
        Command::Demo(opts) => augur_bench::scenario::run_demo(&opts),
    }
}

fn cluster_up(args: ClusterUpArgs) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let fabric: augur_node::config::FabricBackend = args.fabric.parse()?;
    anyhow::ensure!(
        fabric.compiled(),
        "--fabric {fabric}: this augur was built without RDMA support; rebuild with \
         `cargo build --release -p augur --features verbs`"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C / SIGTERM handler")?;
    let augur = std::env::current_exe().context("finding the augur binary")?;
    let log_dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("augur-cluster-{}", std::process::id()))
    });
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let opts = augur_bench::cluster::ClusterOptions {
        nodes: args.nodes,
        base_port: args.base_port,
        cores: args.cores,
        dir: args.dir,
        log_dir: log_dir.clone(),
        policy: None, // the nodes' default: predictive
        binds: args.bind,
        extra_args: vec!["--fabric".into(), fabric.to_string()],
        ..Default::default()
    };
    let mut cluster = augur_bench::cluster::LocalCluster::start(&augur, opts, |n| {
        println!("node {} {}", n.id, n.addr);
    })?;
    let first = cluster.nodes[0].addr;
    let try_it = if first.ip().is_loopback() {
        format!(
            "`redis-cli -p {}` or `augur status --port {}`",
            first.port(),
            first.port()
        )
    } else {
        format!("`redis-cli -h {} -p {}`", first.ip(), first.port())
    };
    eprintln!(
        "cluster of {} nodes up ({fabric} fabric); logs in {}; try {try_it}; Ctrl-C stops it",
        args.nodes,
        log_dir.display(),
    );
    loop {
        if stop.load(Ordering::SeqCst) {
            eprintln!("stopping the cluster");
            cluster.stop();
            return Ok(());
        }
        if let Some((id, how)) = cluster.exited() {
            cluster.stop();
            anyhow::bail!("node {id} exited ({how}); stopped the others");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn status(args: StatusArgs) -> anyhow::Result<()> {
    let mut c = augur_bench::client::Resp::connect(args.port)?;
    for (what, request) in [
        ("AUGUR STATUS", &[&b"AUGUR"[..], b"STATUS"]),
        ("AUGUR MIGRATIONS", &[&b"AUGUR"[..], b"MIGRATIONS"]),
    ] {
        let reply = c.command(request)?;
        match augur_bench::client::text(&reply) {
            Some(t) => print!("{t}"),
            None => anyhow::bail!("unexpected reply to {what}: {reply:?}"),
        }
        println!();
    }
    Ok(())
}

fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let to = args.to.to_string();
    let id = args.fragment.map(|f| f.to_string());
    let request: Vec<&[u8]> = match (&id, &args.key) {
        (Some(id), _) => vec![b"AUGUR", b"MIGRATE", id.as_bytes(), to.as_bytes()],
        (None, Some(k)) => vec![b"AUGUR", b"MIGRATE", b"KEY", k.as_bytes(), to.as_bytes()],
        (None, None) => anyhow::bail!("--fragment or --key"),
    };
    // The node answers when the migration is over; meanwhile a second connection asks
    // for the migrations in flight to the target and draws the one it finds.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, port, target) = (done.clone(), args.port, args.to);
    let watcher = std::thread::spawn(move || watch_migration(port, target, &flag));
    let result =
        augur_bench::client::Resp::connect(args.port).and_then(|mut c| c.command(&request));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    let reply = result?;
    match augur_bench::client::text(&reply) {
        Some(t) => {
            println!("{t}");
            Ok(())
        }
        None => anyhow::bail!("{reply:?}"),
    }
}

/// A progress bar (bytes, rate, phase) of the migration to node `to`, from
/// `AUGUR MIGRATIONS` every 200 ms, until `done`.
fn watch_migration(port: u16, to: u64, done: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_message("planning");
    let mut conn = augur_bench::client::Resp::connect(port).ok();
    while !done.load(Ordering::Relaxed) {
        let listing = conn
            .as_mut()
            .and_then(|c| c.command(&[b"AUGUR", b"MIGRATIONS"]).ok())
            .and_then(|r| augur_bench::client::text(&r));
        if let Some(p) = listing.as_deref().and_then(|t| migration_to(t, to)) {
            let total = p.total.max(p.bytes);
            if total > 0 {
                bar.set_length(total);
            }
            bar.set_position(p.bytes);
            bar.set_message(format!(
                "fragment {} from node {}: {}",
                p.fragment, p.from, p.phase
            ));
        }
        bar.tick();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    bar.finish_and_clear();
}

/// One line of `AUGUR MIGRATIONS`.
#[derive(Debug, PartialEq)]
struct InFlight {
    fragment: u64,
    from: u64,
    phase: String,
    bytes: u64,
    total: u64,
}

/// The first migration to node `to` in an `AUGUR MIGRATIONS` listing.
fn migration_to(listing: &str, to: u64) -> Option<InFlight> {
    listing.lines().find_map(|line| {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        };
        let num = |name: &str| field(name)?.parse::<u64>().ok();
        (num("to")? == to).then_some(())?;
        Some(InFlight {
            fragment: num("fragment")?,
            from: num("from")?,
            phase: field("phase")?.to_string(),
            bytes: num("bytes")?,
            total: num("total")?,
        })
    })
}

fn print_reply(port: u16, request: &[&[u8]]) -> anyhow::Result<()> {
    let mut c = augur_bench::client::Resp::connect(port)?;
    let reply = c.command(request)?;
    match augur_bench::client::text(&reply) {
        Some(t) => {
            println!("{t}");
            Ok(())
        }
        None => anyhow::bail!("{reply:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migrations_listing_is_read_for_the_target_asked() {
        let listing = "fragment=4 from=1 to=3 phase=copy bytes=10 total=99 elapsed_ms=5 mib_per_s=0.0\n\
                       fragment=7 from=2 to=1 phase=catch-up bytes=120 total=100 elapsed_ms=9 mib_per_s=0.1\n";
        assert_eq!(
            migration_to(listing, 1),
            Some(InFlight {
                fragment: 7,
                from: 2,
                phase: "catch-up".into(),
                bytes: 120,
                total: 100
            })
        );
        assert_eq!(migration_to(listing, 3).map(|p| p.fragment), Some(4));
        assert_eq!(migration_to(listing, 2), None);
        assert_eq!(migration_to("no migrations in flight\n", 1), None);
        assert_eq!(migration_to("fragment=x from=1 to=1", 1), None);
    }
}
