//! `augur bench migration` (issue #9): live migration of one big table fragment in a
//! 3-node cluster, while clients on every node keep reading and writing it.
//!
//! One fragment (every key starting with `m`) is loaded with about `--fragment-mb` MiB
//! of `--value-size` values. Then each repetition
//!
//! 1. measures the clients' GET/SET latency on keys of that fragment for
//!    `--steady-seconds` (the steady state),
//! 2. moves the fragment to the next node with `AUGUR MIGRATE KEY` while the same
//!    clients keep going, recording the node's reply (regions, bytes, time, write
//!    pause), the clients' latencies during it and the source process's CPU time,
//! 3. measures the raw one-sided READ bandwidth of the TCP fabric for the same number
//!    of bytes, with the READ pattern migration uses (4 MiB READs, 8 in flight),
//!    between two fabric endpoints on their own threads in this process, while the
//!    clients keep going — the same machine state the migration saw.
//!
//! Steps 2 and 3 alternate order from rep to rep, so a drifting machine does not
//! favour one of them. Every figure is per rep, then the median with the min–max
//! spread; each goal of the issue is stated with MET or NOT MET.
//!
//! The nodes run with `--split-load 0 --merge-after-s 0` so the table keeps the loaded
//! keys in one fragment for the whole run (the client load would otherwise split it
//! and `AUGUR MIGRATE KEY` would move only a part).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use augur_fabric::tcp::TcpTransport;
use augur_fabric::{
    Access, Connection, FabricConfig, LocalMr, Op, Region, RemoteRegion, Transport,
};
use augur_node::resp::Frame;
use bytes::BytesMut;
use clap::Args;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use crate::client::{request, Resp};
use crate::cluster::{ClusterOptions, LocalCluster};
use crate::latency::{
    command_text, load_average, median, where_is, Place, FORMATION_TIMEOUT, MAX_LATENCY_NS,
};

/// Issue #9 goals.
pub const GOAL_THROUGHPUT_RATIO: f64 = 0.8;
pub const GOAL_PAUSE_P99_US: f64 = 1000.0;
pub const GOAL_LATENCY_RATIO: f64 = 1.5;
/// Samples a p99 needs before it is more than the maximum.
const P99_MIN_SAMPLES: usize = 100;
/// The cluster: the setting.
const NODES: u32 = 3;
/// Every loaded key starts with this, so all of them share one fragment.
const KEY_PREFIX: &str = "m:";
/// SETs per pipelined batch while loading.
const LOAD_PIPELINE: usize = 256;
/// The READ pattern of `node/src/migrate` (CHUNK, BATCH), mirrored by the raw measurement.
const READ_CHUNK: u64 = 4 << 20;
const READ_BATCH: usize = 8;
/// Longest raw-bandwidth measurement.
const RAW_TIMEOUT: Duration = Duration::from_secs(300);
/// How long every node has to route the fragment to its new owner after a move.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Errors each client keeps the text of (all are counted).
const KEPT_ERRORS: usize = 5;
const FABRIC_SECRET: &[u8] = b"augur bench migration raw-bandwidth secret";

/// Flags of `augur bench migration`.
#[derive(Args, Debug, Clone)]
pub struct Options {
    /// augur binary to run the nodes with; defaults to the running executable.
    #[arg(long)]
    pub augur: Option<PathBuf>,
    /// MiB of values to load into the migrated fragment.
    #[arg(long, default_value_t = 256)]
    pub fragment_mb: u64,
    /// Repetitions: each measures the steady state, one migration and one raw READ run.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Client connections in all, spread round-robin over the nodes (at least one per node).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Bytes of each value.
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    /// Seconds of the steady-state latency window of each rep.
    #[arg(long, default_value_t = 3)]
    pub steady_seconds: u64,
    /// Operations per second each client aims at (alternating GET and SET); 0: as fast
    /// as it can (then the clients alone saturate this machine's CPUs).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Cores per node.
    #[arg(long, default_value_t = 1)]
    pub cores: u32,
    /// The nodes' --region-size in MiB; 0: the smallest power of two of at least 3x
    /// --fragment-mb (and 16), so the loaded keys stay one table fragment: a fragment
    /// whose live data outgrows half its region splits, in the store and in the table.
    #[arg(long, default_value_t = 0)]
    pub region_mb: u64,
    /// Give up (with an error) when the whole run takes longer than this.
    #[arg(long, default_value_t = 1800)]
    pub max_seconds: u64,
}

impl Options {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=8192).contains(&self.fragment_mb),
            "--fragment-mb must be in 1..=8192"
        );
        ensure!((1..=100).contains(&self.reps), "--reps must be in 1..=100");
        ensure!(
            (NODES as usize..=64).contains(&self.clients),
            "--clients must be in {NODES}..=64 (at least one client per node)"
        );
        ensure!(
            (16..=(1 << 20)).contains(&self.value_size),
            "--value-size must be in 16..=1048576"
        );
        ensure!(
            (1..=600).contains(&self.steady_seconds),
            "--steady-seconds must be in 1..=600"
        );
        ensure!(self.rate <= 1_000_000, "--rate must be at most 1000000");
        ensure!((1..=64).contains(&self.cores), "--cores must be in 1..=64");
        ensure!(self.region_mb <= 65536, "--region-mb must be at most 65536");
        ensure!(self.max_seconds >= 1, "--max-seconds must be at least 1");
        Ok(())
    }

    /// The region size the nodes run with, in MiB.
    pub fn region_mb(&self) -> u64 {
        match self.region_mb {
            0 => (3 * self.fragment_mb).next_power_of_two().max(16),
            n => n,
        }
    }

    fn keys(&self) -> u64 {
        ((self.fragment_mb << 20) / self.value_size as u64).max(1)
    }
}

/// What `AUGUR MIGRATE` answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MigrationReply {
    pub fragment: u64,
    pub from: u64,
    pub to: u64,
    pub regions: u64,
    pub bytes: u64,
    pub total_ms: f64,
    pub copy_ms: f64,
    pub catch_up_rounds: u64,
    pub pause_us: u64,
    /// Where the pause went, when the node says: fence RPC, final pull, verify,
    /// commit, install (us).
    pub pause_parts: Option<[u64; 5]>,
}

