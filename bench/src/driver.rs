//! Open-loop load driver: every request is issued at its *scheduled* time whatever the
//! server does, and its latency runs from the scheduled time to the reply, so a stalled
//! server shows up as many slow requests rather than one (no coordinated omission).
//!
//! Threads, not async: the machine has two cores shared with the servers, and blocking
//! sockets cost less than a runtime. The calling thread keeps the clock and hands each
//! due request to one of its site's connections (round-robin). Every connection has a
//! writer thread (takes requests off its queue, waits for a free pipeline slot, writes)
//! and a reader thread (parses replies, matches them to the in-flight FIFO, records).
//! A full pipeline makes requests wait in the queue; that wait is latency. The queues
//! together hold at most a bounded number of requests; beyond it a request is counted
//! as an error ("driver overloaded") so memory stays bounded.
//!
//! Per-second windows: `sent` is counted in the second a request was scheduled in;
//! `ok`, `errors` and latencies in the second the outcome was seen (the latency itself
//! is still measured from the schedule), so a window is complete when its second ends
//! and `on_second` can sample the cluster in step. Outcomes seen after the last second
//! of the schedule (during the drain) are folded into the last window.
//!
//! Accounting: `sent == ok + errors + unanswered`, where `sent` counts every request due
//! before `seconds`, `errors` includes error replies, requests lost on a broken
//! connection and requests refused by the driver, and `unanswered` is what was still
//! queued or in flight when the run stopped.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context};
use augur_node::resp::{next_frame, Frame, Limits};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;

/// Requests queued or in flight over all connections before the driver refuses more.
pub const MAX_OUTSTANDING: u64 = 1 << 20;
/// Highest latency the histograms hold, in µs (60 s).
pub const MAX_LATENCY_US: u64 = 60_000_000;
/// Distinct error texts kept in `RunResult::error_samples`.
pub const MAX_ERROR_SAMPLES: usize = 10;
/// An error sample is cut to this many bytes (a server controls its error texts).
const MAX_SAMPLE_LEN: usize = 200;
/// Attempts to re-open a broken connection before giving it up for the run.
const RECONNECT_ATTEMPTS: u32 = 5;
/// Re-opens per connection over the whole run; a server that keeps dropping us is
/// given up rather than hammered.
const MAX_RECONNECTS: u32 = 100;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// Requests written with one syscall at most.
const MAX_BATCH: usize = 64;
/// Replies the driver accepts: far above anything a benchmark reads back.
const REPLY_LIMITS: Limits = Limits {
    max_bulk_len: 64 << 20,
    max_inline_len: 64 << 10,
    max_multibulk_len: 1 << 20,
    unauthenticated: false,
};
const US_PER_S: u64 = 1_000_000;

/// One request of a schedule: sent at `at_us` after the start to site `site`.
#[derive(Debug, Clone)]
pub struct Timed {
    pub at_us: u64,
    pub site: u32,
    pub args: Vec<Bytes>,
    /// Whether the request writes; carried for the caller (the driver treats all alike).
    pub write: bool,
}

#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// Site i sends to `sites[i]`.
    pub sites: Vec<SocketAddr>,
    /// Connections per site, at least 1 (default 8).
    pub connections_per_site: usize,
    /// Most requests in flight per connection (1 = no pipelining).
    pub pipeline: usize,
    /// Run length; requests due later are not sent.
    pub seconds: f64,
    /// After `seconds`, how long to wait for replies before stopping.
    pub drain: Duration,
    /// `Some(label)`: an indicatif bar (elapsed/total, ops/s, p99 of the last second).
    pub progress: Option<String>,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            sites: Vec::new(),
            connections_per_site: 8,
            pipeline: 1,
            seconds: 10.0,
            drain: Duration::from_secs(2),
            progress: None,
        }
    }
}

/// One second of the run, over all sites and per site.
#[derive(Debug, Clone)]
pub struct Window {
    pub second: u32,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// Latency (µs, from the scheduled time) of the replies seen in this second.
    pub latency: Histogram<u64>,
    /// The same, per site.
    pub per_site: Vec<Histogram<u64>>,
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub windows: Vec<Window>,
    pub total: Histogram<u64>,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// The first distinct error texts, at most `MAX_ERROR_SAMPLES`.
    pub error_samples: Vec<String>,
    pub unanswered: u64,
    pub elapsed: Duration,
}

