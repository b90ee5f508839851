//! The placement controller: once per tick it looks at what every node's clients accessed
//! and decides which table fragments should move to which node.
//!
//! Runtime-independent on purpose (no async, no I/O, no clocks: the caller passes `now_ms`),
//! so the same logic runs in the node, in the bench and in deterministic tests. The node
//! feeds it [`TickInput`] (fragments from the ownership table, members, the cluster
//! telemetry's rates, live `AUGUR HINT`s), carries out the returned [`Decision`]s, and calls
//! [`Controller::outcome`] when each one finished or failed.
//!
//! Policies (switchable at run time, state kept warm for all of them):
//! - `static`: never moves anything;
//! - `reactive`: follow a remote node whose clients made more than `reactive_share` of a
//!   fragment's accesses for `reactive_ticks` consecutive ticks (E-Store / TiKV style);
//! - `predictive`: the kernels' per-series forecasts (`augur_kernels::predictor`) plus
//!   application hints, then `augur_kernels::solver::solve` under a per-tick budget, with
//!   hysteresis and a per-fragment cooldown.
//!
//! Every decision's predicted benefit is logged in `augur_kernels::feedback`; the rates seen
//! after the move settle it, and [`Controller::report`] prints the calibration per policy.

pub mod driver;
mod feedback;
mod ids;
mod predictive;
mod reactive;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use augur_kernels::cost::CostModel;

use feedback::Feedback;
use predictive::Predictive;
use reactive::Reactive;

/// Which placement policy decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    Static,
    Reactive,
    Predictive,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::Static, Policy::Reactive, Policy::Predictive];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Static => "static",
            Policy::Reactive => "reactive",
            Policy::Predictive => "predictive",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement policy {0:?} (expected static, reactive or predictive)")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "static" => Ok(Policy::Static),
            "reactive" => Ok(Policy::Reactive),
            "predictive" => Ok(Policy::Predictive),
            _ => Err(UnknownPolicy(s.chars().take(64).collect())),
        }
    }
}

/// One table fragment as the controller sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct FragmentView {
    pub id: u64,
    pub owner: u64,
    pub bytes: u64,
    /// Not migrating, splitting or otherwise in flux: only stable fragments may be moved.
    pub stable: bool,
    pub lo: Vec<u8>,
    /// Exclusive upper bound; `None` is the end of the key space.
    pub hi: Option<Vec<u8>>,
}

/// An application's promise (`AUGUR HINT <range> <node> <seconds>`): `node`'s clients will make
/// most of the accesses to `[lo, hi)` until `until_ms`. An empty range (`hi <= lo`) names the
/// single key `lo`.
#[derive(Clone, Debug, PartialEq)]
pub struct Hint {
    pub lo: Vec<u8>,
    pub hi: Option<Vec<u8>>,
    pub node: u64,
    pub until_ms: u64,
}

/// What the node knows at one tick.
pub struct TickInput<'a> {
    pub now_ms: u64,
    pub fragments: &'a [FragmentView],
    /// Member node ids.
    pub nodes: &'a [u64],
    /// fragment id → node id → accesses per second by that node's clients, this tick.
    pub rates: &'a HashMap<u64, HashMap<u64, f64>>,
    pub hints: &'a [Hint],
    /// `(node, connection, fragment ids in order)`: where each client connection went
    /// since the last tick, for the sequence (Markov) model.
    pub orders: &'a [(u64, u64, Vec<u64>)],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Migrate { fragment: u64, to: u64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub action: Action,
    /// Client-visible microseconds the move is predicted to save over the horizon.
    pub predicted_benefit_us: f64,
    /// Microseconds the move is predicted to cost (transfer + handoff pause).
    pub cost_us: f64,
    /// Why, in words, for logs and `augur status`.
    pub reason: String,
}

