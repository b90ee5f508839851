//! What this node's migrations did: counts, bytes, and the write pause of each
//! (fence to install), as the target measured it.

use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A migration in flight, as its target sees it (`AUGUR MIGRATIONS`, `augur status`,
/// the progress bar of `augur migrate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub fragment: u64,
    pub from: u64,
    pub to: u64,
    /// plan, copy, catch-up, handoff.
    pub phase: String,
    /// Bytes pulled so far, and what the source held when the copy began (0: not known
    /// yet); catch-up pulls what was written meanwhile, so `done` may pass `total`.
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub elapsed_ms: u64,
}

/// Most migrations one node reports in flight (a target runs a few at once; this only
/// bounds what a peer may send back).
pub const MAX_IN_FLIGHT: usize = 64;

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
    in_flight: BTreeMap<u64, (Instant, Progress)>,
}

impl Default for MigrationStats {
    fn default() -> Self {
        MigrationStats {
            done: 0,
            aborted: 0,
            bytes: 0,
            pauses: Histogram::new_with_bounds(1, 600_000_000, 3).ok(),
            holds: Histogram::new_with_bounds(1, 600_000_000, 3).ok(),
            in_flight: BTreeMap::new(),
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

    /// A migration to this node began (its plan is being committed).
    pub fn begin(&mut self, fragment: u64, from: u64, to: u64) {
        let p = Progress {
            fragment,
            from,
            to,
            phase: "plan".into(),
            bytes_done: 0,
            bytes_total: 0,
            elapsed_ms: 0,
        };
        self.in_flight.insert(fragment, (Instant::now(), p));
    }

    pub fn progress(&mut self, fragment: u64, phase: &str, done: u64, total: u64) {
        if let Some((_, p)) = self.in_flight.get_mut(&fragment) {
            if p.phase != phase {
                p.phase = phase.to_string();
            }
            p.bytes_done = done;
            if total > 0 {
                p.bytes_total = total;
            }
        }
    }

    /// The migration ended (done or aborted).
    pub fn end(&mut self, fragment: u64) {
        self.in_flight.remove(&fragment);
    }

    pub fn in_flight(&self) -> Vec<Progress> {
        self.in_flight
            .values()
            .take(MAX_IN_FLIGHT)
            .map(|(started, p)| Progress {
                elapsed_ms: started.elapsed().as_millis() as u64,
                ..p.clone()
            })
            .collect()
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

    #[test]
    fn in_flight_migrations_are_listed_until_they_end() {
        let mut m = MigrationStats::default();
        m.begin(7, 1, 2);
        m.progress(7, "copy", 10, 100);
        m.progress(7, "catch-up", 120, 0);
        m.begin(9, 3, 2);
        let now = m.in_flight();
        assert_eq!(now.len(), 2);
        assert_eq!(
            (
                now[0].fragment,
                now[0].phase.as_str(),
                now[0].bytes_done,
                now[0].bytes_total
            ),
            (7, "catch-up", 120, 100)
        );
        assert_eq!((now[1].fragment, now[1].phase.as_str()), (9, "plan"));
        m.end(7);
        m.progress(7, "copy", 1, 1); // late news of an ended migration is dropped
        assert_eq!(
            m.in_flight().iter().map(|p| p.fragment).collect::<Vec<_>>(),
            [9]
        );
    }
}
