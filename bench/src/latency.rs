//! `augur bench latency`: GET latency of one client connection doing sequential
//! request/reply, for a key
//!
//! 1. on the core that serves the connection (`same-core`),
//! 2. on another core of the same node (`other-core`, a cross-core message),
//! 3. on another node (`remote-node`, one-sided READs over the TCP fabric),
//! 4. and redis-server's GET on the same machine in the same run (`redis`).
//!
//! The node accepts on every core with SO_REUSEPORT, so the client cannot choose its
//! core; instead it asks (`CLIENT INFO` reports `core=<n>`) and then picks keys with
//! `AUGUR WHERE` so that one key lives on that core, one on another core of node 1 and
//! one on another node. All three augur cases use the same connection, so only the
//! key's place differs between them.
//!
//! Repetitions are interleaved (rep 1: all four cases, rep 2: all four, ...) so the
//! drift of a noisy shared machine spreads over every case instead of landing on one.
//! Each case's figure is the median of its rep medians, with the min–max of the rep
//! p50s as the spread. Counters from `INFO` prove which path was measured: the remote
//! case must grow `remote_reads` by about the number of measured GETs, the other-core
//! case must grow `cross_core_requests`, the same-core case must not.

use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use augur_node::resp::Frame;
use bytes::BytesMut;
use clap::Args;
use hdrhistogram::Histogram;

use crate::client::{ping, request, text, Resp};
use crate::cluster::{ClusterOptions, LocalCluster};

/// The goal (#8): remote GET over TCP p50 at most this many times local GET p50.
pub const GOAL_REMOTE_OVER_LOCAL: f64 = 2.0;
/// Candidate keys tried with `AUGUR WHERE` before giving up on finding one per case.
const MAX_CANDIDATES: u32 = 4096;
/// How long the cluster has to spread its key space over the nodes.
pub(crate) const FORMATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long redis-server has to answer PING.
const REDIS_STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest value the benchmark writes; a latency probe has no use for more.
const MAX_VALUE_SIZE: usize = 16 << 20;
/// Highest latency the histograms hold (60 s, the client's I/O timeout), in ns.
pub(crate) const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// At least this share of the measured remote GETs must have been one-sided reads for
/// the output to say the one-sided path was measured.
const REMOTE_READ_SHARE: f64 = 0.9;

/// Flags of `augur bench latency`.
#[derive(Args, Debug, Clone)]
pub struct Options {
    /// augur binary to run the nodes with; defaults to the running executable.
    #[arg(long)]
    pub augur: Option<PathBuf>,
    /// Measured GETs per case per repetition.
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// Repetitions; each runs all four cases in turn.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Cores per node (at least 2: one case needs another core of the same node).
    #[arg(long, default_value_t = 2)]
    pub cores: u32,
    /// Nodes in the local cluster (at least 2: one case needs another node).
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    /// Bytes of the value every GET returns.
    #[arg(long, default_value_t = 32)]
    pub value_size: usize,
    /// Unmeasured GETs before each measured run (per case, per repetition).
    #[arg(long, default_value_t = 2_000)]
    pub warmup: u64,
    /// Give up (with an error) when the whole run takes longer than this.
    #[arg(long, default_value_t = 1800)]
    pub max_seconds: u64,
    /// redis-server binary.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
}

impl Options {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=100_000_000).contains(&self.requests),
            "--requests must be in 1..=100000000"
        );
        ensure!(
            (1..=1000).contains(&self.reps),
            "--reps must be in 1..=1000"
        );
        ensure!(
            (2..=256).contains(&self.cores),
            "--cores must be in 2..=256 (the other-core case needs a second core)"
        );
        ensure!(
            (2..=16).contains(&self.nodes),
            "--nodes must be in 2..=16 (the remote-node case needs a second node)"
        );
        ensure!(
            self.value_size <= MAX_VALUE_SIZE,
            "--value-size must be at most {MAX_VALUE_SIZE}"
        );
        ensure!(
            self.warmup <= 100_000_000,
            "--warmup must be at most 100000000"
        );
        ensure!(self.max_seconds >= 1, "--max-seconds must be at least 1");
        Ok(())
    }
}

/// What is measured, in the order each repetition runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    SameCore,
    OtherCore,
    RemoteNode,
    Redis,
}

