//! Affinity and load: combine per-(fragment, node) forecasts and Markov lookahead into
//! `P[n][f]` (the share of f's predicted accesses that come from node n over the horizon),
//! predicted load per fragment and per node, trend labels, and a CSV heatmap.

use crate::hash::FxHashMap;
use crate::stats::{FragmentIndex, NodeId};
use std::fmt::Write as _;

/// Predicted accesses to one fragment over the horizon, split by accessing node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FragmentAffinity {
    /// Total predicted accesses (the fragment's predicted load).
    pub total: f64,
    /// (node, predicted accesses), largest first.
    pub by_node: Vec<(NodeId, f64)>,
}

impl FragmentAffinity {
    /// Predicted accesses from `node`.
    pub fn accesses_from(&self, node: NodeId) -> f64 {
        self.by_node
            .iter()
            .find(|(n, _)| *n == node)
            .map_or(0.0, |(_, a)| *a)
    }

    /// `P[node][f]`: share of this fragment's predicted accesses from `node` (0 if no load).
    pub fn share(&self, node: NodeId) -> f64 {
        if self.total > 0.0 {
            self.accesses_from(node) / self.total
        } else {
            0.0
        }
    }

    /// The node expected to access it most (lowest id on ties), if any.
    pub fn top_node(&self) -> Option<(NodeId, f64)> {
        self.by_node.first().copied()
    }
}

/// The affinity matrix, stored sparsely per fragment (most (node, fragment) pairs are zero).
#[derive(Clone, Debug, Default)]
pub struct Affinity {
    fragments: Vec<FragmentAffinity>,
}

