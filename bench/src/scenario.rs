//! The evaluation harness (issue #10): `augur bench scenario`, `augur bench replay` and
//! `augur demo`.
//!
//! For each placement policy a fresh local cluster (3 node processes on loopback, one
//! client site per node) is started, the workload's records are loaded through their
//! owners (so the load itself biases no placement), and the same seeded schedule is
//! played by the open-loop driver (`crate::driver`): every request leaves at its
//! scheduled time and its latency counts from then. A sampler asks every node for its
//! counters once a second (local-hit ratio, migrations, bytes moved, splits) and where
//! the workload's designed hot range lives; `crate::report` turns it all into a table,
//! SVG plots and one `report.html`.
//!
//! `oracle` is the predictive policy told the future: the workload's own phases are sent
//! as `AUGUR HINT`s a few ticks before each begins — the best a predictor could do.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use augur_node::resp::Frame;
use bytes::Bytes;
use clap::Args;

use crate::client::{text, Resp};
use crate::cluster::{ClusterOptions, LocalCluster};
use crate::driver::{self, DriverOptions, Timed};
use crate::latency::{info_field, FORMATION_TIMEOUT};
use crate::migration::owner_of;
use crate::report::{self, Event, Heatmap, PolicyRun, ReportInput};
use crate::workload::{self, Op, Params, Phase, Request, Workload};

/// One client site per node.
const NODES: u32 = 3;
const POLICIES: [&str; 4] = ["static", "reactive", "predictive", "oracle"];
/// Records loaded per pipelined batch.
const LOAD_BATCH: usize = 500;

/// What every scenario run shares (flags of `bench scenario`, `bench replay`, `demo`).
#[derive(Args, Debug, Clone)]
pub struct RunFlags {
    /// Policies to compare: static, reactive, predictive, oracle, a comma list, or all.
    #[arg(long, default_value = "all")]
    pub policy: String,
    /// Seconds of load per policy.
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Where the report goes (default: ./augur-report/<scenario>-<unix time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the workload (the same for every policy).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Requests per second over all sites.
    #[arg(long, default_value_t = 2_000.0)]
    pub rate: f64,
    /// Records in the key space.
    #[arg(long, default_value_t = 20_000)]
    pub records: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_len: u32,
    /// Seconds per phase of shifting workloads (hotspot, sun, walk, flash).
    #[arg(long, default_value_t = 2.0)]
    pub period_s: f64,
    /// Placement tick of the nodes (`--telemetry-interval-ms`).
    #[arg(long, default_value_t = 200)]
    pub tick_ms: u64,
    /// The p99 service-level objective, in milliseconds: seconds above it are counted.
    #[arg(long, default_value_t = 5.0)]
    pub slo_p99_ms: f64,
    /// Client connections per site.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight per connection (1: no pipelining).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// augur binary to run the nodes with; defaults to the running executable.
    #[arg(long)]
    pub augur: Option<PathBuf>,
    /// Keep the node logs (their `placement decision` lines say why each move was made).
    #[arg(long)]
    pub keep_logs: bool,
    /// Runs of every policy, interleaved (all policies once, then again, ...); with more
    /// than one, each repetition's report goes to `rep-N/` and the table gives each
    /// figure's median and range over the repetitions.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
}

/// `augur bench scenario NAME`.
#[derive(Args, Debug, Clone)]
pub struct ScenarioOptions {
    /// Workload: ycsb-a … ycsb-f, hotspot, sun, walk, flash, growth, mix.
    pub name: String,
    #[command(flatten)]
    pub run: RunFlags,
}

/// `augur bench replay --trace FILE`.
#[derive(Args, Debug, Clone)]
pub struct ReplayOptions {
    /// CSV trace: `timestamp_ms,site,op,key,size` per line.
    #[arg(long)]
    pub trace: PathBuf,
    #[command(flatten)]
    pub run: RunFlags,
}

/// `augur demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoOptions {
    /// Seconds of load per policy (two policies are run).
    #[arg(long, default_value_t = 45.0)]
    pub seconds: f64,
    /// Where the report goes.
    #[arg(long, default_value = "augur-demo-report")]
    pub out: PathBuf,
    /// augur binary to run the nodes with; defaults to the running executable.
    #[arg(long)]
    pub augur: Option<PathBuf>,
}

