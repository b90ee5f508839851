//! The replicated ownership table (`docs/decisions/0006-ownership-table.md`).
//!
//! - [`table`]: the pure data model (fragments, members, changes), deterministic and
//!   validated;
//! - `store`: openraft log storage and state machine (persistent under `dir/raft/`);
//! - `network`: the authenticated control bus (raft RPCs, joins, forwarded proposals);
//! - `raft`: the [`Ownership`] handle and its control thread.
//!
//! Data cores poll [`Ownership::version`] (one atomic load) and, when it moves, swap in
//! [`Ownership::table`] (an `Arc` snapshot, lock-free).

use std::io::Cursor;

mod network;
mod raft;
mod store;
pub mod table;

pub use raft::{
    Ownership, OwnershipConfig, OwnershipError, RaftStatus, Role, MAX_VOTERS, SNAPSHOT_EVERY,
};
pub use table::{
    jump_consistent_hash, Applied, Change, FragmentEntry, FragmentState, Member, NodeId, Table,
    TableError, Touched,
};

openraft::declare_raft_types!(
    /// openraft types of the ownership state machine.
    pub(crate) TypeConfig:
        D = Change,
        R = Result<Applied, TableError>,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);
