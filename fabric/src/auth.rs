//! Peer authentication: HMAC-SHA256 challenge-response over the bootstrap TCP connection,
//! before any QP number, address or key is exchanged (`docs/protocol.md`, "Handshake").
//!
//! Both sides prove knowledge of the cluster secret, the server first (so a client never
//! proves anything to an impostor), each over both fresh 32-byte nonces with a
//! role-specific label (so one side's proof can never be replayed as the other's).

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// First 4 bytes of every handshake message.
pub const MAGIC: [u8; 4] = *b"AUGF";
/// Protocol version.
pub const VERSION: u16 = 1;

/// Message types of the handshake.
pub mod msg {
    /// client → server: version, backend, client nonce
    pub const HELLO: u8 = 1;
    /// server → client: server nonce, server proof
    pub const CHALLENGE: u8 = 2;
    /// client → server: client proof
    pub const RESPONSE: u8 = 3;
    /// server → client: verdict
    pub const RESULT: u8 = 4;
}

/// Backend ids carried in HELLO: a TCP peer and a verbs peer never pair up.
pub mod backend {
    /// TCP backend.
    pub const TCP: u8 = 0;
    /// Verbs backend.
    pub const VERBS: u8 = 1;
}

/// HELLO and RESPONSE length.
pub const HELLO_LEN: usize = 40;
/// CHALLENGE length.
pub const CHALLENGE_LEN: usize = 72;
/// RESULT length.
pub const RESULT_LEN: usize = 8;

const SERVER_LABEL: &[u8] = b"augur-fabric/v1/server-proof";
const CLIENT_LABEL: &[u8] = b"augur-fabric/v1/client-proof";

fn proof(secret: &[u8], label: &[u8], backend: u8, cn: &[u8; 32], sn: &[u8; 32]) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for HMAC.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any size"),
    };
    mac.update(label);
    mac.update(&[backend]);
    mac.update(cn);
    mac.update(sn);
    mac
}

fn header(t: u8, b: u8) -> [u8; 8] {
    let v = VERSION.to_le_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], t, b]
}

fn check_header(buf: &[u8], want_type: u8) -> Result<u8> {
    if buf[0..4] != MAGIC {
        return Err(Error::Auth("bad magic: not an augur fabric peer".into()));
    }
    let v = u16::from_le_bytes([buf[4], buf[5]]);
    if v != VERSION {
        return Err(Error::Auth(format!(
            "protocol version {v}, expected {VERSION}"
        )));
    }
    if buf[6] != want_type {
        return Err(Error::Auth(format!(
            "unexpected message type {} (wanted {want_type})",
            buf[6]
        )));
    }
    Ok(buf[7])
}

/// Reads exactly `buf.len()` bytes; a short read is a handshake failure.
pub(crate) async fn read_msg<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut [u8],
    what: &str,
) -> Result<()> {
    match s.read_exact(buf).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::Auth(format!(
            "peer closed the connection during the handshake (waiting for {what})"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(Error::Auth(format!(
            "peer went silent during the handshake (waiting for {what})"
        ))),
        Err(e) => Err(Error::Auth(format!("handshake I/O error ({what}): {e}"))),
    }
}

async fn write_msg<S: AsyncWrite + Unpin>(s: &mut S, buf: &[u8]) -> Result<()> {
    s.write_all(buf)
        .await
        .map_err(|e| Error::Auth(format!("handshake I/O error: {e}")))?;
    s.flush()
        .await
        .map_err(|e| Error::Auth(format!("handshake I/O error: {e}")))
}

/// Client side: send HELLO, check the server's proof, send ours, wait for the verdict.
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: &[u8],
    be: u8,
) -> Result<()> {
    let mut cn = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut cn);
    let mut hello = [0u8; HELLO_LEN];
    hello[..8].copy_from_slice(&header(msg::HELLO, be));
    hello[8..].copy_from_slice(&cn);
    write_msg(s, &hello).await?;

    let mut ch = [0u8; CHALLENGE_LEN];
    read_msg(s, &mut ch, "CHALLENGE").await?;
    let peer_be = check_header(&ch, msg::CHALLENGE)?;
    if peer_be != be {
        return Err(Error::Auth(format!(
            "peer runs backend {peer_be}, we run {be}"
        )));
    }
    let mut sn = [0u8; 32];
    sn.copy_from_slice(&ch[8..40]);
    proof(secret, SERVER_LABEL, be, &cn, &sn)
        .verify_slice(&ch[40..72])
        .map_err(|_| Error::Auth("server does not know the cluster secret".into()))?;

    let mut resp = [0u8; HELLO_LEN];
    resp[..8].copy_from_slice(&header(msg::RESPONSE, be));
    resp[8..].copy_from_slice(
        &proof(secret, CLIENT_LABEL, be, &cn, &sn)
            .finalize()
            .into_bytes(),
    );
    write_msg(s, &resp).await?;

    let mut res = [0u8; RESULT_LEN];
    read_msg(s, &mut res, "RESULT").await?;
    match check_header(&res, msg::RESULT)? {
        0 => Ok(()),
        _ => Err(Error::Auth(
            "server refused our proof (wrong cluster secret?)".into(),
        )),
    }
}

/// Server side: wait for HELLO, prove ourselves, check the client's proof, send the verdict.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: &[u8],
    be: u8,
) -> Result<()> {
    let mut hello = [0u8; HELLO_LEN];
    read_msg(s, &mut hello, "HELLO").await?;
    let peer_be = check_header(&hello, msg::HELLO)?;
    if peer_be != be {
        return Err(Error::Auth(format!(
            "peer runs backend {peer_be}, we run {be}"
        )));
    }
    let mut cn = [0u8; 32];
    cn.copy_from_slice(&hello[8..40]);
    let mut sn = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut sn);
    let mut ch = [0u8; CHALLENGE_LEN];
    ch[..8].copy_from_slice(&header(msg::CHALLENGE, be));
    ch[8..40].copy_from_slice(&sn);
    ch[40..].copy_from_slice(
        &proof(secret, SERVER_LABEL, be, &cn, &sn)
            .finalize()
            .into_bytes(),
    );
    write_msg(s, &ch).await?;

    let mut resp = [0u8; HELLO_LEN];
    read_msg(s, &mut resp, "RESPONSE").await?;
    check_header(&resp, msg::RESPONSE)?;
    let ok = proof(secret, CLIENT_LABEL, be, &cn, &sn)
        .verify_slice(&resp[8..40])
        .is_ok();
    let mut res = [0u8; RESULT_LEN];
    res[..8].copy_from_slice(&header(msg::RESULT, if ok { 0 } else { 1 }));
    // the verdict byte replaces the backend byte of the header
    write_msg(s, &res).await?;
    if ok {
        Ok(())
    } else {
        Err(Error::Auth(
            "client does not know the cluster secret".into(),
        ))
    }
}