impl RunFlags {
    fn policies(&self) -> anyhow::Result<Vec<&'static str>> {
        if self.policy.trim() == "all" {
            return Ok(POLICIES.to_vec());
        }
        let mut out = Vec::new();
        for p in self.policy.split(',').map(str::trim) {
            let Some(known) = POLICIES.iter().find(|k| **k == p) else {
                bail!("unknown policy {p:?} (static, reactive, predictive, oracle or all)");
            };
            if !out.contains(known) {
                out.push(*known);
            }
        }
        ensure!(!out.is_empty(), "--policy names no policy");
        Ok(out)
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.seconds.is_finite() && (5.0..=3_600.0).contains(&self.seconds),
            "--seconds must be in 5..=3600"
        );
        ensure!(
            self.rate.is_finite() && (1.0..=1_000_000.0).contains(&self.rate),
            "--rate must be in 1..=1000000"
        );
        ensure!(
            (NODES as u64 * 16..=10_000_000).contains(&self.records),
            "--records must be in 48..=10000000"
        );
        ensure!(
            (1..=1 << 20).contains(&self.value_len),
            "--value-len must be in 1..=1048576"
        );
        ensure!(
            self.period_s.is_finite() && (0.5..=3_600.0).contains(&self.period_s),
            "--period-s must be in 0.5..=3600"
        );
        ensure!(
            (10..=60_000).contains(&self.tick_ms),
            "--tick-ms must be in 10..=60000"
        );
        ensure!(
            self.slo_p99_ms.is_finite() && self.slo_p99_ms > 0.0,
            "--slo-p99-ms must be positive"
        );
        ensure!(
            (1..=256).contains(&self.connections),
            "--connections must be in 1..=256"
        );
        ensure!(
            (1..=1024).contains(&self.pipeline),
            "--pipeline must be in 1..=1024"
        );
        ensure!(
            (1..=100).contains(&self.repeat),
            "--repeat must be in 1..=100"
        );
        self.policies().map(|_| ())
    }

    fn params(&self) -> Params {
        Params {
            seed: self.seed,
            seconds: self.seconds,
            sites: NODES,
            rate: self.rate,
            records: self.records,
            value_len: self.value_len,
            period_s: self.period_s,
        }
    }

    fn out_dir(&self, scenario: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            PathBuf::from("augur-report").join(format!("{scenario}-{now}"))
        })
    }
}

fn augur_binary(given: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe().context("finding the augur executable"),
    }
}

pub fn run_scenario(opts: &ScenarioOptions) -> anyhow::Result<()> {
    opts.run.validate()?;
    let params = opts.run.params();
    // Fail on a bad name before any cluster starts.
    workload::build(&opts.name, &params)?;
    let name = opts.name.clone();
    let command = format!(
        "augur bench scenario {}",
        std::env::args().skip(3).collect::<Vec<_>>().join(" ")
    );
    run_all(&opts.run, &name, &command, &|| {
        Ok(workload::build(&name, &params)?)
    })
    .map(|_| ())
}

pub fn run_replay(opts: &ReplayOptions) -> anyhow::Result<()> {
    opts.run.validate()?;
    let params = opts.run.params();
    workload::replay(&opts.trace, &params)?;
    let command = format!(
        "augur bench replay {}",
        std::env::args().skip(3).collect::<Vec<_>>().join(" ")
    );
    run_all(&opts.run, "replay", &command, &|| {
        Ok(workload::replay(&opts.trace, &params)?)
    })
    .map(|_| ())
}

