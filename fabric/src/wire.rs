//! Frame header of the TCP backend's data connection (`docs/protocol.md`, "TCP frames").

use crate::error::{Error, Result};

/// Every frame starts with this 48-byte header (little endian).
pub const HEADER_LEN: usize = 48;

/// Frame kinds.
pub mod kind {
    /// Read request: region_id, rkey, generation, offset, len.
    pub const READ_REQ: u8 = 1;
    /// A chunk of read data: offset (within the request), len, then `len` bytes.
    pub const READ_DATA: u8 = 2;
    /// A refused read: status (≠ 0). A read that succeeds ends with its last READ_DATA.
    pub const READ_DONE: u8 = 3;
    /// Write request: region_id, rkey, generation, offset, len, then `len` bytes.
    pub const WRITE_REQ: u8 = 4;
    /// Result of a write: status.
    pub const WRITE_DONE: u8 = 5;
    /// A two-sided message: len, then `len` bytes.
    pub const SEND: u8 = 6;
    /// Credit return: offset = cumulative number of messages consumed by the receiver.
    pub const CREDIT: u8 = 7;
}

/// The decoded header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Frame kind ([`kind`]).
    pub kind: u8,
    /// Status of a *_DONE frame (0 = success, else a [`RemoteStatus`](crate::RemoteStatus) code).
    pub status: u32,
    /// Request id chosen by the requester, echoed in replies.
    pub req_id: u64,
    /// Target region id.
    pub region_id: u32,
    /// Target region key.
    pub rkey: u32,
    /// Target region generation.
    pub generation: u64,
    /// Offset (meaning depends on kind).
    pub offset: u64,
    /// Length of the data that follows / that is requested.
    pub len: u64,
}

impl Header {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.kind;
        b[4..8].copy_from_slice(&self.status.to_le_bytes());
        b[8..16].copy_from_slice(&self.req_id.to_le_bytes());
        b[16..20].copy_from_slice(&self.region_id.to_le_bytes());
        b[20..24].copy_from_slice(&self.rkey.to_le_bytes());
        b[24..32].copy_from_slice(&self.generation.to_le_bytes());
        b[32..40].copy_from_slice(&self.offset.to_le_bytes());
        b[40..48].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Decodes and checks the reserved bytes and the kind.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header> {
        if b[1] != 0 || b[2] != 0 || b[3] != 0 {
            return Err(Error::Protocol("reserved header bytes are not zero".into()));
        }
        if !(kind::READ_REQ..=kind::CREDIT).contains(&b[0]) {
            return Err(Error::Protocol(format!("unknown frame kind {}", b[0])));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        Ok(Header {
            kind: b[0],
            status: u32_at(4),
            req_id: u64_at(8),
            region_id: u32_at(16),
            rkey: u32_at(20),
            generation: u64_at(24),
            offset: u64_at(32),
            len: u64_at(40),
        })
    }
}

/// Connection parameters each side sends right after authentication (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Receive buffers the sender of these params has for the peer's messages.
    pub recv_depth: u32,
    /// Largest message the sender of these params accepts.
    pub max_message: u32,
    /// One-sided requests (READ_REQ + WRITE_REQ frames) the sender of these params accepts
    /// outstanding, i.e. sent and not yet answered (1..=65536); more is a protocol error.
    pub max_requests: u32,
}

/// Largest `max_requests` a side may advertise.
pub const MAX_REQUESTS_LIMIT: u32 = 65536;

/// Encoded size of [`Params`].
pub const PARAMS_LEN: usize = 16;

impl Params {
    /// Encodes: recv_depth u32, max_message u32, max_requests u32, 4 reserved zero bytes.
    pub fn encode(&self) -> [u8; PARAMS_LEN] {
        let mut b = [0u8; PARAMS_LEN];
        b[0..4].copy_from_slice(&self.recv_depth.to_le_bytes());
        b[4..8].copy_from_slice(&self.max_message.to_le_bytes());
        b[8..12].copy_from_slice(&self.max_requests.to_le_bytes());
        b
    }

    /// Decodes and validates.
    pub fn decode(b: &[u8; PARAMS_LEN]) -> Result<Params> {
        let p = Params {
            recv_depth: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            max_message: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            max_requests: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        };
        if b[12..].iter().any(|&x| x != 0) {
            return Err(Error::Protocol(
                "reserved parameter bytes are not zero".into(),
            ));
        }
        if p.recv_depth == 0
            || p.max_requests == 0
            || p.max_requests > MAX_REQUESTS_LIMIT
            || p.recv_depth > 4096
            || p.max_message == 0
            || p.max_message > (1 << 20)
        {
            return Err(Error::Protocol(format!("bad connection parameters {p:?}")));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let h = Header {
            kind: kind::WRITE_REQ,
            status: 3,
            req_id: u64::MAX - 1,
            region_id: 7,
            rkey: 0xdead_beef,
            generation: 42,
            offset: 1 << 40,
            len: 12345,
        };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn header_rejects_garbage() {
        let mut b = Header::default().encode();
        b[0] = 99;
        assert!(Header::decode(&b).is_err());
        let mut b = Header {
            kind: kind::SEND,
            ..Header::default()
        }
        .encode();
        b[2] = 1;
        assert!(Header::decode(&b).is_err());
    }

    #[test]
    fn params_validate() {
        let p = Params {
            recv_depth: 64,
            max_message: 4096,
            max_requests: 512,
        };
        assert_eq!(Params::decode(&p.encode()).unwrap(), p);
        let bad = Params {
            recv_depth: 0,
            max_message: 4096,
            max_requests: 512,
        };
        assert!(Params::decode(&bad.encode()).is_err());
        let unbounded = Params {
            max_requests: 0,
            ..p
        };
        assert!(Params::decode(&unbounded.encode()).is_err());
        let mut reserved = p.encode();
        reserved[15] = 1;
        assert!(Params::decode(&reserved).is_err());
    }
}
