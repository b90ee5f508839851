//! Follow-the-sun: each site's activity rises and falls over a compressed "day" of
//! `sites * period_s` seconds, site s peaking at offset s/sites of the day, and each site
//! prefers its own region of the key space (70% of its requests in region s of `sites` equal
//! regions, the rest uniform). Ownership of region s should follow the sun to node s+1.
//!
//! Site s's intensity is (rate/sites)·(1 + A·cos(2π(t/day − s/sites))). For two or more sites
//! the cosines cancel and the total stays `rate`; with one site the total is a sine around
//! `rate`.

use super::rng::{Arrivals, Rng};
use super::{
    ordered_preload, range_hi, read_or_update, record_key, secs_to_us, Params, Phase, Request,
    Workload,
};
use std::f64::consts::TAU;

/// Swing of each site's activity: peak 1.8x, trough 0.2x its mean (a 9:1 day/night ratio).
const AMPLITUDE: f64 = 0.8;
const OWN_REGION_SHARE: f64 = 0.7;

pub(crate) struct Sun {
    rng: Rng,
    arrivals: Arrivals,
    params: Params,
    day: f64,
}

/// Records [lo, hi) of region `s` out of `sites`.
pub(crate) fn region(s: u32, sites: u32, records: u64) -> (u64, u64) {
    let at = |i: u64| (i as u128 * records as u128 / sites as u128) as u64;
    (at(s as u64), at(s as u64 + 1))
}

impl Sun {
    pub(crate) fn new(params: &Params) -> Sun {
        Sun {
            rng: Rng::new(params.seed, 0x7375_6e00),
            arrivals: Arrivals::new(params.seconds),
            params: params.clone(),
            day: params.sites as f64 * params.period_s,
        }
    }

    /// Site s's activity relative to its mean, in [1 - A, 1 + A].
    fn activity(&self, s: u32, t: f64) -> f64 {
        let offset = s as f64 / self.params.sites as f64;
        1.0 + AMPLITUDE * (TAU * (t / self.day - offset)).cos()
    }
}

impl Workload for Sun {
    fn name(&self) -> &str {
        "sun"
    }

    fn preload(&self) -> Box<dyn Iterator<Item = (Vec<u8>, u32)> + Send + '_> {
        ordered_preload(self.params.records, self.params.value_len)
    }

    fn next_request(&mut self) -> Option<Request> {
        let p = &self.params;
        let max_rate = p.rate * (1.0 + AMPLITUDE);
        // Thinning per site: a candidate at the peak rate belongs to a uniformly chosen site and
        // is kept in proportion to that site's activity at its time.
        let (t, site) = loop {
            let t = self.arrivals.next(&mut self.rng, max_rate)?;
            let site = self.rng.below(p.sites as u64) as u32;
            if self.rng.f64() * (1.0 + AMPLITUDE) < self.activity(site, t) {
                break (t, site);
            }
        };
        let id = if self.rng.chance(OWN_REGION_SHARE) {
            let (lo, hi) = region(site, p.sites, p.records);
            self.rng.in_range(lo, hi)
        } else {
            self.rng.below(p.records)
        };
        Some(read_or_update(&mut self.rng, &self.params, t, site, id))
    }

    /// Site s leads its region while it is the most active site: the day's slice
    /// [(s − ½)/sites, (s + ½)/sites) around its peak.
    fn phases(&self) -> Vec<Phase> {
        let p = &self.params;
        let n = p.sites as f64;
        let days = (p.seconds / self.day).ceil() as u64;
        let mut phases = Vec::new();
        for d in 0..=days {
            for s in 0..p.sites {
                let from = (d as f64 + (s as f64 - 0.5) / n) * self.day;
                let to = (d as f64 + (s as f64 + 0.5) / n) * self.day;
                let (from, to) = (from.max(0.0), to.min(p.seconds));
                if from >= to {
                    continue;
                }
                let (lo, hi) = region(s, p.sites, p.records);
                phases.push(Phase {
                    from_us: secs_to_us(from),
                    to_us: secs_to_us(to),
                    site: s,
                    lo: record_key(lo, p.records),
                    hi: range_hi(hi, p.records),
                });
            }
        }
        phases.sort_by_key(|ph| (ph.from_us, ph.site));
        phases
    }
}