/// The newcomer's first command: the moving hotspot under predictive and reactive.
pub fn run_demo(opts: &DemoOptions) -> anyhow::Result<()> {
    let run = RunFlags {
        policy: "predictive,reactive".into(),
        seconds: opts.seconds,
        out: Some(opts.out.clone()),
        seed: 1,
        rate: 2_000.0,
        records: 20_000,
        value_len: 100,
        period_s: 2.0,
        tick_ms: 200,
        slo_p99_ms: 5.0,
        connections: 4,
        pipeline: 1,
        augur: opts.augur.clone(),
        keep_logs: false,
        repeat: 1,
    };
    run.validate()?;
    println!(
        "augur demo: a 3-node cluster on this machine, one client site per node. A hot key\n\
         range moves from site to site every {:.0} s (80% of {:.0} requests/s); each policy gets\n\
         a fresh cluster and the same {:.0} s schedule. predictive learns the rotation and moves\n\
         the range before its next site starts; reactive moves it after the new site's load\n\
         has dominated for 3 ticks.\n",
        run.period_s, run.rate, run.seconds
    );
    let params = run.params();
    let runs = run_all(&run, "hotspot", "augur demo", &|| {
        Ok(workload::build("hotspot", &params)?)
    })?;
    if let [p, r] = &runs[..] {
        let hit = |x: &PolicyRun| {
            x.summary
                .local_hit
                .map_or("n/a".into(), |h| format!("{:.1}%", 100.0 * h))
        };
        println!(
            "\npredictive served {} of requests on the node their key lives on, reactive {};\n\
             p99 {:.2} ms vs {:.2} ms.",
            hit(p),
            hit(r),
            p.summary.p99_us as f64 / 1000.0,
            r.summary.p99_us as f64 / 1000.0
        );
    }
    Ok(())
}

type MakeWorkload<'a> = dyn Fn() -> anyhow::Result<Box<dyn Workload>> + 'a;

fn run_all(
    flags: &RunFlags,
    scenario: &str,
    command: &str,
    make: &MakeWorkload,
) -> anyhow::Result<Vec<PolicyRun>> {
    let augur = augur_binary(&flags.augur)?;
    let out = flags.out_dir(scenario);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let policies = flags.policies()?;
    let description = make()?.name().to_string();
    let repeats = flags.repeat.max(1);
    let mut all: Vec<Vec<PolicyRun>> = Vec::new();
    for rep in 1..=repeats {
        let dir = if repeats == 1 {
            out.clone()
        } else {
            out.join(format!("rep-{rep}"))
        };
        let logs = dir.join("logs");
        let mut runs = Vec::new();
        for (i, policy) in policies.iter().enumerate() {
            let of = if repeats == 1 {
                String::new()
            } else {
                format!(" (repetition {rep} of {repeats})")
            };
            eprintln!(
                "[{}/{}] {scenario} under {policy}{of}: starting {NODES} nodes",
                i + 1,
                policies.len()
            );
            let run = run_policy(&augur, flags, scenario, policy, make()?, &logs.join(policy))?;
            runs.push(run);
        }
        if !flags.keep_logs {
            let _ = std::fs::remove_dir_all(&logs);
        }
        let input = ReportInput {
            scenario,
            description: &description,
            slo_p99_us: (flags.slo_p99_ms * 1000.0) as u64,
            command,
            runs: &runs,
        };
        println!("\n{}", report::summary_table(&input));
        let html = report::write(&dir, &input)?;
        println!("report: {}", html.display());
        all.push(runs);
    }
    if repeats > 1 {
        let table = report::repeats_table(scenario, flags.slo_p99_ms, &all);
        println!("\n{table}");
        std::fs::write(out.join("repeats.txt"), &table)
            .with_context(|| format!("writing {}", out.join("repeats.txt").display()))?;
    }
    Ok(all.into_iter().next().unwrap_or_default())
}

/// One node's counters at one instant.
#[derive(Clone, Copy, Default, Debug)]
struct Counters {
    key_requests: u64,
    key_requests_remote: u64,
    migrations: u64,
    migration_bytes: u64,
    splits: u64,
    moved_retries: u64,
    reroute_wait_us: u64,
}

