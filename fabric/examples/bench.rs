//! Fabric benchmark: one-sided READ/WRITE bandwidth and latency (p50/p99) of the verbs and
//! TCP backends, and a plain TCP loopback copy as the TCP baseline, all measured by this
//! program in the same run. `ci/bench-fabric` runs it beside perftest in one SoftRoCE VM.
//!
//! ```text
//! bench [tcp] [verbs] [plain]      backends to measure (default: all that can run)
//!   --sizes 64,4096,65536,1048576,4194304
//!   --bytes N        bytes per bandwidth point (iterations = N / size, clamped to 100..20000,
//!                    as ci/bench-fabric runs perftest; default 64 MiB)
//!   --dev-a rxe0 --dev-b rxe1      verbs devices (reader, owner)
//!   --repeat R       R rounds, interleaving the backends size by size (alternating which
//!                    goes first); prints every round (`SAMPLE`), then medians with min/max
//! ```
//! After the `RESULT` lines (medians over the rounds) come `RATIO tcp/plain` lines: the
//! median over rounds of the per-round ratio of TCP-backend to plain-TCP bandwidth and p50
//! latency, measured in the same run. Plain TCP is a request/response exchange on one
//! loopback connection: bandwidth = one request for `count` responses of `size` bytes,
//! latency = one 16-byte request, one `size`-byte response.
//! ```text
//! bench zerocopy-serve --size N [--port P] [--verbs|--tcp]   owner of the source region
//! bench zerocopy-pull  --size N --addr HOST:PORT [--verbs|--tcp]
//! ```
//! Output lines start with `RESULT` (machine-readable, parsed by ci/bench-fabric) or are
//! human-readable.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use augur_fabric::tcp::TcpTransport;
use augur_fabric::{
    Access, Connection, FabricConfig, LocalMr, Op, Region, RemoteRegion, Transport,
};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::LocalExecutorBuilder;
use hdrhistogram::Histogram;

const SECRET: &[u8] = b"augur fabric bench secret 0123456789";

struct Args {
    what: Vec<String>,
    sizes: Vec<u64>,
    bytes: u64,
    dev_a: Option<String>,
    dev_b: Option<String>,
    size: u64,
    port: u16,
    addr: Option<SocketAddr>,
    verbs: bool,
    repeat: usize,
}

fn parse() -> Args {
    let mut a = Args {
        what: Vec::new(),
        sizes: vec![64, 4096, 65536, 1 << 20, 4 << 20],
        bytes: 64 << 20,
        dev_a: None,
        dev_b: None,
        size: 1 << 30,
        port: 18700,
        addr: None,
        verbs: cfg!(feature = "verbs"),
        repeat: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{s} needs a value")))
        };
        match s.as_str() {
            "--sizes" => {
                a.sizes = val()
                    .split(',')
                    .map(|x| x.parse().unwrap_or_else(|_| die("bad --sizes")))
                    .collect()
            }
            "--bytes" => a.bytes = val().parse().unwrap_or_else(|_| die("bad --bytes")),
            "--dev-a" => a.dev_a = Some(val()),
            "--dev-b" => a.dev_b = Some(val()),
            "--size" => a.size = val().parse().unwrap_or_else(|_| die("bad --size")),
            "--port" => a.port = val().parse().unwrap_or_else(|_| die("bad --port")),
            "--addr" => a.addr = Some(val().parse().unwrap_or_else(|_| die("bad --addr"))),
            "--repeat" => {
                a.repeat = val()
                    .parse()
                    .ok()
                    .filter(|&n| n >= 1)
                    .unwrap_or_else(|| die("bad --repeat"))
            }
            "--verbs" => a.verbs = true,
            "--tcp" => a.verbs = false,
            w => a.what.push(w.to_string()),
        }
    }
    a
}

fn die(m: &str) -> ! {
    eprintln!("bench: {m}");
    std::process::exit(2)
}

fn cfg() -> FabricConfig {
    let mut c = FabricConfig::new(SECRET.to_vec());
    c.handshake_timeout = Duration::from_secs(60);
    c
}

fn lo() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn lat_iters(size: u64) -> u64 {
    match size {
        0..=4096 => 1000,
        4097..=65536 => 200,
        65537..=1048576 => 50,
        _ => 20,
    }
}

