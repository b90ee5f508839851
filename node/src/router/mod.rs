//! Where a request for a key goes: same core, other core, or another node.

pub mod remote_read;