/// Names of `MigrationReply::pause_parts`, in order.
pub const PAUSE_PARTS: [&str; 5] = ["fence RPC", "final pull", "verify", "commit", "install"];

impl MigrationReply {
    /// End to end: every byte pulled over the whole migration time (plan, copy,
    /// catch-up, fence, verify, commit, install), in MB/s (10^6 bytes).
    pub fn throughput_mbps(&self) -> f64 {
        mbps(self.bytes, self.total_ms / 1000.0)
    }

    /// Over the copy phase only; an upper bound, since `bytes` also counts the catch-up
    /// and the final re-read of headers and indexes.
    pub fn copy_mbps(&self) -> f64 {
        mbps(self.bytes, self.copy_ms / 1000.0)
    }
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / secs / 1e6
    } else {
        f64::NAN
    }
}

/// Parses `fragment 20 moved from node 1 to node 2: 1 regions, 2617184 bytes in 188.9 ms
/// (copy 17.4 ms, 1 catch-up rounds), write pause 139932 us`, optionally followed by
/// `(fence 310 us, final pull 52 us, verify 40 us, commit 2210 us, install 95 us)`.
pub fn parse_migration_reply(reply: &str) -> Option<MigrationReply> {
    let spaced: String = reply
        .chars()
        .map(|c| {
            if matches!(c, ':' | ',' | '(' | ')') {
                ' '
            } else {
                c
            }
        })
        .collect();
    let w: Vec<&str> = spaced.split_whitespace().collect();
    match w.as_slice() {
        ["fragment", fragment, "moved", "from", "node", from, "to", "node", to, regions, "regions", bytes, "bytes", "in", total, "ms", "copy", copy, "ms", rounds, "catch-up", "rounds", "write", "pause", pause, "us", rest @ ..] =>
        {
            let pause_parts = match rest {
                [] => None,
                ["fence", f, "us", "final", "pull", p, "us", "verify", v, "us", "commit", c, "us", "install", i, "us"] => {
                    Some([
                        f.parse().ok()?,
                        p.parse().ok()?,
                        v.parse().ok()?,
                        c.parse().ok()?,
                        i.parse().ok()?,
                    ])
                }
                _ => return None,
            };
            Some(MigrationReply {
                fragment: fragment.parse().ok()?,
                from: from.parse().ok()?,
                to: to.parse().ok()?,
                regions: regions.parse().ok()?,
                bytes: bytes.parse().ok()?,
                total_ms: total.parse().ok()?,
                copy_ms: copy.parse().ok()?,
                catch_up_rounds: rounds.parse().ok()?,
                pause_us: pause.parse().ok()?,
                pause_parts,
            })
        }
        _ => None,
    }
}

/// utime + stime of a process in clock ticks, from the text of `/proc/<pid>/stat`.
/// The command name (field 2) may hold spaces and parentheses, so fields are counted
/// from the last `)`.
pub fn parse_proc_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of a process so far.
fn process_cpu(pid: u32, ticks_per_second: u64) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_proc_stat_ticks(&stat).with_context(|| format!("unexpected {path}"))?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / ticks_per_second as f64,
    ))
}

/// `getconf CLK_TCK`, or Linux's USER_HZ of 100 when that cannot be run.
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The value stored under key number `n`: the key's number first, so a GET that returns
/// another key's value is caught.
pub fn value_for(n: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{n}:").into_bytes();
    v.resize(size, b'v');
    v.truncate(size);
    v
}

pub(crate) fn key_for(n: u64) -> Vec<u8> {
    format!("{KEY_PREFIX}{n}").into_bytes()
}

/// The node that owns `key`, asked of `c`'s node.
pub(crate) fn owner_of(c: &mut Resp, key: &[u8]) -> anyhow::Result<Option<u64>> {
    Ok(match where_is(c, key)? {
        Place::Core { node, .. } | Place::Node(node) => Some(node),
        Place::Unassigned => None,
    })
}

/// Waits (bounded) until `c`'s node routes `key` to `node`.
fn wait_owner(c: &mut Resp, key: &[u8], node: u64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = owner_of(c, key)?;
        if now == Some(node) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the key is routed to {now:?}, not node {node}, after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SETs every key through `c` in pipelined batches, checking every reply.
pub(crate) fn load(
    c: &mut Resp,
    keys: u64,
    value_size: usize,
    deadline: Instant,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut next = 0u64;
    let mut buf = BytesMut::new();
    while next < keys {
        let batch = (keys - next).min(LOAD_PIPELINE as u64);
        buf.clear();
        for n in next..next + batch {
            request(&[b"SET", &key_for(n), &value_for(n, value_size)]).encode(&mut buf, false);
        }
        c.send_raw(&buf)?;
        for n in next..next + batch {
            match c.read_reply()? {
                Frame::Simple(s) if s[..] == *b"OK" => {}
                other => bail!("loading: SET {KEY_PREFIX}{n} got {other:?}"),
            }
        }
        next += batch;
        if next.is_multiple_of(64 * LOAD_PIPELINE as u64) {
            eprintln!(
                "  loaded {next}/{keys} keys ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "loading took longer than --max-seconds"
        );
    }
    Ok(())
}

/// What a window of client activity is recorded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Running, not recorded (loading, raw bandwidth, settling between windows).
    Other = 0,
    Steady = 1,
    Migrating = 2,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Steady,
            2 => Phase::Migrating,
            _ => Phase::Other,
        }
    }
}

const GET: usize = 0;
const SET: usize = 1;

pub(crate) fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that are valid; a failure here is a programming error.
    Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3)
        .unwrap_or_else(|e| unreachable!("histogram bounds: {e}"))
}