/// An empty latency histogram as the driver uses them (µs, 3 significant digits, 60 s).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

/// Run `schedule` open-loop against `opts.sites`; `on_second` is called from this
/// thread once per completed second with that second's window.
pub fn run<I>(
    schedule: I,
    opts: &DriverOptions,
    on_second: impl FnMut(&Window),
) -> anyhow::Result<RunResult>
where
    I: Iterator<Item = Timed> + Send,
{
    run_bounded(schedule, opts, MAX_OUTSTANDING, on_second)
}

/// `run` with the bound on queued + in-flight requests given (tests use a small one).
pub fn run_bounded<I>(
    schedule: I,
    opts: &DriverOptions,
    max_outstanding: u64,
    mut on_second: impl FnMut(&Window),
) -> anyhow::Result<RunResult>
where
    I: Iterator<Item = Timed> + Send,
{
    ensure!(!opts.sites.is_empty(), "the driver needs at least one site");
    ensure!(
        opts.connections_per_site >= 1,
        "connections_per_site must be at least 1"
    );
    ensure!(opts.pipeline >= 1, "pipeline must be at least 1");
    ensure!(
        opts.seconds.is_finite() && opts.seconds > 0.0 && opts.seconds < 1e6,
        "seconds must be positive and finite (got {})",
        opts.seconds
    );
    let windows_max = (opts.seconds.ceil() as u32).max(1);
    let last = windows_max - 1;
    let end_us = (opts.seconds * US_PER_S as f64) as u64;
    let drain_us = opts.drain.as_micros().min(u64::MAX as u128) as u64;

    let mut streams = Vec::new();
    for (site, addr) in opts.sites.iter().enumerate() {
        for _ in 0..opts.connections_per_site {
            let stream = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)
                .with_context(|| format!("connecting to site {site} at {addr}"))?;
            stream.set_nodelay(true)?;
            streams.push((site, *addr, stream));
        }
    }

    let shared = Arc::new(Shared {
        start: Instant::now(),
        stop: AtomicBool::new(false),
        outstanding: AtomicU64::new(0),
        unanswered: AtomicU64::new(0),
        samples: Mutex::new(Vec::new()),
        last_second: last,
    });
    let mut conns = Vec::new();
    let mut writers = Vec::new();
    let mut senders: Vec<Vec<Sender<Request>>> = vec![Vec::new(); opts.sites.len()];
    for (site, addr, stream) in streams {
        let conn = Arc::new(Conn {
            site,
            addr,
            stats: Mutex::new(ConnStats::default()),
            flight: Mutex::new(InFlight::default()),
            slot_freed: Condvar::new(),
        });
        let (tx, rx) = mpsc::channel();
        senders[site].push(tx);
        let (c, s, pipeline) = (conn.clone(), shared.clone(), opts.pipeline);
        writers.push(
            thread::Builder::new()
                .name(format!("drive-w{site}"))
                .spawn(move || writer(c, s, rx, stream, pipeline))
                .context("spawning a driver thread")?,
        );
        conns.push(conn);
    }

    let bar = opts
        .progress
        .as_ref()
        .map(|label| progress_bar(label, windows_max));
    let mut collector = Collector {
        conns: &conns,
        sites: opts.sites.len(),
        parts: vec![DriverPart::default(); windows_max as usize],
        windows: Vec::new(),
    };
    let mut schedule = schedule;
    let mut rr = vec![0usize; opts.sites.len()];
    let mut pending: Option<Timed> = None;
    let mut schedule_over = false;
    let outcome: anyhow::Result<()> = 'run: loop {
        let now = shared.now_us();
        if !schedule_over && pending.is_none() {
            pending = schedule.next();
            match &pending {
                None => schedule_over = true,
                Some(t) if t.at_us >= end_us => {
                    schedule_over = true;
                    pending = None;
                }
                Some(_) => {}
            }
            if schedule_over {
                // Closing the queues lets each writer finish once it has sent its backlog.
                senders.clear();
            }
        }
        if let Some(t) = pending.take_if(|t| t.at_us <= now) {
            let second = ((t.at_us / US_PER_S) as u32)
                .max(collector.next_second())
                .min(last);
            let part = &mut collector.parts[second as usize];
            part.sent += 1;
            let refused = if t.site as usize >= senders.len() {
                Some(format!(
                    "request for site {} but the driver has {} sites",
                    t.site,
                    opts.sites.len()
                ))
            } else if shared.outstanding.load(Ordering::Relaxed) >= max_outstanding {
                Some(format!(
                    "driver overloaded ({max_outstanding} requests queued or in flight)"
                ))
            } else {
                let site = t.site as usize;
                let conn = rr[site];
                rr[site] = (conn + 1) % senders[site].len();
                shared.outstanding.fetch_add(1, Ordering::Relaxed);
                let request = Request {
                    at_us: t.at_us,
                    args: t.args,
                };
                match senders[site][conn].send(request) {
                    Ok(()) => None,
                    Err(_) => {
                        shared.outstanding.fetch_sub(1, Ordering::Relaxed);
                        Some("driver connection thread is gone".to_string())
                    }
                }
            };
            if let Some(text) = refused {
                part.errors += 1;
                shared.sample(&text);
            }
            continue;
        }
        // A second is closed once it has ended and all its requests have been issued.
        let issued_through = match &pending {
            Some(t) => t.at_us,
            None if schedule_over => u64::MAX,
            None => 0,
        };
        while collector.next_second() < last {
            let boundary = u64::from(collector.next_second() + 1) * US_PER_S;
            if now < boundary || issued_through < boundary {
                break;
            }
            let window = match collector.close(false) {
                Ok(w) => w,
                Err(e) => break 'run Err(e),
            };
            if let Some(bar) = &bar {
                advance(bar, &window);
            }
            on_second(&window);
        }
        if schedule_over {
            if shared.outstanding.load(Ordering::Relaxed) == 0 {
                break Ok(());
            }
            if now >= end_us.saturating_add(drain_us) {
                break Ok(());
            }
        }
        let mut wake = match &pending {
            Some(t) => t.at_us,
            None => now + POLL.as_micros() as u64 / 4,
        };
        if collector.next_second() < last {
            wake = wake.min(u64::from(collector.next_second() + 1) * US_PER_S);
        }
        if schedule_over {
            wake = wake.min(end_us.saturating_add(drain_us));
        }
        if wake > now {
            thread::sleep(Duration::from_micros(wake - now));
        }
    };
    shared.stop.store(true, Ordering::Relaxed);
    drop(senders);
    for w in writers {
        if w.join().is_err() {
            return Err(anyhow!("a driver connection thread panicked"));
        }
    }
    outcome?;
    // Close what is left: up to the second we stopped in, the last one taking every
    // outcome seen after it.
    let stopped_in = ((shared.now_us() / US_PER_S) as u32).min(last);
    loop {
        let fold = collector.next_second() >= stopped_in;
        let window = collector.close(fold)?;
        if let Some(bar) = &bar {
            advance(bar, &window);
        }
        on_second(&window);
        if fold {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish();
    }

    let windows = collector.windows;
    let mut total = new_histogram();
    let (mut sent, mut ok, mut errors) = (0, 0, 0);
    for w in &windows {
        total
            .add(&w.latency)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        sent += w.sent;
        ok += w.ok;
        errors += w.errors;
    }
    let error_samples = lock(&shared.samples).clone();
    Ok(RunResult {
        windows,
        total,
        sent,
        ok,
        errors,
        error_samples,
        unanswered: shared.unanswered.load(Ordering::Relaxed),
        elapsed: shared.start.elapsed(),
    })
}