/// READ or WRITE bandwidth: `bytes / size` ops (clamped to 100..=20000) of `size` bytes,
/// 4 tasks each keeping a batch of up to 32 ops in flight.
async fn bw<T: Transport>(
    conn: &Rc<T::Conn>,
    local: &Rc<T::Mr>,
    remote: RemoteRegion,
    size: u64,
    bytes: u64,
    read: bool,
) -> f64
where
    T::Conn: 'static,
    T::Mr: 'static,
{
    // iterations as perftest-style runs: bytes / size, clamped to 100..=20000
    let ops_total = (bytes / size).clamp(100, 20_000);
    let tasks = 4u64;
    let per_task = ops_total.div_ceil(tasks);
    let slots = (remote.len / size).max(1);
    let start = Instant::now();
    let mut hs = Vec::new();
    for t in 0..tasks {
        let (c, l) = (conn.clone(), local.clone());
        hs.push(glommio::spawn_local(async move {
            let mut done = 0;
            while done < per_task {
                let n = (per_task - done).min(32);
                let ops: Vec<Op<'_, T::Mr>> = (0..n)
                    .map(|i| {
                        let slot = (t * per_task + done + i) % slots;
                        Op {
                            remote,
                            remote_offset: slot * size,
                            len: size,
                            local: &*l,
                            local_offset: slot * size,
                        }
                    })
                    .collect();
                let r = if read {
                    c.read_batch(&ops).await
                } else {
                    c.write_batch(&ops).await
                };
                if let Err(e) = r {
                    die(&format!("bandwidth op failed: {e}"));
                }
                done += n;
            }
        }));
    }
    for h in hs {
        h.await;
    }
    mbps(per_task * tasks * size, start.elapsed())
}

/// One op at a time: latency percentiles in µs.
async fn lat<T: Transport>(
    conn: &T::Conn,
    local: &T::Mr,
    remote: RemoteRegion,
    size: u64,
    read: bool,
) -> (f64, f64) {
    let mut h = Histogram::<u64>::new(3).unwrap_or_else(|_| die("histogram"));
    let iters = lat_iters(size);
    for i in 0..iters + iters / 10 {
        let t = Instant::now();
        let r = if read {
            conn.read(&remote, 0, size, local, 0).await
        } else {
            conn.write(&remote, 0, size, local, 0).await
        };
        if let Err(e) = r {
            die(&format!("latency op failed: {e}"));
        }
        if i >= iters / 10 {
            let _ = h.record(t.elapsed().as_nanos() as u64);
        }
    }
    (
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    )
}

/// One measured point: bandwidth and latency percentiles of one op at one size.
#[derive(Clone, Copy)]
struct Sample {
    bw: f64,
    p50: f64,
    p99: f64,
}

/// A connected fabric backend with a registered remote and local region.
struct OneSided<T: Transport> {
    name: &'static str,
    ca: Rc<T::Conn>,
    lmr: Rc<T::Mr>,
    desc: RemoteRegion,
    // kept alive for the run
    _cb: T::Conn,
    _rmr: T::Mr,
    _transports: (T, T),
}