/// One client's recordings: latency in ns per phase (steady, migrating) and op.
struct Recorder {
    hist: [[Histogram<u64>; 2]; 2],
    errors: u64,
    kept_errors: Vec<String>,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            hist: [
                [new_histogram(), new_histogram()],
                [new_histogram(), new_histogram()],
            ],
            errors: 0,
            kept_errors: Vec::new(),
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.kept_errors.len() < KEPT_ERRORS {
            self.kept_errors.push(e);
        }
    }
}

/// The client threads: each on one node, alternating GET and SET on random keys of the
/// fragment, at `rate` ops/s (or as fast as it can).
struct Clients {
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    recorders: Vec<Arc<Mutex<Recorder>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// GET and SET percentiles of one window, in µs, with the sample counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub get_p50: f64,
    pub get_p99: f64,
    pub get_n: u64,
    pub set_p50: f64,
    pub set_p99: f64,
    pub set_n: u64,
}

impl Window {
    fn from_histograms(get: &Histogram<u64>, set: &Histogram<u64>) -> Window {
        let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Window {
            get_p50: us(get, 0.5),
            get_p99: us(get, 0.99),
            get_n: get.len(),
            set_p50: us(set, 0.5),
            set_p99: us(set, 0.99),
            set_n: set.len(),
        }
    }
}

fn client_loop(
    addr: SocketAddr,
    keys: u64,
    value_size: usize,
    rate: u64,
    phase: &AtomicU8,
    stop: &AtomicBool,
    rec: &Mutex<Recorder>,
) {
    let interval = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
    let mut next_at = Instant::now();
    let mut conn: Option<Resp> = None;
    let mut op = 0u64;
    let mut out = BytesMut::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(iv) = interval {
            let now = Instant::now();
            if next_at > now {
                std::thread::sleep(next_at - now);
            }
            // Behind schedule: go on from now rather than burst to catch up.
            next_at = next_at.max(now) + iv;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Resp::connect(addr.port()) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    lock(rec).error(format!("connect to {addr}: {e:#}"));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let n = rand::random::<u64>() % keys;
        let (key, value) = (key_for(n), value_for(n, value_size));
        let which = (op % 2) as usize;
        op += 1;
        out.clear();
        if which == GET {
            request(&[b"GET", &key]).encode(&mut out, false);
        } else {
            request(&[b"SET", &key, &value]).encode(&mut out, false);
        }
        let recorded_as = Phase::from_u8(phase.load(Ordering::Relaxed));
        let t = Instant::now();
        let reply = c.send_raw(&out).and_then(|()| c.read_reply());
        let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let bad = match &reply {
            Ok(Frame::Bulk(v)) if which == GET && v[..] == value[..] => None,
            Ok(Frame::Simple(s)) if which == SET && s[..] == *b"OK" => None,
            Ok(other) => Some(format!(
                "{} {}: {other:?}",
                ["GET", "SET"][which],
                String::from_utf8_lossy(&key)
            )),
            Err(e) => {
                conn = None;
                Some(format!(
                    "{} {}: {e:#}",
                    ["GET", "SET"][which],
                    String::from_utf8_lossy(&key)
                ))
            }
        };
        let mut r = lock(rec);
        match bad {
            Some(e) => r.error(e),
            None => {
                let slot = match recorded_as {
                    Phase::Steady => Some(0),
                    Phase::Migrating => Some(1),
                    Phase::Other => None,
                };
                if let Some(s) = slot {
                    r.hist[s][which].saturating_record(ns.max(1));
                }
            }
        }
    }
}