impl Counters {
    fn read(c: &mut Resp) -> anyhow::Result<Counters> {
        let info = match c.command(&[b"INFO", b"cluster", b"augur"])? {
            Frame::Error(e) => bail!("INFO: {}", String::from_utf8_lossy(&e)),
            other => text(&other).context("INFO gave no text")?,
        };
        let field = |f: &str| info_field(&info, f).unwrap_or(0);
        Ok(Counters {
            key_requests: field("key_requests"),
            key_requests_remote: field("key_requests_remote"),
            migrations: field("migrations_in"),
            migration_bytes: field("migration_bytes"),
            splits: field("splits"),
            moved_retries: field("moved_retries"),
            reroute_wait_us: field("reroute_wait_us"),
        })
    }

    fn add(&mut self, o: &Counters) {
        self.key_requests += o.key_requests;
        self.key_requests_remote += o.key_requests_remote;
        self.migrations += o.migrations;
        self.migration_bytes += o.migration_bytes;
        self.splits += o.splits;
        self.moved_retries += o.moved_retries;
        self.reroute_wait_us += o.reroute_wait_us;
    }

    fn since(&self, before: &Counters) -> Counters {
        Counters {
            key_requests: self.key_requests.saturating_sub(before.key_requests),
            key_requests_remote: self
                .key_requests_remote
                .saturating_sub(before.key_requests_remote),
            migrations: self.migrations.saturating_sub(before.migrations),
            migration_bytes: self.migration_bytes.saturating_sub(before.migration_bytes),
            splits: self.splits.saturating_sub(before.splits),
            moved_retries: self.moved_retries.saturating_sub(before.moved_retries),
            reroute_wait_us: self.reroute_wait_us.saturating_sub(before.reroute_wait_us),
        }
    }

    fn local_hit(&self) -> Option<f64> {
        (self.key_requests > 0)
            .then(|| 1.0 - self.key_requests_remote as f64 / self.key_requests as f64)
    }
}

/// What the sampler saw at the end of each second of the run (index 0: at the start).
#[derive(Clone, Debug, Default)]
struct Sample {
    cluster: Counters,
    /// Owner node of the workload's hot range (its first key), if it has one.
    hot_owner: Option<u64>,
    fragments: u64,
}

fn sample(conns: &mut [Resp], hot_key: Option<&[u8]>) -> anyhow::Result<Sample> {
    let mut s = Sample::default();
    for c in conns.iter_mut() {
        s.cluster.add(&Counters::read(c)?);
    }
    if let Some(key) = hot_key {
        s.hot_owner = owner_of(&mut conns[0], key)?;
    }
    if let Ok(t) = crate::latency::command_text(&mut conns[0], &[b"AUGUR", b"STATUS"]) {
        s.fragments = first_number_before(&t, "fragments").unwrap_or(0);
    }
    Ok(s)
}

/// `12` from "... 12 fragments ..." in the first line of `text`.
fn first_number_before(text: &str, word: &str) -> Option<u64> {
    let first = text.lines().next()?;
    let words: Vec<&str> = first.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let at = words.iter().position(|w| *w == word)?;
    words.get(at.checked_sub(1)?)?.parse().ok()
}

/// A poisoned lock only means a thread panicked; what it holds is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The range the workload's first phase makes hot (the one the heatmap follows).
fn hot_range(phases: &[Phase]) -> Option<(Vec<u8>, Vec<u8>)> {
    phases.first().map(|p| (p.lo.clone(), p.hi.clone()))
}

fn in_range(key: &[u8], lo: &[u8], hi: &[u8]) -> bool {
    key >= lo && (hi.is_empty() || key < hi)
}

/// Requests as RESP commands; counts each second's requests per site into the hot range
/// (the demand the heatmap shows).
struct Commands {
    workload: Box<dyn Workload>,
    value: Bytes,
    records: u64,
    queued: std::collections::VecDeque<Timed>,
    hot: Option<(Vec<u8>, Vec<u8>)>,
    /// [second][site] requests in the hot range.
    demand: Arc<Mutex<Vec<Vec<u64>>>>,
}

