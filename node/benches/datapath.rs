//! The CPU path of one pipelined batch on one core, without sockets: RESP parse →
//! command parse → route lookup → shard execute → stats → reply encode, as
//! `server::connection` and `core::CoreCtx::run_local` do it. It isolates what one
//! request costs in instructions (run it under `valgrind --tool=callgrind`, see
//! `docs/perf.md`) from what the kernel and the network cost.
//!
//! `cargo bench -p augur-node --bench datapath` runs it under criterion;
//! `DATAPATH_PROFILE=get|set` instead runs that batch `DATAPATH_BATCHES` times
//! (default 20 000) and exits, for callgrind.

use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use augur_node::cmd::{self, ParseContext, Plan};
use augur_node::resp::{Limits, RequestParser};
use augur_node::router::table::{RouteTable, Routes};
use augur_node::shard::{Outcome, Shard, ShardEnv};
use augur_node::store::Geometry;
use augur_node::telemetry::access::AccessRecorder;
use augur_node::telemetry::stats::CoreStats;
use bytes::BytesMut;
use criterion::{criterion_group, Criterion, Throughput};

/// Requests per batch, as `redis-benchmark -P 16`.
const PIPELINE: usize = 16;
/// Keys loaded before measuring, and the keyspace requests draw from.
const KEYS: usize = 100_000;
const VALUE: &[u8] = &[b'x'; 32];

struct Core {
    shard: Shard,
    routes: Arc<Routes>,
    access: AccessRecorder,
    parser: RequestParser,
    input: BytesMut,
    output: BytesMut,
}

fn core() -> Core {
    let routes = Arc::new(Routes::new(RouteTable::initial(1)));
    let env = ShardEnv {
        cores: 1,
        routes: routes.clone(),
        stats: Arc::from(vec![CoreStats::default()]),
        fragment_ids: Arc::new(AtomicU64::new(0)),
        geometry: Geometry::sized_for(16 << 20, 72),
        region_size: 16 << 20,
        hugepages: false,
    };
    let ranges = vec![augur_node::router::table::initial_range(0, 1)];
    let fragments = routes.snapshot().fragment_count();
    let mut core = Core {
        shard: Shard::new(0, env, ranges).expect("a shard"),
        routes,
        access: AccessRecorder::new(fragments),
        parser: RequestParser::new(),
        input: BytesMut::new(),
        output: BytesMut::new(),
    };
    for chunk in 0..KEYS / PIPELINE {
        let batch = batch("SET", chunk as u64 * 7919 + 1);
        run_batch(&mut core, &batch);
    }
    core
}

/// `PIPELINE` requests of one command on pseudo-random keys, as redis-benchmark -r.
fn batch(command: &str, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..PIPELINE {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = format!("key:{:012}", (seed >> 33) % KEYS as u64);
        match command {
            "GET" => out.extend_from_slice(
                format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes(),
            ),
            _ => {
                out.extend_from_slice(
                    format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$32\r\n", key.len()).as_bytes(),
                );
                out.extend_from_slice(VALUE);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out
}

/// What the server does with one read of `bytes`: every request parsed, planned,
/// routed, executed, counted, and every reply encoded.
fn run_batch(core: &mut Core, bytes: &[u8]) -> usize {
    core.input.extend_from_slice(bytes);
    let limits = Limits::default();
    let mut requests = Vec::new();
    while let Ok(Some(args)) = core.parser.next(&mut core.input, &limits) {
        requests.push(args);
    }
    let ctx = ParseContext {
        now_ms: 1,
        max_bulk_len: 512 << 20,
    };
    let table = core.routes.snapshot();
    for request in &requests {
        let Ok(Plan::Keys(plan)) = cmd::parse(request, &ctx) else {
            panic!("not a key command");
        };
        for req in plan.reqs {
            let (_, fragment) = table.locate(&req.key);
            core.access.record(
                fragment,
                req.op.is_write(),
                req.key.len() + req.op.payload_len(),
            );
            core.access.record_order(1, fragment);
            match core.shard.execute(&req, 1) {
                Outcome::Done(reply) => reply.encode(&mut core.output, false),
                Outcome::Forward(_) => panic!("one core forwards nothing"),
            }
        }
    }
    core.shard.publish_stats();
    let written = core.output.len();
    core.output.clear();
    written
}

fn batches(command: &str) -> Vec<Vec<u8>> {
    (0..1024u64)
        .map(|i| batch(command, i * 104729 + 3))
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut core = core();
    let mut group = c.benchmark_group("batch of 16");
    group.throughput(Throughput::Elements(PIPELINE as u64));
    for command in ["GET", "SET"] {
        let inputs = batches(command);
        let mut i = 0;
        group.bench_function(command, |b| {
            b.iter(|| {
                i = (i + 1) % inputs.len();
                black_box(run_batch(&mut core, &inputs[i]))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(command) = std::env::var("DATAPATH_PROFILE") {
        let rounds: usize = std::env::var("DATAPATH_BATCHES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20_000);
        let mut core = core();
        let inputs = batches(&command.to_ascii_uppercase());
        let mut total = 0;
        for i in 0..rounds {
            total += run_batch(&mut core, &inputs[i % inputs.len()]);
        }
        println!("{rounds} batches of {PIPELINE}, {total} reply bytes");
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
