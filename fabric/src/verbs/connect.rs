//! The bootstrap handshake of a verbs connection, after authentication
//! (`docs/protocol.md`, "Verbs endpoint exchange"): both sides send their [`Endpoint`]
//! (QPN, PSN, GID, MTU, credit word, receive depth), move their QP through
//! INIT → RTR → RTS, and then exchange one READY byte so that neither side sends before the
//! other can receive.

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::device::Gid;
use crate::error::{Error, Result};

/// Encoded size of an [`Endpoint`].
pub const ENDPOINT_LEN: usize = 64;
/// The byte each side sends once its QP is in RTS.
pub const READY: u8 = 0x52; // 'R'

/// What one side tells the other to connect an RC QP pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// QP number.
    pub qpn: u32,
    /// Initial packet sequence number (24 bits).
    pub psn: u32,
    /// rkey of the credit word.
    pub credit_rkey: u32,
    /// Receive buffers pre-posted for the peer's messages.
    pub recv_depth: u32,
    /// Largest message accepted.
    pub max_message: u32,
    /// LID (0 on RoCE).
    pub lid: u16,
    /// Active MTU (`ibv_mtu` value 1..=5).
    pub mtu: u8,
    /// GID (RoCEv2: IPv4-mapped address).
    pub gid: Gid,
    /// Address of the credit word (the peer RDMA-WRITEs its consumed-message count there).
    pub credit_addr: u64,
}

impl Endpoint {
    /// Encodes (little endian, `docs/protocol.md`).
    pub fn encode(&self) -> [u8; ENDPOINT_LEN] {
        let mut b = [0u8; ENDPOINT_LEN];
        b[0..4].copy_from_slice(&self.qpn.to_le_bytes());
        b[4..8].copy_from_slice(&self.psn.to_le_bytes());
        b[8..12].copy_from_slice(&self.credit_rkey.to_le_bytes());
        b[12..16].copy_from_slice(&self.recv_depth.to_le_bytes());
        b[16..20].copy_from_slice(&self.max_message.to_le_bytes());
        b[20..22].copy_from_slice(&self.lid.to_le_bytes());
        b[22] = self.mtu;
        b[24..40].copy_from_slice(&self.gid);
        b[40..48].copy_from_slice(&self.credit_addr.to_le_bytes());
        b
    }

    /// Decodes and validates.
    pub fn decode(b: &[u8; ENDPOINT_LEN]) -> Result<Endpoint> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&b[24..40]);
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[40..48]);
        let e = Endpoint {
            qpn: u32_at(0),
            psn: u32_at(4),
            credit_rkey: u32_at(8),
            recv_depth: u32_at(12),
            max_message: u32_at(16),
            lid: u16::from_le_bytes([b[20], b[21]]),
            mtu: b[22],
            gid,
            credit_addr: u64::from_le_bytes(a),
        };
        if e.qpn == 0 || e.qpn > 0x00ff_ffff || e.psn > 0x00ff_ffff {
            return Err(Error::Protocol(format!("bad QPN/PSN in endpoint {e:?}")));
        }
        if !(1..=5).contains(&e.mtu) {
            return Err(Error::Protocol(format!("bad MTU {} in endpoint", e.mtu)));
        }
        if e.recv_depth == 0
            || e.recv_depth > 4096
            || e.max_message == 0
            || e.max_message > (1 << 20)
        {
            return Err(Error::Protocol(
                "bad receive depth / message size in endpoint".into(),
            ));
        }
        if b[23] != 0 || b[48..].iter().any(|&x| x != 0) {
            return Err(Error::Protocol(
                "reserved endpoint bytes are not zero".into(),
            ));
        }
        Ok(e)
    }
}

/// Sends ours, receives theirs.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    ours: &Endpoint,
) -> Result<Endpoint> {
    s.write_all(&ours.encode())
        .await
        .map_err(|e| Error::Disconnected(format!("sending endpoint: {e}")))?;
    let mut b = [0u8; ENDPOINT_LEN];
    crate::auth::read_msg(s, &mut b, "ENDPOINT").await?;
    Endpoint::decode(&b)
}

/// Sends READY and waits for the peer's.
pub async fn ready<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<()> {
    s.write_all(&[READY])
        .await
        .map_err(|e| Error::Disconnected(format!("sending READY: {e}")))?;
    let mut b = [0u8; 1];
    crate::auth::read_msg(s, &mut b, "READY").await?;
    if b[0] != READY {
        return Err(Error::Protocol(format!("expected READY, got {:#x}", b[0])));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_roundtrip_and_validation() {
        let e = Endpoint {
            qpn: 0x11,
            psn: 0xabcdef,
            credit_rkey: 7,
            recv_depth: 64,
            max_message: 4096,
            lid: 0,
            mtu: 5,
            gid: [1; 16],
            credit_addr: 0x7f00_0000_1000,
        };
        assert_eq!(Endpoint::decode(&e.encode()).unwrap(), e);
        let mut b = e.encode();
        b[22] = 9;
        assert!(Endpoint::decode(&b).is_err());
        let mut b = e.encode();
        b[63] = 1;
        assert!(Endpoint::decode(&b).is_err());
    }
}