impl<T: Transport> OneSided<T>
where
    T::Conn: 'static,
    T::Mr: 'static,
{
    async fn setup(name: &'static str, a: T, b: T, args: &Args) -> Self {
        let (ca, cb) = futures_lite::future::zip(a.connect(b.local_addr()), b.accept()).await;
        let ca = Rc::new(ca.unwrap_or_else(|e| die(&format!("{name}: connect: {e}"))));
        let cb = cb.unwrap_or_else(|e| die(&format!("{name}: accept: {e}")));
        let max = *args.sizes.iter().max().unwrap_or(&(4 << 20));
        let region_len = (max * 8).max(args.bytes.min(64 << 20));
        let remote = Region::new("bench-remote", region_len as usize)
            .unwrap_or_else(|e| die(&e.to_string()));
        remote
            .fill(0, region_len, 0xA5)
            .unwrap_or_else(|e| die(&e.to_string()));
        let rmr = b
            .register(&remote, Access::READ_WRITE)
            .unwrap_or_else(|e| die(&e.to_string()));
        let local =
            Region::new("bench-local", region_len as usize).unwrap_or_else(|e| die(&e.to_string()));
        // touch every page once, as a long-lived region would be (no first-touch faults in
        // the measurement; verbs registration pins and faults pages in anyway)
        local
            .fill(0, region_len, 0)
            .unwrap_or_else(|e| die(&e.to_string()));
        let lmr = Rc::new(
            a.register(&local, Access::LOCAL)
                .unwrap_or_else(|e| die(&e.to_string())),
        );
        OneSided {
            name,
            ca,
            lmr,
            desc: rmr.descriptor(),
            _cb: cb,
            _rmr: rmr,
            _transports: (a, b),
        }
    }

    /// READ then WRITE at one size.
    async fn point(&self, size: u64, bytes: u64) -> Vec<(&'static str, Sample)> {
        let mut out = Vec::new();
        for (op, read) in [("read", true), ("write", false)] {
            let bw = bw::<T>(&self.ca, &self.lmr, self.desc, size, bytes, read).await;
            let (p50, p99) = lat::<T>(&self.ca, &self.lmr, self.desc, size, read).await;
            out.push((op, Sample { bw, p50, p99 }));
        }
        out
    }
}

/// Plain TCP loopback, no fabric: a server streams/answers from a buffer. Bandwidth: one
/// 16-byte request asks for `count` responses of `size` bytes; latency: one request, one
/// response of `size` bytes, in turn.
struct Plain {
    c: glommio::net::TcpStream,
    buf: Vec<u8>,
    server: glommio::Task<()>,
}

