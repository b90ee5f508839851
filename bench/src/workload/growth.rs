//! Prefix write growth: one site appends new keys under a fresh prefix (first byte 0xF0, which
//! the loaded records never use) at a share of the load growing linearly from 5% to 60% over
//! the run; the rest are reads from every site, uniform over the loaded records. The prefix's
//! fragment heats up and grows; placement should split or move it towards the writer.
//!
//! The loaded records keep the ordered layout but spread over first bytes 0x00..=0xEF only
//! (record i gets the first byte of `record_key(i, span)` with span = ⌈records·16/15⌉).

use super::rng::{Arrivals, Rng};
use super::{push_decimal, record_key, secs_to_us, Op, Params, Phase, Request, Workload};

pub(crate) const GROWTH_PREFIX: u8 = 0xF0;
const WRITE_SHARE_START: f64 = 0.05;
const WRITE_SHARE_END: f64 = 0.60;

pub(crate) struct Growth {
    rng: Rng,
    arrivals: Arrivals,
    params: Params,
    /// Key-space span the loaded records are laid out over, so they stay below the prefix.
    span: u64,
    writer: u32,
    written: u64,
}

impl Growth {
    pub(crate) fn new(params: &Params) -> Growth {
        let mut plan = Rng::new(params.seed, 0x6772_6f77);
        Growth {
            rng: Rng::new(params.seed, 0x7772_6974),
            arrivals: Arrivals::new(params.seconds),
            params: params.clone(),
            span: (params.records * 16).div_ceil(15),
            writer: plan.below(params.sites as u64) as u32,
            written: 0,
        }
    }

    fn write_share(&self, t: f64) -> f64 {
        let progress = if self.params.seconds > 0.0 {
            t / self.params.seconds
        } else {
            0.0
        };
        WRITE_SHARE_START + (WRITE_SHARE_END - WRITE_SHARE_START) * progress
    }
}

/// Key of the n-th record written under the growth prefix.
pub(crate) fn growth_key(n: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(15);
    key.push(GROWTH_PREFIX);
    key.extend_from_slice(b"grow");
    push_decimal(&mut key, n, 10);
    key
}

impl Workload for Growth {
    fn name(&self) -> &str {
        "growth"
    }

    fn preload(&self) -> Box<dyn Iterator<Item = (Vec<u8>, u32)> + Send + '_> {
        let (span, value_len) = (self.span, self.params.value_len);
        Box::new((0..self.params.records).map(move |i| (record_key(i, span), value_len)))
    }

    fn next_request(&mut self) -> Option<Request> {
        let t = self.arrivals.next(&mut self.rng, self.params.rate)?;
        if self.rng.chance(self.write_share(t)) {
            let key = growth_key(self.written);
            self.written += 1;
            return Some(Request {
                at_us: secs_to_us(t),
                site: self.writer,
                op: Op::Insert,
                key,
                value_len: self.params.value_len,
            });
        }
        let site = self.rng.below(self.params.sites as u64) as u32;
        let id = self.rng.below(self.params.records);
        Some(Request {
            at_us: secs_to_us(t),
            site,
            op: Op::Read,
            key: record_key(id, self.span),
            value_len: 0,
        })
    }

    fn phases(&self) -> Vec<Phase> {
        if self.params.seconds <= 0.0 {
            return Vec::new();
        }
        vec![Phase {
            from_us: 0,
            to_us: self.params.end_us(),
            site: self.writer,
            lo: vec![GROWTH_PREFIX],
            hi: vec![GROWTH_PREFIX + 1],
        }]
    }
}
