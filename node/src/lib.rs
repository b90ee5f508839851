//! augur-node (work in progress)
pub mod resp;
pub mod store;
