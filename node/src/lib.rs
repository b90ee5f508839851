//! augur-node: the storage node.
//!
//! Where a request flows, top to bottom (each module imports only ones below it):
//! - [`node`]: start-up only: one pinned glommio executor per core, each accepting
//!   its own connections (`SO_REUSEPORT`);
//! - [`migrate`]: live migration of a fragment to another node (one-sided copy,
//!   catch-up, fenced handoff, commit);
//! - [`server`]: a client's connection ([`server::connection`]: read, parse every
//!   complete request, execute the batch, reply in order), INFO, CLIENT, `/metrics`;
//! - [`core`]: the per-core runtime: [`core::CoreCtx::run_keys`] routes each key
//!   request to this core's shard or to the owning core over the channel mesh;
//! - [`shard`]: the fragments one core owns and is the only writer to;
//! - [`context`]: state every core shares (config, routes, counters, clients);
//! - [`router`]: the route table, key range → owner, by binary search on dividers;
//! - [`telemetry`]: counters the node keeps about itself;
//! - [`cmd`]: a request's arguments → a plan of per-key operations ([`cmd::keyop`]),
//!   connection commands, or questions for every core;
//! - [`store`]: fragments in memfd regions laid out `header | index | log`
//!   (`docs/layout.md`), ready for one-sided remote reads; [`resp`]: frames.

pub mod cmd;
pub mod config;
pub mod context;
pub mod core;
pub mod glob;
pub mod migrate;
pub mod node;
pub mod ownership;
pub mod placement;
pub mod resp;
pub mod router;
pub mod server;
pub mod shard;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use node::{start, start_with, Assignment, NodeHandle};
