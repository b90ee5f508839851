//! Moving hotspot: one fixed hot range whose hot *site* changes every period.
//!
//! The hot range H is `records / 16` contiguous records starting at `records / 4`. In phase k
//! (each `period_s` long) site `k % sites` issues 80% of the load, all on H; the other 20% is
//! background from every site, uniform over all records. Placement should follow H to the node
//! next to the hot site.

use super::rng::{Arrivals, Rng};
use super::{
    ordered_preload, range_hi, read_or_update, record_key, secs_to_us, Params, Phase, Request,
    Workload,
};

const HOT_SHARE: f64 = 0.8;

pub(crate) struct Hotspot {
    rng: Rng,
    arrivals: Arrivals,
    params: Params,
    hot_lo: u64,
    hot_hi: u64,
}

/// The hot records [lo, hi) for a key space of `records`.
pub(crate) fn hot_range(records: u64) -> (u64, u64) {
    let lo = records / 4;
    let hi = (lo + (records / 16).max(1)).min(records);
    (lo, hi)
}

impl Hotspot {
    pub(crate) fn new(params: &Params) -> Hotspot {
        let (hot_lo, hot_hi) = hot_range(params.records);
        Hotspot {
            rng: Rng::new(params.seed, 0x686f_7473),
            arrivals: Arrivals::new(params.seconds),
            params: params.clone(),
            hot_lo,
            hot_hi,
        }
    }

    fn hot_site(&self, t: f64) -> u32 {
        ((t / self.params.period_s) as u64 % self.params.sites as u64) as u32
    }
}

impl Workload for Hotspot {
    fn name(&self) -> &str {
        "hotspot"
    }

    fn preload(&self) -> Box<dyn Iterator<Item = (Vec<u8>, u32)> + Send + '_> {
        ordered_preload(self.params.records, self.params.value_len)
    }

    fn next_request(&mut self) -> Option<Request> {
        let t = self.arrivals.next(&mut self.rng, self.params.rate)?;
        let (site, id) = if self.rng.chance(HOT_SHARE) {
            (
                self.hot_site(t),
                self.rng.in_range(self.hot_lo, self.hot_hi),
            )
        } else {
            let site = self.rng.below(self.params.sites as u64) as u32;
            (site, self.rng.below(self.params.records))
        };
        Some(read_or_update(&mut self.rng, &self.params, t, site, id))
    }

    fn phases(&self) -> Vec<Phase> {
        let p = &self.params;
        let lo = record_key(self.hot_lo, p.records);
        let hi = range_hi(self.hot_hi, p.records);
        let count = (p.seconds / p.period_s).ceil() as u64;
        (0..count)
            .map(|k| Phase {
                from_us: secs_to_us(k as f64 * p.period_s),
                to_us: secs_to_us(((k + 1) as f64 * p.period_s).min(p.seconds)),
                site: (k % p.sites as u64) as u32,
                lo: lo.clone(),
                hi: hi.clone(),
            })
            .collect()
    }
}
