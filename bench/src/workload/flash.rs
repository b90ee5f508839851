//! Flash crowd: uniform background from every site, then, at an unannounced time (seeded,
//! between 30% and 50% of the run), one site hammers one small range (records/256 records,
//! so inside one first-byte value) at 9x the background rate for `period_s`: 10x the load
//! while it lasts. The background rate is scaled so that the mean over the run stays `rate`.

use super::rng::{Arrivals, Rng};
use super::{
    ordered_preload, range_hi, read_or_update, record_key, secs_to_us, Params, Phase, Request,
    Workload,
};

const SPIKE_FACTOR: f64 = 10.0;

pub(crate) struct Flash {
    rng: Rng,
    arrivals: Arrivals,
    params: Params,
    base_rate: f64,
    spike_from: f64,
    spike_to: f64,
    spike_site: u32,
    spike_lo: u64,
    spike_hi: u64,
}

impl Flash {
    pub(crate) fn new(params: &Params) -> Flash {
        let mut plan = Rng::new(params.seed, 0x666c_6173);
        let spike_from = params.seconds * (0.3 + 0.2 * plan.f64());
        let spike_to = (spike_from + params.period_s).min(params.seconds);
        let spike_len = (params.records / 256).max(1);
        let spike_lo = plan.below(params.records - spike_len + 1);
        let spike_site = plan.below(params.sites as u64) as u32;
        let extra = (SPIKE_FACTOR - 1.0) * (spike_to - spike_from);
        let base_rate = if params.seconds > 0.0 {
            params.rate * params.seconds / (params.seconds + extra)
        } else {
            params.rate
        };
        Flash {
            rng: Rng::new(params.seed, 0x6372_6f77),
            arrivals: Arrivals::new(params.seconds),
            params: params.clone(),
            base_rate,
            spike_from,
            spike_to,
            spike_site,
            spike_lo,
            spike_hi: spike_lo + spike_len,
        }
    }
}

impl Workload for Flash {
    fn name(&self) -> &str {
        "flash"
    }

    fn preload(&self) -> Box<dyn Iterator<Item = (Vec<u8>, u32)> + Send + '_> {
        ordered_preload(self.params.records, self.params.value_len)
    }

    fn next_request(&mut self) -> Option<Request> {
        let (base, from, to) = (self.base_rate, self.spike_from, self.spike_to);
        let t = self.arrivals.next_piecewise(&mut self.rng, |t| {
            if t < from {
                (base, from)
            } else if t < to {
                (base * SPIKE_FACTOR, to)
            } else {
                (base, f64::INFINITY)
            }
        })?;
        let p = &self.params;
        let in_spike = t >= from && t < to;
        let (site, id) = if in_spike && !self.rng.chance(1.0 / SPIKE_FACTOR) {
            let id = self.rng.in_range(self.spike_lo, self.spike_hi);
            (self.spike_site, id)
        } else {
            let site = self.rng.below(p.sites as u64) as u32;
            (site, self.rng.below(p.records))
        };
        Some(read_or_update(&mut self.rng, &self.params, t, site, id))
    }

    fn phases(&self) -> Vec<Phase> {
        if self.spike_from >= self.spike_to {
            return Vec::new();
        }
        let p = &self.params;
        vec![Phase {
            from_us: secs_to_us(self.spike_from),
            to_us: secs_to_us(self.spike_to),
            site: self.spike_site,
            lo: record_key(self.spike_lo, p.records),
            hi: range_hi(self.spike_hi, p.records),
        }]
    }
}