impl Commands {
    fn push(&mut self, r: Request) {
        let key = Bytes::from(r.key);
        if let Some((lo, hi)) = &self.hot {
            if in_range(&key, lo, hi) {
                let second = (r.at_us / 1_000_000) as usize;
                let mut d = lock(&self.demand);
                if d.len() <= second && second < 100_000 {
                    d.resize(second + 1, vec![0; NODES as usize]);
                }
                if let Some(cell) = d
                    .get_mut(second)
                    .and_then(|row| row.get_mut(r.site as usize))
                {
                    *cell += 1;
                }
            }
        }
        let value = self
            .value
            .slice(..(r.value_len as usize).min(self.value.len()));
        let timed = |args: Vec<Bytes>, write: bool| Timed {
            at_us: r.at_us,
            site: r.site,
            args,
            write,
        };
        match r.op {
            Op::Read => self
                .queued
                .push_back(timed(vec![Bytes::from_static(b"GET"), key], false)),
            Op::Update | Op::Insert => self
                .queued
                .push_back(timed(vec![Bytes::from_static(b"SET"), key, value], true)),
            Op::ReadModifyWrite => {
                self.queued
                    .push_back(timed(vec![Bytes::from_static(b"GET"), key.clone()], false));
                self.queued
                    .push_back(timed(vec![Bytes::from_static(b"SET"), key, value], true));
            }
            Op::Scan { records } => {
                let mut args = vec![Bytes::from_static(b"MGET")];
                match workload::record_of(&key) {
                    Some(first) => {
                        let last = first.saturating_add(u64::from(records.clamp(1, 1_000)));
                        for i in first..last.min(self.records.max(first + 1)) {
                            args.push(Bytes::from(workload::record_key(i, self.records)));
                        }
                    }
                    None => args.push(key),
                }
                self.queued.push_back(timed(args, false));
            }
        }
    }
}

impl Iterator for Commands {
    type Item = Timed;
    fn next(&mut self) -> Option<Timed> {
        while self.queued.is_empty() {
            let r = self.workload.next_request()?;
            self.push(r);
        }
        self.queued.pop_front()
    }
}