/// Tunables. Rates are accesses per second; ticks are controller ticks.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Length of one tick (turns rates into per-tick counts and the horizon into time).
    pub tick_ms: u64,
    /// Most migrations decided per tick (all policies).
    pub max_moves_per_tick: usize,
    /// Most bytes those migrations may move per tick.
    pub max_bytes_per_tick: u64,
    /// Reactive: a remote node's share of a fragment's accesses that counts as dominance ...
    pub reactive_share: f64,
    /// ... for this many consecutive ticks ...
    pub reactive_ticks: u32,
    /// ... while the fragment sees at least this many accesses per second. Predictive:
    /// fragments predicted below this rate are never moved (a few accesses a tick are
    /// noise, and a priced-by-measurement benefit would otherwise chase it).
    pub min_rate: f64,
    /// Predictive: ticks ahead the forecast looks. Short horizons act right at a predicted
    /// shift instead of averaging across it.
    pub horizon_ticks: usize,
    /// Predictive: a known period of the workload in ticks (daily cycle, rotating batch
    /// jobs); lets the seasonal forecasters anticipate it. `None`: detect it (below) or go
    /// without seasonal models.
    pub season_ticks: Option<usize>,
    /// When `season_ticks` is `None`: look for a period in which hot fragments' dominant
    /// accessor repeats its changes (up to a third of `history_ticks`), and when one is found
    /// twice in a row, rebuild the forecasters with that season from the kept history.
    pub detect_season: bool,
    /// Ticks of history the predictor keeps (a third of it bounds the period detection
    /// searches: 300 ticks find rotations up to 100 ticks, 20 s at 200 ms ticks).
    pub history_ticks: usize,
    /// Share of a node's forecast placed where its connections' access order (the
    /// Markov model) says they go next. 0 by default: at the kernels' 0.2, the `walk`
    /// scenario made 292 moves in 30 s instead of 29, for no local-hit gain (the
    /// lookahead keeps pulling fragments towards every walker); see placement-controller.md.
    pub markov_weight: f64,
    /// Predictive: no move of a fragment within this many ticks of its last one.
    pub cooldown_ticks: u64,
    /// Predictive hysteresis: the target's predicted accesses must exceed the owner's by this
    /// share of the fragment's predicted load (noise on a uniform workload stays below it) ...
    pub hysteresis_share: f64,
    /// ... and the benefit must exceed cost by this factor (0.5 = 50% more) ...
    pub margin: f64,
    /// ... and by at least this many microseconds.
    pub min_net_benefit_us: f64,
    /// Predictive: accesses per second a node can serve (capacity for the solver).
    pub node_capacity_rate: f64,
    /// Predictive: bytes a node may hold.
    pub node_capacity_bytes: u64,
    /// A hinted range is assumed to see at least this many accesses per second ...
    pub hint_min_rate: f64,
    /// ... of which this share from the hinted node.
    pub hint_share: f64,
    /// A decision not followed by `outcome` within this many ticks is forgotten (the fragment
    /// may be decided on again).
    pub in_flight_timeout_ticks: u64,
    /// Latency and transfer constants for benefit and cost.
    pub cost: CostModel,
}

impl ControllerConfig {
    /// Ticks over which a move's benefit is credited (and later observed): the forecast
    /// horizon, but at least the cooldown, since a moved fragment stays put that long. A
    /// short horizon (to act right at a predicted shift) must not also shrink the payoff to
    /// a fraction of a second, or only the busiest fragments would ever be worth moving.
    pub fn payback_ticks(&self) -> usize {
        let cooldown = usize::try_from(self.cooldown_ticks).unwrap_or(usize::MAX);
        self.horizon_ticks.clamp(1, 1_000).max(cooldown.min(1_000))
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            tick_ms: 1_000,
            max_moves_per_tick: 2,
            max_bytes_per_tick: 1 << 30,
            reactive_share: 0.6,
            reactive_ticks: 3,
            min_rate: 50.0,
            horizon_ticks: 2,
            season_ticks: None,
            detect_season: true,
            history_ticks: 300,
            markov_weight: 0.0,
            cooldown_ticks: 5,
            hysteresis_share: 0.25,
            margin: 0.5,
            min_net_benefit_us: 1_000.0,
            node_capacity_rate: 1e9,
            node_capacity_bytes: u64::MAX,
            hint_min_rate: 1_000.0,
            hint_share: 0.9,
            in_flight_timeout_ticks: 120,
            cost: CostModel::default(),
        }
    }
}

/// Bounds on what one tick may carry (the inputs come from peers).
const MAX_FRAGMENTS: usize = 1 << 20;
const MAX_NODES: usize = 4_096;
const MAX_HINTS: usize = 1_024;
/// Most access orders one tick feeds the sequence model (each at most 32 steps long).
const MAX_ORDERS: usize = 8_192;

