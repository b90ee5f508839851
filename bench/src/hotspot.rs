//! `augur bench hotspot` (issue #9): a hotspot that moves from node to node on a fixed
//! period, run once per placement policy (static, reactive, predictive), so the three
//! are compared in one run on the same machine.
//!
//! For each policy a fresh 3-node cluster starts with `--placement-policy <policy>
//! --telemetry-interval-ms <tick>` (and `--split-load 0 --merge-after-s 0`, so the
//! `m:` keys stay one table fragment and only placement moves them). One client
//! thread per node sends paced GETs (and a SET in ten) on `m:` keys at `--rate` ops/s
//! while its node is "hot"; the hot node rotates 1→2→3→1… every `--period-s`. Every
//! client also sends a low background rate on keys of fragments that started on
//! another node than the `m:` one.
//!
//! A separate connection asks node 1 `AUGUR WHERE m:0` every 100 ms; each hot request
//! is attributed to the owner last seen when it was sent. The first cycle is warm-up
//! (the predictor has no history yet) and is left out of every ratio and percentile.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use augur_node::resp::Frame;
use bytes::BytesMut;
use clap::Args;
use hdrhistogram::Histogram;

use crate::client::{request, Resp};
use crate::cluster::{ClusterOptions, LocalCluster};
use crate::latency::{command_text, info_field, load_average, FORMATION_TIMEOUT};
use crate::migration::{key_for, load, new_histogram, owner_of, value_for, verdict};

/// Issue #9: predictive placement serves this share of hot requests locally within one
/// tick of each shift.
pub const GOAL_LOCAL_HIT_FIRST_TICK: f64 = 0.9;
const NODES: u32 = 3;
/// `m:0` .. `m:<HOT_KEYS-1>` are loaded and used by the hot clients.
const HOT_KEYS: u64 = 1000;
const VALUE_SIZE: usize = 64;
/// Background keys per node, on fragments that start away from the `m:` one.
const BACKGROUND_KEYS: usize = 16;
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Errors each client keeps the text of (all are counted).
const KEPT_ERRORS: usize = 5;

/// Flags of `augur bench hotspot`.
#[derive(Args, Debug, Clone)]
pub struct Options {
    /// augur binary to run the nodes with; defaults to the running executable.
    #[arg(long)]
    pub augur: Option<PathBuf>,
    /// Seconds each node stays hot before the hotspot moves to the next.
    #[arg(long, default_value_t = 4)]
    pub period_s: u64,
    /// Full rotations (1→2→3) per policy; the first is warm-up.
    #[arg(long, default_value_t = 3)]
    pub cycles: u64,
    /// Hot requests per second from the hot node's client.
    #[arg(long, default_value_t = 400)]
    pub rate: u64,
    /// Background requests per second from every node's client, on other fragments.
    #[arg(long, default_value_t = 20)]
    pub background_rate: u64,
    /// Placement tick (`--telemetry-interval-ms` of the nodes).
    #[arg(long, default_value_t = 200)]
    pub tick_ms: u64,
    /// Policies to run, in this order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "static,reactive,predictive"
    )]
    pub policies: Vec<String>,
    /// Keep the node logs (their `placement decision` lines show when moves were decided).
    #[arg(long)]
    pub keep_logs: bool,
    /// Give up (with an error) when the whole run takes longer than this.
    #[arg(long, default_value_t = 900)]
    pub max_seconds: u64,
}

impl Options {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=600).contains(&self.period_s),
            "--period-s must be in 1..=600"
        );
        ensure!(
            (2..=100).contains(&self.cycles),
            "--cycles must be in 2..=100 (the first is warm-up)"
        );
        ensure!(
            (1..=100_000).contains(&self.rate),
            "--rate must be in 1..=100000"
        );
        ensure!(
            self.background_rate <= self.rate,
            "--background-rate must be at most --rate"
        );
        ensure!(
            self.tick_ms >= 10 && self.tick_ms < self.period_s * 1000,
            "--tick-ms must be at least 10 and shorter than --period-s"
        );
        ensure!(
            (1..=3).contains(&self.policies.len()),
            "--policies takes one to three policies"
        );
        for p in &self.policies {
            ensure!(
                matches!(p.as_str(), "static" | "reactive" | "predictive"),
                "unknown policy {p:?} in --policies (static, reactive, predictive)"
            );
        }
        ensure!(self.max_seconds >= 1, "--max-seconds must be at least 1");
        Ok(())
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.period_s)
    }

    fn run_time(&self) -> Duration {
        self.period() * (NODES * self.cycles as u32)
    }
}