fn wait_formed(c: &mut Resp) -> anyhow::Result<()> {
    let by = Instant::now() + FORMATION_TIMEOUT;
    loop {
        if owner_of(c, b"x")?.is_some() {
            return Ok(());
        }
        ensure!(
            Instant::now() < by,
            "the cluster did not form within {FORMATION_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Load the records through the node that owns each (so the load is local everywhere and
/// no policy sees a reason to move anything yet), pipelined.
fn preload(cluster: &LocalCluster, workload: &dyn Workload) -> anyhow::Result<u64> {
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.addr.port()).collect();
    let mut admin = Resp::connect(ports[0])?;
    // Owners by first byte (the formed table cuts by leading byte).
    let mut owner_of_byte = [0usize; 256];
    for (b, slot) in owner_of_byte.iter_mut().enumerate() {
        let node = owner_of(&mut admin, &[b as u8])?.unwrap_or(1);
        *slot = (node as usize).clamp(1, ports.len()) - 1;
    }
    let mut conns: Vec<Resp> = ports
        .iter()
        .map(|p| Resp::connect(*p))
        .collect::<Result<_, _>>()?;
    let mut batches: Vec<Vec<u8>> = vec![Vec::new(); ports.len()];
    let mut counts = vec![0usize; ports.len()];
    let mut loaded = 0u64;
    let value = vec![b'v'; 1 << 20];
    let flush = |conn: &mut Resp, buf: &mut Vec<u8>, n: &mut usize| -> anyhow::Result<()> {
        if *n == 0 {
            return Ok(());
        }
        conn.send_raw(buf)?;
        for _ in 0..*n {
            if let Frame::Error(e) = conn.read_reply()? {
                bail!("loading records: {}", String::from_utf8_lossy(&e));
            }
        }
        buf.clear();
        *n = 0;
        Ok(())
    };
    for (key, len) in workload.preload() {
        let site = key.first().map_or(0, |b| owner_of_byte[*b as usize]);
        let v = &value[..(len as usize).min(value.len())];
        let mut out = bytes::BytesMut::new();
        crate::client::request(&[b"SET", &key, v]).encode(&mut out, false);
        batches[site].extend_from_slice(&out);
        counts[site] += 1;
        loaded += 1;
        if counts[site] >= LOAD_BATCH {
            flush(&mut conns[site], &mut batches[site], &mut counts[site])?;
        }
    }
    for site in 0..ports.len() {
        flush(&mut conns[site], &mut batches[site], &mut counts[site])?;
    }
    Ok(loaded)
}

fn run_policy(
    augur: &Path,
    flags: &RunFlags,
    scenario: &str,
    policy: &str,
    workload: Box<dyn Workload>,
    log_dir: &Path,
) -> anyhow::Result<PolicyRun> {
    std::fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let node_policy = if policy == "oracle" {
        "predictive"
    } else {
        policy
    };
    let cluster = LocalCluster::start(
        augur,
        ClusterOptions {
            nodes: NODES,
            base_port: 0,
            log_dir: log_dir.to_path_buf(),
            policy: Some(node_policy.to_string()),
            extra_args: vec!["--telemetry-interval-ms".into(), flags.tick_ms.to_string()],
            ..Default::default()
        },
        |_| {},
    )?;
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.addr.port()).collect();
    let mut conns: Vec<Resp> = ports
        .iter()
        .map(|p| Resp::connect(*p))
        .collect::<Result<_, _>>()?;
    wait_formed(&mut conns[0])?;
    // Loading happens under `static`, so no move is made because of it.
    crate::latency::command_text(&mut conns[0], &[b"AUGUR", b"POLICY", b"SET", b"static"])?;
    let t = Instant::now();
    let loaded = preload(&cluster, workload.as_ref())?;
    eprintln!(
        "  loaded {loaded} records in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    crate::latency::command_text(
        &mut conns[0],
        &[b"AUGUR", b"POLICY", b"SET", node_policy.as_bytes()],
    )?;

    let phases = workload.phases();
    let hot = hot_range(&phases);
    let demand: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
    let commands = Commands {
        workload,
        value: Bytes::from(vec![b'x'; flags.value_len as usize]),
        records: flags.records,
        queued: Default::default(),
        hot: hot.clone(),
        demand: demand.clone(),
    };

    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    // The sampler: one sample per second of the run, aligned to its start.
    let hot_key: Option<Vec<u8>> = hot.map(|(lo, _)| lo);
    let sampler = {
        let stop = stop.clone();
        let mut conns = std::mem::take(&mut conns);
        std::thread::spawn(move || -> anyhow::Result<Vec<Sample>> {
            let mut samples = vec![sample(&mut conns, hot_key.as_deref())?];
            let mut next = start + Duration::from_secs(1);
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(50)));
                    continue;
                }
                samples.push(sample(&mut conns, hot_key.as_deref())?);
                next += Duration::from_secs(1);
            }
            Ok(samples)
        })
    };
    // The oracle: each phase hinted a few ticks before it starts.
    let lead_us = 3 * flags.tick_ms * 1000;
    let hints: Arc<Mutex<Vec<Event>>> = Arc::default();
    let oracle = (policy == "oracle").then(|| {
        let stop = stop.clone();
        let hints = hints.clone();
        let port = ports[0];
        let phases = phases.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut c = Resp::connect(port)?;
            for p in phases {
                let due = start + Duration::from_micros(p.from_us.saturating_sub(lead_us));
                while Instant::now() < due {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    std::thread::sleep((due - Instant::now()).min(Duration::from_millis(20)));
                }
                let seconds = (p.to_us.saturating_sub(p.from_us) + lead_us)
                    .div_ceil(1_000_000)
                    .max(1);
                let node = (p.site + 1).to_string();
                let hi: &[u8] = if p.hi.is_empty() { b"+inf" } else { &p.hi };
                crate::latency::command_text(
                    &mut c,
                    &[
                        b"AUGUR",
                        b"HINT",
                        &p.lo,
                        hi,
                        node.as_bytes(),
                        seconds.to_string().as_bytes(),
                    ],
                )?;
                lock(&hints).push(Event {
                    at_s: start.elapsed().as_secs_f64(),
                    kind: "hint".into(),
                    label: format!("hint: site {} soon", p.site + 1),
                });
            }
            Ok(())
        })
    });

    let opts = DriverOptions {
        sites: cluster.nodes.iter().map(|n| n.addr).collect(),
        connections_per_site: flags.connections,
        pipeline: flags.pipeline,
        seconds: flags.seconds,
        drain: Duration::from_secs(5),
        progress: Some(format!("{scenario} [{policy}]")),
    };
    let result = driver::run(commands, &opts, |_| {});
    stop.store(true, Ordering::Relaxed);
    let samples = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the sampler panicked"))??;
    if let Some(o) = oracle {
        o.join()
            .map_err(|_| anyhow::anyhow!("the oracle panicked"))??;
    }
    let result = result?;
    drop(cluster);

    // Per-second figures: the driver's latencies, the sampler's counters.
    let local_hit: Vec<Option<f64>> = (0..result.windows.len())
        .map(|i| match (samples.get(i), samples.get(i + 1)) {
            (Some(a), Some(b)) => b.cluster.since(&a.cluster).local_hit(),
            _ => None,
        })
        .collect();
    let slo_us = (flags.slo_p99_ms * 1000.0) as u64;
    let (mut seconds, mut summary) = report::summarize(&result.windows, slo_us, &local_hit);
    for (i, s) in seconds.iter_mut().enumerate() {
        if let (Some(a), Some(b)) = (samples.get(i), samples.get(i + 1)) {
            let d = b.cluster.since(&a.cluster);
            s.reroutes = d.moved_retries;
            s.reroute_wait_ms = d.reroute_wait_us / 1000;
        }
    }
    let (first, last) = (
        samples.first().cloned().unwrap_or_default(),
        samples.last().cloned().unwrap_or_default(),
    );
    let whole = last.cluster.since(&first.cluster);
    summary.local_hit = whole.local_hit();
    summary.migrations = whole.migrations;
    summary.bytes_migrated = whole.migration_bytes;
    summary.splits = whole.splits;
    summary.merges = samples
        .windows(2)
        .map(|w| w[0].fragments.saturating_sub(w[1].fragments))
        .sum();
    let mut events = Vec::new();
    for (i, w) in samples.windows(2).enumerate() {
        let moved = w[1].cluster.since(&w[0].cluster).migrations;
        if moved > 0 {
            events.push(Event {
                at_s: i as f64 + 1.0,
                kind: "migration".into(),
                label: format!("{moved} migration{}", if moved == 1 { "" } else { "s" }),
            });
        }
    }
    for p in &phases {
        events.push(Event {
            at_s: p.from_us as f64 / 1e6,
            kind: "shift".into(),
            label: format!("site {} hot", p.site + 1),
        });
    }
    events.extend(lock(&hints).drain(..));
    events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));

    let heatmap = heatmap(&demand, &samples);
    Ok(PolicyRun {
        policy: policy.to_string(),
        seconds,
        summary,
        events,
        heatmap,
    })
}

/// Demand (share of the first hot range's requests per site, per second) beside
/// placement (1 where that site's node owned the range).
fn heatmap(demand: &Mutex<Vec<Vec<u64>>>, samples: &[Sample]) -> Option<Heatmap> {
    let demand = lock(demand);
    if demand.is_empty() || samples.iter().all(|s| s.hot_owner.is_none()) {
        return None;
    }
    let cols = demand.len().min(samples.len().saturating_sub(1));
    let sites = NODES as usize;
    let mut actual = vec![vec![0.0; cols]; sites];
    let mut predicted = vec![vec![0.0; cols]; sites];
    for col in 0..cols {
        let total: u64 = demand[col].iter().sum();
        for site in 0..sites {
            if total > 0 {
                actual[site][col] = demand[col][site] as f64 / total as f64;
            }
            // The owner at the end of that second.
            let owner = samples[col + 1].hot_owner.unwrap_or(0);
            predicted[site][col] = if owner == site as u64 + 1 { 1.0 } else { 0.0 };
        }
    }
    Some(Heatmap {
        rows: (1..=sites).map(|s| format!("site {s}")).collect(),
        cols: (0..cols).map(|c| c.to_string()).collect(),
        predicted,
        actual,
    })
}
