//! Seeded, reproducible workload generators for the evaluation harness (issue #10).
//!
//! Every generator is a pure function of its [`Params`]: the same seed and parameters give the
//! same request sequence on every machine (the PRNG is our own xoshiro256++, not a library
//! generator whose stream may change between versions). Arrivals are open-loop Poisson; where
//! the intensity changes over time the arrivals are thinned (Lewis–Shedler), which keeps them an
//! exact non-homogeneous Poisson process (piecewise-constant rates are drawn piece by piece).
//!
//! Keys are ordered ([`record_key`]): the first byte follows the record id, so a range of records
//! maps onto a range of fragments and the locality a workload designs is visible to placement.
//!
//! Families: `ycsb` (core workloads A–F), `hotspot`, `sun`, `walk`, `flash`, `growth`, `mix`
//! (one file each), and `replay` for CSV traces.

mod flash;
mod growth;
mod hotspot;
mod mix;
mod replay;
mod rng;
mod sun;
mod walk;
mod ycsb;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use ycsb::{ScrambledZipfian, Zipfian, YCSB_ZETAN, ZIPFIAN_THETA};

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Read,
    Update,
    Insert,
    Scan { records: u32 },
    ReadModifyWrite,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Due time, microseconds from the start of the run.
    pub at_us: u64,
    /// Issuing client site, < `params.sites`.
    pub site: u32,
    pub op: Op,
    /// For `Scan`: the first record's key.
    pub key: Vec<u8>,
    /// Bytes written (Update/Insert/ReadModifyWrite), 0 otherwise.
    pub value_len: u32,
}

/// Ground truth: from `from_us` to `to_us`, site `site` makes most accesses to keys in
/// [lo, hi) (hi empty = end of key space). The oracle policy hints these ahead of time;
/// the report draws them against what the controller predicted.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub from_us: u64,
    pub to_us: u64,
    pub site: u32,
    pub lo: Vec<u8>,
    pub hi: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Params {
    pub seed: u64,
    /// Schedule length; `next_request` returns None after it.
    pub seconds: f64,
    /// 1..=16.
    pub sites: u32,
    /// Total requests per second over all sites (mean over the schedule).
    pub rate: f64,
    /// Key-space size, 1..=10_000_000.
    pub records: u64,
    /// Default value size (YCSB: 10 fields x 100 B = 1000).
    pub value_len: u32,
    /// For shifting workloads: seconds per phase/shift.
    pub period_s: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            seed: 1,
            seconds: 60.0,
            sites: 3,
            rate: 10_000.0,
            records: 100_000,
            value_len: 1000,
            period_s: 10.0,
        }
    }
}

pub const MAX_SITES: u32 = 16;
pub const MAX_RECORDS: u64 = 10_000_000;
/// Bounds a generated value so a typo in a config cannot ask the driver for gigabytes per write.
pub const MAX_PERIODS: f64 = 1_000_000.0;
pub const MAX_VALUE_LEN: u32 = 512 << 20;

impl Params {
    /// Rejects parameters no generator can honour, naming the field.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let bad = |field: &'static str, reason: String| Err(WorkloadError::Param { field, reason });
        if !(self.seconds.is_finite() && self.seconds >= 0.0) {
            return bad(
                "seconds",
                format!("{} is not a finite, non-negative length", self.seconds),
            );
        }
        // Keeps every due time representable in u64 microseconds with room to spare.
        if self.seconds > 1.0e9 {
            return bad("seconds", format!("{} exceeds 1e9", self.seconds));
        }
        if !(1..=MAX_SITES).contains(&self.sites) {
            return bad(
                "sites",
                format!("{} is outside 1..={MAX_SITES}", self.sites),
            );
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return bad(
                "rate",
                format!("{} is not a finite, positive rate", self.rate),
            );
        }
        if !(1..=MAX_RECORDS).contains(&self.records) {
            return bad(
                "records",
                format!("{} is outside 1..={MAX_RECORDS}", self.records),
            );
        }
        if self.value_len > MAX_VALUE_LEN {
            return bad(
                "value_len",
                format!("{} exceeds {MAX_VALUE_LEN}", self.value_len),
            );
        }
        if !(self.period_s.is_finite() && self.period_s > 0.0) {
            return bad(
                "period_s",
                format!("{} is not a finite, positive period", self.period_s),
            );
        }
        // Phases are listed per period; this bounds that list.
        if self.seconds / self.period_s > MAX_PERIODS {
            return bad(
                "period_s",
                format!(
                    "{} s periods over {} s exceed {MAX_PERIODS} periods",
                    self.period_s, self.seconds
                ),
            );
        }
        Ok(())
    }

    pub(crate) fn end_us(&self) -> u64 {
        secs_to_us(self.seconds)
    }
}

