//! Linearizability of a 3-node cluster under splits and compactions (issue #8).
//!
//! Clients on every node read and write a few keys that every node owns some of,
//! while a filler writer crowds the same key ranges so fragments split and compact
//! all through the run (`--region-size 64kb`). Every operation is recorded with its
//! interval on one monotonic clock of this process; each key's sub-history is then
//! checked as a register (`augur_bench::lincheck`). An operation that got an error
//! or no reply is recorded with an unknown outcome, never dropped.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use augur_bench::client::request;
use augur_bench::cluster::{ClusterOptions, LocalCluster};
use augur_bench::lincheck::{self, Action, Op, Verdict};
use augur_node::resp::{next_frame, Frame, Limits};
use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NODES: usize = 3;
const CLIENTS_PER_NODE: usize = 3;
const KEYS_PER_NODE: usize = 2;
/// How long clients and the filler run.
const LOAD: Duration = Duration::from_secs(8);
/// Ops per client at most, so histories stay small whatever the machine's speed.
const MAX_OPS_PER_CLIENT: usize = 2500;
/// Every request's reply must arrive within this, else its outcome is unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Filler keys per test key, on each side of it, that are overwritten (compactions);
/// the filler also writes new keys all along (splits all through the run).
const FILLER_PER_SIDE: usize = 120;

fn augur() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_augur"))
}

/// A blocking RESP connection whose every reply is awaited against a deadline, so a
/// pipeline's replies are matched to its commands exactly.
struct Conn {
    stream: TcpStream,
    input: BytesMut,
    chunk: Vec<u8>,
}

