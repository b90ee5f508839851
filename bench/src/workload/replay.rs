//! Trace replay: CSV lines `timestamp_ms,site,op,key,size`.
//!
//! - An optional header line whose first field is `timestamp_ms` or `timestamp`.
//! - `timestamp_ms`: non-negative decimal milliseconds, non-decreasing (the file is streamed,
//!   never sorted); times are replayed relative to the first line's.
//! - `site` < the run's `sites` (and < 16).
//! - `op`: get|read → Read, set|update → Update, insert → Insert, scan → Scan (size = record
//!   count, ≥ 1), rmw → ReadModifyWrite; case-insensitive.
//! - `key`: the bytes between the third comma and the last one (so keys may hold commas),
//!   1..=1024 bytes of UTF-8.
//! - `size`: bytes written by set/update/insert/rmw, ≤ 512 MiB; ignored by reads.
//! - Lines are ≤ 64 KiB; blank lines are skipped; `\r\n` endings are accepted.
//!
//! Preload is empty: the distinct keys of a trace are unbounded, and keeping a set of them to
//! preload would defeat streaming. A trace that reads before writing simply misses.
//!
//! The file is checked (one streaming pass, constant memory, up to the end of the schedule:
//! lines due after `seconds` are never read) when opened, so errors come with their line
//! number before the run starts; the replay then streams it again.

use super::{secs_to_us, Op, Params, Phase, Request, Workload, WorkloadError, MAX_SITES};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

pub const MAX_LINE: usize = 64 << 10;
pub const MAX_KEY: usize = 1 << 10;
pub const MAX_SIZE: u64 = 512 << 20;

pub(crate) struct Replay {
    reader: TraceReader,
}

struct TraceReader {
    path: PathBuf,
    input: BufReader<File>,
    buf: Vec<u8>,
    line: u64,
    sites: u32,
    end_us: u64,
    first_ms: Option<f64>,
    last_ms: f64,
    done: bool,
}

impl TraceReader {
    fn open(path: &Path, params: &Params) -> Result<TraceReader, WorkloadError> {
        let file = File::open(path).map_err(|source| WorkloadError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(TraceReader {
            path: path.to_path_buf(),
            input: BufReader::new(file),
            buf: Vec::with_capacity(256),
            line: 0,
            sites: params.sites.min(MAX_SITES),
            end_us: params.end_us(),
            first_ms: None,
            last_ms: 0.0,
            done: false,
        })
    }

    fn error(&self, reason: String) -> WorkloadError {
        WorkloadError::Trace {
            path: self.path.clone(),
            line: self.line,
            reason,
        }
    }

    /// The next request, None at the end of the file or of the schedule.
    fn next(&mut self) -> Result<Option<Request>, WorkloadError> {
        while !self.done {
            self.buf.clear();
            // Reads at most one byte past the longest allowed line plus "\r\n", so an endless
            // line costs bounded memory before it is rejected.
            let limit = MAX_LINE as u64 + 3;
            let read = (&mut self.input)
                .take(limit)
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| WorkloadError::Read {
                    path: self.path.clone(),
                    line: self.line + 1,
                    source,
                })?;
            if read == 0 {
                self.done = true;
                break;
            }
            self.line += 1;
            let mut content: &[u8] = &self.buf;
            if let Some(rest) = content.strip_suffix(b"\n") {
                content = rest;
            }
            if let Some(rest) = content.strip_suffix(b"\r") {
                content = rest;
            }
            if content.len() > MAX_LINE {
                return Err(self.error(format!("line longer than {MAX_LINE} bytes")));
            }
            let text = std::str::from_utf8(content)
                .map_err(|e| self.error(format!("not UTF-8: {e}")))?
                .to_owned();
            if text.trim().is_empty() {
                continue;
            }
            if self.line == 1 && is_header(&text) {
                continue;
            }
            let request = self.parse(&text)?;
            if request.at_us >= self.end_us {
                self.done = true;
                break;
            }
            return Ok(Some(request));
        }
        Ok(None)
    }