impl Affinity {
    /// `forecasts`: predicted accesses over the horizon per (fragment, node); negative or
    /// non-finite values count as 0. `markov_shares`: per node, the expected share of its next
    /// accesses per fragment. `markov_weight` in [0, 1] blends the two: a node's Markov share
    /// is scaled by that node's total forecast, so both speak in accesses.
    pub fn build(
        fragment_count: usize,
        forecasts: &[(FragmentIndex, NodeId, f64)],
        markov_shares: &FxHashMap<NodeId, FxHashMap<FragmentIndex, f64>>,
        markov_weight: f64,
    ) -> Self {
        let markov_weight = if markov_weight.is_finite() {
            markov_weight.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let clean = |x: f64| if x.is_finite() && x > 0.0 { x } else { 0.0 };
        let mut node_totals: FxHashMap<NodeId, f64> = FxHashMap::default();
        for &(_, node, accesses) in forecasts {
            *node_totals.entry(node).or_default() += clean(accesses);
        }
        let mut cells: FxHashMap<(FragmentIndex, NodeId), f64> = FxHashMap::default();
        for &(fragment, node, accesses) in forecasts {
            let has_markov = markov_shares.get(&node).is_some_and(|m| !m.is_empty());
            let weight = if has_markov { 1.0 - markov_weight } else { 1.0 };
            *cells.entry((fragment, node)).or_default() += weight * clean(accesses);
        }
        for (node, shares) in markov_shares {
            let node_total = node_totals.get(node).copied().unwrap_or(0.0);
            if shares.is_empty() || node_total <= 0.0 {
                continue;
            }
            for (fragment, share) in shares {
                *cells.entry((*fragment, *node)).or_default() +=
                    markov_weight * node_total * clean(*share);
            }
        }
        let mut fragments = vec![FragmentAffinity::default(); fragment_count];
        for ((fragment, node), accesses) in cells {
            if let Some(entry) = fragments.get_mut(fragment as usize) {
                if accesses > 0.0 {
                    entry.by_node.push((node, accesses));
                    entry.total += accesses;
                }
            }
        }
        for entry in &mut fragments {
            entry
                .by_node
                .sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        Affinity { fragments }
    }

    /// Build straight from dense per-fragment rows (used by tests, baselines and the oracle).
    pub fn from_rows(rows: Vec<FragmentAffinity>) -> Self {
        let mut fragments = rows;
        for entry in &mut fragments {
            entry.by_node.retain(|(_, a)| a.is_finite() && *a > 0.0);
            entry
                .by_node
                .sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            entry.total = entry.by_node.iter().map(|(_, a)| a).sum();
        }
        Affinity { fragments }
    }

    pub fn fragment(&self, fragment: FragmentIndex) -> Option<&FragmentAffinity> {
        self.fragments.get(fragment as usize)
    }

    pub fn len(&self) -> usize {
        self.fragments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fragments.is_empty()
    }

    /// Predicted load of fragment `f` (0 when unknown).
    pub fn fragment_load(&self, fragment: FragmentIndex) -> f64 {
        self.fragment(fragment).map_or(0.0, |a| a.total)
    }

    /// `P[node][f]`.
    pub fn share(&self, node: NodeId, fragment: FragmentIndex) -> f64 {
        self.fragment(fragment).map_or(0.0, |a| a.share(node))
    }

    /// Predicted load per node given `owners[f]`, for `node_count` nodes.
    pub fn node_loads(&self, owners: &[NodeId], node_count: usize) -> Vec<f64> {
        let mut loads = vec![0.0; node_count];
        for (entry, owner) in self.fragments.iter().zip(owners) {
            if let Some(load) = loads.get_mut(usize::from(*owner)) {
                *load += entry.total;
            }
        }
        loads
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trend {
    Rising,
    Falling,
    Stable,
}

/// Label a predicted per-tick rate against the recently observed one; `tolerance` is relative
/// (0.2 = ±20% is stable). A small absolute floor keeps near-idle series from flapping.
pub fn trend_label(predicted_per_tick: f64, observed_per_tick: f64, tolerance: f64) -> Trend {
    let tolerance = if tolerance.is_finite() {
        tolerance.abs()
    } else {
        0.2
    };
    if !(predicted_per_tick.is_finite() && observed_per_tick.is_finite()) {
        return Trend::Stable;
    }
    let reference = observed_per_tick.abs().max(1.0);
    let change = (predicted_per_tick - observed_per_tick) / reference;
    if change > tolerance {
        Trend::Rising
    } else if change < -tolerance {
        Trend::Falling
    } else {
        Trend::Stable
    }
}

/// Accumulates per-tick observed and predicted load per fragment key range for a heatmap.
#[derive(Clone, Debug, Default)]
pub struct Heatmap {
    rows: Vec<HeatmapRow>,
}

#[derive(Clone, Debug)]
struct HeatmapRow {
    tick: u64,
    key_low: Vec<u8>,
    key_high: Vec<u8>,
    observed: f64,
    predicted: f64,
}

impl Heatmap {
    pub fn new() -> Self {
        Self::default()
    }

    /// One cell: the key range `[key_low, key_high)` at `tick`.
    pub fn push(
        &mut self,
        tick: u64,
        key_low: &[u8],
        key_high: &[u8],
        observed: f64,
        predicted: f64,
    ) {
        self.rows.push(HeatmapRow {
            tick,
            key_low: key_low.to_vec(),
            key_high: key_high.to_vec(),
            observed,
            predicted,
        });
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Long-format CSV (`tick,key_low,key_high,observed,predicted`), keys in hex so any byte
    /// string is safe; plot with tick on x, key range on y, load as colour.
    pub fn to_csv(&self) -> String {
        let mut csv = String::from("tick,key_low,key_high,observed,predicted\n");
        for row in &self.rows {
            // Writing to a String cannot fail.
            let _ = writeln!(
                csv,
                "{},{},{},{},{}",
                row.tick,
                hex(&row.key_low),
                hex(&row.key_high),
                finite_or_zero(row.observed),
                finite_or_zero(row.predicted)
            );
        }
        csv
    }
}

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blends_forecast_and_markov() {
        let forecasts = vec![(0, 0, 100.0), (1, 1, 100.0)];
        let mut markov = FxHashMap::default();
        // Node 0's sequences say its next accesses go to fragment 1.
        markov.insert(0, [(1u32, 1.0)].into_iter().collect());
        let affinity = Affinity::build(2, &forecasts, &markov, 0.5);
        assert!((affinity.fragment_load(0) - 50.0).abs() < 1e-9);
        assert!((affinity.fragment_load(1) - 150.0).abs() < 1e-9);
        assert!((affinity.share(0, 1) - 50.0 / 150.0).abs() < 1e-9);
        assert_eq!(affinity.node_loads(&[1, 1], 2), vec![0.0, 200.0]);
    }

    #[test]
    fn trend_labels() {
        assert_eq!(trend_label(150.0, 100.0, 0.2), Trend::Rising);
        assert_eq!(trend_label(50.0, 100.0, 0.2), Trend::Falling);
        assert_eq!(trend_label(105.0, 100.0, 0.2), Trend::Stable);
        assert_eq!(trend_label(f64::NAN, 100.0, 0.2), Trend::Stable);
    }

    #[test]
    fn heatmap_csv_has_one_line_per_cell() {
        let mut heatmap = Heatmap::new();
        heatmap.push(0, b"a", b"m", 10.0, 12.0);
        heatmap.push(0, b"m", &[0xff], f64::NAN, 1.0);
        let csv = heatmap.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], "0,61,6d,10,12");
        assert_eq!(lines[2], "0,6d,ff,0,1");
    }

    proptest! {
        /// Shares of every fragment with load sum to 1 across nodes.
        #[test]
        fn shares_sum_to_one(
            cells in proptest::collection::vec((0u32..30, 0u16..8, -10f64..1000.0), 0..200),
            weight in 0f64..1.0,
            markov_cells in proptest::collection::vec((0u16..8, 0u32..30, 0f64..1.0), 0..40),
        ) {
            let mut markov: FxHashMap<NodeId, FxHashMap<FragmentIndex, f64>> = FxHashMap::default();
            for (node, fragment, share) in markov_cells {
                markov.entry(node).or_default().insert(fragment, share);
            }
            let affinity = Affinity::build(30, &cells, &markov, weight);
            for f in 0..30 {
                let entry = affinity.fragment(f).cloned().unwrap_or_default();
                if entry.total > 0.0 {
                    let sum: f64 = (0..8).map(|n| affinity.share(n, f)).sum();
                    prop_assert!((sum - 1.0).abs() < 1e-9);
                }
            }
        }
    }
}
