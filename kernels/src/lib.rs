//! augur-kernels (crate doc written below once modules settle)
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
