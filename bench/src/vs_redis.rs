//! `augur bench vs-redis`: augur against `redis-server` on the same machine, in the
//! same run, under the same `redis-benchmark` invocations, plus bytes per key.
//!
//! Numbers from another day or another machine are not comparable, so both
//! servers are measured here, interleaved: for each repetition, for each server
//! (redis, then augur at each `--augur-cores`), a fresh server is started, every
//! `-P` is run against it, and it is stopped. That spreads the drift of a noisy
//! shared machine over all servers instead of letting it land on one of them.
//! The table reports medians with the min–max spread over the repetitions, and
//! every ratio is against the redis median of the same test and `-P`.

use std::collections::BTreeMap;
use std::fs::File;

use augur_node::resp::Frame;
use bytes::BytesMut;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};

use crate::client::{ping, request, text, Resp};
use clap::Args;

/// How long a freshly started server has to answer PING.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Socket read/write timeout for our own RESP connections, so a wedged server
/// fails the run instead of hanging it.
/// SETs written per batch while loading keys for the memory measurement.
const LOAD_BATCH: usize = 1000;
/// The tests run by redis-benchmark (`-t`), as named in its CSV output.
const TESTS: [&str; 2] = ["SET", "GET"];

/// Flags of `augur bench vs-redis`; the defaults are the runs the issue asks for.
#[derive(Args, Debug, Clone)]
pub struct Options {
    /// augur binary to benchmark; defaults to the running executable.
    #[arg(long)]
    pub augur: Option<PathBuf>,
    /// Requests per redis-benchmark test (-n).
    #[arg(long, default_value_t = 1_000_000)]
    pub requests: u64,
    /// Random keyspace of redis-benchmark (-r).
    #[arg(long, default_value_t = 1_000_000)]
    pub keyspace: u64,
    /// Parallel clients of redis-benchmark (-c).
    #[arg(long, default_value_t = 50)]
    pub clients: u32,
    /// Value size in bytes of redis-benchmark (-d).
    #[arg(long, default_value_t = 32)]
    pub data_size: u32,
    /// Pipeline depths to run (-P), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub pipelines: Vec<u32>,
    /// Repetitions of every (server, -P) run.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// augur `--cores` values to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub augur_cores: Vec<usize>,
    /// Keys loaded for the bytes-per-key measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub memory_keys: u64,
    /// Skip the bytes-per-key measurement.
    #[arg(long)]
    pub skip_memory: bool,
    /// redis-server binary.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// redis-benchmark binary.
    #[arg(long, default_value = "redis-benchmark")]
    pub redis_benchmark: PathBuf,
}