pub trait Workload: Send {
    fn name(&self) -> &str;
    /// Records to load before the run, in key order: (key, value length). Bounded by records.
    fn preload(&self) -> Box<dyn Iterator<Item = (Vec<u8>, u32)> + Send + '_>;
    /// The next request, in non-decreasing `at_us`; None once `seconds` are over.
    fn next_request(&mut self) -> Option<Request>;
    /// Empty where there is no designed locality (YCSB).
    fn phases(&self) -> Vec<Phase>;
}

pub const NAMES: &[&str] = &[
    "ycsb-a", "ycsb-b", "ycsb-c", "ycsb-d", "ycsb-e", "ycsb-f", "hotspot", "sun", "walk", "flash",
    "growth", "mix",
];

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("unknown workload {name:?} (known: {})", NAMES.join(", "))]
    UnknownWorkload { name: String },
    #[error("invalid workload parameter {field}: {reason}")]
    Param { field: &'static str, reason: String },
    #[error("trace {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("trace {} line {line}: read failed: {source}", path.display())]
    Read {
        path: PathBuf,
        line: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("trace {} line {line}: {reason}", path.display())]
    Trace {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

/// Builds the named generator (see [`NAMES`]).
pub fn build(name: &str, params: &Params) -> Result<Box<dyn Workload>, WorkloadError> {
    params.validate()?;
    let workload: Box<dyn Workload> = match name {
        "ycsb-a" | "ycsb-b" | "ycsb-c" | "ycsb-d" | "ycsb-e" | "ycsb-f" => {
            Box::new(ycsb::Ycsb::new(name, params))
        }
        "hotspot" => Box::new(hotspot::Hotspot::new(params)),
        "sun" => Box::new(sun::Sun::new(params)),
        "walk" => Box::new(walk::Walk::new(params)),
        "flash" => Box::new(flash::Flash::new(params)),
        "growth" => Box::new(growth::Growth::new(params)),
        "mix" => Box::new(mix::Mix::new(params)),
        _ => {
            return Err(WorkloadError::UnknownWorkload {
                name: name.to_string(),
            })
        }
    };
    Ok(workload)
}

/// Streams a CSV trace `timestamp_ms,site,op,key,size` (format and bounds: `workload/replay.rs`).
/// The file is checked up to the end of the schedule (streaming, in constant memory) before
/// this returns, so a bad trace fails here with its line number rather than mid-run.
/// Its preload is empty: the distinct keys of a trace are unbounded.
pub fn replay(path: &std::path::Path, params: &Params) -> Result<Box<dyn Workload>, WorkloadError> {
    Ok(Box::new(replay::Replay::open(path, params)?))
}

/// Ordered key of record `i` in a key space of `records` records: one first byte
/// `i * 256 / records` (clamped to 255 for ids beyond `records`, i.e. inserts) and then
/// `user{i:010}`. Record order is key order and the records spread over all 256 first bytes.
pub fn record_key(i: u64, records: u64) -> Vec<u8> {
    let first = ((i as u128 * 256) / records.max(1) as u128).min(255) as u8;
    let mut key = Vec::with_capacity(15);
    key.push(first);
    key.extend_from_slice(b"user");
    push_decimal(&mut key, i, 10);
    key
}

/// The record number in a key made by [`record_key`]; None for any other key.
pub fn record_of(key: &[u8]) -> Option<u64> {
    let digits = key.get(1..)?.strip_prefix(b"user")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Appends `n` zero-padded to at least `width` digits (format! is measurably slower here, and
/// key building is on the generator's hot path).
fn push_decimal(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    out.resize(out.len() + width.saturating_sub(len), b'0');
    out.extend(digits[..len].iter().rev());
}

pub(crate) fn secs_to_us(t: f64) -> u64 {
    (t * 1e6) as u64
}

/// The key that bounds records [.., end) from above; empty when `end` is past the last record
/// (empty `hi` = end of key space).
pub(crate) fn range_hi(end: u64, records: u64) -> Vec<u8> {
    if end >= records {
        Vec::new()
    } else {
        record_key(end, records)
    }
}

/// Preload of records 0..records with the ordered layout.
pub(crate) fn ordered_preload(
    records: u64,
    value_len: u32,
) -> Box<dyn Iterator<Item = (Vec<u8>, u32)> + Send + 'static> {
    Box::new((0..records).map(move |i| (record_key(i, records), value_len)))
}

/// Share of reads in the locality workloads' own traffic (the rest are updates), so placement
/// decisions also move written data.
pub(crate) const READ_SHARE: f64 = 0.9;

/// The locality workloads' request for record `id` from `site` at `t` seconds: a read, or
/// (1 − `READ_SHARE`) an update of `value_len` bytes.
pub(crate) fn read_or_update(
    rng: &mut rng::Rng,
    params: &Params,
    t: f64,
    site: u32,
    id: u64,
) -> Request {
    let (op, value_len) = if rng.chance(READ_SHARE) {
        (Op::Read, 0)
    } else {
        (Op::Update, params.value_len)
    };
    Request {
        at_us: secs_to_us(t),
        site,
        op,
        key: record_key(id, params.records),
        value_len,
    }
}