/// A poisoned recorder only means a client thread panicked; its counts are still usable.
fn lock(m: &Mutex<Recorder>) -> std::sync::MutexGuard<'_, Recorder> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Clients {
    fn start(addrs: &[SocketAddr], opts: &Options) -> Clients {
        let phase = Arc::new(AtomicU8::new(Phase::Other as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let mut recorders = Vec::new();
        let mut threads = Vec::new();
        for i in 0..opts.clients {
            let addr = addrs[i % addrs.len()];
            let rec = Arc::new(Mutex::new(Recorder::new()));
            recorders.push(rec.clone());
            let (phase, stop) = (phase.clone(), stop.clone());
            let (keys, value_size, rate) = (opts.keys(), opts.value_size, opts.rate);
            threads.push(std::thread::spawn(move || {
                client_loop(addr, keys, value_size, rate, &phase, &stop, &rec)
            }));
        }
        Clients {
            phase,
            stop,
            recorders,
            threads,
        }
    }

    /// Starts recording a window: clears that phase's histograms, then switches to it.
    fn begin(&self, p: Phase) {
        let slot = usize::from(p == Phase::Migrating);
        for r in &self.recorders {
            let mut r = lock(r);
            r.hist[slot][GET].reset();
            r.hist[slot][SET].reset();
        }
        self.phase.store(p as u8, Ordering::SeqCst);
    }

    /// Ends the window of phase `p` and returns its percentiles over all clients.
    fn end(&self, p: Phase) -> Window {
        self.phase.store(Phase::Other as u8, Ordering::SeqCst);
        let slot = usize::from(p == Phase::Migrating);
        let (mut get, mut set) = (new_histogram(), new_histogram());
        for r in &self.recorders {
            let r = lock(r);
            // Same bounds everywhere, so adding cannot fail.
            let _ = get.add(&r.hist[slot][GET]);
            let _ = set.add(&r.hist[slot][SET]);
        }
        Window::from_histograms(&get, &set)
    }

    /// Errors so far, with up to a few texts per client.
    fn errors(&self) -> (u64, Vec<String>) {
        let mut n = 0;
        let mut texts = Vec::new();
        for r in &self.recorders {
            let r = lock(r);
            n += r.errors;
            texts.extend(r.kept_errors.iter().cloned());
        }
        (n, texts)
    }

    fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The fabric settings the nodes run with (node/src/node.rs).
fn fabric_config() -> FabricConfig {
    FabricConfig {
        max_message: 1 << 20,
        ..FabricConfig::new(FABRIC_SECRET.to_vec())
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// The owner's side of the raw measurement: a filled region, registered for READ,
/// served until the reader hangs up.
async fn raw_owner(
    bytes: u64,
    ready: std::sync::mpsc::Sender<Result<(SocketAddr, RemoteRegion), String>>,
) -> Result<(), String> {
    let setup = || -> Result<_, String> {
        let t = TcpTransport::bind(fabric_config(), loopback()).map_err(|e| e.to_string())?;
        let len = usize::try_from(bytes).map_err(|e| e.to_string())?;
        let region = Region::new("bench-raw-source", len).map_err(|e| e.to_string())?;
        region.fill(0, bytes, 0xA5).map_err(|e| e.to_string())?;
        let mr = t
            .register(&region, Access::READ)
            .map_err(|e| e.to_string())?;
        Ok((t, region, mr))
    };
    let (t, _region, mr) = match setup() {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    let _ = ready.send(Ok((t.local_addr(), mr.descriptor())));
    let conn = t.accept().await.map_err(|e| e.to_string())?;
    while conn.failure().is_none() {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The reader's side: a fresh region (as migration allocates), READs of the whole
/// source in migration's pattern; returns how long the READs took.
async fn raw_reader(addr: SocketAddr, desc: RemoteRegion) -> Result<Duration, String> {
    let t = TcpTransport::bind(fabric_config(), loopback()).map_err(|e| e.to_string())?;
    let len = usize::try_from(desc.len).map_err(|e| e.to_string())?;
    let local = Region::new("bench-raw-dest", len).map_err(|e| e.to_string())?;
    let mr = t
        .register(&local, Access::LOCAL)
        .map_err(|e| e.to_string())?;
    let conn = t.connect(addr).await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut at = 0;
    while at < desc.len {
        let mut ops = Vec::with_capacity(READ_BATCH);
        while at < desc.len && ops.len() < READ_BATCH {
            let len = READ_CHUNK.min(desc.len - at);
            ops.push(Op {
                remote: desc,
                remote_offset: at,
                len,
                local: &mr,
                local_offset: at,
            });
            at += len;
        }
        conn.read_batch(&ops)
            .await
            .map_err(|e| format!("READ at {at}: {e}"))?;
    }
    let took = started.elapsed();
    conn.close();
    Ok(took)
}

/// Raw one-sided READ bandwidth of the TCP fabric for `bytes` bytes, owner and reader
/// each on its own thread and executor (as two nodes' cores are); MB/s.
pub fn raw_read_mbps(bytes: u64) -> anyhow::Result<f64> {
    ensure!(bytes > 0, "nothing to read");
    let (tx, rx) = std::sync::mpsc::channel();
    let owner = LocalExecutorBuilder::new(Placement::Unbound)
        .name("bench-raw-owner")
        .io_memory(1 << 20)
        .spawn(move || async move {
            glommio::timer::timeout(RAW_TIMEOUT, async { Ok(raw_owner(bytes, tx).await) })
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
        })
        .map_err(|e| anyhow::anyhow!("starting the raw-bandwidth owner thread: {e}"))?;
    let ready = rx.recv_timeout(RAW_TIMEOUT);
    let (addr, desc) = match ready {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => bail!("raw-bandwidth owner: {e}"),
        Err(e) => bail!("raw-bandwidth owner did not start: {e}"),
    };
    let reader = LocalExecutorBuilder::new(Placement::Unbound)
        .name("bench-raw-reader")
        .io_memory(1 << 20)
        .spawn(move || async move {
            glommio::timer::timeout(RAW_TIMEOUT, async { Ok(raw_reader(addr, desc).await) })
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
        })
        .map_err(|e| anyhow::anyhow!("starting the raw-bandwidth reader thread: {e}"))?;
    let took = reader
        .join()
        .map_err(|e| anyhow::anyhow!("raw-bandwidth reader thread: {e}"))?
        .map_err(|e| anyhow::anyhow!("raw-bandwidth reader: {e}"))?;
    owner
        .join()
        .map_err(|e| anyhow::anyhow!("raw-bandwidth owner thread: {e}"))?
        .map_err(|e| anyhow::anyhow!("raw-bandwidth owner: {e}"))?;
    Ok(mbps(bytes, took.as_secs_f64()))
}

/// One repetition's figures.
#[derive(Debug, Clone)]
pub struct Rep {
    pub raw_first: bool,
    pub migration: Result<MigrationReply, String>,
    pub raw_mbps: Result<f64, String>,
    pub steady: Window,
    pub during: Window,
    /// Source process CPU during the migration, and the wall time it was taken over.
    pub source_cpu: Duration,
    pub source_wall: Duration,
    /// Source process CPU per wall second in the steady window (the clients' share).
    pub source_steady_share: f64,
}

impl Rep {
    /// Migration throughput over raw READ bandwidth, when both were measured.
    pub fn ratio(&self) -> Option<f64> {
        match (&self.migration, &self.raw_mbps) {
            (Ok(m), Ok(raw)) => Some(m.throughput_mbps() / raw),
            _ => None,
        }
    }
}

/// Median and min–max of some values (NaN for none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn spread(values: &[f64]) -> Spread {
    Spread {
        median: median(values),
        min: values.iter().copied().fold(f64::NAN, f64::min),
        max: values.iter().copied().fold(f64::NAN, f64::max),
        n: values.len(),
    }
}

pub(crate) fn verdict(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "NOT MET"
    }
}

/// The throughput goal, on the median of the per-rep ratios.
pub fn throughput_goal_text(ratios: &[f64]) -> String {
    if ratios.is_empty() {
        return format!(
            "goal: migration throughput >= {GOAL_THROUGHPUT_RATIO}x raw fabric READ bandwidth: \
             NOT MET (no rep measured both)"
        );
    }
    let s = spread(ratios);
    format!(
        "goal: migration throughput >= {GOAL_THROUGHPUT_RATIO}x raw fabric READ bandwidth: {} \
         (median {:.2}x, reps {:.2}–{:.2}x, {} reps)",
        verdict(s.median >= GOAL_THROUGHPUT_RATIO),
        s.median,
        s.min,
        s.max,
        s.n
    )
}

/// The pause goal: a p99 needs [`P99_MIN_SAMPLES`]; with fewer, the maximum is the only
/// honest bound (all samples under 1 ms is the same as a p99 under 1 ms for them).
pub fn pause_goal_text(pauses_us: &[f64]) -> String {
    if pauses_us.is_empty() {
        return format!(
            "goal: write pause p99 <= {GOAL_PAUSE_P99_US} us: NOT MET (no migration succeeded)"
        );
    }
    let s = spread(pauses_us);
    let mut sorted = pauses_us.to_vec();
    sorted.sort_by(f64::total_cmp);
    let enough = sorted.len() >= P99_MIN_SAMPLES;
    let (label, bound) = if enough {
        let i = ((sorted.len() as f64 * 0.99).ceil() as usize).clamp(1, sorted.len()) - 1;
        ("p99", sorted[i])
    } else {
        ("max (stands in for p99)", s.max)
    };
    let note = if enough {
        String::new()
    } else {
        format!(
            "; only {} samples — a real p99 needs >= {P99_MIN_SAMPLES} migrations",
            s.n
        )
    };
    format!(
        "goal: write pause p99 <= {GOAL_PAUSE_P99_US} us: {} (p50 {:.0} us, {label} {bound:.0} us{note})",
        verdict(bound <= GOAL_PAUSE_P99_US),
        s.median,
    )
}

/// The client-latency goal for one op: the median over reps of p99 during / p99 steady.
pub fn latency_goal_text(op: &str, steady_p99: &[f64], during_p99: &[f64]) -> String {
    let ratios: Vec<f64> = steady_p99
        .iter()
        .zip(during_p99)
        .filter(|(s, _)| **s > 0.0)
        .map(|(s, d)| d / s)
        .collect();
    if ratios.is_empty() {
        return format!(
            "goal: client {op} p99 during migration <= {GOAL_LATENCY_RATIO}x steady: NOT MET (not measured)"
        );
    }
    let s = spread(&ratios);
    format!(
        "goal: client {op} p99 during migration <= {GOAL_LATENCY_RATIO}x steady: {} \
         (median {:.2}x, reps {:.2}–{:.2}x; steady {:.0} us, during {:.0} us, medians)",
        verdict(s.median <= GOAL_LATENCY_RATIO),
        s.median,
        s.min,
        s.max,
        median(steady_p99),
        median(during_p99),
    )
}

/// Runs one migration of the fragment to `to`, sending the command to that node.
fn migrate(c: &mut Resp, to: u64) -> Result<MigrationReply, String> {
    let key = key_for(0);
    let reply = command_text(
        c,
        &[
            b"AUGUR",
            b"MIGRATE",
            b"KEY",
            &key,
            to.to_string().as_bytes(),
        ],
    )
    .map_err(|e| format!("{e:#}"))?;
    parse_migration_reply(&reply).ok_or_else(|| format!("unexpected AUGUR MIGRATE reply '{reply}'"))
}

fn fmt_opt(v: Result<f64, &String>, prec: usize) -> String {
    match v {
        Ok(x) => format!("{x:.prec$}"),
        Err(_) => "failed".into(),
    }
}

/// Runs the benchmark; the tables go to stdout, progress to stderr.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    opts.validate()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(opts.max_seconds);
    let load_before = load_average();
    let ticks = clock_ticks_per_second();
    let augur = match &opts.augur {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("finding the augur binary (current_exe)")?,
    };
    let log_dir =
        std::env::temp_dir().join(format!("augur-bench-migration-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    eprintln!(
        "starting {NODES} nodes x {} cores (logs in {})",
        opts.cores,
        log_dir.display()
    );
    let cluster = LocalCluster::start(
        &augur,
        ClusterOptions {
            nodes: NODES,
            base_port: 0,
            cores: opts.cores,
            log_dir: log_dir.clone(),
            extra_args: vec![
                "--region-size".into(),
                format!("{}mb", opts.region_mb()),
                "--split-load".into(),
                "0".into(),
                "--merge-after-s".into(),
                "0".into(),
            ],
            ..Default::default()
        },
        |n| eprintln!("node {} serves on {}", n.id, n.addr),
    )?;
    let addrs: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.addr).collect();
    let mut admin: Vec<Resp> = addrs
        .iter()
        .map(|a| Resp::connect(a.port()))
        .collect::<anyhow::Result<_>>()?;
    let key0 = key_for(0);

    // Wait (bounded) for the key space to be spread over the nodes.
    let formed_by = Instant::now() + FORMATION_TIMEOUT;
    let mut owner = loop {
        if let Some(o) = owner_of(&mut admin[0], &key0)? {
            break o;
        }
        ensure!(
            Instant::now() < formed_by,
            "the cluster did not assign {KEY_PREFIX}* within {FORMATION_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let node_index = |id: u64| -> anyhow::Result<usize> {
        cluster
            .nodes
            .iter()
            .position(|n| u64::from(n.id) == id)
            .with_context(|| format!("AUGUR WHERE named node {id}, which is not ours"))
    };
    let keys = opts.keys();
    eprintln!(
        "loading {keys} keys {KEY_PREFIX}<n> of {} bytes ({} MiB of values) through node {owner}",
        opts.value_size, opts.fragment_mb
    );
    let load_started = Instant::now();
    load(
        &mut admin[node_index(owner)?],
        keys,
        opts.value_size,
        deadline,
    )?;
    let load_secs = load_started.elapsed().as_secs_f64();
    eprintln!("loaded in {load_secs:.1} s");

    let clients = Clients::start(&addrs, opts);
    let mut reps: Vec<Rep> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut last_bytes = opts.fragment_mb << 20;
    let outcome = (|| -> anyhow::Result<()> {
        for rep in 1..=opts.reps {
            ensure!(
                Instant::now() < deadline,
                "the run took longer than --max-seconds"
            );
            let source = owner;
            let to = source % u64::from(NODES) + 1;
            let pid = cluster.nodes[node_index(source)?]
                .pid()
                .context("the source node is not running")?;

            // 1. Steady state.
            let cpu0 = process_cpu(pid, ticks)?;
            let t0 = Instant::now();
            clients.begin(Phase::Steady);
            std::thread::sleep(Duration::from_secs(opts.steady_seconds));
            let steady = clients.end(Phase::Steady);
            let source_steady_share = process_cpu(pid, ticks)?.saturating_sub(cpu0).as_secs_f64()
                / t0.elapsed().as_secs_f64();

            // 2 and 3, in alternating order.
            let raw_first = rep % 2 == 0;
            let mut raw = None;
            if raw_first {
                eprintln!("rep {rep}: raw READ bandwidth of {last_bytes} bytes");
                raw = Some(raw_read_mbps(last_bytes).map_err(|e| format!("{e:#}")));
            }
            eprintln!("rep {rep}: migrating the fragment from node {source} to node {to}");
            let cpu0 = process_cpu(pid, ticks)?;
            let t0 = Instant::now();
            clients.begin(Phase::Migrating);
            let migration = migrate(&mut admin[node_index(to)?], to);
            let during = clients.end(Phase::Migrating);
            let source_wall = t0.elapsed();
            let source_cpu = process_cpu(pid, ticks)?.saturating_sub(cpu0);
            match &migration {
                Ok(m) => {
                    eprintln!(
                        "rep {rep}: fragment {} moved {} -> {}: {} regions, {} bytes in {:.1} ms, pause {} us",
                        m.fragment, m.from, m.to, m.regions, m.bytes, m.total_ms, m.pause_us
                    );
                    last_bytes = m.bytes;
                    owner = m.to;
                    for c in admin.iter_mut() {
                        wait_owner(c, &key0, m.to, ROUTE_TIMEOUT)?;
                    }
                    // The figures describe the whole loaded data set only if it was one
                    // table fragment; say so when keys stayed behind.
                    for n in [keys / 2, keys - 1] {
                        let at = owner_of(&mut admin[0], &key_for(n))?;
                        if at != Some(m.to) {
                            notes.push(format!(
                                "rep {rep}: {KEY_PREFIX}{n} is on {at:?}, not node {}: the loaded keys span \
                                 several table fragments and only the one holding {KEY_PREFIX}0 moved",
                                m.to
                            ));
                        }
                    }
                }
                Err(e) => {
                    eprintln!("rep {rep}: migration FAILED: {e}");
                    owner = owner_of(&mut admin[0], &key0)?.unwrap_or(owner);
                }
            }
            if !raw_first {
                eprintln!("rep {rep}: raw READ bandwidth of {last_bytes} bytes");
                raw = Some(raw_read_mbps(last_bytes).map_err(|e| format!("{e:#}")));
            }
            let raw_mbps = raw.unwrap_or_else(|| Err("not measured".into()));
            if let Ok(r) = &raw_mbps {
                eprintln!("rep {rep}: raw READ {r:.0} MB/s");
            }
            reps.push(Rep {
                raw_first,
                migration,
                raw_mbps,
                steady,
                during,
                source_cpu,
                source_wall,
                source_steady_share,
            });
        }
        Ok(())
    })();
    let (errors, error_texts) = clients.errors();
    clients.finish();
    outcome?;

    print_report(
        opts,
        &augur,
        &reps,
        keys,
        load_secs,
        &load_before,
        errors,
        &error_texts,
    );
    for n in &notes {
        println!("note: {n}");
    }
    drop(admin);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&log_dir);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    opts: &Options,
    augur: &std::path::Path,
    reps: &[Rep],
    keys: u64,
    load_secs: f64,
    load_before: &str,
    errors: u64,
    error_texts: &[String],
) {
    println!();
    println!(
        "augur bench migration: one table fragment moved live between nodes under client load"
    );
    println!(
        "  augur:     {} ({NODES} nodes x {} cores on loopback, TCP fabric; --region-size {}mb --split-load 0 --merge-after-s 0)",
        augur.display(),
        opts.cores,
        opts.region_mb()
    );
    println!(
        "  fragment:  {keys} keys {KEY_PREFIX}<n> x {} bytes = {} MiB of values, loaded in {load_secs:.1} s",
        opts.value_size, opts.fragment_mb
    );
    println!(
        "  clients:   {} connections round-robin over the {NODES} nodes, alternating GET/SET on random keys \
         of the fragment, {} ops/s each; latency = send to reply, hdrhistogram",
        opts.clients,
        if opts.rate == 0 {
            "as many".to_string()
        } else {
            opts.rate.to_string()
        }
    );
    println!(
        "  per rep:   {} s steady window, then the migration to the next node and a raw READ run of the \
         same bytes (alternating order), clients running throughout",
        opts.steady_seconds
    );
    println!(
        "  raw:       one-sided READs over the TCP fabric between two endpoints on their own threads in \
         the benchmark process, migration's pattern ({} MiB READs, {READ_BATCH} in flight), fresh destination",
        READ_CHUNK >> 20
    );
    println!(
        "  machine:   {} cpus, SHARED and NOISY (other jobs run beside this benchmark); load average {} at start, {} at end",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        load_average()
    );
    println!(
        "  MB = 10^6 bytes; mig MB/s = bytes / total migration time (plan to install); copy MB/s = bytes / copy phase (upper bound)"
    );
    println!();
    println!(
        "{:>3} {:>5} {:>5} {:>7} {:>9} {:>8} {:>7} {:>6} {:>9} {:>8} {:>8} {:>8} {:>6} {:>13} {:>17} {:>17}",
        "rep",
        "order",
        "path",
        "regions",
        "MiB",
        "total ms",
        "copy ms",
        "rounds",
        "pause us",
        "mig MB/s",
        "copyMB/s",
        "raw MB/s",
        "ratio",
        "src CPU ms(%)",
        "GET p99 st→mig us",
        "SET p99 st→mig us"
    );
    for (i, r) in reps.iter().enumerate() {
        let order = if r.raw_first { "raw,m" } else { "m,raw" };
        let raw = fmt_opt(r.raw_mbps.as_ref().copied(), 0);
        let cpu = format!(
            "{:.0}({:.0}%)",
            r.source_cpu.as_secs_f64() * 1000.0,
            100.0 * r.source_cpu.as_secs_f64() / r.source_wall.as_secs_f64().max(1e-9)
        );
        let get = format!("{:.0}→{:.0}", r.steady.get_p99, r.during.get_p99);
        let set = format!("{:.0}→{:.0}", r.steady.set_p99, r.during.set_p99);
        match &r.migration {
            Ok(m) => println!(
                "{:>3} {:>5} {:>5} {:>7} {:>9.1} {:>8.1} {:>7.1} {:>6} {:>9} {:>8.0} {:>8.0} {:>8} {:>6} {:>13} {:>17} {:>17}",
                i + 1,
                order,
                format!("{}→{}", m.from, m.to),
                m.regions,
                m.bytes as f64 / (1u64 << 20) as f64,
                m.total_ms,
                m.copy_ms,
                m.catch_up_rounds,
                m.pause_us,
                m.throughput_mbps(),
                m.copy_mbps(),
                raw,
                r.ratio().map_or("-".into(), |x| format!("{x:.2}")),
                cpu,
                get,
                set
            ),
            Err(e) => println!(
                "{:>3} {:>5} migration FAILED: {e}; raw {raw} MB/s; src CPU {cpu}; GET {get}; SET {set}",
                i + 1,
                order
            ),
        }
    }
    println!();
    println!(
        "client samples per rep (steady / during migration): {}",
        reps.iter()
            .map(|r| format!(
                "GET {}/{} SET {}/{}",
                r.steady.get_n, r.during.get_n, r.steady.set_n, r.during.set_n
            ))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!(
        "source CPU in the steady windows (clients only): {} of a core per rep",
        reps.iter()
            .map(|r| format!("{:.0}%", r.source_steady_share * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let ok: Vec<&MigrationReply> = reps
        .iter()
        .filter_map(|r| r.migration.as_ref().ok())
        .collect();
    let raws: Vec<f64> = reps
        .iter()
        .filter_map(|r| r.raw_mbps.as_ref().ok().copied())
        .collect();
    let line = |name: &str, v: &[f64], unit: &str, prec: usize| {
        let s = spread(v);
        println!(
            "  {name:<28} median {:>9.prec$} {unit:<5} [{:.prec$}–{:.prec$}] over {} reps",
            s.median, s.min, s.max, s.n
        );
    };
    println!();
    println!("medians (min–max over reps):");
    line(
        "migration throughput",
        &ok.iter().map(|m| m.throughput_mbps()).collect::<Vec<_>>(),
        "MB/s",
        0,
    );
    line(
        "copy-phase rate",
        &ok.iter().map(|m| m.copy_mbps()).collect::<Vec<_>>(),
        "MB/s",
        0,
    );
    line("raw fabric READ", &raws, "MB/s", 0);
    let ratios: Vec<f64> = reps.iter().filter_map(Rep::ratio).collect();
    line("throughput / raw", &ratios, "x", 2);
    let pauses: Vec<f64> = ok.iter().map(|m| m.pause_us as f64).collect();
    line("write pause", &pauses, "us", 0);
    for (i, name) in PAUSE_PARTS.iter().enumerate() {
        let parts: Vec<f64> = ok
            .iter()
            .filter_map(|m| m.pause_parts.map(|p| p[i] as f64))
            .collect();
        if !parts.is_empty() {
            line(&format!("  pause: {name}"), &parts, "us", 0);
        }
    }
    line(
        "migration time",
        &ok.iter().map(|m| m.total_ms).collect::<Vec<_>>(),
        "ms",
        1,
    );
    line(
        "source CPU during migration",
        &reps
            .iter()
            .map(|r| r.source_cpu.as_secs_f64() * 1000.0)
            .collect::<Vec<_>>(),
        "ms",
        0,
    );
    let steady_get: Vec<f64> = reps.iter().map(|r| r.steady.get_p99).collect();
    let during_get: Vec<f64> = reps.iter().map(|r| r.during.get_p99).collect();
    let steady_set: Vec<f64> = reps.iter().map(|r| r.steady.set_p99).collect();
    let during_set: Vec<f64> = reps.iter().map(|r| r.during.set_p99).collect();
    line("GET p99 steady", &steady_get, "us", 0);
    line("GET p99 during migration", &during_get, "us", 0);
    line("SET p99 steady", &steady_set, "us", 0);
    line("SET p99 during migration", &during_set, "us", 0);
    println!();
    println!("{}", throughput_goal_text(&ratios));
    println!("{}", pause_goal_text(&pauses));
    println!("{}", latency_goal_text("GET", &steady_get, &during_get));
    println!("{}", latency_goal_text("SET", &steady_set, &during_set));
    let failed = reps.iter().filter(|r| r.migration.is_err()).count();
    println!(
        "migrations: {} of {} succeeded; client errors: {errors}{}",
        reps.len() - failed,
        reps.len(),
        if error_texts.is_empty() {
            String::new()
        } else {
            format!(" (first: {})", error_texts.join(" | "))
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        crate::parse_flags("migration", args)
    }

    #[test]
    fn defaults_and_flags_parse_and_bad_values_are_refused() {
        let d = parse(&[]).expect("defaults");
        assert_eq!(
            (d.fragment_mb, d.reps, d.clients, d.value_size),
            (256, 3, 4, 1024)
        );
        d.validate().expect("defaults are valid");
        assert_eq!(d.keys(), 262_144);
        assert_eq!(d.region_mb(), 1024);
        assert_eq!(
            parse(&["--fragment-mb", "1"]).expect("flags").region_mb(),
            16
        );
        assert_eq!(
            parse(&["--region-mb", "64"]).expect("flags").region_mb(),
            64
        );
        let o = parse(&["--fragment-mb", "64", "--reps", "5", "--clients", "6"]).expect("flags");
        assert_eq!((o.fragment_mb, o.reps, o.clients), (64, 5, 6));
        for args in [
            &["--fragment-mb", "0"][..],
            &["--clients", "2"],
            &["--reps", "0"],
            &["--value-size", "8"],
            &["--steady-seconds", "0"],
        ] {
            let o = parse(args).expect("parses");
            assert!(o.validate().is_err(), "{args:?} should be refused");
        }
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn parses_the_migration_reply() {
        let r = parse_migration_reply(
            "fragment 20 moved from node 1 to node 2: 1 regions, 2617184 bytes in 188.9 ms \
             (copy 17.4 ms, 1 catch-up rounds), write pause 139932 us",
        )
        .expect("parses");
        assert_eq!(
            r,
            MigrationReply {
                fragment: 20,
                from: 1,
                to: 2,
                regions: 1,
                bytes: 2_617_184,
                total_ms: 188.9,
                copy_ms: 17.4,
                catch_up_rounds: 1,
                pause_us: 139_932,
                pause_parts: None,
            }
        );
        let parted = parse_migration_reply(
            "fragment 20 moved from node 1 to node 2: 1 regions, 2617184 bytes in 188.9 ms \
             (copy 17.4 ms, 1 catch-up rounds), write pause 2707 us (fence 310 us, \
             final pull 52 us, verify 40 us, commit 2210 us, install 95 us)",
        )
        .expect("parses");
        assert_eq!(parted.pause_parts, Some([310, 52, 40, 2210, 95]));
        assert_eq!(
            parse_migration_reply(
                "fragment 20 moved from node 1 to node 2: 1 regions, 5 bytes in 1.0 ms \
                 (copy 1.0 ms, 1 catch-up rounds), write pause 3 us (fence x us)"
            ),
            None
        );
        assert!((r.throughput_mbps() - 2.617184 / 0.1889).abs() < 1e-6);
        assert!((r.copy_mbps() - 2.617184 / 0.0174).abs() < 1e-6);
        assert_eq!(parse_migration_reply("ERR migration failed"), None);
        assert_eq!(
            parse_migration_reply(
                "fragment x moved from node 1 to node 2: 1 regions, 5 bytes in 1.0 ms \
                 (copy 1.0 ms, 1 catch-up rounds), write pause 3 us"
            ),
            None
        );
        assert_eq!(parse_migration_reply(""), None);
    }

    #[test]
    fn reads_cpu_ticks_from_proc_stat_even_with_odd_command_names() {
        // Fields 14 and 15 are utime 1200 and stime 34; the name holds ") (".
        let stat =
            "4242 (augur) (x) S 1 4242 4242 0 -1 4194304 500 0 0 0 1200 34 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_proc_stat_ticks(stat), Some(1234));
        assert_eq!(parse_proc_stat_ticks("4242 (augur) S 1 2"), None);
        assert_eq!(parse_proc_stat_ticks("no parenthesis"), None);
        // And for real: this process has a stat file with numbers in it.
        let own = std::fs::read_to_string("/proc/self/stat").expect("own stat");
        assert!(parse_proc_stat_ticks(&own).is_some(), "{own}");
    }

    #[test]
    fn values_name_their_key_and_have_the_size_asked() {
        let v = value_for(42, 16);
        assert_eq!(v.len(), 16);
        assert!(v.starts_with(b"42:"));
        assert_ne!(value_for(1, 16), value_for(2, 16));
        assert_eq!(value_for(123456, 4), b"1234".to_vec());
        assert_eq!(key_for(7), b"m:7".to_vec());
    }

    #[test]
    fn goal_texts_state_met_and_not_met() {
        let met = throughput_goal_text(&[0.9, 0.85, 0.7]);
        assert!(met.contains(": MET (median 0.85x"), "{met}");
        let missed = throughput_goal_text(&[0.5, 0.6]);
        assert!(missed.contains("NOT MET (median 0.55x"), "{missed}");
        assert!(throughput_goal_text(&[]).contains("NOT MET"));

        let few = pause_goal_text(&[300.0, 900.0, 500.0]);
        assert!(few.contains(": MET (p50 500 us, max"), "{few}");
        assert!(few.contains("only 3 samples"), "{few}");
        let slow = pause_goal_text(&[300.0, 1200.0]);
        assert!(slow.contains("NOT MET"), "{slow}");
        // With enough samples the p99 is used: one outlier in 200 does not decide it.
        let mut many = vec![100.0; 199];
        many.push(50_000.0);
        let p99 = pause_goal_text(&many);
        assert!(p99.contains(": MET") && p99.contains("p99 100 us"), "{p99}");
        assert!(pause_goal_text(&[]).contains("NOT MET"));

        let lat = latency_goal_text("GET", &[100.0, 100.0, 100.0], &[140.0, 160.0, 120.0]);
        assert!(
            lat.contains(": MET (median 1.40x, reps 1.20–1.60x"),
            "{lat}"
        );
        let bad = latency_goal_text("SET", &[100.0], &[151.0]);
        assert!(bad.contains("NOT MET (median 1.51x"), "{bad}");
    }

    #[test]
    fn spread_is_median_with_min_and_max() {
        let s = spread(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 10.0, 4));
        assert!(spread(&[]).median.is_nan());
    }

    #[test]
    fn windows_take_percentiles_in_microseconds() {
        let (mut g, mut s) = (new_histogram(), new_histogram());
        for us in 1..=100u64 {
            g.record(us * 1000).expect("record");
            s.record(us * 2000).expect("record");
        }
        let w = Window::from_histograms(&g, &s);
        assert!((w.get_p50 - 50.0).abs() < 0.5, "{w:?}");
        assert!((w.get_p99 - 99.0).abs() < 0.5, "{w:?}");
        assert!((w.set_p99 - 198.0).abs() < 0.5, "{w:?}");
        assert_eq!((w.get_n, w.set_n), (100, 100));
    }

    /// The raw measurement really moves bytes over the TCP fabric (small, so quick).
    #[test]
    fn raw_read_bandwidth_is_measured() {
        let mbps = raw_read_mbps(9 << 20).expect("raw READs");
        assert!(mbps.is_finite() && mbps > 0.0, "{mbps}");
    }
}