/// The node (1-based) that is hot `t` into the run.
pub fn hot_node(t: Duration, period: Duration) -> u64 {
    (t.as_nanos() / period.as_nanos().max(1)) as u64 % u64::from(NODES) + 1
}

/// One hot request.
#[derive(Debug, Clone, Copy)]
pub struct HotSample {
    /// Since the start of the run.
    pub at: Duration,
    pub node: u64,
    /// Owner of `m:0` last sampled when it was sent (0: not known yet).
    pub owner: u64,
    pub get: bool,
    pub ns: u64,
}

/// What one client recorded.
#[derive(Default)]
struct Recorder {
    hot: Vec<HotSample>,
    errors: u64,
    kept_errors: Vec<String>,
}

impl Recorder {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.kept_errors.len() < KEPT_ERRORS {
            self.kept_errors.push(e);
        }
    }
}

/// A poisoned lock only means a thread panicked; what it holds is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Shared {
    start: Instant,
    owner: AtomicU64,
    stop: AtomicBool,
}

/// One request and a check of its reply; `expect` is the value a GET must return
/// (None: any value or nil, for background keys nobody loaded).
fn one_request(
    conn: &mut Option<Resp>,
    port: u16,
    args: &[&[u8]],
    expect: Option<&[u8]>,
) -> Result<u64, String> {
    let c = match conn.as_mut() {
        Some(c) => c,
        None => conn.insert(Resp::connect(port).map_err(|e| format!("connect: {e:#}"))?),
    };
    let mut out = BytesMut::new();
    request(args).encode(&mut out, false);
    let t = Instant::now();
    let reply = c.send_raw(&out).and_then(|()| c.read_reply());
    let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let what = || {
        format!(
            "{} {}",
            String::from_utf8_lossy(args[0]),
            String::from_utf8_lossy(args[1])
        )
    };
    match (&reply, args[0]) {
        (Ok(Frame::Simple(s)), b"SET") if s[..] == *b"OK" => Ok(ns),
        (Ok(Frame::Bulk(v)), b"GET") if expect.is_none_or(|e| v[..] == *e) => Ok(ns),
        (Ok(Frame::Null), b"GET") if expect.is_none() => Ok(ns),
        (Ok(other), _) => Err(format!("{}: {other:?}", what())),
        (Err(e), _) => {
            *conn = None;
            Err(format!("{}: {e:#}", what()))
        }
    }
}

/// The client of node `node`: hot requests while its node is hot, background always.
fn client_loop(
    node: u64,
    port: u16,
    background: &[Vec<u8>],
    opts: &Options,
    shared: &Shared,
    rec: &Mutex<Recorder>,
) {
    let run_time = opts.run_time();
    let hot_every = Duration::from_secs_f64(1.0 / opts.rate as f64);
    let bg_every = (opts.background_rate > 0)
        .then(|| Duration::from_secs_f64(1.0 / opts.background_rate as f64));
    let mut conn: Option<Resp> = None;
    let (mut next_hot, mut next_bg) = (Instant::now(), Instant::now());
    let mut op = 0u64;
    let bg_value = value_for(0, VALUE_SIZE);
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let at = now.saturating_duration_since(shared.start);
        if at >= run_time {
            break;
        }
        let hot = hot_node(at, opts.period()) == node;
        if !hot {
            // Not our turn: hot requests resume on the schedule from when it is.
            next_hot = next_hot.max(now);
        }
        let next = match (hot, bg_every) {
            (true, Some(_)) => next_hot.min(next_bg),
            (true, None) => next_hot,
            (false, Some(_)) => next_bg,
            (false, None) => now + Duration::from_millis(10),
        };
        if next > now {
            // Short sleeps, so the start of our turn is not overslept.
            std::thread::sleep((next - now).min(Duration::from_millis(10)));
            continue;
        }
        op += 1;
        if hot && next_hot <= now {
            // Behind schedule: go on from now rather than burst to catch up.
            next_hot = next_hot.max(now.checked_sub(hot_every).unwrap_or(now)) + hot_every;
            let n = rand::random::<u64>() % HOT_KEYS;
            let (key, value) = (key_for(n), value_for(n, VALUE_SIZE));
            let get = !op.is_multiple_of(10);
            let owner = shared.owner.load(Ordering::Relaxed);
            let sent = Instant::now().saturating_duration_since(shared.start);
            let r = if get {
                one_request(&mut conn, port, &[b"GET", &key], Some(&value))
            } else {
                one_request(&mut conn, port, &[b"SET", &key, &value], None)
            };
            let mut r_ = lock(rec);
            match r {
                Ok(ns) => r_.hot.push(HotSample {
                    at: sent,
                    node,
                    owner,
                    get,
                    ns,
                }),
                Err(e) => r_.error(e),
            }
        } else if let Some(every) = bg_every {
            next_bg = next_bg.max(now.checked_sub(every).unwrap_or(now)) + every;
            let key = &background[op as usize % background.len()];
            let r = if op.is_multiple_of(4) {
                one_request(&mut conn, port, &[b"SET", key, &bg_value], None)
            } else {
                one_request(&mut conn, port, &[b"GET", key], None)
            };
            if let Err(e) = r {
                lock(rec).error(e);
            }
        }
    }
}