/// A finite, non-negative rate, or 0.
pub(crate) fn clean_rate(rate: f64) -> f64 {
    if rate.is_finite() && rate > 0.0 {
        rate.min(1e15)
    } else {
        0.0
    }
}

/// The input after bounding and de-duplication: fragments by id (first wins), members
/// deduplicated, only rates of known fragments by member nodes.
pub(crate) struct CleanTick<'a> {
    pub now_ms: u64,
    pub tick: u64,
    pub fragments: Vec<&'a FragmentView>,
    pub nodes: Vec<u64>,
    /// Per fragment (parallel to `fragments`): (member node, clean rate), sorted by node.
    pub rates: Vec<Vec<(u64, f64)>>,
    pub hints: &'a [Hint],
    /// Access orders of member nodes' connections (bounded).
    pub orders: Vec<&'a (u64, u64, Vec<u64>)>,
}

impl<'a> CleanTick<'a> {
    fn new(input: &'a TickInput<'a>, tick: u64) -> Self {
        let mut nodes: Vec<u64> = input.nodes.iter().copied().take(MAX_NODES).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let mut seen = std::collections::HashSet::new();
        let fragments: Vec<&FragmentView> = input
            .fragments
            .iter()
            .filter(|f| seen.insert(f.id))
            .take(MAX_FRAGMENTS)
            .collect();
        let rates = fragments
            .iter()
            .map(|f| {
                let mut row: Vec<(u64, f64)> = input
                    .rates
                    .get(&f.id)
                    .map(|by_node| {
                        by_node
                            .iter()
                            .filter(|(n, _)| nodes.binary_search(n).is_ok())
                            .map(|(n, r)| (*n, clean_rate(*r)))
                            .filter(|(_, r)| *r > 0.0)
                            .collect()
                    })
                    .unwrap_or_default();
                row.sort_unstable_by_key(|(n, _)| *n);
                row
            })
            .collect();
        let hints = &input.hints[..input.hints.len().min(MAX_HINTS)];
        let orders = input
            .orders
            .iter()
            .filter(|(n, _, _)| nodes.binary_search(n).is_ok())
            .take(MAX_ORDERS)
            .collect();
        CleanTick {
            now_ms: input.now_ms,
            tick,
            fragments,
            nodes,
            rates,
            hints,
            orders,
        }
    }

    pub fn is_member(&self, node: u64) -> bool {
        self.nodes.binary_search(&node).is_ok()
    }
}

/// A decision handed out and not yet settled by `outcome`.
#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    pub decided_tick: u64,
    pub decided_ms: u64,
}

/// Most ticks the forecast horizon is stretched by to cover a migration's duration.
const MAX_LEAD_TICKS: usize = 10;

/// The controller. One per node that runs placement (the integrator picks which).
pub struct Controller {
    policy: Policy,
    config: ControllerConfig,
    tick: u64,
    reactive: Reactive,
    predictive: Predictive,
    feedback: Feedback,
    in_flight: HashMap<u64, InFlight>,
    /// Tick of each fragment's last move (cooldown).
    last_change: HashMap<u64, u64>,
    /// Smoothed time from a move's decision to its report of success, ms.
    migration_ms: Option<f64>,
}

impl Controller {
    pub fn new(policy: Policy, config: ControllerConfig) -> Self {
        Controller {
            policy,
            reactive: Reactive::default(),
            predictive: Predictive::new(&config),
            feedback: Feedback::default(),
            in_flight: HashMap::new(),
            last_change: HashMap::new(),
            migration_ms: None,
            tick: 0,
            config,
        }
    }

    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// Price a remote access from measurement: one peer round trip (`peer_rtt_us`) more
    /// than a local one. The constants in `CostModel::default` describe an RDMA fabric;
    /// over TCP on a busy host a remote access costs ten or a hundred times more, and a
    /// benefit priced with the RDMA figure would rarely pay for any move. Non-finite or
    /// non-positive samples are ignored.
    pub fn calibrate(&mut self, peer_rtt_us: f64) {
        if peer_rtt_us.is_finite() && peer_rtt_us > 0.0 {
            let cost = &mut self.config.cost;
            cost.remote_access_us = cost.local_access_us.max(0.0) + peer_rtt_us.min(1e7);
        }
    }