impl Conn {
    fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, OP_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(OP_TIMEOUT))?;
        Ok(Conn {
            stream,
            input: BytesMut::new(),
            chunk: vec![0; 64 << 10],
        })
    }

    fn send(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<(), String> {
        let mut out = BytesMut::new();
        for c in commands {
            let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            request(&args).encode(&mut out, false);
        }
        self.stream.write_all(&out).map_err(|e| e.to_string())
    }

    fn recv(&mut self, deadline: Instant) -> Result<Frame, String> {
        loop {
            if let Some(f) =
                next_frame(&mut self.input, &Limits::default()).map_err(|e| e.to_string())?
            {
                return Ok(f);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out".into());
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let n = self
                .stream
                .read(&mut self.chunk)
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.input.extend_from_slice(&self.chunk[..n]);
        }
    }

    fn command(&mut self, args: &[&[u8]]) -> Result<Frame, String> {
        self.send(&[args.iter().map(|a| a.to_vec()).collect()])?;
        self.recv(Instant::now() + OP_TIMEOUT)
    }
}

fn text(f: &Frame) -> String {
    match f {
        Frame::Simple(b) | Frame::Bulk(b) | Frame::Verbatim(b) | Frame::Error(b) => {
            String::from_utf8_lossy(b).into_owned()
        }
        other => format!("{other:?}"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Get,
    Set,
    /// One key's read within an MGET.
    MgetRead,
    PipelinedSet,
    PipelinedGet,
}

/// One register operation as a client saw it.
struct Record {
    key: usize,
    kind: Kind,
    op: Op<Vec<u8>>,
}

/// What a command of a request is, to read its reply.
enum Expect {
    Set { key: usize, value: Vec<u8> },
    Get { key: usize },
    Mget { keys: Vec<usize> },
}

/// A value that says who wrote it, padded so fragments fill up; lengths straddle
/// the remote reader's 512-byte first READ.
fn value(client: usize, seq: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut v = format!("c{client}-{seq}|").into_bytes();
    let len = rng.gen_range(64..1400);
    let fill = b'a' + (seq % 26) as u8;
    v.resize(len.max(v.len()), fill);
    v
}

fn tag(v: &[u8]) -> String {
    let head = v.split(|&b| b == b'|').next().unwrap_or(v);
    format!("{} ({} bytes)", String::from_utf8_lossy(head), v.len())
}

#[derive(Default)]
struct ClientStats {
    errors: Vec<String>,
    reconnects: u64,
}

/// One client: its own connection to `addr`, random GET / SET / MGET / pipelines
/// on `keys` until `until`.
fn run_client(
    client: usize,
    addr: SocketAddr,
    keys: &[Vec<u8>],
    t0: Instant,
    until: Instant,
    records: &mut Vec<Record>,
    stats: &mut ClientStats,
) {
    let mut rng = StdRng::seed_from_u64(0x11ec + client as u64);
    let now = || t0.elapsed().as_nanos() as u64;
    let mut conn: Option<Conn> = None;
    let mut seq = 0;
    let mut ops = 0;
    while Instant::now() < until && ops < MAX_OPS_PER_CLIENT {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(addr) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    stats.errors.push(format!("connect: {e}"));
                    // Bounded retry pace for a node that refuses connections.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let mut expect = Vec::new();
        let mut commands: Vec<Vec<Vec<u8>>> = Vec::new();
        let roll = rng.gen_range(0..100);
        let pipelined = roll >= 80;
        let count = if pipelined { rng.gen_range(2..=4) } else { 1 };
        for _ in 0..count {
            let kind = if pipelined {
                rng.gen_range(0..65)
            } else {
                roll
            };
            if kind < 35 {
                let key = rng.gen_range(0..keys.len());
                commands.push(vec![b"GET".to_vec(), keys[key].clone()]);
                expect.push(Expect::Get { key });
            } else if kind < 65 {
                let key = rng.gen_range(0..keys.len());
                seq += 1;
                let v = value(client, seq, &mut rng);
                commands.push(vec![b"SET".to_vec(), keys[key].clone(), v.clone()]);
                expect.push(Expect::Set { key, value: v });
            } else {
                let n = rng.gen_range(2..=keys.len().min(4));
                let mut picked: Vec<usize> = (0..keys.len()).collect();
                for i in 0..n {
                    let j = rng.gen_range(i..picked.len());
                    picked.swap(i, j);
                }
                picked.truncate(n);
                let mut cmd = vec![b"MGET".to_vec()];
                cmd.extend(picked.iter().map(|&k| keys[k].clone()));
                commands.push(cmd);
                expect.push(Expect::Mget { keys: picked });
            }
        }
        ops += expect.len();

        let invoked = now();
        let deadline = Instant::now() + OP_TIMEOUT;
        let mut replies: Vec<Frame> = Vec::new();
        let mut broken = c.send(&commands).err();
        while broken.is_none() && replies.len() < expect.len() {
            match c.recv(deadline) {
                Ok(f) => replies.push(f),
                Err(e) => broken = Some(e),
            }
        }
        let completed = now();
        if let Some(e) = broken {
            // The connection's state is unknown (a late reply could be taken for the
            // next request's): start a new one.
            stats.errors.push(e);
            stats.reconnects += 1;
            conn = None;
        }
        for (i, exp) in expect.into_iter().enumerate() {
            let reply = replies.get(i);
            let mut record = |key: usize, kind: Kind, action: Action<Vec<u8>>, known: bool| {
                records.push(Record {
                    key,
                    kind,
                    op: Op {
                        client,
                        action,
                        invoked,
                        completed: known.then_some(completed),
                    },
                })
            };
            let (set_kind, get_kind) = if pipelined {
                (Kind::PipelinedSet, Kind::PipelinedGet)
            } else {
                (Kind::Set, Kind::Get)
            };
            match exp {
                Expect::Set { key, value } => {
                    let ok = matches!(reply, Some(Frame::Simple(s)) if &s[..] == b"OK");
                    if !ok {
                        if let Some(r) = reply {
                            stats.errors.push(format!("SET: {}", text(r)));
                        }
                    }
                    record(key, set_kind, Action::Write(value), ok);
                }
                Expect::Get { key } => match reply {
                    Some(Frame::Bulk(b)) => {
                        record(key, get_kind, Action::Read(Some(b.to_vec())), true)
                    }
                    Some(Frame::Null) => record(key, get_kind, Action::Read(None), true),
                    other => {
                        if let Some(r) = other {
                            stats.errors.push(format!("GET: {}", text(r)));
                        }
                        record(key, get_kind, Action::Read(None), false)
                    }
                },
                Expect::Mget { keys: ks } => match reply {
                    Some(Frame::Array(items)) if items.len() == ks.len() => {
                        for (&key, item) in ks.iter().zip(items) {
                            match item {
                                Frame::Bulk(b) => record(
                                    key,
                                    Kind::MgetRead,
                                    Action::Read(Some(b.to_vec())),
                                    true,
                                ),
                                Frame::Null => {
                                    record(key, Kind::MgetRead, Action::Read(None), true)
                                }
                                other => {
                                    stats.errors.push(format!("MGET item: {}", text(other)));
                                    record(key, Kind::MgetRead, Action::Read(None), false)
                                }
                            }
                        }
                    }
                    other => {
                        if let Some(r) = other {
                            stats.errors.push(format!("MGET: {}", text(r)));
                        }
                        for key in ks {
                            record(key, Kind::MgetRead, Action::Read(None), false);
                        }
                    }
                },
            }
        }
    }
}

/// Writes the test keys' neighbours over and over, through every node, so the
/// fragments holding the test keys fill up, split and compact during the run.
fn run_filler(addrs: &[SocketAddr], keys: &[Vec<u8>], until: Instant, written: &AtomicU64) {
    let mut rng = StdRng::seed_from_u64(0xf111);
    let mut conns: Vec<Option<Conn>> = addrs.iter().map(|_| None).collect();
    let mut turn = 0;
    let mut fresh = 0;
    while Instant::now() < until {
        turn += 1;
        let i = turn % addrs.len();
        let c = match conns[i].as_mut() {
            Some(c) => c,
            None => match Conn::connect(addrs[i]) {
                Ok(c) => conns[i].insert(c),
                Err(_) => continue,
            },
        };
        let commands: Vec<Vec<Vec<u8>>> = (0..16)
            .map(|_| {
                let near = &keys[rng.gen_range(0..keys.len())];
                let side = if rng.gen_bool(0.5) { "a" } else { "z" };
                let mut k = near.clone();
                let n = if rng.gen_bool(0.15) {
                    fresh += 1;
                    FILLER_PER_SIDE + fresh
                } else {
                    rng.gen_range(0..FILLER_PER_SIDE)
                };
                k.extend_from_slice(format!(":{side}{n:06}").as_bytes());
                // `near` itself sorts before its ":a…" and ":z…" neighbours; put the
                // "a" side before it by dropping the last byte of the key's stem.
                if side == "a" {
                    k.remove(near.len() - 1);
                }
                let v = vec![b'f'; rng.gen_range(300..1200)];
                vec![b"SET".to_vec(), k, v]
            })
            .collect();
        let deadline = Instant::now() + OP_TIMEOUT;
        let ok = c.send(&commands).is_ok() && (0..commands.len()).all(|_| c.recv(deadline).is_ok());
        if ok {
            written.fetch_add(commands.len() as u64, Ordering::Relaxed);
        } else {
            conns[i] = None;
        }
    }
}

fn info_field(conn: &mut Conn, section: &str, field: &str) -> u64 {
    let reply = conn.command(&[b"INFO", section.as_bytes()]).expect("INFO");
    let info = text(&reply);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}: {info}"))
}

#[derive(Clone, Copy, Default, Debug)]
struct NodeCounters {
    splits: u64,
    compactions: u64,
    remote_reads: u64,
    remote_read_retries: u64,
}

fn counters(conn: &mut Conn) -> NodeCounters {
    NodeCounters {
        splits: info_field(conn, "augur", "splits"),
        compactions: info_field(conn, "augur", "compactions"),
        remote_reads: info_field(conn, "cluster", "remote_reads"),
        remote_read_retries: info_field(conn, "cluster", "remote_read_retries"),
    }
}

/// Keys `<c>lin` for printable first bytes `c`, taken until every node owns
/// `KEYS_PER_NODE` of them (the table spreads key ranges by their first bytes).
fn pick_keys(conn: &mut Conn) -> Vec<Vec<u8>> {
    let mut per_node: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    for c in (b'0'..=b'z').step_by(3) {
        let key = vec![c, b'l', b'i', b'n'];
        let reply = conn.command(&[b"AUGUR", b"WHERE", &key]).expect("WHERE");
        let place = text(&reply);
        let node: u32 = place
            .strip_prefix("node ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("AUGUR WHERE answered {place:?}"));
        let mine = per_node.entry(node).or_default();
        if mine.len() < KEYS_PER_NODE {
            mine.push(key);
        }
    }
    assert_eq!(
        per_node.len(),
        NODES,
        "owners of the candidates: {per_node:?}"
    );
    assert!(
        per_node.values().all(|k| k.len() == KEYS_PER_NODE),
        "{per_node:?}"
    );
    per_node.into_values().flatten().collect()
}

#[test]
fn reads_and_writes_on_every_node_are_linearizable_through_splits() {
    let started = Instant::now();
    let log_dir = std::env::temp_dir().join(format!("augur-test-lincheck-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let mut cluster = LocalCluster::start(
        augur(),
        ClusterOptions {
            nodes: NODES as u32,
            base_port: 0,
            cores: 1,
            log_dir: log_dir.clone(),
            ready_timeout: Duration::from_secs(60),
            extra_args: vec!["--region-size".into(), "64kb".into()],
            ..Default::default()
        },
        |_| {},
    )
    .expect("cluster starts");
    let addrs: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.addr).collect();
    let mut admin: Vec<Conn> = addrs
        .iter()
        .map(|&a| Conn::connect(a).expect("admin connection"))
        .collect();
    let keys = pick_keys(&mut admin[0]);
    let before: Vec<NodeCounters> = admin.iter_mut().map(counters).collect();
    let up = started.elapsed();

    // One clock for every record: Instant in this process.
    let t0 = Instant::now();
    let until = t0 + LOAD;
    let filled = AtomicU64::new(0);
    let halfway: Mutex<Vec<NodeCounters>> = Mutex::new(Vec::new());
    let results: Mutex<Vec<(Vec<Record>, ClientStats)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| run_filler(&addrs, &keys, until, &filled));
        for client in 0..NODES * CLIENTS_PER_NODE {
            let addr = addrs[client % NODES];
            let (keys, results) = (&keys, &results);
            s.spawn(move || {
                let mut records = Vec::new();
                let mut stats = ClientStats::default();
                run_client(client, addr, keys, t0, until, &mut records, &mut stats);
                results.lock().expect("results").push((records, stats));
            });
        }
        // Half-way through, to show splits and compactions go on under the clients
        // rather than only while the filler first fills the ranges.
        while Instant::now() < t0 + LOAD / 2 {
            std::thread::sleep(Duration::from_millis(20));
        }
        *halfway.lock().expect("halfway") = admin.iter_mut().map(counters).collect();
    });
    let load = t0.elapsed();
    let halfway = halfway.into_inner().expect("halfway");
    let after: Vec<NodeCounters> = admin.iter_mut().map(counters).collect();

    let mut per_key: Vec<Vec<Op<Vec<u8>>>> = vec![Vec::new(); keys.len()];
    let mut kinds: BTreeMap<Kind, (u64, u64)> = BTreeMap::new(); // (known, unknown)
    let mut errors: Vec<String> = Vec::new();
    let mut reconnects = 0;
    let mut absent_reads = 0;
    for (records, stats) in results.into_inner().expect("results") {
        for r in records {
            if r.op.completed.is_some() && r.op.action == Action::Read(None) {
                absent_reads += 1;
            }
            let e = kinds.entry(r.kind).or_default();
            if r.op.completed.is_some() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
            per_key[r.key].push(r.op);
        }
        errors.extend(stats.errors);
        reconnects += stats.reconnects;
    }

    let checking = Instant::now();
    let mut violations = Vec::new();
    for (k, ops) in per_key.iter().enumerate() {
        match lincheck::check(ops, lincheck::DEFAULT_BUDGET) {
            Verdict::Linearizable => {}
            Verdict::Undecided { steps } => panic!(
                "key {:?}: undecided after {steps} steps ({} ops)",
                String::from_utf8_lossy(&keys[k]),
                ops.len()
            ),
            Verdict::Violation => {
                let dump = log_dir.join(format!("history-key{k}.txt"));
                let all: Vec<usize> = (0..ops.len()).collect();
                let _ = std::fs::write(&dump, lincheck::describe(ops, &all, |v| tag(v)));
                let small = lincheck::minimal_violation(ops, lincheck::DEFAULT_BUDGET, LOAD * 3)
                    .unwrap_or(all);
                let t_first = small.iter().map(|&i| ops[i].invoked).min().unwrap_or(0);
                eprintln!(
                    "VIOLATION on key {:?} ({} ops; whole history in {}); minimal sub-history, \
                     starting {:.3} ms into the run:\n{}",
                    String::from_utf8_lossy(&keys[k]),
                    ops.len(),
                    dump.display(),
                    t_first as f64 / 1e6,
                    lincheck::describe(ops, &small, |v| tag(v))
                );
                violations.push(k);
            }
        }
    }
    let checked_in = checking.elapsed();

    let delta = |f: fn(&NodeCounters) -> u64| -> Vec<u64> {
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| f(a) - f(b))
            .collect()
    };
    let late = |f: fn(&NodeCounters) -> u64| -> Vec<u64> {
        halfway
            .iter()
            .zip(&after)
            .map(|(h, a)| f(a) - f(h))
            .collect()
    };
    let late_splits = late(|c| c.splits);
    let late_compactions = late(|c| c.compactions);
    let splits = delta(|c| c.splits);
    let compactions = delta(|c| c.compactions);
    let remote_reads: u64 = delta(|c| c.remote_reads).iter().sum();
    let remote_retries: u64 = delta(|c| c.remote_read_retries).iter().sum();
    let kinds_line: Vec<String> = kinds
        .iter()
        .map(|(k, (ok, unknown))| format!("{k:?}={ok}+{unknown}?"))
        .collect();
    let ops_total: u64 = kinds.values().map(|(a, b)| a + b).sum();
    let unknown_total: u64 = kinds.values().map(|(_, b)| b).sum();
    println!(
        "linearizability: ops {} (known+unknown) = {ops_total}, keys {} (ops per key {:?}), \
         reads of an absent key {absent_reads}, \
         splits {splits:?} ({late_splits:?} in the second half), \
         compactions {compactions:?} ({late_compactions:?}) per node, remote reads {remote_reads} \
         (retries {remote_retries}), filler writes {}, errors {} (reconnects {reconnects}), \
         violations {}; start {up:.1?}, load {load:.1?}, check {checked_in:.1?}",
        kinds_line.join(" "),
        keys.len(),
        per_key.iter().map(Vec::len).collect::<Vec<_>>(),
        filled.load(Ordering::Relaxed),
        errors.len(),
        violations.len(),
    );
    if !errors.is_empty() {
        println!(
            "first errors: {:?}",
            errors.iter().take(5).collect::<Vec<_>>()
        );
    }
    cluster.stop();

    assert!(violations.is_empty(), "violations on keys {violations:?}");
    // Every node replaced regions while serving, and the cluster did both kinds. Which
    // kind a node does is the rebuild policy's choice (decision 0015: split when the
    // live data outgrows a quarter of a fresh region, else compact), so one node may
    // only split.
    assert!(
        splits.iter().sum::<u64>() > 0 && compactions.iter().sum::<u64>() > 0,
        "splits {splits:?} and compactions {compactions:?} per node: nothing was proved"
    );
    for n in 0..NODES {
        assert!(
            splits[n] + compactions[n] > 0,
            "node {} had {} splits and {} compactions during the run: nothing was proved",
            n + 1,
            splits[n],
            compactions[n]
        );
        assert!(
            late_splits[n] + late_compactions[n] > 0,
            "node {} replaced no region in the run's second half",
            n + 1
        );
    }
    assert!(remote_reads > 0, "no one-sided remote reads happened");
    // Only the clients read, and only the test keys: a reader that met a replaced
    // region (counted as a retry) proves the test keys' own fragments were split or
    // compacted under remote readers, not just some fragment of the node.
    assert!(
        remote_retries > 0,
        "no remote reader met a replaced region of a test key"
    );
    for (kind, (ok, _)) in &kinds {
        assert!(*ok >= 50, "only {ok} completed {kind:?} ops");
    }
    assert!(
        unknown_total * 20 <= ops_total,
        "{unknown_total} of {ops_total} ops have an unknown outcome: {:?}",
        errors.iter().take(5).collect::<Vec<_>>()
    );
    // Node logs and history dumps stay only when something failed.
    let _ = std::fs::remove_dir_all(&log_dir);
}