/// Asks `AUGUR WHERE m:0` every [`SAMPLE_EVERY`]; publishes the owner and keeps its
/// changes (time since start, new owner).
fn sampler_loop(port: u16, shared: &Shared, changes: &Mutex<Vec<(Duration, u64)>>) -> u64 {
    let key0 = key_for(0);
    let mut conn: Option<Resp> = None;
    let mut errors = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let result = match conn.as_mut() {
            Some(c) => owner_of(c, &key0),
            None => Resp::connect(port).and_then(|mut c| {
                let r = owner_of(&mut c, &key0);
                conn = Some(c);
                r
            }),
        };
        match result {
            Ok(Some(o)) => {
                if shared.owner.swap(o, Ordering::Relaxed) != o {
                    lock(changes).push((shared.start.elapsed(), o));
                }
            }
            Ok(None) => {}
            Err(_) => {
                errors += 1;
                conn = None;
            }
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    errors
}

/// Keys whose first byte is not `m` and whose fragment starts on another node than
/// `m:0`'s, so background load never lands on the hot fragment.
fn background_keys(c: &mut Resp, hot_owner: u64) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    for b in (b'a'..=b'z').chain(b'A'..=b'Z') {
        if b == b'm' {
            continue;
        }
        let key = format!("{}:bg:0", b as char).into_bytes();
        if owner_of(c, &key)?.is_some_and(|o| o != hot_owner) {
            keys.push(key);
        }
        if keys.len() >= BACKGROUND_KEYS {
            break;
        }
    }
    ensure!(
        !keys.is_empty(),
        "no key outside the m: fragment's node found for the background load"
    );
    Ok(keys)
}

/// One policy's figures.
#[derive(Debug, Clone)]
pub struct PolicyResult {
    pub policy: String,
    pub measured: Summary,
    /// Per shift after warm-up: (time of the shift, new hot node, when m:0 moved to it
    /// relative to the shift; None = not within half a period before to a period after).
    pub shifts: Vec<(Duration, u64, Option<f64>)>,
    pub migrations: u64,
    pub errors: u64,
    pub error_texts: Vec<String>,
    pub sampler_errors: u64,
    pub owner_changes: Vec<(Duration, u64)>,
    pub seconds: f64,
}

/// Ratios and percentiles of the hot requests after warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub requests: usize,
    pub local_hit: f64,
    pub first_tick_requests: usize,
    pub local_hit_first_tick: f64,
    pub get_p50_us: f64,
    pub get_p99_us: f64,
    pub get_n: u64,
    pub local_get_p50_us: f64,
    pub remote_get_p50_us: f64,
}

