//! Sequential scans and session walks.
//!
//! The key space is cut into `WALK_RANGES` equal record ranges. One session runs per period,
//! from site `k % sites` in period k (sites take turns); it scans its range front to back in
//! `SCAN_RECORDS`-record steps (wrapping at the range end) and moves on at the period boundary
//! following a Markov chain: range r → r+1 with probability 0.8, else a uniformly random range.
//! The session issues 80% of the load; the rest is uniform background from every site.
//! The plan (range per period) is drawn at construction from its own stream, so `phases()`
//! gives the oracle the realised range of every period ahead of time.

use super::rng::{Arrivals, Rng};
use super::{
    ordered_preload, range_hi, read_or_update, record_key, secs_to_us, Op, Params, Phase, Request,
    Workload,
};

const WALK_RANGES: u64 = 16;
const STEP_NEXT: f64 = 0.8;
const SESSION_SHARE: f64 = 0.8;
const SCAN_RECORDS: u64 = 50;

pub(crate) struct Walk {
    rng: Rng,
    arrivals: Arrivals,
    params: Params,
    ranges: u64,
    /// Range walked in each period.
    plan: Vec<u64>,
    period: usize,
    cursor: u64,
}

impl Walk {
    pub(crate) fn new(params: &Params) -> Walk {
        let ranges = WALK_RANGES.min(params.records);
        let periods = ((params.seconds / params.period_s).ceil() as usize).max(1);
        let mut plan_rng = Rng::new(params.seed, 0x706c_616e);
        let mut plan = Vec::with_capacity(periods);
        let mut r = plan_rng.below(ranges);
        for _ in 0..periods {
            plan.push(r);
            r = if plan_rng.chance(STEP_NEXT) {
                (r + 1) % ranges
            } else {
                plan_rng.below(ranges)
            };
        }
        let mut walk = Walk {
            rng: Rng::new(params.seed, 0x7761_6c6b),
            arrivals: Arrivals::new(params.seconds),
            params: params.clone(),
            ranges,
            plan,
            period: 0,
            cursor: 0,
        };
        walk.cursor = walk.bounds(walk.plan[0]).0;
        walk
    }

    /// Records [lo, hi) of range r.
    fn bounds(&self, r: u64) -> (u64, u64) {
        let at = |i: u64| (i as u128 * self.params.records as u128 / self.ranges as u128) as u64;
        (at(r), at(r + 1))
    }
}

impl Workload for Walk {
    fn name(&self) -> &str {
        "walk"
    }

    fn preload(&self) -> Box<dyn Iterator<Item = (Vec<u8>, u32)> + Send + '_> {
        ordered_preload(self.params.records, self.params.value_len)
    }

    fn next_request(&mut self) -> Option<Request> {
        let p = &self.params;
        let t = self.arrivals.next(&mut self.rng, p.rate)?;
        let period = ((t / p.period_s) as usize).min(self.plan.len() - 1);
        if period != self.period {
            self.period = period;
            self.cursor = self.bounds(self.plan[period]).0;
        }
        if self.rng.chance(SESSION_SHARE) {
            let (lo, hi) = self.bounds(self.plan[period]);
            if self.cursor >= hi {
                self.cursor = lo;
            }
            let start = self.cursor;
            let len = SCAN_RECORDS.min(hi - start).max(1);
            self.cursor += len;
            return Some(Request {
                at_us: secs_to_us(t),
                site: (period as u64 % p.sites as u64) as u32,
                op: Op::Scan {
                    records: len as u32,
                },
                key: record_key(start, p.records),
                value_len: 0,
            });
        }
        let site = self.rng.below(p.sites as u64) as u32;
        let id = self.rng.below(p.records);
        Some(read_or_update(&mut self.rng, &self.params, t, site, id))
    }

    fn phases(&self) -> Vec<Phase> {
        let p = &self.params;
        self.plan
            .iter()
            .enumerate()
            .map(|(k, &r)| {
                let (lo, hi) = self.bounds(r);
                Phase {
                    from_us: secs_to_us(k as f64 * p.period_s),
                    to_us: secs_to_us(((k + 1) as f64 * p.period_s).min(p.seconds)),
                    site: (k as u64 % p.sites as u64) as u32,
                    lo: record_key(lo, p.records),
                    hi: range_hi(hi, p.records),
                }
            })
            .filter(|phase| phase.from_us < phase.to_us)
            .collect()
    }
}