fn progress_bar(label: &str, seconds: u32) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(u64::from(seconds));
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} s  {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(label.to_string());
    bar
}

fn advance(bar: &indicatif::ProgressBar, w: &Window) {
    bar.set_position(u64::from(w.second) + 1);
    bar.set_message(format!(
        "{} ops/s  p99 {:.2} ms  errors {}",
        w.ok,
        w.latency.value_at_quantile(0.99) as f64 / 1000.0,
        w.errors
    ));
}

/// Lock, ignoring poisoning: the data is counters, still meaningful after a panic
/// elsewhere, and the panic itself is reported when the thread is joined.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shared {
    start: Instant,
    stop: AtomicBool,
    /// Requests handed to a connection and not yet resolved.
    outstanding: AtomicU64,
    unanswered: AtomicU64,
    samples: Mutex<Vec<String>>,
    last_second: u32,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn second_now(&self) -> u32 {
        ((self.now_us() / US_PER_S) as u32).min(self.last_second)
    }

    fn sample(&self, text: &str) {
        let mut samples = lock(&self.samples);
        if samples.len() >= MAX_ERROR_SAMPLES {
            return;
        }
        let mut cut = text.len().min(MAX_SAMPLE_LEN);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let text = &text[..cut];
        if !samples.iter().any(|s| s == text) {
            samples.push(text.to_string());
        }
    }

    fn resolved(&self, n: u64) {
        self.outstanding.fetch_sub(n, Ordering::Relaxed);
    }
}