/// Summarises hot samples: those of the first cycle are warm-up and left out; the
/// "first tick" ones are those sent less than `tick` after a shift.
pub fn summarize(samples: &[HotSample], period: Duration, tick: Duration) -> Summary {
    let cycle = period * NODES;
    let measured: Vec<&HotSample> = samples.iter().filter(|s| s.at >= cycle).collect();
    let ratio = |v: &[&&HotSample]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().filter(|s| s.owner == s.node).count() as f64 / v.len() as f64
        }
    };
    let all: Vec<&&HotSample> = measured.iter().collect();
    let first: Vec<&&HotSample> = measured
        .iter()
        .filter(|s| s.at.as_nanos() % period.as_nanos().max(1) < tick.as_nanos())
        .collect();
    let (mut get, mut local, mut remote) = (new_histogram(), new_histogram(), new_histogram());
    for s in measured.iter().filter(|s| s.get) {
        get.saturating_record(s.ns.max(1));
        if s.owner == s.node {
            local.saturating_record(s.ns.max(1));
        } else {
            remote.saturating_record(s.ns.max(1));
        }
    }
    let us = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            f64::NAN
        } else {
            h.value_at_quantile(q) as f64 / 1000.0
        }
    };
    Summary {
        requests: all.len(),
        local_hit: ratio(&all),
        first_tick_requests: first.len(),
        local_hit_first_tick: ratio(&first),
        get_p50_us: us(&get, 0.5),
        get_p99_us: us(&get, 0.99),
        get_n: get.len(),
        local_get_p50_us: us(&local, 0.5),
        remote_get_p50_us: us(&remote, 0.5),
    }
}

/// For each shift after warm-up, when `m:0` moved to the new hot node relative to the
/// shift (negative: ahead of it), looking from half a period before to a period after.
pub fn move_lags(
    changes: &[(Duration, u64)],
    period: Duration,
    cycles: u64,
) -> Vec<(Duration, u64, Option<f64>)> {
    let shifts = NODES as u64 * cycles;
    (NODES as u64..shifts)
        .map(|k| {
            let at = period * k as u32;
            let node = k % u64::from(NODES) + 1;
            let from = at.saturating_sub(period / 2);
            let lag = changes
                .iter()
                .find(|(t, o)| *o == node && *t >= from && *t < at + period)
                .map(|(t, _)| t.as_secs_f64() - at.as_secs_f64());
            (at, node, lag)
        })
        .collect()
}