impl Plain {
    async fn setup() -> Plain {
        let listener =
            glommio::net::TcpListener::bind(lo()).unwrap_or_else(|e| die(&e.to_string()));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| die(&e.to_string()));
        let server = glommio::spawn_local(async move {
            let mut s = listener
                .accept()
                .await
                .unwrap_or_else(|e| die(&e.to_string()));
            let _ = s.set_nodelay(true);
            let mut buf = vec![0xA5u8; 4 << 20];
            let mut req = [0u8; 16];
            // request: size u64, count u64 -> count responses of size bytes
            while s.read_exact(&mut req).await.is_ok() {
                let size = u64::from_le_bytes(req[..8].try_into().unwrap_or([0; 8])) as usize;
                let count = u64::from_le_bytes(req[8..].try_into().unwrap_or([0; 8]));
                if size > buf.len() {
                    buf.resize(size, 0xA5);
                }
                for _ in 0..count {
                    if s.write_all(&buf[..size]).await.is_err() {
                        return;
                    }
                }
            }
        });
        let c = glommio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| die(&e.to_string()));
        let _ = c.set_nodelay(true);
        Plain {
            c,
            buf: vec![1u8; 4 << 20],
            server,
        }
    }

    async fn point(&mut self, size: u64, bytes: u64) -> Sample {
        let (c, buf) = (&mut self.c, &mut self.buf);
        if size as usize > buf.len() {
            buf.resize(size as usize, 1);
        }
        let count = (bytes / size).clamp(100, 20_000);
        let mut req = [0u8; 16];
        req[..8].copy_from_slice(&size.to_le_bytes());
        req[8..].copy_from_slice(&count.to_le_bytes());
        let t = Instant::now();
        c.write_all(&req)
            .await
            .unwrap_or_else(|e| die(&e.to_string()));
        for _ in 0..count {
            c.read_exact(&mut buf[..size as usize])
                .await
                .unwrap_or_else(|e| die(&e.to_string()));
        }
        let bw = mbps(count * size, t.elapsed());
        let mut h = Histogram::<u64>::new(3).unwrap_or_else(|_| die("histogram"));
        req[8..].copy_from_slice(&1u64.to_le_bytes());
        for _ in 0..lat_iters(size) {
            let t = Instant::now();
            c.write_all(&req)
                .await
                .unwrap_or_else(|e| die(&e.to_string()));
            c.read_exact(&mut buf[..size as usize])
                .await
                .unwrap_or_else(|e| die(&e.to_string()));
            let _ = h.record(t.elapsed().as_nanos() as u64);
        }
        Sample {
            bw,
            p50: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99: h.value_at_quantile(0.99) as f64 / 1000.0,
        }
    }

    async fn finish(self) {
        // the server ends when the connection does
        drop(self.c);
        self.server.await;
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn spread(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// Samples of every round, keyed by (backend, op, size), in round order.
type Samples = std::collections::BTreeMap<(&'static str, &'static str, u64), Vec<Sample>>;

/// Prints the RESULT lines (medians over rounds, with min..max when repeated) and the
/// tcp/plain ratios (median over rounds of the per-round ratio: each round measures both
/// back to back, so the pair shares the machine's state at that moment).
fn report(samples: &Samples, repeat: usize) {
    for ((name, op, size), v) in samples {
        let mut bw: Vec<f64> = v.iter().map(|s| s.bw).collect();
        let mut p50: Vec<f64> = v.iter().map(|s| s.p50).collect();
        let mut p99: Vec<f64> = v.iter().map(|s| s.p99).collect();
        let (bl, bh) = spread(&bw);
        let (ll, lh) = spread(&p50);
        let extra = if repeat > 1 {
            format!(
                " rounds={} bw_min={bl:.2} bw_max={bh:.2} p50_min={ll:.1} p50_max={lh:.1}",
                v.len()
            )
        } else {
            String::new()
        };
        println!(
            "RESULT {name} {op} {size} bw_MBps={:.2} p50_us={:.1} p99_us={:.1}{extra}",
            median(&mut bw),
            median(&mut p50),
            median(&mut p99)
        );
    }
    for ((name, op, size), v) in samples {
        if *name != "tcp" {
            continue;
        }
        let Some(base) = samples.get(&("plain", "read", *size)) else {
            continue;
        };
        let mut bw: Vec<f64> = v.iter().zip(base).map(|(f, p)| f.bw / p.bw).collect();
        let mut p50: Vec<f64> = v.iter().zip(base).map(|(f, p)| f.p50 / p.p50).collect();
        let (bl, bh) = spread(&bw);
        let (ll, lh) = spread(&p50);
        println!(
            "RATIO tcp/plain {op} {size} bw={:.2} (min {bl:.2} max {bh:.2}) p50={:.2} (min {ll:.2} max {lh:.2}) rounds={}",
            median(&mut bw),
            median(&mut p50),
            v.len()
        );
    }
}

#[cfg(feature = "verbs")]
fn verbs_transports(
    args: &Args,
) -> Option<(
    augur_fabric::verbs::transport::VerbsTransport,
    augur_fabric::verbs::transport::VerbsTransport,
)> {
    use augur_fabric::verbs::{device, transport::VerbsTransport};
    let list = device::list();
    if list.is_empty() {
        println!("SKIP verbs: no RDMA device");
        return None;
    }
    let da = args.dev_a.clone().unwrap_or_else(|| list[0].clone());
    let db = args
        .dev_b
        .clone()
        .unwrap_or_else(|| list.get(1).cloned().unwrap_or_else(|| da.clone()));
    let mut ca = cfg();
    ca.device = Some(da);
    let mut cb = cfg();
    cb.device = Some(db);
    let a = VerbsTransport::bind(ca, lo()).unwrap_or_else(|e| die(&e.to_string()));
    let b = VerbsTransport::bind(cb, lo()).unwrap_or_else(|e| die(&e.to_string()));
    println!("verbs: reader {:?}, owner {:?}", a.device(), b.device());
    Some((a, b))
}

/// (user, system) CPU time of this process, from /proc/self/stat (USER_HZ = 100).
fn cpu_times() -> (Duration, Duration) {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // after "pid (comm)": state is index 0, utime index 11, stime index 12
    let t = |i: usize| {
        Duration::from_millis(f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0) * 10)
    };
    (t(11), t(12))
}

/// System-wide softirq time (ms) from /proc/stat: where rxe's packet work is accounted when
/// the kernel keeps IRQ time apart.
fn softirq_ms() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().next().unwrap_or("");
    line.split_whitespace()
        .nth(7)
        .and_then(|x| x.parse::<u64>().ok())
        .unwrap_or(0)
        * 10
}

