//! The replicated ownership table (`docs/decisions/0006-ownership-table.md`).
//!
//! [`table`] is the pure data model; the rest runs it as an openraft state machine on a
//! control thread of its own, with a lock-free snapshot for the data cores.

pub mod table;

pub use table::{
    Applied, Change, FragmentEntry, FragmentState, Member, NodeId, Table, TableError, Touched,
};
