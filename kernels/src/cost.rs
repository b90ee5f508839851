//! Cost/benefit of moving a fragment, in one unit: microseconds of client-visible time over
//! the prediction horizon (transfer work is charged at its duration, which is what it steals
//! from the data path on both ends).

/// Measured or configured constants. All times in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct CostModel {
    /// Latency of an access served by a remote owner (one-sided READ or forwarded SET).
    pub remote_access_us: f64,
    /// Latency of an access served locally.
    pub local_access_us: f64,
    /// Measured transfer cost per byte moved (both ends).
    pub transfer_us_per_byte: f64,
    /// Time a fragment is paused during the epoch switch.
    pub handoff_pause_us: f64,
    /// Penalty per access above a node's capacity (queueing delay an overloaded node adds).
    pub overload_us_per_access: f64,
    /// Length of the prediction horizon, so a rate of accesses can be turned into how many
    /// arrive during the handoff pause.
    pub horizon_us: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            remote_access_us: 12.0,
            local_access_us: 2.0,
            // ~1 GB/s effective including registration and copy on both sides.
            transfer_us_per_byte: 0.001,
            handoff_pause_us: 500.0,
            overload_us_per_access: 50.0,
            horizon_us: 10_000_000.0,
        }
    }
}

/// What moving one fragment is predicted to buy and to cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MoveEstimate {
    /// Net accesses that turn from remote to local (negative if the move makes more remote).
    pub remote_accesses_avoided: f64,
    /// Accesses no longer above some node's capacity.
    pub overload_relieved: f64,
    pub benefit_us: f64,
    pub cost_us: f64,
}

impl MoveEstimate {
    pub fn net_us(&self) -> f64 {
        self.benefit_us - self.cost_us
    }
}

/// Loads of the two nodes involved, in accesses over the horizon.
#[derive(Clone, Copy, Debug)]
pub struct NodeLoads {
    pub source_load: f64,
    pub source_capacity: f64,
    pub target_load: f64,
    pub target_capacity: f64,
}

fn clean(x: f64) -> f64 {
    if x.is_finite() {
        x.max(0.0)
    } else {
        0.0
    }
}

/// Absurd magnitudes can overflow products; saturate instead of returning inf or NaN.
pub(crate) fn saturate(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(-f64::MAX, f64::MAX)
    }
}

fn overload(load: f64, capacity: f64) -> f64 {
    (clean(load) - clean(capacity)).max(0.0)
}

impl CostModel {
    /// Estimate moving a fragment of `bytes` with predicted `fragment_load` from source to
    /// target, where `from_target` / `from_source` are the predicted accesses issued by the
    /// target and source nodes' clients.
    pub fn migration(
        &self,
        bytes: u64,
        fragment_load: f64,
        from_target: f64,
        from_source: f64,
        loads: NodeLoads,
    ) -> MoveEstimate {
        let fragment_load = clean(fragment_load);
        let latency_gap = clean(self.remote_access_us - self.local_access_us);
        // Accesses from the target become local; those from the source become remote.
        let remote_accesses_avoided = clean(from_target) - clean(from_source);
        let before = overload(loads.source_load, loads.source_capacity)
            + overload(loads.target_load, loads.target_capacity);
        let after = overload(loads.source_load - fragment_load, loads.source_capacity)
            + overload(loads.target_load + fragment_load, loads.target_capacity);
        let overload_relieved = before - after;
        let benefit_us = remote_accesses_avoided * latency_gap
            + overload_relieved * clean(self.overload_us_per_access);
        let cost_us =
            bytes as f64 * clean(self.transfer_us_per_byte) + self.handoff_cost_us(fragment_load);
        MoveEstimate {
            remote_accesses_avoided: saturate(remote_accesses_avoided),
            overload_relieved: saturate(overload_relieved),
            benefit_us: saturate(benefit_us),
            cost_us: saturate(cost_us),
        }
    }

    /// Accesses arriving during the pause wait on average half of it.
    pub fn handoff_cost_us(&self, fragment_load: f64) -> f64 {
        let pause = clean(self.handoff_pause_us);
        let horizon = self.horizon_us.max(1.0);
        let arrivals_during_pause = clean(fragment_load) * pause / horizon;
        saturate(arrivals_during_pause * pause / 2.0 + pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_loads() -> NodeLoads {
        NodeLoads {
            source_load: 0.0,
            source_capacity: 1e9,
            target_load: 0.0,
            target_capacity: 1e9,
        }
    }

    #[test]
    fn remote_accesses_become_local() {
        let model = CostModel::default();
        let estimate = model.migration(1 << 20, 1000.0, 900.0, 100.0, idle_loads());
        assert_eq!(estimate.remote_accesses_avoided, 800.0);
        assert!((estimate.benefit_us - 8000.0).abs() < 1e-9);
        assert!(estimate.cost_us > 1000.0);
    }

    #[test]
    fn relieves_overload_without_creating_it() {
        let model = CostModel::default();
        let loads = NodeLoads {
            source_load: 1500.0,
            source_capacity: 1000.0,
            target_load: 200.0,
            target_capacity: 1000.0,
        };
        let estimate = model.migration(0, 300.0, 0.0, 0.0, loads);
        assert_eq!(estimate.overload_relieved, 300.0);
        // Moving too much just shifts the overload to the target.
        let too_big = model.migration(0, 1200.0, 0.0, 0.0, loads);
        assert_eq!(too_big.overload_relieved, 500.0 - 400.0);
    }

    proptest::proptest! {
        /// Any numbers in, finite numbers out; cost never negative; a move between idle nodes
        /// never claims overload relief.
        #[test]
        fn estimates_are_finite_and_sane(
            bytes in proptest::num::u64::ANY,
            load in proptest::num::f64::ANY,
            from_target in proptest::num::f64::ANY,
            from_source in proptest::num::f64::ANY,
        ) {
            let model = CostModel::default();
            let estimate = model.migration(bytes, load, from_target, from_source, idle_loads());
            proptest::prop_assert!(estimate.benefit_us.is_finite());
            proptest::prop_assert!(estimate.cost_us.is_finite() && estimate.cost_us >= 0.0);
            if load.is_finite() && load.abs() < 1e8 {
                proptest::prop_assert_eq!(estimate.overload_relieved, 0.0);
            }
        }
    }

    #[test]
    fn nan_inputs_give_finite_estimates() {
        let model = CostModel::default();
        let loads = NodeLoads {
            source_load: f64::NAN,
            source_capacity: f64::INFINITY,
            target_load: -1.0,
            target_capacity: f64::NAN,
        };
        let estimate = model.migration(u64::MAX, f64::NAN, f64::INFINITY, f64::NAN, loads);
        assert!(estimate.benefit_us.is_finite() && estimate.cost_us.is_finite());
    }
}