/// Runs the throughput comparison and then the memory comparison; the table
/// goes to stdout, progress to stderr.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    ensure!(opts.reps >= 1, "--reps must be at least 1");
    ensure!(!opts.pipelines.is_empty(), "--pipelines is empty");
    ensure!(
        opts.pipelines.iter().all(|&p| p >= 1),
        "--pipelines values must be at least 1"
    );
    ensure!(
        opts.augur_cores.iter().all(|&c| c >= 1),
        "--augur-cores values must be at least 1"
    );
    ensure!(
        opts.memory_keys >= 1 && opts.memory_keys < 1_000_000_000_000,
        "--memory-keys must be in 1..10^12 (keys are key:%012d)"
    );
    let augur = match &opts.augur {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("finding the augur binary (current_exe)")?,
    };
    let redis_version = tool_version(&opts.redis_server)?;
    let benchmark_version = tool_version(&opts.redis_benchmark)?;

    let mut servers = vec![ServerKind::Redis];
    servers.extend(opts.augur_cores.iter().map(|&c| ServerKind::Augur(c)));

    let mut samples: Vec<Sample> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let started = Instant::now();
    for rep in 1..=opts.reps {
        for kind in &servers {
            let server = Server::start(kind, opts, &augur)?;
            for &pipeline in &opts.pipelines {
                let rows = run_benchmark(opts, server.port, pipeline)
                    .with_context(|| format!("redis-benchmark -P {pipeline} against {kind}"))?;
                let line: Vec<String> = rows
                    .iter()
                    .map(|r| format!("{} {:.0} rps p50 {} p99 {}", r.test, r.rps, r.p50, r.p99))
                    .collect();
                eprintln!(
                    "[{:>6.1}s] rep {rep}/{} {kind:<9} -P {pipeline:<3} {}",
                    started.elapsed().as_secs_f64(),
                    opts.reps,
                    line.join(" | ")
                );
                for r in rows {
                    samples.push(Sample {
                        test: r.test,
                        pipeline,
                        server: kind.to_string(),
                        rps: r.rps,
                        p50: r.p50,
                        p99: r.p99,
                    });
                }
            }
            notes.extend(server.stop()?);
        }
    }

    println!();
    println!("augur vs redis, same machine, same run");
    println!("  redis-server:    {redis_version}");
    println!("  redis-benchmark: {benchmark_version}");
    println!("  augur:           {}", augur.display());
    println!(
        "  command:         {} -h 127.0.0.1 -p <port> -t set,get -n {} -r {} -c {} -d {} -P <{}> --csv",
        opts.redis_benchmark.display(),
        opts.requests,
        opts.keyspace,
        opts.clients,
        opts.data_size,
        join(&opts.pipelines, "|"),
    );
    println!(
        "  servers:         redis-server --save '' --appendonly no; augur node --cores <{}>",
        join(&opts.augur_cores, "|")
    );
    println!(
        "  repetitions:     {} per (server, -P), a fresh server per repetition; cpus: {}",
        opts.reps,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    print_table(&samples, &servers, &opts.pipelines)?;

    if !opts.skip_memory {
        println!();
        let redis = measure_memory(&ServerKind::Redis, opts, &augur)?;
        let augur_mem = measure_memory(&ServerKind::Augur(1), opts, &augur)?;
        println!(
            "memory: {} keys of 16 bytes with 32-byte values, used_memory after - before",
            opts.memory_keys
        );
        for (kind, m) in [("redis", &redis), ("augur c1", &augur_mem)] {
            println!(
                "  {kind:<9} before {:>12}  after {:>12}  bytes/key {:>8.1}",
                m.before,
                m.after,
                m.bytes_per_key()
            );
        }
        println!(
            "  ratio augur/redis bytes/key: {:.3} (goal <= 0.7)",
            augur_mem.bytes_per_key() / redis.bytes_per_key()
        );
    }

    if !notes.is_empty() {
        println!();
        println!("notes (warnings/errors from augur's log):");
        for n in &notes {
            println!("  {n}");
        }
    }
    Ok(())
}

fn join<T: std::fmt::Display>(v: &[T], sep: &str) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(sep)
}

/// First line of `<tool> --version`; also proves the tool is installed.
fn tool_version(tool: &Path) -> anyhow::Result<String> {
    let out = Command::new(tool)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version (is it installed?)", tool.display()))?;
    ensure!(
        out.status.success(),
        "{} --version failed: {}",
        tool.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string())
}

#[derive(Debug, Clone, PartialEq)]
enum ServerKind {
    Redis,
    Augur(usize),
}

