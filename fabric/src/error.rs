//! The one error type of the fabric layer.

use std::fmt;

/// Why a remote peer refused a one-sided request (TCP backend; the verbs backend reports
/// the NIC's completion status instead, see [`Error::Verbs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteStatus {
    /// No region with this id is registered on the peer.
    NoSuchRegion,
    /// The rkey or generation does not match the registration (stale or forged descriptor).
    BadKey,
    /// `offset + len` lies outside the registered region.
    OutOfBounds,
    /// The region was registered without the access this request needs.
    Permission,
    /// A status code this version does not know.
    Unknown(u32),
}

impl RemoteStatus {
    pub(crate) fn code(self) -> u32 {
        match self {
            RemoteStatus::NoSuchRegion => 1,
            RemoteStatus::BadKey => 2,
            RemoteStatus::OutOfBounds => 3,
            RemoteStatus::Permission => 4,
            RemoteStatus::Unknown(c) => c,
        }
    }

    pub(crate) fn from_code(c: u32) -> Self {
        match c {
            1 => RemoteStatus::NoSuchRegion,
            2 => RemoteStatus::BadKey,
            3 => RemoteStatus::OutOfBounds,
            4 => RemoteStatus::Permission,
            c => RemoteStatus::Unknown(c),
        }
    }
}

impl fmt::Display for RemoteStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteStatus::NoSuchRegion => f.write_str("no such region"),
            RemoteStatus::BadKey => f.write_str("wrong rkey or stale generation"),
            RemoteStatus::OutOfBounds => f.write_str("out of bounds"),
            RemoteStatus::Permission => f.write_str("access not permitted"),
            RemoteStatus::Unknown(c) => write!(f, "unknown status {c}"),
        }
    }
}

/// Errors of the fabric layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error (socket, memfd, mmap).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer failed (or we failed) the cluster-secret challenge, or the handshake was cut.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The peer sent something that is not valid protocol; the connection is closed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A request would touch bytes outside a region (checked locally before anything is sent).
    #[error("out of bounds: offset {offset} + len {len} exceeds region length {region_len}")]
    OutOfBounds {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// Length of the region.
        region_len: u64,
    },
    /// The peer refused a one-sided request.
    #[error("remote refused the request: {0}")]
    Remote(RemoteStatus),
    /// The connection is gone (peer closed, reset, or the connection failed earlier);
    /// every operation in flight on it fails with this error. Reconnect to continue.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// A message is larger than the connection's maximum message size.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    MessageTooLarge {
        /// Length of the message.
        len: usize,
        /// Maximum message size of the connection.
        max: usize,
    },
    /// An RDMA verbs call or work completion failed.
    #[error("verbs: {0}")]
    Verbs(String),
    /// No RDMA device (or not the named one) is present.
    #[error("no RDMA device: {0}")]
    NoDevice(String),
    /// A bad argument from the caller.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result alias of the fabric layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
