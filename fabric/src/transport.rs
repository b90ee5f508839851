//! The backend-independent API: [`Transport`], [`Connection`], remote descriptors.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::verbs::memory::Region;

/// What a peer may do to a registered region with one-sided operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Peers may READ.
    pub remote_read: bool,
    /// Peers may WRITE.
    pub remote_write: bool,
}

impl Access {
    /// Remote read only (the usual for a fragment being migrated away).
    pub const READ: Access = Access {
        remote_read: true,
        remote_write: false,
    };
    /// Remote read and write.
    pub const READ_WRITE: Access = Access {
        remote_read: true,
        remote_write: true,
    };
    /// Local use only (a target of our own reads, source of our own writes).
    pub const LOCAL: Access = Access {
        remote_read: false,
        remote_write: false,
    };
}

/// Everything a peer needs to address a registered region with one-sided operations.
/// Produced by [`LocalMr::descriptor`], shipped to the peer (e.g. with
/// [`Connection::send`] after [`RemoteRegion::encode`]), used there with
/// [`Connection::read`] / [`Connection::write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteRegion {
    /// Virtual address of byte 0 on the owner (verbs); 0 on TCP.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// Remote key: the MR's rkey (verbs) or a random 32-bit key (TCP).
    pub rkey: u32,
    /// Id of the registration on the owner's transport.
    pub region_id: u32,
    /// Generation of the registration: a descriptor of an earlier registration of the same
    /// id is refused.
    pub generation: u64,
}

impl RemoteRegion {
    /// Size of the encoded form.
    pub const WIRE_LEN: usize = 32;

    /// Encodes as 32 bytes, little endian: addr u64, len u64, rkey u32, region_id u32,
    /// generation u64 (`docs/protocol.md`, "Remote region descriptor").
    pub fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..20].copy_from_slice(&self.rkey.to_le_bytes());
        b[20..24].copy_from_slice(&self.region_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.generation.to_le_bytes());
        b
    }

    /// Decodes [`RemoteRegion::encode`]'s output; anything but exactly 32 bytes is an error.
    pub fn decode(b: &[u8]) -> Result<RemoteRegion> {
        if b.len() != Self::WIRE_LEN {
            return Err(Error::Protocol(format!(
                "remote region descriptor must be 32 bytes, got {}",
                b.len()
            )));
        }
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let u32_at = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[i..i + 4]);
            u32::from_le_bytes(w)
        };
        Ok(RemoteRegion {
            addr: u64_at(0),
            len: u64_at(8),
            rkey: u32_at(16),
            region_id: u32_at(20),
            generation: u64_at(24),
        })
    }

    /// Checks `[offset, offset + len)` against the descriptor's length.
    pub fn check(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::OutOfBounds {
                offset,
                len,
                region_len: self.len,
            }),
        }
    }
}

/// A region registered with a transport. Dropping it deregisters the region; peers'
/// descriptors of it stop working.
pub trait LocalMr {
    /// The registered memory.
    fn region(&self) -> &Region;
    /// The descriptor to give to peers.
    fn descriptor(&self) -> RemoteRegion;
}

/// One element of a batched one-sided operation: `len` bytes between
/// `remote[remote_offset..]` and `local[local_offset..]`.
pub struct Op<'a, M> {
    /// The peer's region.
    pub remote: RemoteRegion,
    /// Offset into the peer's region.
    pub remote_offset: u64,
    /// Number of bytes.
    pub len: u64,
    /// Our registered region (destination of a read, source of a write).
    pub local: &'a M,
    /// Offset into our region.
    pub local_offset: u64,
}

impl<M: LocalMr> Op<'_, M> {
    /// Checks both sides' bounds (before anything is sent).
    pub fn check(&self) -> Result<()> {
        if self.len == 0 {
            return Err(Error::InvalidArgument("zero-length transfer".into()));
        }
        self.remote.check(self.remote_offset, self.len)?;
        self.local.region().check(self.local_offset, self.len)
    }
}

/// Settings shared by both backends.
#[derive(Clone, Debug)]
pub struct FabricConfig {
    /// The cluster secret every peer must prove knowledge of (HMAC-SHA256 key); at least
    /// 16 bytes.
    pub secret: Vec<u8>,
    /// Time limit for each read during the bootstrap handshake (a peer that vanishes
    /// mid-handshake fails it after this long at most).
    pub handshake_timeout: Duration,
    /// Receive buffers pre-posted per connection = send credits the peer gets.
    pub recv_depth: u32,
    /// Largest message for send/recv, bytes.
    pub max_message: u32,
    /// TCP: largest chunk of a streamed read response.
    pub stream_chunk: u32,
    /// TCP: one-sided requests (each READ, each WRITE frame) a peer may have outstanding on
    /// one connection (1..=65536). Bounds what a peer can make the owner queue; a requester
    /// waits for a free slot before sending more.
    pub max_requests: u32,
    /// Verbs: device name (`None` = the first device, or `$IBV_DEVICE` if set).
    pub device: Option<String>,
    /// Verbs: port number (1-based).
    pub port: u8,
    /// Verbs: GID index (`None` = the first RoCEv2 IPv4-mapped GID of the port, or
    /// `$SOFTROCE_GID_INDEX` if set).
    pub gid_index: Option<u8>,
    /// Verbs: send queue depth per connection (outstanding work requests).
    pub sq_depth: u32,
    /// Verbs: largest inline send payload requested from the device.
    pub max_inline: u32,
    /// Verbs: completions taken from the CQ per poll.
    pub poll_budget: u32,
    /// Verbs: polls a waiting operation spins through before yielding to the executor.
    pub spin_polls: u32,
    /// Verbs: largest single work request; longer transfers are split into a chain.
    pub max_wr_bytes: u32,
}