impl Case {
    pub const ALL: [Case; 4] = [
        Case::SameCore,
        Case::OtherCore,
        Case::RemoteNode,
        Case::Redis,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Case::SameCore => "same-core",
            Case::OtherCore => "other-core",
            Case::RemoteNode => "remote-node",
            Case::Redis => "redis",
        }
    }

    fn index(self) -> usize {
        match self {
            Case::SameCore => 0,
            Case::OtherCore => 1,
            Case::RemoteNode => 2,
            Case::Redis => 3,
        }
    }
}

/// Percentiles of one measured run, in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepLatency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

impl RepLatency {
    /// From a histogram of nanoseconds.
    pub fn from_histogram_ns(h: &Histogram<u64>) -> RepLatency {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        RepLatency {
            p50: us(0.5),
            p99: us(0.99),
            p999: us(0.999),
        }
    }
}

/// One case over all repetitions: medians of the rep percentiles, spread of the rep p50s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaseSummary {
    pub p50: f64,
    pub p50_min: f64,
    pub p50_max: f64,
    pub p99: f64,
    pub p999: f64,
    pub reps: usize,
}

/// The median (mean of the middle two for an even count); NaN for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `None` when there are no repetitions.
pub fn summarize(reps: &[RepLatency]) -> Option<CaseSummary> {
    if reps.is_empty() {
        return None;
    }
    let p50s: Vec<f64> = reps.iter().map(|r| r.p50).collect();
    Some(CaseSummary {
        p50: median(&p50s),
        p50_min: p50s.iter().copied().fold(f64::INFINITY, f64::min),
        p50_max: p50s.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        p99: median(&reps.iter().map(|r| r.p99).collect::<Vec<_>>()),
        p999: median(&reps.iter().map(|r| r.p999).collect::<Vec<_>>()),
        reps: reps.len(),
    })
}

/// A ratio of two cases' p50s: of the medians, and the range of the per-rep ratios
/// (reps are interleaved, so the two p50s of one rep saw the same machine state).
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    pub name: String,
    pub of_medians: f64,
    pub rep_min: f64,
    pub rep_max: f64,
}