struct Request {
    at_us: u64,
    args: Vec<Bytes>,
}

/// Outcomes of one connection in one second.
struct Partial {
    ok: u64,
    errors: u64,
    latency: Histogram<u64>,
}

/// A connection's outcomes per second, from the first second not yet collected.
#[derive(Default)]
struct ConnStats {
    base: u32,
    parts: VecDeque<Partial>,
}

impl ConnStats {
    fn at(&mut self, second: u32) -> &mut Partial {
        let index = second.saturating_sub(self.base) as usize;
        while self.parts.len() <= index {
            self.parts.push_back(Partial {
                ok: 0,
                errors: 0,
                latency: new_histogram(),
            });
        }
        &mut self.parts[index]
    }

    /// Take second `second` (and everything after it when `fold`).
    fn take(&mut self, second: u32, fold: bool) -> Vec<Partial> {
        let upto = if fold {
            self.parts.len()
        } else {
            ((second + 1).saturating_sub(self.base) as usize).min(self.parts.len())
        };
        self.base = second + 1;
        self.parts.drain(..upto).collect()
    }
}

#[derive(Default)]
struct InFlight {
    /// Scheduled times of the requests written and not yet answered, in order.
    queue: VecDeque<u64>,
    /// The current stream failed (or the run stopped); the writer must not use it.
    broken: bool,
}

struct Conn {
    site: usize,
    addr: SocketAddr,
    stats: Mutex<ConnStats>,
    flight: Mutex<InFlight>,
    slot_freed: Condvar,
}

impl Conn {
    fn record_reply(&self, shared: &Shared, at_us: u64, error: Option<&[u8]>) {
        let now = shared.now_us();
        {
            let mut stats = lock(&self.stats);
            let part = stats.at(((now / US_PER_S) as u32).min(shared.last_second));
            match error {
                None => {
                    part.ok += 1;
                    part.latency.saturating_record(now.saturating_sub(at_us));
                }
                Some(_) => part.errors += 1,
            }
        }
        if let Some(text) = error {
            shared.sample(&String::from_utf8_lossy(text));
        }
        shared.resolved(1);
    }

    fn record_errors(&self, shared: &Shared, n: u64, text: &str) {
        shared.sample(text);
        if n == 0 {
            return;
        }
        lock(&self.stats).at(shared.second_now()).errors += n;
        shared.resolved(n);
    }
}

#[derive(Clone, Default)]
struct DriverPart {
    sent: u64,
    errors: u64,
}

/// Builds the windows, second by second, from the driver's and connections' counts.
struct Collector<'a> {
    conns: &'a [Arc<Conn>],
    sites: usize,
    parts: Vec<DriverPart>,
    windows: Vec<Window>,
}