    /// Ticks seen so far.
    pub fn ticks(&self) -> u64 {
        self.tick
    }

    /// One tick: learn from `input`, return at most `max_moves_per_tick` migrations.
    /// Every policy's state is updated every tick, so a policy switch starts warm.
    pub fn tick(&mut self, input: &TickInput) -> Vec<Decision> {
        let tick = self.tick;
        self.tick += 1;
        let clean = CleanTick::new(input, tick);
        let timeout = self.config.in_flight_timeout_ticks;
        let present: std::collections::HashSet<u64> =
            clean.fragments.iter().map(|f| f.id).collect();
        // Decisions never reported back (timed out, or the fragment is gone) count as failed.
        let expired: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(id, f)| {
                tick.saturating_sub(f.decided_tick) > timeout || !present.contains(id)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.in_flight.remove(&id);
            self.feedback.expire(id);
        }
        self.last_change.retain(|id, _| present.contains(id));

        self.feedback.observe(self.policy, &clean, &self.config);
        let reactive = self.reactive.tick(&clean, &self.config, &self.in_flight);
        // A move decided now lands `lead` ticks later: judge it by the forecast for the
        // horizon after that, so a predicted shift is acted on early enough to be in place.
        self.predictive.set_lead(self.lead_ticks());
        let predictive =
            self.predictive
                .tick(&clean, &self.config, &self.in_flight, &self.last_change);
        let decisions = match self.policy {
            Policy::Static => Vec::new(),
            Policy::Reactive => reactive,
            Policy::Predictive => predictive,
        };
        for decision in &decisions {
            let Action::Migrate { fragment, to } = decision.action;
            let from = clean
                .fragments
                .iter()
                .find(|f| f.id == fragment)
                .map_or(0, |f| f.owner);
            self.in_flight.insert(
                fragment,
                InFlight {
                    decided_tick: tick,
                    decided_ms: input.now_ms,
                },
            );
            self.last_change.insert(fragment, tick);
            self.feedback
                .record(self.policy, decision, fragment, from, to, tick);
            if self.policy == Policy::Reactive {
                self.reactive.forget(fragment);
            }
        }
        decisions
    }

    /// A decision was carried out (`moved`) or failed. Observed benefit accrues over the
    /// following `payback_ticks` ticks' rates.
    pub fn outcome(&mut self, fragment: u64, moved: bool, now_ms: u64) {
        let decided = self.in_flight.remove(&fragment);
        if let Some(decided) = decided.filter(|_| moved) {
            let took = now_ms.saturating_sub(decided.decided_ms) as f64;
            self.migration_ms = Some(match self.migration_ms {
                Some(m) => 0.75 * m + 0.25 * took,
                None => took,
            });
        }
        if moved {
            self.last_change.insert(fragment, self.tick);
        }
        self.feedback
            .outcome(fragment, moved, self.tick, self.config.payback_ticks());
    }

    /// Whole ticks a migration takes (decision to reported success, smoothed), at most
    /// `MAX_LEAD_TICKS`. Rounded down: the report itself arrives up to a tick late.
    pub fn lead_ticks(&self) -> usize {
        let tick = self.config.tick_ms.max(1) as f64;
        self.migration_ms
            .map_or(0, |ms| (ms / tick).floor() as usize)
            .min(MAX_LEAD_TICKS)
    }

    /// Decisions handed out and not yet reported through `outcome` (nor timed out).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The season the predictive forecasters use (configured or detected), in ticks.
    pub fn season(&self) -> Option<usize> {
        self.predictive.season()
    }

    /// Calibration and local-hit figures per policy, one line each, then the season.
    pub fn report(&self) -> String {
        let mut report = self.feedback.report(self.policy);
        match self.season() {
            Some(season) => report.push_str(&format!("season {season} ticks\n")),
            None => report.push_str("season none\n"),
        }
        report.push_str(&format!(
            "migration lead {} ticks (decision to done {})\n",
            self.lead_ticks(),
            self.migration_ms
                .map_or("unknown".to_string(), |ms| format!("{ms:.0} ms"))
        ));
        report
    }
}