pub fn ratio(name: &str, num: &[RepLatency], den: &[RepLatency]) -> Ratio {
    let per_rep: Vec<f64> = num.iter().zip(den).map(|(a, b)| a.p50 / b.p50).collect();
    let med = |v: &[RepLatency]| median(&v.iter().map(|r| r.p50).collect::<Vec<_>>());
    Ratio {
        name: name.to_string(),
        of_medians: med(num) / med(den),
        rep_min: per_rep.iter().copied().fold(f64::INFINITY, f64::min),
        rep_max: per_rep.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

/// The goal's verdict, stated whether it was met or not.
pub fn goal_text(remote_p50: f64, local_p50: f64) -> String {
    let r = remote_p50 / local_p50;
    let verdict = if r <= GOAL_REMOTE_OVER_LOCAL {
        "MET"
    } else {
        "NOT MET"
    };
    format!(
        "goal (issue #8): remote GET over TCP p50 <= {GOAL_REMOTE_OVER_LOCAL}x local (same-core) GET p50: \
         {verdict} ({r:.2}x: remote-node {remote_p50:.1} µs vs same-core {local_p50:.1} µs)"
    )
}

/// What the measured remote GETs did, from node 1's `INFO cluster` counters.
pub fn remote_path_text(measured: u64, remote_reads: u64, remote_requests: u64) -> String {
    let share = remote_reads as f64 / measured.max(1) as f64;
    let verdict = if share >= REMOTE_READ_SHARE {
        "the one-sided read path was measured"
    } else {
        "the one-sided read path was NOT (only) what was measured: the rest went as messages"
    };
    format!(
        "remote path: INFO cluster remote_reads on node 1 grew by {remote_reads} over {measured} \
         measured remote GETs ({:.1}%), remote_requests by {remote_requests}: {verdict}",
        share * 100.0
    )
}

/// Where `AUGUR WHERE` says a key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Core { node: u64, core: usize },
    Node(u64),
    Unassigned,
}

/// Parses `node <id> core <c>`, `node <id>` or `unassigned`.
pub fn parse_where(reply: &str) -> Option<Place> {
    let words: Vec<&str> = reply.split_whitespace().collect();
    match words.as_slice() {
        ["unassigned"] => Some(Place::Unassigned),
        ["node", n] => Some(Place::Node(n.parse().ok()?)),
        ["node", n, "core", c] => Some(Place::Core {
            node: n.parse().ok()?,
            core: c.parse().ok()?,
        }),
        _ => None,
    }
}

/// The `core=<n>` field of a `CLIENT INFO` line.
pub fn parse_client_core(info: &str) -> Option<usize> {
    info.split_whitespace()
        .find_map(|w| w.strip_prefix("core="))
        .and_then(|c| c.parse().ok())
}

/// A numeric `field:value` line of an INFO reply.
pub fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines().find_map(|l| {
        l.trim()
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Candidate key `i`: the first byte walks all 256 values because the key space is
/// cut into ranges by leading bytes, so consecutive candidates land in different places.
fn candidate_key(i: u32) -> Vec<u8> {
    let mut k = vec![(i % 256) as u8];
    k.extend_from_slice(format!(":latency:{}", i / 256).as_bytes());
    k
}

/// A key for printing, non-printable bytes as `\xNN` (like redis-cli).
pub(crate) fn show_key(key: &[u8]) -> String {
    let mut s = String::new();
    for &b in key {
        if b.is_ascii_graphic() && b != b'\\' && b != b'"' {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    format!("\"{s}\"")
}

fn value_of_size(n: usize) -> Vec<u8> {
    b"augur-latency-value-"
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

/// The keys of the three augur cases and the core of the connection that reads them.
struct Keys {
    core: usize,
    same: Vec<u8>,
    other: (Vec<u8>, usize),
    remote: (Vec<u8>, u64),
}

pub(crate) fn command_text(c: &mut Resp, args: &[&[u8]]) -> anyhow::Result<String> {
    let reply = c.command(args)?;
    match (&reply, text(&reply)) {
        (Frame::Error(e), _) => bail!(
            "{} got an error: {}",
            String::from_utf8_lossy(args[0]),
            String::from_utf8_lossy(e)
        ),
        (_, Some(t)) => Ok(t),
        (_, None) => bail!(
            "{} got an unexpected reply {reply:?}",
            String::from_utf8_lossy(args[0])
        ),
    }
}

pub(crate) fn where_is(c: &mut Resp, key: &[u8]) -> anyhow::Result<Place> {
    let t = command_text(c, &[b"AUGUR", b"WHERE", key])?;
    parse_where(&t).with_context(|| format!("unexpected AUGUR WHERE reply '{t}'"))
}

fn connection_core(c: &mut Resp) -> anyhow::Result<usize> {
    let t = command_text(c, &[b"CLIENT", b"INFO"])?;
    parse_client_core(&t).with_context(|| format!("no core=<n> in CLIENT INFO '{}'", t.trim()))
}

/// Tries candidate keys until each augur case has one, waiting (bounded) for the
/// cluster to spread its key space over the nodes first.
fn pick_keys(c: &mut Resp, my_node: u64) -> anyhow::Result<Keys> {
    let core = connection_core(c)?;
    let deadline = Instant::now() + FORMATION_TIMEOUT;
    loop {
        let (mut same, mut other, mut remote) = (None, None, None);
        let mut unassigned = false;
        for i in 0..MAX_CANDIDATES {
            let key = candidate_key(i);
            match where_is(c, &key)? {
                Place::Core { node, core: kc } if node == my_node => {
                    if kc == core {
                        same.get_or_insert(key);
                    } else {
                        other.get_or_insert((key, kc));
                    }
                }
                Place::Core { node, .. } => {
                    bail!("AUGUR WHERE on node {my_node} named a core of node {node}")
                }
                Place::Node(n) => {
                    remote.get_or_insert((key, n));
                }
                Place::Unassigned => unassigned = true,
            }
            if let (Some(s), Some(o), Some(r)) = (&same, &other, &remote) {
                return Ok(Keys {
                    core,
                    same: s.clone(),
                    other: o.clone(),
                    remote: r.clone(),
                });
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no key for every case after {MAX_CANDIDATES} candidates within {FORMATION_TIMEOUT:?} \
                 (connection on core {core}; found same-core: {}, other-core: {}, remote-node: {}; \
                 unassigned ranges seen: {unassigned})",
                same.is_some(),
                other.is_some(),
                remote.is_some()
            );
        }
        // Not formed yet (or ranges still moving): look again shortly.
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn set_and_check(c: &mut Resp, key: &[u8], value: &[u8], server: &str) -> anyhow::Result<()> {
    match c.command(&[b"SET", key, value])? {
        Frame::Simple(s) if &s[..] == b"OK" => {}
        other => bail!("{server}: SET {} got {other:?}", show_key(key)),
    }
    match c.command(&[b"GET", key])? {
        Frame::Bulk(v) if v[..] == *value => Ok(()),
        other => bail!(
            "{server}: GET {} right after SET got {other:?}",
            show_key(key)
        ),
    }
}

/// `n` sequential GETs of `key`, each timed from before the write to after its reply
/// is parsed, into a histogram of nanoseconds. Every reply is checked.
fn run_gets(
    c: &mut Resp,
    key: &[u8],
    value: &[u8],
    n: u64,
    deadline: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let mut req = BytesMut::new();
    request(&[b"GET", key]).encode(&mut req, false);
    let mut h =
        Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3).context("creating a histogram")?;
    for i in 0..n {
        let t = Instant::now();
        c.send_raw(&req)?;
        let reply = c.read_reply()?;
        let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        match &reply {
            Frame::Bulk(v) if v[..] == *value => {}
            other => bail!("GET {} got {other:?}", show_key(key)),
        }
        h.saturating_record(ns.max(1));
        if i % 1024 == 0 && Instant::now() > deadline {
            bail!("the run took longer than --max-seconds");
        }
    }
    Ok(h)
}

fn info_counter(c: &mut Resp, section: &str, field: &str) -> anyhow::Result<u64> {
    let t = command_text(c, &[b"INFO", section.as_bytes()])?;
    info_field(&t, field).with_context(|| format!("no {field} in INFO {section}"))
}

/// redis-server we started; dropping it kills and reaps it by PID.
struct Redis {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("picking a free port")?;
    Ok(l.local_addr().context("reading the picked port")?.port())
}

impl Redis {
    /// A fresh redis-server on a free loopback port, persistence off, answering PING.
    fn start(binary: &Path) -> anyhow::Result<Redis> {
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!(
            "augur-latency-redis-{}-{port}.log",
            std::process::id()
        ));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut redis = Redis { child, port, log };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + REDIS_STARTUP_TIMEOUT;
        while ping(addr).is_err() {
            if let Some(status) = redis.child.try_wait().context("polling redis-server")? {
                bail!(
                    "redis-server exited during startup ({status}); log {}:\n{}",
                    redis.log.display(),
                    crate::cluster::tail(&redis.log, 20)
                );
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING within {REDIS_STARTUP_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // `--save ''` is easy to lose in quoting; make sure it took.
        let mut c = Resp::connect(port)?;
        for (param, want) in [("save", ""), ("appendonly", "no")] {
            let reply = c.command(&[b"CONFIG", b"GET", param.as_bytes()])?;
            let got = match &reply {
                Frame::Array(items) if items.len() == 2 => text(&items[1]),
                _ => None,
            };
            ensure!(
                got.as_deref() == Some(want),
                "redis-server {param} is {reply:?}, wanted '{want}'"
            );
        }
        Ok(redis)
    }
}

fn redis_version(binary: &Path) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version (is it installed?)", binary.display()))?;
    ensure!(
        out.status.success(),
        "{} --version failed",
        binary.display()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The 1-minute load average, to put the figures of a shared machine in context.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// Runs the benchmark; the table goes to stdout, progress to stderr.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    opts.validate()?;
    let started = Instant::now();
    let load_before = load_average();
    let deadline = started + Duration::from_secs(opts.max_seconds);
    let augur = match &opts.augur {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("finding the augur binary (current_exe)")?,
    };
    let redis_version = redis_version(&opts.redis_server)?;
    let log_dir = std::env::temp_dir().join(format!("augur-bench-latency-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;

    eprintln!(
        "starting {} nodes x {} cores (logs in {})",
        opts.nodes,
        opts.cores,
        log_dir.display()
    );
    let cluster = LocalCluster::start(
        &augur,
        ClusterOptions {
            nodes: opts.nodes,
            base_port: 0,
            cores: opts.cores,
            log_dir: log_dir.clone(),
            ..Default::default()
        },
        |n| eprintln!("node {} serves on {}", n.id, n.addr),
    )?;
    let redis = Redis::start(&opts.redis_server)?;
    eprintln!(
        "redis-server on port {} (pid {})",
        redis.port,
        redis.child.id()
    );

    let node1 = &cluster.nodes[0];
    let mut conn = Resp::connect(node1.addr.port())?;
    let keys = pick_keys(&mut conn, u64::from(node1.id))?;
    let value = value_of_size(opts.value_size);
    let cases: [(Case, &[u8]); 3] = [
        (Case::SameCore, &keys.same),
        (Case::OtherCore, &keys.other.0),
        (Case::RemoteNode, &keys.remote.0),
    ];
    for (case, key) in cases {
        set_and_check(&mut conn, key, &value, case.label())?;
    }
    let mut redis_conn = Resp::connect(redis.port)?;
    set_and_check(&mut redis_conn, &keys.same, &value, "redis")?;
    eprintln!(
        "connection on node 1 core {}; keys: same-core {}, other-core {} (core {}), remote-node {} (node {})",
        keys.core,
        show_key(&keys.same),
        show_key(&keys.other.0),
        keys.other.1,
        show_key(&keys.remote.0),
        keys.remote.1
    );

    let mut reps: [Vec<RepLatency>; 4] = Default::default();
    let (mut remote_reads, mut remote_requests) = (0u64, 0u64);
    let mut cross_core = [0u64; 2];
    let mut notes = Vec::new();
    for rep in 1..=opts.reps {
        for case in Case::ALL {
            let (c, key): (&mut Resp, &[u8]) = match case {
                Case::SameCore => (&mut conn, &keys.same),
                Case::OtherCore => (&mut conn, &keys.other.0),
                Case::RemoteNode => (&mut conn, &keys.remote.0),
                Case::Redis => (&mut redis_conn, &keys.same),
            };
            run_gets(c, key, &value, opts.warmup, deadline)
                .with_context(|| format!("warm-up of {}", case.label()))?;
            let before = match case {
                Case::RemoteNode => Some([
                    info_counter(c, "cluster", "remote_reads")?,
                    info_counter(c, "cluster", "remote_requests")?,
                ]),
                Case::SameCore | Case::OtherCore => {
                    Some([info_counter(c, "augur", "cross_core_requests")?, 0])
                }
                Case::Redis => None,
            };
            let h = run_gets(c, key, &value, opts.requests, deadline)
                .with_context(|| format!("rep {rep}, {}", case.label()))?;
            match (case, before) {
                (Case::RemoteNode, Some([reads, requests])) => {
                    remote_reads +=
                        info_counter(c, "cluster", "remote_reads")?.saturating_sub(reads);
                    remote_requests +=
                        info_counter(c, "cluster", "remote_requests")?.saturating_sub(requests);
                }
                (Case::SameCore | Case::OtherCore, Some([cc, _])) => {
                    cross_core[case.index()] +=
                        info_counter(c, "augur", "cross_core_requests")?.saturating_sub(cc);
                }
                _ => {}
            }
            let r = RepLatency::from_histogram_ns(&h);
            eprintln!(
                "[{:>6.1}s] rep {rep}/{} {:<11} p50 {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs",
                started.elapsed().as_secs_f64(),
                opts.reps,
                case.label(),
                r.p50,
                r.p99,
                r.p999
            );
            reps[case.index()].push(r);
        }
        // Ranges can move (splits, rebalancing); figures under a label that no longer
        // describes the key would be wrong, so say so.
        let now = [
            where_is(&mut conn, &keys.same)?,
            where_is(&mut conn, &keys.other.0)?,
            where_is(&mut conn, &keys.remote.0)?,
        ];
        let want = [
            Place::Core {
                node: u64::from(node1.id),
                core: keys.core,
            },
            Place::Core {
                node: u64::from(node1.id),
                core: keys.other.1,
            },
            Place::Node(keys.remote.1),
        ];
        if now != want {
            notes.push(format!(
                "after rep {rep} the keys' places changed: {now:?} (were {want:?}); that rep's figures may be mislabelled"
            ));
        }
    }
    let measured = opts.requests * opts.reps as u64;

    println!();
    println!("augur bench latency: GET from one client connection, sequential request/reply");
    println!(
        "  augur:        {} ({} nodes x {} cores on loopback, TCP fabric)",
        augur.display(),
        opts.nodes,
        opts.cores
    );
    println!("  redis-server: {redis_version} (--save '' --appendonly no)");
    println!(
        "  runs:         {} measured GETs per case per rep after {} warm-up GETs; {} reps, interleaved \
         (each rep runs same-core, other-core, remote-node, redis)",
        opts.requests, opts.warmup, opts.reps
    );
    println!("  value size:   {} bytes", opts.value_size);
    println!(
        "  connection:   node 1 core {} (CLIENT INFO); all augur cases on this one connection",
        keys.core
    );
    println!(
        "  keys:         same-core {} | other-core {} (node 1 core {}) | remote-node {} (node {}) | redis {}",
        show_key(&keys.same),
        show_key(&keys.other.0),
        keys.other.1,
        show_key(&keys.remote.0),
        keys.remote.1,
        show_key(&keys.same)
    );
    println!(
        "  machine:      {} cpus, SHARED and NOISY (other jobs run beside this benchmark; \
         {} node cores + redis + this client compete for them); load average {} at start, {} at end",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        opts.nodes * opts.cores,
        load_before,
        load_average()
    );
    println!(
        "  latency:      hdrhistogram of ns per GET, shown in µs; per case the median over reps"
    );
    println!();
    println!(
        "{:<12} {:>9} {:>21} {:>9} {:>9} {:>5}",
        "case", "p50 µs", "p50 min–max (reps)", "p99 µs", "p99.9 µs", "reps"
    );
    let mut summaries = [None; 4];
    for case in Case::ALL {
        let Some(s) = summarize(&reps[case.index()]) else {
            continue;
        };
        summaries[case.index()] = Some(s);
        println!(
            "{:<12} {:>9.1} {:>21} {:>9.1} {:>9.1} {:>5}",
            case.label(),
            s.p50,
            format!("[{:.1}–{:.1}]", s.p50_min, s.p50_max),
            s.p99,
            s.p999,
            s.reps
        );
    }
    println!();
    println!("ratios of p50 (of the medians; per-rep range in brackets):");
    let [same, other, remote, redis_reps] = &reps;
    for r in [
        ratio("other-core / same-core", other, same),
        ratio("remote-node / same-core", remote, same),
        ratio("augur same-core / redis", same, redis_reps),
    ] {
        println!(
            "  {:<24} {:>6.2}  [{:.2}–{:.2}]",
            r.name, r.of_medians, r.rep_min, r.rep_max
        );
    }
    println!();
    println!(
        "{}",
        remote_path_text(measured, remote_reads, remote_requests)
    );
    println!(
        "cross-core: cross_core_requests on node 1 grew by {} over {measured} same-core GETs and by {} over {measured} other-core GETs",
        cross_core[0], cross_core[1]
    );
    if let (Some(r), Some(s)) = (summaries[2], summaries[0]) {
        println!("{}", goal_text(r.p50, s.p50));
    }
    for n in &notes {
        println!("note: {n}");
    }

    drop(conn);
    drop(redis_conn);
    drop(redis);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&log_dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        crate::parse_flags("latency", args)
    }

    #[test]
    fn defaults_and_flags_parse() {
        let d = parse(&[]).expect("defaults");
        assert_eq!(
            (d.requests, d.reps, d.cores, d.nodes, d.value_size),
            (20_000, 5, 2, 2, 32)
        );
        d.validate().expect("defaults are valid");
        let o = parse(&[
            "--requests",
            "500",
            "--reps",
            "3",
            "--cores",
            "4",
            "--nodes",
            "3",
            "--value-size",
            "100",
        ])
        .expect("flags");
        assert_eq!(
            (o.requests, o.reps, o.cores, o.nodes, o.value_size),
            (500, 3, 4, 3, 100)
        );
        assert!(parse(&["--requests", "-1"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn out_of_range_flags_are_rejected() {
        for args in [
            &["--cores", "1"][..],
            &["--nodes", "1"],
            &["--reps", "0"],
            &["--requests", "0"],
            &["--value-size", "999999999"],
        ] {
            let o = parse(args).expect("parses");
            assert!(o.validate().is_err(), "{args:?} should be rejected");
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram_in_microseconds() {
        let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("histogram");
        // 1000 samples: 1..=1000 µs.
        for us in 1..=1000u64 {
            h.record(us * 1000).expect("record");
        }
        let r = RepLatency::from_histogram_ns(&h);
        assert!((r.p50 - 500.0).abs() <= 1.0, "{r:?}");
        assert!((r.p99 - 990.0).abs() <= 1.0, "{r:?}");
        assert!((r.p999 - 999.0).abs() <= 1.0, "{r:?}");
    }

    #[test]
    fn summary_is_median_of_reps_with_p50_spread() {
        let rep = |p50, p99, p999| RepLatency { p50, p99, p999 };
        let s = summarize(&[
            rep(30.0, 90.0, 300.0),
            rep(10.0, 50.0, 100.0),
            rep(20.0, 70.0, 200.0),
        ])
        .expect("summary");
        assert_eq!(
            s,
            CaseSummary {
                p50: 20.0,
                p50_min: 10.0,
                p50_max: 30.0,
                p99: 70.0,
                p999: 200.0,
                reps: 3
            }
        );
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn ratios_use_medians_and_per_rep_ranges() {
        let p = |p50| RepLatency {
            p50,
            p99: 0.0,
            p999: 0.0,
        };
        let r = ratio(
            "remote / same",
            &[p(40.0), p(60.0), p(50.0)],
            &[p(20.0), p(20.0), p(25.0)],
        );
        assert_eq!(r.of_medians, 2.5);
        assert_eq!((r.rep_min, r.rep_max), (2.0, 3.0));
    }

    #[test]
    fn goal_text_states_met_and_missed() {
        let met = goal_text(39.0, 20.0);
        assert!(met.contains(": MET (1.95x"), "{met}");
        assert!(met.contains("<= 2x"), "{met}");
        let exact = goal_text(40.0, 20.0);
        assert!(exact.contains(": MET (2.00x"), "{exact}");
        let missed = goal_text(41.0, 20.0);
        assert!(missed.contains("NOT MET (2.05x"), "{missed}");
        assert!(missed.contains("remote-node 41.0 µs vs same-core 20.0 µs"));
    }

    #[test]
    fn remote_path_text_flags_a_path_that_was_not_one_sided() {
        let ok = remote_path_text(1000, 998, 2);
        assert!(ok.contains("the one-sided read path was measured"), "{ok}");
        let bad = remote_path_text(1000, 100, 900);
        assert!(bad.contains("NOT"), "{bad}");
        assert!(bad.contains("10.0%"), "{bad}");
    }

    #[test]
    fn parses_node_replies() {
        assert_eq!(
            parse_where("node 1 core 3"),
            Some(Place::Core { node: 1, core: 3 })
        );
        assert_eq!(parse_where("node 2"), Some(Place::Node(2)));
        assert_eq!(parse_where("unassigned"), Some(Place::Unassigned));
        assert_eq!(parse_where("node x"), None);
        assert_eq!(parse_where(""), None);
        let info = "id=7 addr=127.0.0.1:5555 laddr=127.0.0.1:7001 name= age=0 idle=0 flags=N db=0 sub=0 psub=0 multi=-1 cmd=client|info user=default resp=2 core=1\n";
        assert_eq!(parse_client_core(info), Some(1));
        assert_eq!(parse_client_core("id=7 addr=x"), None);
        let cluster =
            "# Cluster\r\nremote_requests:12\r\nremote_reads:3456\r\nremote_read_retries:0\r\n";
        assert_eq!(info_field(cluster, "remote_reads"), Some(3456));
        assert_eq!(info_field(cluster, "remote_read"), None);
        assert_eq!(info_field(cluster, "remote_requests"), Some(12));
    }

    #[test]
    fn candidate_keys_cover_every_leading_byte_and_are_distinct() {
        let keys: std::collections::HashSet<Vec<u8>> =
            (0..MAX_CANDIDATES).map(candidate_key).collect();
        assert_eq!(keys.len(), MAX_CANDIDATES as usize);
        let firsts: std::collections::HashSet<u8> = keys.iter().map(|k| k[0]).collect();
        assert_eq!(firsts.len(), 256);
        assert_eq!(show_key(b"\x07:a\\"), "\"\\x07:a\\x5c\"");
        assert_eq!(value_of_size(3), b"aug".to_vec());
        assert!(value_of_size(0).is_empty());
    }
}
