//! augur-kernels: the pure, I/O-free mathematics that decides where fragments live.
//!
//! No sockets, no async, no clocks, std only: every function takes numbers and returns
//! numbers, so it can be unit- and property-tested in isolation and run beside the data path.
//! Non-finite or out-of-range inputs never panic; they are ignored or counted.
//!
//! # Modules
//!
//! | module | concept |
//! |---|---|
//! | [`stats`] | per-core [`stats::CoreRecorder`] (plain counters, ~5 ns per access) folded per tick into sparse per-(fragment, node) windows and key-prefix write series ([`stats::AccessStats`]) |
//! | [`forecast`] | the [`forecast::Forecaster`] trait and its models: EWMA, damped Holt, additive Holt-Winters, AR(p) by recursive least squares, naive and seasonal naive, each with a prediction interval |
//! | [`ensemble`] | per-series combination weighted by rolling MASE, with a CUSUM level-shift detector that follows flash crowds within a tick or two |
//! | [`markov`] | sparse decaying first-order chains of fragment transitions per node, trained from per-connection sequences, with k-step lookahead |
//! | [`affinity`] | `P[n][f]`, predicted load per fragment and node, trend labels, CSV heatmap |
//! | [`cost`] | benefit (remote accesses avoided × latency gap + overload relieved) and cost (bytes × transfer cost + handoff pause), both in microseconds |
//! | [`solver`] | greedy placement under capacity, budget and hysteresis: `Migrate`, `Split`, `Merge` |
//! | [`baselines`] | `static` (jump consistent hash), `reactive` (threshold for k ticks), `oracle` (solver fed the true future) |
//! | [`feedback`] | predicted vs observed benefit per decision, calibration per policy |
//! | [`predictor`] | the per-tick glue: fold → ensembles → Markov → affinity |
//! | [`rng`], [`hash`] | a seeded SplitMix64 for reproducible tests and a fast hasher for integer keys |
//!
//! # How the node drives it, once per tick
//!
//! ```text
//! data path (each core)        record(fragment, node, read|write, bytes)       stats::CoreRecorder
//! tick boundary                predictor.fold(core_recorder) for every core    stats::AccessStats
//!                              predictor.observe_sequence(node, conn, f)       markov::SequenceModel
//! predict                      let affinity = predictor.tick()                 ensemble + markov → affinity::Affinity
//! decide                       solver::solve(&PlacementInput{..}, &config)     cost + solver → Vec<Decision>
//! act (node)                   migrate / split / merge, epoch switch
//! learn                        feedback.record(policy, &decision) now,
//!                              feedback.record_outcome(id, observed) later     feedback::FeedbackLog
//! ```
//!
//! ```
//! use augur_kernels::cost::CostModel;
//! use augur_kernels::predictor::{Predictor, PredictorConfig};
//! use augur_kernels::solver::{solve, Budget, FragmentState, NodeCapacity, PlacementInput, SolverConfig};
//! use augur_kernels::stats::{AccessKind, CoreRecorder};
//!
//! // Two fragments owned by node 0; node 1's clients hammer fragment 1.
//! let mut predictor = Predictor::new(2, PredictorConfig::default());
//! let mut core = CoreRecorder::new(2, 2, 4);
//! let mut affinity = predictor.tick();
//! for _ in 0..20 {
//!     for _ in 0..5_000 {
//!         core.record(1, 1, AccessKind::Read, 128);
//!     }
//!     core.record(0, 0, AccessKind::Write, 128);
//!     predictor.fold(&mut core);
//!     affinity = predictor.tick();
//! }
//! let fragments: Vec<FragmentState> = (0..2)
//!     .map(|f| FragmentState {
//!         index: f,
//!         bytes: 1 << 20,
//!         owner: 0,
//!         ticks_since_change: 100,
//!         split_key: None,
//!         right_neighbour: None,
//!     })
//!     .collect();
//! let capacities = [NodeCapacity { load: 1e9, bytes: u64::MAX }; 2];
//! let input = PlacementInput {
//!     fragments: &fragments,
//!     affinity: &affinity,
//!     capacities: &capacities,
//!     budget: Budget { max_actions: 8, max_bytes: 1 << 30 },
//!     cost: &CostModel::default(),
//! };
//! let decisions = solve(&input, &SolverConfig::default());
//! assert_eq!(decisions.len(), 1); // fragment 1 moves to node 1
//! ```
#![forbid(unsafe_code)]

pub mod affinity;
pub mod baselines;
pub mod cost;
pub mod ensemble;
pub mod feedback;
pub mod forecast;
pub mod hash;
pub mod markov;
pub mod predictor;
pub mod rng;
pub mod solver;
pub mod stats;
