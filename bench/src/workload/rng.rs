//! A small, portable PRNG and the sampling helpers the generators share.
//!
//! xoshiro256++ seeded through SplitMix64: fast, well-tested statistically, and defined here so
//! a seed means the same schedule regardless of which `rand` version the workspace resolves.

#[derive(Clone, Debug)]
pub(crate) struct Rng {
    s: [u64; 4],
}

/// SplitMix64 step: also used to derive independent sub-seeds from one seed.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// `stream` separates independent generators derived from one seed (e.g. the plan of a
    /// workload and its request stream), so drawing more from one never shifts the other.
    pub(crate) fn new(seed: u64, stream: u64) -> Rng {
        let mut state = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let s = [
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
        ];
        Rng { s }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let result = self.s[0]
            .wrapping_add(self.s[3])
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub(crate) fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n); 0 when n is 0. Lemire's multiply-shift: the bias is below 2^-64 * n,
    /// far under anything a benchmark could observe.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in [lo, hi); lo when the range is empty.
    pub(crate) fn in_range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo))
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Exponential gap with the given rate (events per second).
    pub(crate) fn exp_gap(&mut self, rate: f64) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        -(1.0 - self.f64()).ln() / rate
    }
}

/// Poisson arrival clock over [0, end) seconds.
#[derive(Clone, Debug)]
pub(crate) struct Arrivals {
    t: f64,
    end: f64,
}

impl Arrivals {
    pub(crate) fn new(seconds: f64) -> Arrivals {
        Arrivals {
            t: 0.0,
            end: seconds,
        }
    }

    /// Next arrival of a homogeneous process with `rate`, or None past the end.
    pub(crate) fn next(&mut self, rng: &mut Rng, rate: f64) -> Option<f64> {
        if self.t >= self.end {
            return None;
        }
        self.t += rng.exp_gap(rate);
        (self.t < self.end).then_some(self.t)
    }

    /// Next arrival of a process whose rate is piecewise constant: `piece(t)` gives the rate
    /// from t on and the time it next changes. A gap that would cross a change is redrawn from
    /// the change at the new rate, which is exact because exponential gaps are memoryless.
    pub(crate) fn next_piecewise(
        &mut self,
        rng: &mut Rng,
        piece: impl Fn(f64) -> (f64, f64),
    ) -> Option<f64> {
        loop {
            if self.t >= self.end {
                return None;
            }
            let (rate, change) = piece(self.t);
            let candidate = self.t + rng.exp_gap(rate);
            if candidate >= change && change > self.t {
                self.t = change;
                continue;
            }
            self.t = candidate;
            return (self.t < self.end).then_some(self.t);
        }
    }
}