    fn parse(&mut self, text: &str) -> Result<Request, WorkloadError> {
        let mut head = text.splitn(4, ',');
        let (Some(ts), Some(site), Some(op), Some(rest)) =
            (head.next(), head.next(), head.next(), head.next())
        else {
            return Err(self.error("expected 5 fields: timestamp_ms,site,op,key,size".into()));
        };
        let Some((key, size)) = rest.rsplit_once(',') else {
            return Err(self.error("expected 5 fields: timestamp_ms,site,op,key,size".into()));
        };

        let ts = ts.trim();
        let ms: f64 = ts
            .parse()
            .ok()
            .filter(|ms: &f64| ms.is_finite() && *ms >= 0.0)
            .ok_or_else(|| self.error(format!("bad timestamp_ms {ts:?}")))?;
        if self.first_ms.is_some() && ms < self.last_ms {
            return Err(self.error(format!(
                "timestamp {ms} ms is before the previous line's {} ms; traces must be in \
                 non-decreasing time order (they are streamed, not sorted)",
                self.last_ms
            )));
        }
        let first = *self.first_ms.get_or_insert(ms);
        self.last_ms = ms;

        let site_text = site.trim();
        let site: u32 = site_text
            .parse()
            .map_err(|_| self.error(format!("bad site {site_text:?}")))?;
        if site >= self.sites {
            return Err(self.error(format!(
                "site {site} out of range (this run has {} sites)",
                self.sites
            )));
        }

        let size_text = size.trim();
        let size: u64 = size_text
            .parse()
            .map_err(|_| self.error(format!("bad size {size_text:?}")))?;
        if size > MAX_SIZE {
            return Err(self.error(format!("size {size} exceeds {MAX_SIZE}")));
        }
        // Bounded by MAX_SIZE above, so it fits.
        let size = size as u32;

        if key.is_empty() {
            return Err(self.error("empty key".into()));
        }
        if key.len() > MAX_KEY {
            return Err(self.error(format!("key of {} bytes exceeds {MAX_KEY}", key.len())));
        }

        let op_text = op.trim();
        let (op, value_len) = match op_text.to_ascii_lowercase().as_str() {
            "get" | "read" => (Op::Read, 0),
            "set" | "update" => (Op::Update, size),
            "insert" => (Op::Insert, size),
            "rmw" => (Op::ReadModifyWrite, size),
            "scan" if size >= 1 => (Op::Scan { records: size }, 0),
            "scan" => {
                return Err(self.error("scan needs a size (record count) of at least 1".into()))
            }
            _ => {
                return Err(self.error(format!(
                    "unknown op {op_text:?} (expected get|set|read|update|insert|scan|rmw)"
                )))
            }
        };

        Ok(Request {
            at_us: secs_to_us((ms - first) / 1000.0),
            site,
            op,
            key: key.as_bytes().to_vec(),
            value_len,
        })
    }
}

fn is_header(line: &str) -> bool {
    let first = line.split(',').next().unwrap_or("").trim();
    first.eq_ignore_ascii_case("timestamp_ms") || first.eq_ignore_ascii_case("timestamp")
}

impl Replay {
    pub(crate) fn open(path: &Path, params: &Params) -> Result<Replay, WorkloadError> {
        params.validate()?;
        let mut check = TraceReader::open(path, params)?;
        while check.next()?.is_some() {}
        Ok(Replay {
            reader: TraceReader::open(path, params)?,
        })
    }
}

impl Workload for Replay {
    fn name(&self) -> &str {
        "replay"
    }

    fn preload(&self) -> Box<dyn Iterator<Item = (Vec<u8>, u32)> + Send + '_> {
        Box::new(std::iter::empty())
    }

    fn next_request(&mut self) -> Option<Request> {
        match self.reader.next() {
            Ok(request) => request,
            Err(error) => {
                // Only reachable if the file changed after it was checked at open.
                tracing::error!(%error, "trace replay stopped");
                self.reader.done = true;
                None
            }
        }
    }

    fn phases(&self) -> Vec<Phase> {
        Vec::new()
    }
}