fn fnv(r: &Region, len: u64) -> u64 {
    // checksum over one byte in every 4 KiB page plus each page's last byte
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b = [0u8; 1];
    let mut off = 0;
    while off < len {
        for o in [off, (off + 4095).min(len - 1)] {
            let _ = r.read_at(o, &mut b);
            h = (h ^ b[0] as u64).wrapping_mul(0x100_0000_01b3);
        }
        off += 4096;
    }
    h
}

async fn zc_serve<T: Transport>(t: T, size: u64) {
    let region = Region::new("zc-source", size as usize).unwrap_or_else(|e| die(&e.to_string()));
    for (i, off) in (0..size).step_by(1 << 20).enumerate() {
        let n = (1u64 << 20).min(size - off);
        region
            .fill(off, n, (i * 7 + 1) as u8)
            .unwrap_or_else(|e| die(&e.to_string()));
        region
            .fill(off + n - 1, 1, (i * 13 + 5) as u8)
            .unwrap_or_else(|e| die(&e.to_string()));
    }
    println!(
        "ZC serve: source region {size} bytes ready, checksum {:016x}",
        fnv(&region, size)
    );
    let mr = t
        .register(&region, Access::READ)
        .unwrap_or_else(|e| die(&e.to_string()));
    println!("ZC serve: listening on {}", t.local_addr());
    let conn = t.accept().await.unwrap_or_else(|e| die(&e.to_string()));
    conn.send(&mr.descriptor().encode())
        .await
        .unwrap_or_else(|e| die(&e.to_string()));
    // From here the owner does nothing but wait (a 250 ms timer, no polling) until the
    // reader hangs up; then the same wait with no transfer, as the control.
    let (u0, s0) = cpu_times();
    let sirq0 = softirq_ms();
    let t0 = Instant::now();
    while conn.failure().is_none() {
        glommio::timer::sleep(Duration::from_millis(250)).await;
    }
    let (u1, s1) = cpu_times();
    let sirq1 = softirq_ms();
    let wall = t0.elapsed();
    println!(
        "RESULT zerocopy source_user_ms={} source_sys_ms={} wall_ms={} bytes={size} system_softirq_ms={}",
        (u1 - u0).as_millis(),
        (s1 - s0).as_millis(),
        wall.as_millis(),
        sirq1.saturating_sub(sirq0)
    );
    let control = Duration::from_secs(10);
    let t1 = Instant::now();
    while t1.elapsed() < control {
        glommio::timer::sleep(Duration::from_millis(250)).await;
    }
    let (u2, s2) = cpu_times();
    println!(
        "RESULT zeroidle source_user_ms={} source_sys_ms={} wall_ms={} (same owner, idle, no transfer)",
        (u2 - u1).as_millis(),
        (s2 - s1).as_millis(),
        t1.elapsed().as_millis()
    );
}

async fn zc_pull<T: Transport>(t: T, size: u64, addr: SocketAddr) {
    let local = Region::new("zc-dest", size as usize).unwrap_or_else(|e| die(&e.to_string()));
    let lmr = t
        .register(&local, Access::LOCAL)
        .unwrap_or_else(|e| die(&e.to_string()));
    let conn = t
        .connect(addr)
        .await
        .unwrap_or_else(|e| die(&e.to_string()));
    let desc = RemoteRegion::decode(&conn.recv().await.unwrap_or_else(|e| die(&e.to_string())))
        .unwrap_or_else(|e| die(&e.to_string()));
    let chunk = 64u64 << 20;
    let t0 = Instant::now();
    let mut off = 0;
    while off < desc.len {
        let n = chunk.min(desc.len - off);
        conn.read(&desc, off, n, &lmr, off)
            .await
            .unwrap_or_else(|e| die(&format!("pull at {off}: {e}")));
        off += n;
    }
    let d = t0.elapsed();
    println!(
        "RESULT zeropull bytes={} secs={:.2} MBps={:.1} checksum={:016x}",
        desc.len,
        d.as_secs_f64(),
        mbps(desc.len, d),
        fnv(&local, desc.len)
    );
    conn.close();
    glommio::timer::sleep(Duration::from_millis(100)).await;
}