impl Collector<'_> {
    fn next_second(&self) -> u32 {
        self.windows.len() as u32
    }

    fn close(&mut self, fold: bool) -> anyhow::Result<Window> {
        let second = self.next_second();
        let mut window = Window {
            second,
            sent: 0,
            ok: 0,
            errors: 0,
            latency: new_histogram(),
            per_site: vec![new_histogram(); self.sites],
        };
        let parts = if fold {
            &self.parts[second as usize..]
        } else {
            &self.parts[second as usize..=second as usize]
        };
        for p in parts {
            window.sent += p.sent;
            window.errors += p.errors;
        }
        for conn in self.conns {
            for p in lock(&conn.stats).take(second, fold) {
                window.ok += p.ok;
                window.errors += p.errors;
                let merge = |h: &mut Histogram<u64>| {
                    h.add(&p.latency)
                        .map_err(|e| anyhow!("merging histograms: {e:?}"))
                };
                merge(&mut window.latency)?;
                merge(&mut window.per_site[conn.site])?;
            }
        }
        self.windows.push(window.clone());
        Ok(window)
    }
}

fn encode_command(out: &mut BytesMut, args: &[Bytes]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// One connection's sending side; owns the stream's lifetime and reconnects.
fn writer(
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    rx: Receiver<Request>,
    stream: TcpStream,
    pipeline: usize,
) {
    let mut link = Link::start(&conn, &shared, stream);
    let mut reconnects = 0u32;
    let mut out = BytesMut::with_capacity(16 << 10);
    loop {
        let first = match rx.recv_timeout(POLL) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) if shared.stopping() => break,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if shared.stopping() {
            shared.unanswered.fetch_add(1, Ordering::Relaxed);
            shared.resolved(1);
            continue;
        }
        // Get a usable stream for this request (or give it up as an error).
        let usable = loop {
            if !lock(&conn.flight).broken {
                break true;
            }
            if link.is_none() && reconnects > 0 {
                // Given up earlier.
                break false;
            }
            if let Some(l) = link.take() {
                l.finish();
            }
            reconnects += 1;
            if reconnects > MAX_RECONNECTS {
                break false;
            }
            link = reconnect(&conn, &shared);
            if link.is_none() {
                break false;
            }
        };
        if !usable {
            conn.record_errors(
                &shared,
                1,
                &format!("connection to {} unavailable", conn.addr),
            );
            continue;
        }
        let Some(current) = link.as_ref() else {
            continue;
        };
        // Wait for a pipeline slot, then claim as many as the queue can fill.
        out.clear();
        let mut flight = lock(&conn.flight);
        while flight.queue.len() >= pipeline && !flight.broken && !shared.stopping() {
            flight = conn
                .slot_freed
                .wait_timeout(flight, POLL)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        if flight.broken || shared.stopping() {
            drop(flight);
            // The reader has failed or the run is over; this request was never written.
            if shared.stopping() {
                shared.unanswered.fetch_add(1, Ordering::Relaxed);
                shared.resolved(1);
            } else {
                conn.record_errors(
                    &shared,
                    1,
                    &format!("connection to {} lost before sending", conn.addr),
                );
            }
            continue;
        }
        flight.queue.push_back(first.at_us);
        encode_command(&mut out, &first.args);
        let mut batched = 1;
        while flight.queue.len() < pipeline && batched < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => {
                    flight.queue.push_back(r.at_us);
                    encode_command(&mut out, &r.args);
                    batched += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        drop(flight);
        if let Err(e) = (&current.stream).write_all(&out) {
            // The reader sees the shutdown and counts what was in flight as lost.
            shared.sample(&format!("writing to {}: {e}", conn.addr));
            let _ = current.stream.shutdown(Shutdown::Both);
        }
    }
    // Requests never taken off the queue were not answered.
    while let Ok(_r) = rx.try_recv() {
        shared.unanswered.fetch_add(1, Ordering::Relaxed);
        shared.resolved(1);
    }
    if let Some(l) = link {
        // Wait for the replies still in flight until the driver says stop.
        l.finish();
    }
}

/// A live stream and its reader thread.
struct Link {
    stream: TcpStream,
    reader: Option<JoinHandle<()>>,
}

impl Link {
    fn start(conn: &Arc<Conn>, shared: &Arc<Shared>, stream: TcpStream) -> Option<Link> {
        let read_side = match stream.try_clone() {
            Ok(s) => s,
            Err(e) => {
                shared.sample(&format!("cloning a socket: {e}"));
                lock(&conn.flight).broken = true;
                return None;
            }
        };
        lock(&conn.flight).broken = false;
        let (c, s) = (conn.clone(), shared.clone());
        match thread::Builder::new()
            .name(format!("drive-r{}", conn.site))
            .spawn(move || reader(c, s, read_side))
        {
            Ok(handle) => Some(Link {
                stream,
                reader: Some(handle),
            }),
            Err(e) => {
                shared.sample(&format!("spawning a reader: {e}"));
                lock(&conn.flight).broken = true;
                None
            }
        }
    }

    /// Wait for the reader to end (it ends on a broken stream or at stop).
    fn finish(mut self) {
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn reconnect(conn: &Arc<Conn>, shared: &Arc<Shared>) -> Option<Link> {
    let mut backoff = Duration::from_millis(20);
    for _ in 0..RECONNECT_ATTEMPTS {
        if shared.stopping() {
            return None;
        }
        match TcpStream::connect_timeout(&conn.addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Link::start(conn, shared, stream);
            }
            Err(e) => {
                shared.sample(&format!("reconnecting to {}: {e}", conn.addr));
                thread::sleep(backoff);
                backoff *= 2;
            }
        }
    }
    None
}

/// One connection's receiving side: replies are matched to the in-flight FIFO.
fn reader(conn: Arc<Conn>, shared: Arc<Shared>, mut stream: TcpStream) {
    let failure = read_replies(&conn, &shared, &mut stream);
    let lost = {
        let mut flight = lock(&conn.flight);
        flight.broken = true;
        let n = flight.queue.len() as u64;
        flight.queue.clear();
        n
    };
    conn.slot_freed.notify_all();
    match failure {
        Some(reason) => conn.record_errors(
            &shared,
            lost,
            &format!("connection to {} lost: {reason}", conn.addr),
        ),
        None => {
            shared.unanswered.fetch_add(lost, Ordering::Relaxed);
            shared.resolved(lost);
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Read until the stream fails (`Some(reason)`) or the run stops (`None`).
fn read_replies(conn: &Conn, shared: &Shared, stream: &mut TcpStream) -> Option<String> {
    if let Err(e) = stream.set_read_timeout(Some(POLL)) {
        return Some(format!("setting a read timeout: {e}"));
    }
    let mut input = BytesMut::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        loop {
            let frame = match next_frame(&mut input, &REPLY_LIMITS) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Some(format!("bad reply: {e}")),
            };
            let at_us = {
                let mut flight = lock(&conn.flight);
                flight.queue.pop_front()
            };
            let Some(at_us) = at_us else {
                return Some("a reply to no request".to_string());
            };
            conn.slot_freed.notify_one();
            match &frame {
                Frame::Error(text) => conn.record_reply(shared, at_us, Some(text)),
                _ => conn.record_reply(shared, at_us, None),
            }
        }
        if shared.stopping() {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Some("closed by the server".to_string()),
            Ok(n) => input.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Some(format!("reading: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_node::resp::next_request;
    use std::net::{Ipv4Addr, TcpListener};
    use std::sync::atomic::AtomicUsize;

    /// What the in-test server does; request indices count over all connections.
    #[derive(Default, Clone)]
    struct Behaviour {
        /// Before answering request `n`, stall this long (once).
        stall_at: Option<(u64, Duration)>,
        /// Wait this long before answering each batch read.
        batch_delay: Duration,
        /// Answer every n-th request with an error.
        error_every: u64,
        /// Close the connection instead of answering request `n` (once).
        close_at: Option<u64>,
        never_reply: bool,
    }

    #[derive(Default)]
    struct ServerState {
        requests: AtomicU64,
        max_batch: AtomicUsize,
        accepts: AtomicU64,
        stalled: AtomicBool,
        closed: AtomicBool,
    }

    struct TestServer {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        state: Arc<ServerState>,
        accept: Option<JoinHandle<()>>,
    }

    impl TestServer {
        fn start(behaviour: Behaviour) -> TestServer {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let state = Arc::new(ServerState::default());
            let (st, sa) = (stop.clone(), state.clone());
            let accept = thread::spawn(move || {
                let mut handlers = Vec::new();
                while !st.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            sa.accepts.fetch_add(1, Ordering::Relaxed);
                            let (st, sa, b) = (st.clone(), sa.clone(), behaviour.clone());
                            handlers.push(thread::spawn(move || serve(s, &st, &sa, &b)));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
                for h in handlers {
                    h.join().unwrap();
                }
            });
            TestServer {
                addr,
                stop,
                state,
                accept: Some(accept),
            }
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(h) = self.accept.take() {
                let _ = h.join();
            }
        }
    }

    /// Every kind of RESP2 reply, so the driver's parser meets them all.
    const REPLIES: [&[u8]; 7] = [
        b"+OK\r\n",
        b":42\r\n",
        b"$3\r\nbar\r\n",
        b"$-1\r\n",
        b"*2\r\n$1\r\na\r\n:1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
    ];

    fn serve(mut s: TcpStream, stop: &AtomicBool, state: &ServerState, b: &Behaviour) {
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let mut input = BytesMut::new();
        let mut chunk = vec![0u8; 64 << 10];
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => input.extend_from_slice(&chunk[..n]),
                Err(_) => continue,
            }
            let mut batch = 0;
            let mut out = Vec::new();
            while let Some(_req) = next_request(&mut input, &Limits::default()).unwrap() {
                batch += 1;
                let n = state.requests.fetch_add(1, Ordering::Relaxed);
                if let Some((at, pause)) = b.stall_at {
                    if n >= at && !state.stalled.swap(true, Ordering::Relaxed) {
                        thread::sleep(pause);
                    }
                }
                if b.close_at.is_some_and(|at| n >= at)
                    && !state.closed.swap(true, Ordering::Relaxed)
                {
                    let _ = s.write_all(&out);
                    let _ = s.shutdown(Shutdown::Both);
                    return;
                }
                if b.never_reply {
                    continue;
                }
                if n.checked_rem(b.error_every) == Some(0) {
                    if n & 1 == 0 {
                        out.extend_from_slice(b"-ERR boom\r\n");
                    } else {
                        out.extend_from_slice(b"-TRYAGAIN later\r\n");
                    }
                } else {
                    out.extend_from_slice(REPLIES[n as usize % REPLIES.len()]);
                }
            }
            state.max_batch.fetch_max(batch, Ordering::Relaxed);
            if !b.batch_delay.is_zero() {
                thread::sleep(b.batch_delay);
            }
            if s.write_all(&out).is_err() {
                return;
            }
        }
    }

    fn every(n: u64, gap_us: u64) -> impl Iterator<Item = Timed> + Send {
        (0..n).map(move |i| Timed {
            at_us: i * gap_us,
            site: 0,
            args: vec![Bytes::from_static(b"GET"), Bytes::from(format!("k{i}"))],
            write: false,
        })
    }

    fn options(
        server: &TestServer,
        connections: usize,
        pipeline: usize,
        seconds: f64,
    ) -> DriverOptions {
        DriverOptions {
            sites: vec![server.addr],
            connections_per_site: connections,
            pipeline,
            seconds,
            drain: Duration::from_secs(2),
            progress: None,
        }
    }

    fn balanced(r: &RunResult) {
        assert_eq!(r.sent, r.ok + r.errors + r.unanswered, "{r:?}");
        assert_eq!(r.windows.iter().map(|w| w.sent).sum::<u64>(), r.sent);
        assert_eq!(r.total.len(), r.ok);
    }

    #[test]
    fn driver_open_loop_a_stall_delays_every_request_scheduled_during_it() {
        let server = TestServer::start(Behaviour {
            stall_at: Some((300, Duration::from_millis(200))),
            ..Behaviour::default()
        });
        let mut seen = Vec::new();
        let r = run(every(1000, 1000), &options(&server, 1, 1, 1.5), |w| {
            seen.push(w.second)
        })
        .unwrap();
        balanced(&r);
        assert_eq!(r.sent, 1000);
        assert_eq!(r.ok, 1000);
        assert_eq!(seen, r.windows.iter().map(|w| w.second).collect::<Vec<_>>());
        // About 200 requests were due during the 200 ms stall; their latencies run
        // from ~200 ms down to ~0. Closed-loop accounting would show one slow request.
        let slow = r.total.count_between(100_000, MAX_LATENCY_US);
        assert!((80..=200).contains(&slow), "{slow} requests over 100 ms");
        let stalled = r.total.count_between(20_000, MAX_LATENCY_US);
        assert!(stalled >= 150, "{stalled} requests over 20 ms");
        assert!(r.total.max() >= 190_000, "max {}", r.total.max());
        assert!(r.total.max() < 600_000, "max {}", r.total.max());
    }

    #[test]
    fn driver_pipelining_keeps_several_requests_in_flight() {
        for (pipeline, expect_more_than_one) in [(8, true), (1, false)] {
            let server = TestServer::start(Behaviour {
                batch_delay: Duration::from_millis(10),
                ..Behaviour::default()
            });
            let r = run(every(100, 100), &options(&server, 1, pipeline, 1.0), |_| {}).unwrap();
            balanced(&r);
            assert_eq!(r.ok, 100);
            let max = server.state.max_batch.load(Ordering::Relaxed);
            assert!(
                max <= pipeline,
                "{max} requests read at once, pipeline {pipeline}"
            );
            assert_eq!(
                max > 1,
                expect_more_than_one,
                "pipeline {pipeline}: max batch {max}"
            );
        }
    }

    #[test]
    fn driver_error_replies_are_counted_and_sampled() {
        let server = TestServer::start(Behaviour {
            error_every: 3,
            ..Behaviour::default()
        });
        let r = run(every(300, 500), &options(&server, 2, 4, 1.0), |_| {}).unwrap();
        balanced(&r);
        assert_eq!(r.errors, 100);
        // Every other reply type (status, integer, bulk, nulls, arrays) is a success.
        assert_eq!(r.ok, 200);
        assert!(
            r.error_samples.contains(&"ERR boom".to_string()),
            "{:?}",
            r.error_samples
        );
        assert!(r.error_samples.contains(&"TRYAGAIN later".to_string()));
        assert_eq!(
            r.error_samples.len(),
            2,
            "distinct only: {:?}",
            r.error_samples
        );
    }

    #[test]
    fn driver_survives_a_closed_connection() {
        let server = TestServer::start(Behaviour {
            close_at: Some(50),
            batch_delay: Duration::from_millis(1),
            ..Behaviour::default()
        });
        let r = run(every(300, 2000), &options(&server, 1, 4, 1.0), |_| {}).unwrap();
        balanced(&r);
        assert_eq!(r.sent, 300);
        assert_eq!(r.unanswered, 0);
        assert!(r.errors >= 1, "the lost in-flight requests are errors");
        assert!(
            r.errors <= 8,
            "only what was in flight or queued is lost: {}",
            r.errors
        );
        assert!(r.ok >= 290, "ok {}", r.ok);
        assert_eq!(server.state.accepts.load(Ordering::Relaxed), 2);
        assert!(
            r.error_samples.iter().any(|s| s.contains("lost")),
            "{:?}",
            r.error_samples
        );
    }

    #[test]
    fn driver_queue_is_bounded_and_the_run_stops_by_itself() {
        let server = TestServer::start(Behaviour {
            never_reply: true,
            ..Behaviour::default()
        });
        let mut opts = options(&server, 1, 2, 0.2);
        opts.drain = Duration::from_millis(100);
        let t = Instant::now();
        let r = run_bounded(every(1000, 100), &opts, 50, |_| {}).unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        balanced(&r);
        assert_eq!(r.sent, 1000);
        assert_eq!(r.ok, 0);
        assert_eq!(r.unanswered, 50);
        assert_eq!(r.errors, 950);
        assert!(r.error_samples.iter().any(|s| s.contains("overloaded")));
    }

    #[test]
    fn driver_requests_due_after_the_run_are_not_sent() {
        let server = TestServer::start(Behaviour::default());
        let mut calls = 0;
        let r = run(every(100_000, 1000), &options(&server, 2, 1, 2.0), |_| {
            calls += 1
        })
        .unwrap();
        balanced(&r);
        assert_eq!(r.sent, 2000);
        assert_eq!(r.windows.len(), 2);
        assert_eq!(calls, 2);
        assert!(
            (900..=1100).contains(&r.windows[0].sent),
            "{}",
            r.windows[0].sent
        );
        assert_eq!(r.windows[0].per_site.len(), 1);
    }
}