fn run_policy(
    augur: &std::path::Path,
    opts: &Options,
    policy: &str,
    log_dir: &std::path::Path,
    deadline: Instant,
) -> anyhow::Result<PolicyResult> {
    let started = Instant::now();
    let dir = log_dir.join(policy);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "[{policy}] starting {NODES} nodes (logs in {})",
        dir.display()
    );
    let cluster = LocalCluster::start(
        augur,
        ClusterOptions {
            nodes: NODES,
            base_port: 0,
            log_dir: dir,
            policy: Some(policy.to_string()),
            extra_args: vec![
                "--telemetry-interval-ms".into(),
                opts.tick_ms.to_string(),
                "--split-load".into(),
                "0".into(),
                "--merge-after-s".into(),
                "0".into(),
            ],
            ..Default::default()
        },
        |_| {},
    )?;
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.addr.port()).collect();
    let mut admin = Resp::connect(ports[0])?;
    let key0 = key_for(0);
    let formed_by = Instant::now() + FORMATION_TIMEOUT;
    let owner = loop {
        if let Some(o) = owner_of(&mut admin, &key0)? {
            break o;
        }
        ensure!(
            Instant::now() < formed_by,
            "the cluster did not assign m:* within {FORMATION_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let owner_port = cluster
        .nodes
        .iter()
        .find(|n| u64::from(n.id) == owner)
        .map(|n| n.addr.port())
        .with_context(|| format!("AUGUR WHERE named node {owner}, which is not ours"))?;
    load(
        &mut Resp::connect(owner_port)?,
        HOT_KEYS,
        VALUE_SIZE,
        deadline,
    )?;
    let background = background_keys(&mut admin, owner)?;
    eprintln!(
        "[{policy}] m:* on node {owner}; {} background keys; running {:.0} s",
        background.len(),
        opts.run_time().as_secs_f64()
    );

    let shared = Arc::new(Shared {
        start: Instant::now(),
        owner: AtomicU64::new(owner),
        stop: AtomicBool::new(false),
    });
    let changes = Arc::new(Mutex::new(vec![(Duration::ZERO, owner)]));
    let sampler = {
        let (shared, changes, port) = (shared.clone(), changes.clone(), ports[0]);
        std::thread::spawn(move || sampler_loop(port, &shared, &changes))
    };
    let background = Arc::new(background);
    let mut clients = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let rec = Arc::new(Mutex::new(Recorder::default()));
        let (shared, background, opts, rec2) = (
            shared.clone(),
            background.clone(),
            opts.clone(),
            rec.clone(),
        );
        let node = i as u64 + 1;
        let t =
            std::thread::spawn(move || client_loop(node, port, &background, &opts, &shared, &rec2));
        clients.push((t, rec));
    }
    let run_until = shared.start + opts.run_time();
    while Instant::now() < run_until {
        if Instant::now() > deadline {
            shared.stop.store(true, Ordering::SeqCst);
            bail!("the run took longer than --max-seconds");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    shared.stop.store(true, Ordering::SeqCst);
    let mut samples = Vec::new();
    let (mut errors, mut error_texts) = (0, Vec::new());
    for (t, rec) in clients {
        let _ = t.join();
        let mut r = lock(&rec);
        samples.append(&mut r.hot);
        errors += r.errors;
        error_texts.append(&mut r.kept_errors);
    }
    let sampler_errors = sampler.join().unwrap_or(0);
    let mut migrations = 0;
    for &port in &ports {
        let mut c = Resp::connect(port)?;
        let info = command_text(&mut c, &[b"INFO", b"cluster"])?;
        migrations += info_field(&info, "migrations_in").context("no migrations_in in INFO")?;
    }
    let owner_changes = lock(&changes).clone();
    drop(admin);
    drop(cluster);
    Ok(PolicyResult {
        policy: policy.to_string(),
        measured: summarize(&samples, opts.period(), Duration::from_millis(opts.tick_ms)),
        shifts: move_lags(&owner_changes, opts.period(), opts.cycles),
        migrations,
        errors,
        error_texts,
        sampler_errors,
        owner_changes,
        seconds: started.elapsed().as_secs_f64(),
    })
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
    let log_dir = std::env::temp_dir().join(format!("augur-bench-hotspot-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let mut results = Vec::new();
    for policy in &opts.policies {
        results.push(run_policy(&augur, opts, policy, &log_dir, deadline)?);
    }
    print_report(opts, &augur, &results, &load_before);
    if opts.keep_logs {
        println!("node logs kept in {}", log_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn pct(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * x)
    }
}

fn us(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.0}")
    }
}

fn print_report(opts: &Options, augur: &std::path::Path, results: &[PolicyResult], load: &str) {
    println!();
    println!("augur bench hotspot: a hotspot rotating over the nodes, per placement policy");
    println!(
        "  augur:    {} ({NODES} nodes x 1 core on loopback, TCP fabric; --telemetry-interval-ms {} \
         --split-load 0 --merge-after-s 0)",
        augur.display(),
        opts.tick_ms
    );
    println!(
        "  load:     hot node 1→2→3→… every {} s, {} cycles per policy; the hot node's client sends \
         {} ops/s on {HOT_KEYS} m: keys (9 GET : 1 SET, {VALUE_SIZE} B values); every client also \
         {} ops/s background on other fragments",
        opts.period_s, opts.cycles, opts.rate, opts.background_rate
    );
    println!(
        "  measure:  owner of m:0 sampled every {} ms (AUGUR WHERE on node 1); a hot request is \
         local when its node was the last sampled owner; FIRST CYCLE SKIPPED as warm-up; \
         first tick = the {} ms after each shift; GET latency = send to reply, hdrhistogram; \
         migrations = INFO cluster migrations_in summed over the nodes (whole run, warm-up included)",
        SAMPLE_EVERY.as_millis(),
        opts.tick_ms
    );
    println!(
        "  machine:  {} cpus, SHARED and NOISY; load average {load} at start, {} at end",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!();
    println!(
        "{:<10} {:>7} {:>9} {:>7} {:>11} {:>9} {:>9} {:>9} {:>11} {:>10} {:>6}",
        "policy",
        "hot req",
        "local-hit",
        "1st-tk n",
        "1st-tick lh",
        "GET p50us",
        "GET p99us",
        "local p50",
        "remote p50",
        "migrations",
        "errors"
    );
    for r in results {
        let m = &r.measured;
        println!(
            "{:<10} {:>7} {:>9} {:>7} {:>11} {:>9} {:>9} {:>9} {:>11} {:>10} {:>6}",
            r.policy,
            m.requests,
            pct(m.local_hit),
            m.first_tick_requests,
            pct(m.local_hit_first_tick),
            us(m.get_p50_us),
            us(m.get_p99_us),
            us(m.local_get_p50_us),
            us(m.remote_get_p50_us),
            r.migrations,
            r.errors
        );
    }
    println!();
    println!("when m:0 reached the new hot node, relative to each shift after warm-up (s; negative = ahead):");
    for r in results {
        let lags: Vec<String> = r
            .shifts
            .iter()
            .map(|(at, node, lag)| {
                format!(
                    "{:.0}s→{node}: {}",
                    at.as_secs_f64(),
                    lag.map_or("no".into(), |l| format!("{l:+.1}"))
                )
            })
            .collect();
        println!("  {:<10} {}", r.policy, lags.join(", "));
    }
    println!("owner changes of m:0 (s since start → node):");
    for r in results {
        let ch: Vec<String> = r
            .owner_changes
            .iter()
            .map(|(t, o)| format!("{:.1}→{o}", t.as_secs_f64()))
            .collect();
        println!(
            "  {:<10} {} (policy run took {:.0} s, sampler errors {})",
            r.policy,
            ch.join(" "),
            r.seconds,
            r.sampler_errors
        );
    }
    for r in results.iter().filter(|r| !r.error_texts.is_empty()) {
        println!(
            "  {} client errors (first): {}",
            r.policy,
            r.error_texts.join(" | ")
        );
    }
    println!();
    for line in goal_lines(results) {
        println!("{line}");
    }
}

/// Whether reactive placement trails the hotspot: every shift's move comes after it
/// (or never), and how its first tick compares with predictive's.
fn reactive_lag_line(r: &PolicyResult, p: &PolicyResult) -> String {
    let lags: Vec<f64> = r.shifts.iter().filter_map(|s| s.2).collect();
    let missed = r.shifts.len() - lags.len();
    let lags_after = !r.shifts.is_empty() && lags.iter().all(|&l| l > 0.0);
    format!(
        "reactive lags the shift: {} (moves {} s after the shifts, {missed} shifts without a move; \
         first-tick local-hit reactive {} vs predictive {}; overall {} vs {})",
        if lags_after { "YES" } else { "NO" },
        if lags.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:+.1}..{:+.1}",
                lags.iter().copied().fold(f64::INFINITY, f64::min),
                lags.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            )
        },
        pct(r.measured.local_hit_first_tick),
        pct(p.measured.local_hit_first_tick),
        pct(r.measured.local_hit),
        pct(p.measured.local_hit)
    )
}

/// The goal (predictive) and the comparison it implies (reactive lags).
pub fn goal_lines(results: &[PolicyResult]) -> Vec<String> {
    let find = |p: &str| results.iter().find(|r| r.policy == p);
    let mut lines = Vec::new();
    match find("predictive") {
        Some(p) => {
            let x = p.measured.local_hit_first_tick;
            lines.push(format!(
                "goal: predictive local-hit >= {:.0}% within one tick of each shift: {} ({} over {} requests)",
                GOAL_LOCAL_HIT_FIRST_TICK * 100.0,
                verdict(x >= GOAL_LOCAL_HIT_FIRST_TICK),
                pct(x),
                p.measured.first_tick_requests
            ));
            if let Some(r) = find("reactive") {
                lines.push(reactive_lag_line(r, p));
            }
        }
        None => lines.push(
            "goal: predictive local-hit >= 90% within one tick of each shift: not run (--policies)"
                .into(),
        ),
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        crate::parse_flags("hotspot", args)
    }

    #[test]
    fn defaults_and_flags_parse_and_bad_values_are_refused() {
        let d = parse(&[]).expect("defaults");
        assert_eq!((d.period_s, d.cycles, d.rate, d.tick_ms), (4, 3, 400, 200));
        assert_eq!(d.policies, ["static", "reactive", "predictive"]);
        d.validate().expect("defaults are valid");
        assert_eq!(d.run_time(), Duration::from_secs(36));
        let o = parse(&["--policies", "predictive,static"]).expect("flags");
        assert_eq!(o.policies, ["predictive", "static"]);
        for args in [
            &["--policies", "clever"][..],
            &["--cycles", "1"],
            &["--period-s", "0"],
            &["--tick-ms", "4000"],
            &["--rate", "0"],
            &["--background-rate", "500"],
        ] {
            let o = parse(args).expect("parses");
            assert!(o.validate().is_err(), "{args:?} should be refused");
        }
    }

    #[test]
    fn the_hot_node_rotates_every_period() {
        let p = Duration::from_secs(4);
        let at = |ms| hot_node(Duration::from_millis(ms), p);
        assert_eq!(
            [at(0), at(3999), at(4000), at(8000), at(12000), at(16500)],
            [1, 1, 2, 3, 1, 2]
        );
    }

    fn sample(at_ms: u64, node: u64, owner: u64, ns: u64) -> HotSample {
        HotSample {
            at: Duration::from_millis(at_ms),
            node,
            owner,
            get: true,
            ns,
        }
    }

    #[test]
    fn summary_skips_warm_up_and_isolates_the_first_tick() {
        let p = Duration::from_secs(1);
        let tick = Duration::from_millis(200);
        let samples = [
            // Warm-up cycle (before 3 s): ignored even though all remote.
            sample(500, 1, 2, 9_000),
            sample(2500, 3, 1, 9_000),
            // Cycle 2: at 3.1 s (first tick of node 1's turn) remote, later local.
            sample(3100, 1, 3, 100_000),
            sample(3500, 1, 1, 10_000),
            sample(4100, 2, 2, 10_000),
            sample(4600, 2, 2, 10_000),
        ];
        let s = summarize(&samples, p, tick);
        assert_eq!(s.requests, 4);
        assert!((s.local_hit - 0.75).abs() < 1e-9, "{s:?}");
        assert_eq!(s.first_tick_requests, 2);
        assert!((s.local_hit_first_tick - 0.5).abs() < 1e-9, "{s:?}");
        assert!((s.local_get_p50_us - 10.0).abs() < 0.1, "{s:?}");
        assert!((s.remote_get_p50_us - 100.0).abs() < 0.1, "{s:?}");
        assert_eq!(s.get_n, 4);
        let empty = summarize(&[], p, tick);
        assert!(empty.local_hit.is_nan() && empty.get_p50_us.is_nan());
    }

    #[test]
    fn move_lags_are_relative_to_each_shift() {
        let p = Duration::from_secs(4);
        let changes = [
            (Duration::ZERO, 1),
            (Duration::from_millis(11_800), 1), // 0.2 s ahead of the 12 s shift to 1
            (Duration::from_millis(16_600), 2), // 0.6 s after the 16 s shift to 2
        ];
        let lags = move_lags(&changes, p, 2);
        assert_eq!(lags.len(), 3);
        assert_eq!((lags[0].0, lags[0].1), (Duration::from_secs(12), 1));
        assert!((lags[0].2.expect("moved") + 0.2).abs() < 1e-9);
        assert!((lags[1].2.expect("moved") - 0.6).abs() < 1e-9);
        assert_eq!(lags[2].1, 3);
        assert_eq!(lags[2].2, None);
    }

    #[test]
    fn goal_lines_say_met_and_not_met() {
        let result = |policy: &str, first: f64| PolicyResult {
            policy: policy.into(),
            measured: Summary {
                requests: 100,
                local_hit: first,
                first_tick_requests: 10,
                local_hit_first_tick: first,
                get_p50_us: 1.0,
                get_p99_us: 2.0,
                get_n: 90,
                local_get_p50_us: 1.0,
                remote_get_p50_us: 2.0,
            },
            shifts: Vec::new(),
            migrations: 0,
            errors: 0,
            error_texts: Vec::new(),
            sampler_errors: 0,
            owner_changes: Vec::new(),
            seconds: 1.0,
        };
        let mut reactive = result("reactive", 0.3);
        let s = Duration::from_secs(12);
        reactive.shifts = vec![(s, 1, Some(0.8)), (s, 2, None)];
        let met = goal_lines(&[reactive.clone(), result("predictive", 0.95)]);
        assert!(met[0].contains(": MET (95.0%"), "{met:?}");
        assert!(met[1].contains(": YES (moves +0.8..+0.8 s"), "{met:?}");
        assert!(met[1].contains("1 shifts without a move"), "{met:?}");
        reactive.shifts.push((s, 3, Some(-0.1)));
        let missed = goal_lines(&[result("predictive", 0.5), reactive]);
        assert!(missed[0].contains("NOT MET (50.0%"), "{missed:?}");
        assert!(missed[1].contains(": NO"), "{missed:?}");
        assert!(goal_lines(&[result("static", 0.3)])[0].contains("not run"));
    }
}
