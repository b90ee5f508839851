//! The per-tick glue the node's placement controller drives: fold the cores' recorders, step
//! one ensemble per live (fragment, node) series, add Markov lookahead, and produce the
//! affinity matrix for the solver.

use crate::affinity::Affinity;
use crate::ensemble::{Ensemble, EnsembleConfig};
use crate::forecast::Forecaster;
use crate::hash::FxHashMap;
use crate::markov::{MarkovConfig, SequenceModel};
use crate::stats::{AccessCounts, AccessStats, CoreRecorder, FragmentIndex, NodeId};

#[derive(Clone, Debug)]
pub struct PredictorConfig {
    /// Forecast horizon H in ticks.
    pub horizon: usize,
    /// History window of the access statistics, in ticks.
    pub window: usize,
    pub ensemble: EnsembleConfig,
    pub markov: MarkovConfig,
    /// Weight of the Markov lookahead in the affinity blend (0 = forecasts only).
    pub markov_weight: f64,
    /// Steps of Markov lookahead.
    pub markov_steps: usize,
}

impl Default for PredictorConfig {
    fn default() -> Self {
        PredictorConfig {
            horizon: 10,
            window: 120,
            ensemble: EnsembleConfig::default(),
            markov: MarkovConfig::default(),
            markov_weight: 0.2,
            markov_steps: 8,
        }
    }
}

/// Owns the statistics, the per-series ensembles and the sequence model.
#[derive(Clone, Debug)]
pub struct Predictor {
    config: PredictorConfig,
    fragment_count: usize,
    stats: AccessStats,
    ensembles: FxHashMap<(FragmentIndex, NodeId), Ensemble>,
    sequences: SequenceModel,
    /// Ticks skipped before the predicted window (`set_window`).
    lead: usize,
}

impl Predictor {
    pub fn new(fragment_count: usize, config: PredictorConfig) -> Self {
        Predictor {
            stats: AccessStats::new(config.window),
            sequences: SequenceModel::new(config.markov),
            ensembles: FxHashMap::default(),
            fragment_count,
            config,
            lead: 0,
        }
    }

    /// The node grew its fragment table (after splits).
    pub fn set_fragment_count(&mut self, fragment_count: usize) {
        self.fragment_count = fragment_count;
    }

    /// Fold one core's recorder into the open tick.
    pub fn fold(&mut self, recorder: &mut CoreRecorder) {
        self.stats.fold(recorder);
    }

    /// Add already-aggregated counts for one (fragment, node) cell to the open tick (instead
    /// of folding a `CoreRecorder`).
    pub fn add_counts(&mut self, fragment: FragmentIndex, node: NodeId, counts: AccessCounts) {
        self.stats.add(fragment, node, counts);
    }

    /// Forget a fragment's history and forecasters, so its index can be reused by another
    /// fragment without inheriting a stranger's past.
    pub fn forget_fragment(&mut self, fragment: FragmentIndex) {
        self.stats.forget_fragment(fragment);
        self.ensembles.retain(|(f, _), _| *f != fragment);
    }

    /// A connection's access, for the sequence model (the node may sample these).
    pub fn observe_sequence(&mut self, node: NodeId, connection: u64, fragment: FragmentIndex) {
        self.sequences.observe_access(node, connection, fragment);
    }

    pub fn stats(&self) -> &AccessStats {
        &self.stats
    }

    pub fn series_count(&self) -> usize {
        self.ensembles.len()
    }

    /// Predict ticks `lead + 1 ..= lead + horizon` from now (horizon at least 1): an action
    /// that takes `lead` ticks to carry out is judged by what happens once it is done.
    pub fn set_window(&mut self, lead: usize, horizon: usize) {
        self.lead = lead;
        self.config.horizon = horizon.max(1);
    }

