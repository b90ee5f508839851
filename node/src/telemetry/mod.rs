//! What the node measures about itself: per-core counters today; per-fragment access
//! summaries for the placement controller next.

pub mod stats;
