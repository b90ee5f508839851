//! A node-wide bandwidth cap for migration copies: every migration this node pulls
//! takes its READs from one budget, so together they never use more than the
//! configured share of the fabric (and of the cores that check and index what lands,
//! whose work is proportional to the bytes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How far behind "now" an idle budget may start: a short burst, not a saved-up flood.
const BURST: Duration = Duration::from_millis(10);

pub struct Pace {
    base: Instant,
    /// When (ns after `base`) the budget is next free.
    next_ns: AtomicU64,
    bytes_per_s: AtomicU64,
}

impl Pace {
    /// `bytes_per_s` 0: no limit.
    pub fn new(bytes_per_s: u64) -> Pace {
        Pace {
            base: Instant::now(),
            next_ns: AtomicU64::new(0),
            bytes_per_s: AtomicU64::new(bytes_per_s),
        }
    }

    pub fn set_rate(&self, bytes_per_s: u64) {
        self.bytes_per_s.store(bytes_per_s, Ordering::Relaxed);
    }

    pub fn rate(&self) -> u64 {
        self.bytes_per_s.load(Ordering::Relaxed)
    }

    /// The largest piece to take at once: a twentieth of a second's budget (at least
    /// 64 KiB), so a capped copy flows evenly rather than in one burst a second.
    pub fn piece(&self, max: u64) -> u64 {
        match self.rate() {
            0 => max,
            rate => (rate / 20).clamp(64 << 10, max.max(64 << 10)),
        }
    }

    /// Take `bytes` from the budget now (zero returned) or say how long to wait before
    /// asking again (nothing taken).
    pub fn try_take(&self, bytes: u64) -> Duration {
        let rate = self.rate();
        if rate == 0 {
            return Duration::ZERO;
        }
        let now = self.base.elapsed().as_nanos() as u64;
        let cost =
            (u128::from(bytes) * 1_000_000_000 / u128::from(rate)).min(u128::from(u64::MAX)) as u64;
        let mut current = self.next_ns.load(Ordering::Relaxed);
        loop {
            let start = current.max(now.saturating_sub(BURST.as_nanos() as u64));
            if start > now {
                return Duration::from_nanos(start - now);
            }
            match self.next_ns.compare_exchange_weak(
                current,
                start.saturating_add(cost),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Duration::ZERO,
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limit_never_waits() {
        let p = Pace::new(0);
        for _ in 0..1000 {
            assert_eq!(p.try_take(1 << 30), Duration::ZERO);
        }
    }

    #[test]
    fn a_limit_spaces_takes_by_their_cost() {
        // 1 MB/s: a 100 KB take costs 100 ms of budget.
        let p = Pace::new(1_000_000);
        assert_eq!(p.try_take(100_000), Duration::ZERO);
        let wait = p.try_take(100_000);
        assert!(
            wait > Duration::from_millis(50) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Asking again does not take: the wait only shrinks with time.
        let again = p.try_take(100_000);
        assert!(
            again <= wait && again > Duration::from_millis(50),
            "{again:?}"
        );
    }

    #[test]
    fn pieces_follow_the_rate() {
        assert_eq!(Pace::new(0).piece(4 << 20), 4 << 20);
        assert_eq!(Pace::new(2 << 20).piece(4 << 20), (2 << 20) / 20);
        assert_eq!(Pace::new(1 << 10).piece(4 << 20), 64 << 10);
        assert_eq!(Pace::new(1 << 40).piece(4 << 20), 4 << 20);
    }

    #[test]
    fn the_rate_can_change_while_running() {
        let p = Pace::new(1_000);
        assert_eq!(p.try_take(1_000), Duration::ZERO);
        assert!(p.try_take(1) > Duration::from_millis(500));
        p.set_rate(0);
        assert_eq!(p.try_take(1 << 20), Duration::ZERO);
    }
}