    /// Close the tick and predict the next `horizon` ticks.
    pub fn tick(&mut self) -> Affinity {
        self.stats.close_tick();
        self.sequences.tick();
        let horizon = self.config.horizon.max(1);
        let mut forecasts = Vec::with_capacity(self.stats.pair_count());
        // Series that left the window (idle) take their ensemble with them.
        let stats = &self.stats;
        self.ensembles
            .retain(|(fragment, node), _| stats.series(*fragment, *node).is_some());
        for (&(fragment, node), series) in self.stats.pairs() {
            let ensemble = self
                .ensembles
                .entry((fragment, node))
                .or_insert_with(|| Ensemble::new(self.config.ensemble.clone()));
            ensemble.observe(series.latest().accesses() as f64);
            // Access counts cannot be negative, whatever a trend extrapolates.
            let predicted = if self.lead == 0 {
                ensemble.forecast_sum(horizon)
            } else {
                ensemble.forecast_sum(self.lead + horizon) - ensemble.forecast_sum(self.lead)
            }
            .max(0.0);
            forecasts.push((fragment, node, predicted));
        }
        let mut markov_shares: FxHashMap<NodeId, FxHashMap<FragmentIndex, f64>> =
            FxHashMap::default();
        if self.config.markov_weight > 0.0 {
            let nodes: Vec<NodeId> = self.sequences.nodes().collect();
            for node in nodes {
                let shares = self
                    .sequences
                    .node_lookahead(node, self.config.markov_steps);
                if !shares.is_empty() {
                    markov_shares.insert(node, shares);
                }
            }
        }
        Affinity::build(
            self.fragment_count,
            &forecasts,
            &markov_shares,
            self.config.markov_weight,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{AccessCounts, AccessKind};

    /// A series that is 0 for 5 ticks then 100 for 5, repeating (season 10): from a tick
    /// just before a rise, the next 2 ticks hold little, while 2 ticks after a lead of 3
    /// are all high.
    #[test]
    fn a_lead_moves_the_predicted_window() {
        let config = PredictorConfig {
            horizon: 2,
            ensemble: crate::ensemble::EnsembleConfig::with_season(10),
            ..PredictorConfig::default()
        };
        let forecast = |lead: usize| {
            let mut predictor = Predictor::new(1, config.clone());
            predictor.set_window(lead, 2);
            let mut affinity = Affinity::default();
            // 10 full seasons; the last tick seen is the 4th of a zero half.
            for t in 0..(100 + 4) {
                let n = if t % 10 < 5 { 0 } else { 100 };
                predictor.add_counts(
                    0,
                    0,
                    AccessCounts {
                        reads: n,
                        ..AccessCounts::default()
                    },
                );
                affinity = predictor.tick();
            }
            affinity.fragment_load(0)
        };
        let (now, later) = (forecast(0), forecast(3));
        assert!(now < 120.0, "next 2 ticks: one zero, one high; got {now}");
        assert!(later > 180.0, "ticks 4-5 ahead: both high; got {later}");
    }

    #[test]
    fn predicts_the_node_that_keeps_accessing() {
        let mut predictor = Predictor::new(4, PredictorConfig::default());
        let mut core = CoreRecorder::new(4, 3, 2);
        let mut affinity = Affinity::default();
        for _ in 0..30 {
            for _ in 0..90 {
                core.record(2, 1, AccessKind::Read, 64);
            }
            for _ in 0..10 {
                core.record(2, 0, AccessKind::Write, 64);
            }
            predictor.fold(&mut core);
            affinity = predictor.tick();
        }
        let horizon = PredictorConfig::default().horizon as f64;
        assert!((affinity.fragment_load(2) - 100.0 * horizon).abs() < 1.0);
        assert!((affinity.share(1, 2) - 0.9).abs() < 0.01);
        assert_eq!(predictor.series_count(), 2);
        assert_eq!(affinity.fragment_load(0), 0.0);
    }

    #[test]
    fn added_counts_predict_like_folded_ones_and_forgetting_clears_a_fragment() {
        let mut folded = Predictor::new(2, PredictorConfig::default());
        let mut added = Predictor::new(2, PredictorConfig::default());
        let mut core = CoreRecorder::new(2, 2, 2);
        let (mut a, mut b) = (Affinity::default(), Affinity::default());
        for _ in 0..20 {
            for _ in 0..70 {
                core.record(1, 1, AccessKind::Read, 8);
            }
            for _ in 0..30 {
                core.record(1, 0, AccessKind::Read, 8);
            }
            folded.fold(&mut core);
            a = folded.tick();
            let counts = |reads| AccessCounts {
                reads,
                ..AccessCounts::default()
            };
            added.add_counts(1, 1, counts(70));
            added.add_counts(1, 0, counts(30));
            added.add_counts(0, 0, AccessCounts::default());
            b = added.tick();
        }
        assert!((a.fragment_load(1) - b.fragment_load(1)).abs() < 1e-9);
        assert!((b.share(1, 1) - 0.7).abs() < 1e-9);
        assert_eq!(added.series_count(), 2);
        added.forget_fragment(1);
        assert_eq!(added.series_count(), 0);
        assert!(added.stats().series(1, 1).is_none());
        assert_eq!(added.tick().fragment_load(1), 0.0);
    }

    #[test]
    fn sequences_shift_affinity_towards_the_next_fragment() {
        let config = PredictorConfig {
            markov_weight: 0.5,
            markov_steps: 1,
            ..PredictorConfig::default()
        };
        let mut predictor = Predictor::new(3, config);
        let mut core = CoreRecorder::new(3, 1, 2);
        // Node 0 only touches fragment 0 so far, but its connection walks 0 -> 1 -> 0 -> 1.
        for _ in 0..5 {
            core.record(0, 0, AccessKind::Read, 1);
        }
        for fragment in [0, 1, 0, 1, 0] {
            predictor.observe_sequence(0, 7, fragment);
        }
        predictor.fold(&mut core);
        let affinity = predictor.tick();
        assert!(affinity.fragment_load(1) > 0.0);
    }
}