impl FabricConfig {
    /// Defaults with the given secret.
    pub fn new(secret: impl Into<Vec<u8>>) -> FabricConfig {
        FabricConfig {
            secret: secret.into(),
            handshake_timeout: Duration::from_secs(10),
            recv_depth: 64,
            max_message: 4096,
            stream_chunk: 1 << 20,
            max_requests: 512,
            device: None,
            port: 1,
            gid_index: None,
            sq_depth: 256,
            max_inline: 128,
            poll_budget: 32,
            spin_polls: 64,
            max_wr_bytes: 1 << 20,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.secret.len() < 16 {
            return Err(Error::InvalidArgument(
                "the cluster secret must be at least 16 bytes".into(),
            ));
        }
        if self.recv_depth == 0 || self.recv_depth > 4096 {
            return Err(Error::InvalidArgument("recv_depth must be 1..=4096".into()));
        }
        if self.max_message == 0 || self.max_message > (1 << 20) {
            return Err(Error::InvalidArgument(
                "max_message must be 1..=1 MiB".into(),
            ));
        }
        if self.stream_chunk < 4096 {
            return Err(Error::InvalidArgument(
                "stream_chunk must be >= 4096".into(),
            ));
        }
        if self.max_requests == 0 || self.max_requests > crate::wire::MAX_REQUESTS_LIMIT {
            return Err(Error::InvalidArgument(
                "max_requests must be 1..=65536".into(),
            ));
        }
        if self.sq_depth < 4 || self.max_wr_bytes < 4096 {
            return Err(Error::InvalidArgument(
                "sq_depth >= 4, max_wr_bytes >= 4096".into(),
            ));
        }
        Ok(())
    }
}

/// A node's endpoint of the fabric: listens for peers, connects to peers, registers
/// regions. One per core (thread-per-core); not `Send`.
#[allow(async_fn_in_trait)]
pub trait Transport {
    /// Registration handle of this backend.
    type Mr: LocalMr;
    /// Connection of this backend.
    type Conn: Connection<Mr = Self::Mr>;

    /// The bootstrap (TCP) address peers connect to.
    fn local_addr(&self) -> SocketAddr;

    /// Registers an existing region; peers can reach it through the returned handle's
    /// descriptor (on every connection of this transport) until the handle is dropped.
    fn register(&self, region: &Region, access: Access) -> Result<Self::Mr>;

    /// Connects to a peer's [`Transport::local_addr`] and authenticates.
    async fn connect(&self, addr: SocketAddr) -> Result<Self::Conn>;

    /// Accepts one peer and authenticates it.
    async fn accept(&self) -> Result<Self::Conn>;
}

/// An authenticated connection to one peer. Operations may be issued concurrently from
/// several tasks of the owning core.
#[allow(async_fn_in_trait)]
pub trait Connection {
    /// Registration handle of this backend.
    type Mr: LocalMr;

    /// One-sided READ of `len` bytes at `remote[remote_offset..]` into
    /// `local[local_offset..]`.
    async fn read(
        &self,
        remote: &RemoteRegion,
        remote_offset: u64,
        len: u64,
        local: &Self::Mr,
        local_offset: u64,
    ) -> Result<()> {
        self.read_batch(&[Op {
            remote: *remote,
            remote_offset,
            len,
            local,
            local_offset,
        }])
        .await
    }

    /// One-sided WRITE of `len` bytes from `local[local_offset..]` to
    /// `remote[remote_offset..]`.
    async fn write(
        &self,
        remote: &RemoteRegion,
        remote_offset: u64,
        len: u64,
        local: &Self::Mr,
        local_offset: u64,
    ) -> Result<()> {
        self.write_batch(&[Op {
            remote: *remote,
            remote_offset,
            len,
            local,
            local_offset,
        }])
        .await
    }

    /// Many READs issued together (one doorbell on verbs, one socket write on TCP);
    /// completes when all have; fails with the first error.
    ///
    /// **Order.** The owner executes the ops of one call in submission order: op `i`'s
    /// bytes are read from the owner's region no later than op `i + 1`'s (e.g. read an index
    /// bucket, then a header word, and know the word was read after the bucket). TCP: the
    /// owner answers the READs of a connection strictly in arrival order from one send
    /// queue, the bytes copied by the kernel from the region when sent, the whole of op
    /// `i` (all its chunks) before op `i + 1`; a call larger than the peer's window
    /// (`max_requests`) is sent in portions, still in order. Verbs: the ops are RDMA READs
    /// posted in order on one RC QP, and a responder executes the READs of an RC QP in
    /// order. Nothing more is promised: the bytes *within* one op are not read atomically
    /// (the owner may change them meanwhile), ops of different calls (or tasks) are not
    /// ordered with each other, and a READ is not ordered with a later WRITE of the same
    /// caller until the READ has completed (as with verbs without a fence).
    async fn read_batch(&self, ops: &[Op<'_, Self::Mr>]) -> Result<()>;

    /// Many WRITEs issued together.
    async fn write_batch(&self, ops: &[Op<'_, Self::Mr>]) -> Result<()>;

    /// Sends one message of at most [`Connection::max_message_size`] bytes; waits for a
    /// send credit (a free receive buffer on the peer) first.
    async fn send(&self, msg: &[u8]) -> Result<()>;

    /// Receives the next message (returns its receive buffer, i.e. a credit, to the peer).
    async fn recv(&self) -> Result<Vec<u8>>;

    /// Largest message `send` accepts.
    fn max_message_size(&self) -> usize;

    /// `None` while usable; the reason once the connection failed or was closed.
    fn failure(&self) -> Option<String>;

    /// Closes the connection: operations in flight (here and on the peer) fail with
    /// [`Error::Disconnected`].
    fn close(&self);
}
