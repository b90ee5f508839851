//! augur-node: the storage node.
//!
//! Where a request flows, top to bottom:
//! - [`node`]: starts one pinned glommio executor per core; each accepts its own
//!   connections (`SO_REUSEPORT`) and owns a [`shard::Shard`];
//! - [`server::connection`]: reads a client's bytes, parses every complete request
//!   ([`resp`]), executes the batch and writes the replies in order;
//! - [`cmd`]: turns a request into a plan: per-key operations ([`cmd::keyop`]),
//!   connection commands, or questions for every core;
//! - [`shard`]: the core that owns a key's fragment applies the operation
//!   (requests for another core's fragment travel over the channel mesh);
//! - [`store`]: fragments in memfd regions laid out `header | index | log`
//!   (`docs/layout.md`), ready for one-sided remote reads.

pub mod cmd;
pub mod config;
pub mod glob;
pub mod metrics;
pub mod node;
pub mod ownership;
pub mod resp;
pub mod server;
pub mod shard;
pub mod store;

pub use config::Config;
pub use node::{start, NodeHandle};
