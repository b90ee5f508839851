//! augur-kernels (crate doc written below once modules settle)
#![forbid(unsafe_code)]

pub mod forecast;
pub mod hash;
pub mod rng;
pub mod stats;
pub mod ensemble;
pub mod markov;
pub mod affinity;
pub mod cost;
pub mod solver;
pub mod baselines;
pub mod feedback;
