//! What the node measures about itself and about the cluster: per-core counters
//! (`stats`), per-fragment accesses by this node's clients (`access`, with the
//! kernels' recorder), process resource use (`resources`), and the cluster-wide
//! picture assembled from every node's per-tick summaries (`cluster`) — the input of
//! placement.

pub mod access;
pub mod cluster;
pub mod migrations;
pub mod resources;
pub mod stats;
