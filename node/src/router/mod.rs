//! Where a key lives and how to reach it: the route table maps key ranges to the
//! core or node that owns them (binary search on the dividers; each core keeps an
//! `Arc` snapshot), and `remote_read` reads a key of another node's fragment with
//! one-sided READs of its region.

pub mod remote_read;
pub mod table;
