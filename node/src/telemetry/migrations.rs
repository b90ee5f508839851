//! What this node's migrations did: counts, bytes, and the write pause of each
//! (fence to install), as the target measured it.

use hdrhistogram::Histogram;

pub struct MigrationStats {
    pub done: u64,
    pub aborted: u64,
    pub bytes: u64,
    /// Write pauses in microseconds (1 µs to 10 min, 3 significant digits); `None`
    /// only if hdrhistogram refused those bounds, which it does not.
    pauses: Option<Histogram<u64>>,
    /// On the source: fence to release after the commit, µs — how long this node's
    /// clients and peers were held for each fragment it handed over.
    holds: Option<Histogram<u64>>,
}

impl Default for MigrationStats {
    fn default() -> Self {
        MigrationStats {
            done: 0,
            aborted: 0,
            bytes: 0,
            pauses: Histogram::new_with_bounds(1, 600_000_000, 3).ok(),
            holds: Histogram::new_with_bounds(1, 600_000_000, 3).ok(),
        }
    }
}

impl MigrationStats {
    pub fn record_done(&mut self, bytes: u64, pause_us: u64) {
        self.done += 1;
        self.bytes += bytes;
        if let Some(h) = &mut self.pauses {
            h.saturating_record(pause_us.max(1));
        }
    }

    pub fn record_handed_over(&mut self, hold_us: u64) {
        if let Some(h) = &mut self.holds {
            h.saturating_record(hold_us.max(1));
        }
    }

    pub fn record_aborted(&mut self) {
        self.aborted += 1;
    }

    /// `(p50, p99, max)` write pause in µs; zeros before the first migration.
    pub fn pause_summary(&self) -> (u64, u64, u64) {
        summary(&self.pauses)
    }

    /// `(p50, p99, max)` source hold in µs; zeros before the first handover.
    pub fn hold_summary(&self) -> (u64, u64, u64) {
        summary(&self.holds)
    }
}

fn summary(h: &Option<Histogram<u64>>) -> (u64, u64, u64) {
    match h {
        Some(h) if !h.is_empty() => (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()),
        _ => (0, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_are_summarised() {
        let mut m = MigrationStats::default();
        assert_eq!(m.pause_summary(), (0, 0, 0));
        for p in 1..=100 {
            m.record_done(10, p * 100);
        }
        m.record_aborted();
        let (p50, p99, max) = m.pause_summary();
        assert!((4900..=5100).contains(&p50), "{p50}");
        assert!((9800..=10_000).contains(&p99), "{p99}");
        assert!((9990..=10_010).contains(&max), "{max}");
        assert_eq!((m.done, m.aborted, m.bytes), (100, 1, 1000));
    }
}