impl std::fmt::Display for ServerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad` so that width/alignment in format strings apply.
        match self {
            ServerKind::Redis => f.pad("redis"),
            ServerKind::Augur(c) => f.pad(&format!("augur c{c}")),
        }
    }
}

/// A server child process we started. Dropping it kills and reaps the child, so
/// an error anywhere in the run never leaves a server behind.
struct Server {
    kind: ServerKind,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts a fresh server on a free loopback port and waits until it answers PING.
    fn start(kind: &ServerKind, opts: &Options, augur: &Path) -> anyhow::Result<Server> {
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!(
            "augur-vs-redis-{}-{}-{port}.log",
            std::process::id(),
            kind.to_string().replace(' ', "-")
        ));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        let port_s = port.to_string();
        let mut cmd = match kind {
            ServerKind::Redis => {
                let mut c = Command::new(&opts.redis_server);
                c.args(["--port", &port_s, "--bind", "127.0.0.1"]).args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]);
                c
            }
            ServerKind::Augur(cores) => {
                let mut c = Command::new(augur);
                c.args(["node", "--port", &port_s, "--bind", "127.0.0.1"])
                    .args(["--cores", &cores.to_string(), "--admin-port", "0"]);
                c
            }
        };
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {program} for {kind}"))?;
        let mut server = Server {
            kind: kind.clone(),
            child,
            port,
            log,
        };
        server.wait_ready()?;
        if *kind == ServerKind::Redis {
            server.check_redis_persistence_off()?;
        }
        eprintln!("started {kind} on port {port} (pid {})", server.child.id());
        Ok(server)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(status) = self.child.try_wait().context("polling the server")? {
                bail!(
                    "{} exited during startup ({status}); log {}:\n{}",
                    self.kind,
                    self.log.display(),
                    log_tail(&self.log, 20)
                );
            }
            if ping(addr).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer PING on port {} within {:?}; log {}:\n{}",
                    self.kind,
                    self.port,
                    STARTUP_TIMEOUT,
                    self.log.display(),
                    log_tail(&self.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `--save ''` is easy to lose in quoting; make sure redis really does no
    /// persistence work during the runs.
    fn check_redis_persistence_off(&self) -> anyhow::Result<()> {
        let mut c = Resp::connect(self.port)?;
        for (key, want) in [("save", ""), ("appendonly", "no")] {
            let reply = c.command(&[b"CONFIG", b"GET", key.as_bytes()])?;
            let got = match &reply {
                Frame::Array(items) if items.len() == 2 => text(&items[1]),
                _ => None,
            };
            ensure!(
                got.as_deref() == Some(want),
                "redis-server {key} is {reply:?}, wanted '{want}'"
            );
        }
        Ok(())
    }

    /// Stops the server; returns warning/error lines from augur's log for the report.
    fn stop(mut self) -> anyhow::Result<Vec<String>> {
        self.child.kill().context("killing the server")?;
        self.child.wait().context("reaping the server")?;
        let mut notes = Vec::new();
        if matches!(self.kind, ServerKind::Augur(_)) {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let bad: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains(" WARN ") || l.contains("panicked"))
                .collect();
            for l in bad.iter().take(5) {
                eprintln!("  {} log: {l}", self.kind);
                notes.push(format!("{}: {l}", self.kind));
            }
            if bad.len() > 5 {
                notes.push(format!("{}: ... {} more lines", self.kind, bad.len() - 5));
            }
        }
        let _ = std::fs::remove_file(&self.log);
        Ok(notes)
    }
}

/// A loopback port that was free a moment ago (bound, read, released), so we
/// never collide with a redis already on 6379.
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("picking a free port")?;
    Ok(l.local_addr().context("reading the picked port")?.port())
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One test line of redis-benchmark's CSV.
#[derive(Debug)]
struct BenchRow {
    test: String,
    rps: f64,
    p50: f64,
    p99: f64,
}

/// One (rep, server, -P, test) measurement.
struct Sample {
    test: String,
    pipeline: u32,
    server: String,
    rps: f64,
    p50: f64,
    p99: f64,
}

fn run_benchmark(opts: &Options, port: u16, pipeline: u32) -> anyhow::Result<Vec<BenchRow>> {
    let out = Command::new(&opts.redis_benchmark)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "set,get"])
        .args(["-n", &opts.requests.to_string()])
        .args(["-r", &opts.keyspace.to_string()])
        .args(["-c", &opts.clients.to_string()])
        .args(["-d", &opts.data_size.to_string()])
        .args(["-P", &pipeline.to_string(), "--csv"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", opts.redis_benchmark.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "redis-benchmark failed ({}): {}",
        out.status,
        stderr.trim()
    );
    if !stderr.trim().is_empty() {
        eprintln!("  redis-benchmark stderr: {}", stderr.trim());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows = parse_csv(&stdout)?;
    for t in TESTS {
        ensure!(
            rows.iter().any(|r| r.test == t),
            "redis-benchmark printed no {t} line:\n{stdout}"
        );
    }
    Ok(rows)
}

/// Parses redis-benchmark `--csv` output, finding columns by the header's names
/// rather than by position.
fn parse_csv(text: &str) -> anyhow::Result<Vec<BenchRow>> {
    let split = |line: &str| -> Vec<String> {
        line.split(',')
            .map(|f| f.trim().trim_matches('"').to_string())
            .collect()
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let header = lines
        .next()
        .ok_or_else(|| anyhow!("redis-benchmark printed nothing on stdout"))?;
    let cols = split(header);
    let col = |name: &str| {
        cols.iter().position(|c| c == name).ok_or_else(|| {
            anyhow!("redis-benchmark CSV header has no '{name}' column (redis-benchmark 7.0+ needed): {header}")
        })
    };
    let (i_test, i_rps, i_p50, i_p99) = (
        col("test")?,
        col("rps")?,
        col("p50_latency_ms")?,
        col("p99_latency_ms")?,
    );
    let mut rows = Vec::new();
    for line in lines {
        let f = split(line);
        let get = |i: usize| {
            f.get(i)
                .ok_or_else(|| anyhow!("short CSV line from redis-benchmark: {line}"))
        };
        let num = |i: usize| -> anyhow::Result<f64> {
            let s = get(i)?;
            s.parse()
                .with_context(|| format!("bad number '{s}' in CSV line: {line}"))
        };
        rows.push(BenchRow {
            test: get(i_test)?.clone(),
            rps: num(i_rps)?,
            p50: num(i_p50)?,
            p99: num(i_p99)?,
        });
    }
    Ok(rows)
}

/// Median of the repetitions (mean of the middle two for an even count).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn print_table(
    samples: &[Sample],
    servers: &[ServerKind],
    pipelines: &[u32],
) -> anyhow::Result<()> {
    // (test, -P, server) -> samples of all repetitions
    let mut groups: BTreeMap<(String, u32, String), Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        groups
            .entry((s.test.clone(), s.pipeline, s.server.clone()))
            .or_default()
            .push(s);
    }
    println!(
        "{:<4} {:>3}  {:<9} {:>10} {:>23}  {:>8} {:>8}  {:>6}  {:>4}",
        "test",
        "-P",
        "server",
        "rps median",
        "[min–max over reps]",
        "p50 ms",
        "p99 ms",
        "ratio",
        "reps"
    );
    for test in TESTS {
        for &p in pipelines {
            let redis_key = (test.to_string(), p, ServerKind::Redis.to_string());
            let redis_rps = groups
                .get(&redis_key)
                .map(|g| median(&g.iter().map(|s| s.rps).collect::<Vec<_>>()))
                .ok_or_else(|| anyhow!("no redis samples for {test} -P {p}"))?;
            for kind in servers {
                let key = (test.to_string(), p, kind.to_string());
                let g = groups
                    .get(&key)
                    .ok_or_else(|| anyhow!("no samples for {test} -P {p} {kind}"))?;
                let rps: Vec<f64> = g.iter().map(|s| s.rps).collect();
                let min = rps.iter().copied().fold(f64::INFINITY, f64::min);
                let max = rps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let med = median(&rps);
                let p50 = median(&g.iter().map(|s| s.p50).collect::<Vec<_>>());
                let p99 = median(&g.iter().map(|s| s.p99).collect::<Vec<_>>());
                println!(
                    "{:<4} {:>3}  {:<9} {:>10.0} {:>23}  {:>8.3} {:>8.3}  {:>6.2}  {:>4}",
                    test,
                    p,
                    kind.to_string(),
                    med,
                    format!("[{min:.0}–{max:.0}]"),
                    p50,
                    p99,
                    med / redis_rps,
                    rps.len()
                );
            }
        }
    }
    Ok(())
}

/// used_memory before and after loading the keys.
struct Memory {
    keys: u64,
    before: u64,
    after: u64,
}

impl Memory {
    fn bytes_per_key(&self) -> f64 {
        (self.after as f64 - self.before as f64) / self.keys as f64
    }
}

/// Loads `--memory-keys` keys `key:%012d` (16 bytes) with 32-byte values into a
/// fresh server and reads `used_memory` from INFO before and after.
fn measure_memory(kind: &ServerKind, opts: &Options, augur: &Path) -> anyhow::Result<Memory> {
    let server = Server::start(kind, opts, augur)?;
    let mut c = Resp::connect(server.port)?;
    let before = used_memory(&mut c).with_context(|| format!("INFO memory from {kind}"))?;
    let n = opts.memory_keys;
    let t = Instant::now();
    let mut buf = BytesMut::with_capacity(LOAD_BATCH * 80);
    let mut i = 0u64;
    while i < n {
        let batch = (n - i).min(LOAD_BATCH as u64);
        buf.clear();
        for j in i..i + batch {
            let key = format!("key:{j:012}");
            let value = format!("val:{j:028}");
            debug_assert_eq!((key.len(), value.len()), (16, 32));
            request(&[b"SET", key.as_bytes(), value.as_bytes()]).encode(&mut buf, false);
        }
        c.send_raw(&buf)
            .with_context(|| format!("writing SETs to {kind}"))?;
        for j in i..i + batch {
            match c.read_reply()? {
                Frame::Simple(s) if &s[..] == b"OK" => {}
                Frame::Error(e) => bail!(
                    "{kind}: SET key:{j:012} got error: {}",
                    String::from_utf8_lossy(&e)
                ),
                other => bail!("{kind}: SET key:{j:012} got {other:?}"),
            }
        }
        i += batch;
    }
    let dbsize = match c.command(&[b"DBSIZE"])? {
        Frame::Integer(v) => v,
        other => bail!("{kind}: DBSIZE got {other:?}"),
    };
    ensure!(
        u64::try_from(dbsize).ok() == Some(n),
        "{kind}: DBSIZE is {dbsize} after loading {n} distinct keys"
    );
    let after = used_memory(&mut c).with_context(|| format!("INFO memory from {kind}"))?;
    eprintln!(
        "memory {kind}: loaded {n} keys in {:.1}s, used_memory {before} -> {after}",
        t.elapsed().as_secs_f64()
    );
    drop(c);
    server.stop()?;
    Ok(Memory {
        keys: n,
        before,
        after,
    })
}

fn used_memory(c: &mut Resp) -> anyhow::Result<u64> {
    let reply = c.command(&[b"INFO", b"memory"])?;
    let info = match text(&reply) {
        Some(t) => t,
        None => bail!("INFO memory got {reply:?}"),
    };
    let line = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("used_memory:"))
        .ok_or_else(|| anyhow!("no used_memory: line in INFO memory:\n{info}"))?;
    line.trim()
        .parse()
        .with_context(|| format!("bad used_memory value '{line}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_benchmark_csv() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"SET\",\"215053.77\",\"3.065\",\"0.248\",\"2.071\",\"8.983\",\"11.519\",\"11.783\"\n\"GET\",\"194174.75\",\"3.580\",\"0.360\",\"3.807\",\"7.671\",\"12.519\",\"12.711\"\n";
        let rows = parse_csv(text).expect("parses");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].test, "SET");
        assert_eq!(rows[0].rps, 215053.77);
        assert_eq!(rows[1].p50, 3.807);
        assert_eq!(rows[1].p99, 12.519);
    }

    #[test]
    fn csv_without_header_is_an_error() {
        assert!(parse_csv("\"SET\",\"1\"\n").is_err());
        assert!(parse_csv("").is_err());
    }

    #[test]
    fn median_of_reps() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