fn main() {
    let args = parse();
    let r = LocalExecutorBuilder::default()
        .spawn(move || async move {
            let what = |w: &str| args.what.is_empty() || args.what.iter().any(|x| x == w);
            match args.what.first().map(String::as_str) {
                Some("zerocopy-serve") => {
                    let addr = SocketAddr::from(([0, 0, 0, 0], args.port));
                    #[cfg(feature = "verbs")]
                    if args.verbs {
                        let mut c = cfg();
                        c.device = args.dev_b.clone();
                        let t = augur_fabric::verbs::transport::VerbsTransport::bind(c, addr)
                            .unwrap_or_else(|e| die(&e.to_string()));
                        return zc_serve(t, args.size).await;
                    }
                    let t = TcpTransport::bind(cfg(), addr).unwrap_or_else(|e| die(&e.to_string()));
                    return zc_serve(t, args.size).await;
                }
                Some("zerocopy-pull") => {
                    let addr = args.addr.unwrap_or_else(|| die("--addr needed"));
                    #[cfg(feature = "verbs")]
                    if args.verbs {
                        let mut c = cfg();
                        c.device = args.dev_a.clone();
                        let t = augur_fabric::verbs::transport::VerbsTransport::bind(c, lo())
                            .unwrap_or_else(|e| die(&e.to_string()));
                        return zc_pull(t, args.size, addr).await;
                    }
                    let t = TcpTransport::bind(cfg(), lo()).unwrap_or_else(|e| die(&e.to_string()));
                    return zc_pull(t, args.size, addr).await;
                }
                _ => {}
            }
            #[cfg(feature = "verbs")]
            let verbs = match what("verbs") {
                true => match verbs_transports(&args) {
                    Some((a, b)) => Some(OneSided::setup("verbs", a, b, &args).await),
                    None => None,
                },
                false => None,
            };
            let tcp = match what("tcp") {
                true => {
                    let a =
                        TcpTransport::bind(cfg(), lo()).unwrap_or_else(|e| die(&e.to_string()));
                    let b =
                        TcpTransport::bind(cfg(), lo()).unwrap_or_else(|e| die(&e.to_string()));
                    Some(OneSided::setup("tcp", a, b, &args).await)
                }
                false => None,
            };
            let mut plain = match what("plain") {
                true => Some(Plain::setup().await),
                false => None,
            };
            let mut samples = Samples::new();
            // Rounds interleave the backends size by size (alternating which goes first),
            // so that a noisy moment of a shared machine hits both sides of a ratio.
            for round in 0..args.repeat {
                for &size in &args.sizes {
                    let mut order = vec![0, 1, 2];
                    if round % 2 == 1 {
                        order.reverse();
                    }
                    for which in order {
                        let got: Vec<(&'static str, &'static str, Sample)> = match which {
                            #[cfg(feature = "verbs")]
                            0 => match &verbs {
                                Some(v) => v
                                    .point(size, args.bytes)
                                    .await
                                    .into_iter()
                                    .map(|(op, s)| (v.name, op, s))
                                    .collect(),
                                None => Vec::new(),
                            },
                            1 => match &tcp {
                                Some(t) => t
                                    .point(size, args.bytes)
                                    .await
                                    .into_iter()
                                    .map(|(op, s)| (t.name, op, s))
                                    .collect(),
                                None => Vec::new(),
                            },
                            2 => match &mut plain {
                                Some(p) => vec![("plain", "read", p.point(size, args.bytes).await)],
                                None => Vec::new(),
                            },
                            _ => Vec::new(),
                        };
                        for (name, op, s) in got {
                            if args.repeat > 1 {
                                println!(
                                    "SAMPLE round={round} {name} {op} {size} bw_MBps={:.2} p50_us={:.1} p99_us={:.1}",
                                    s.bw, s.p50, s.p99
                                );
                            }
                            samples.entry((name, op, size)).or_default().push(s);
                        }
                    }
                }
            }
            report(&samples, args.repeat);
            if let Some(p) = plain {
                p.finish().await;
            }
        })
        .unwrap_or_else(|e| die(&format!("executor: {e}")))
        .join();
    if r.is_err() {
        die("benchmark thread failed");
    }
}
