//! The Redis protocol: `frame` (values and encoding), `parse` (zero-copy parsing).
pub mod frame;
pub mod parse;

pub use frame::Frame;
pub use parse::{next_frame, next_request, Limits, ProtocolError, RequestParser};
