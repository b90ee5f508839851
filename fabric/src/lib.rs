//! augur-fabric: moves bytes between nodes; knows nothing about keys.
//!
//! * [`Transport`] / [`Connection`]: connect/accept an authenticated peer, register an
//!   existing memfd [`Region`] and hand its [`RemoteRegion`] descriptor to peers, one-sided
//!   [`Connection::read`] / [`Connection::write`] (batched: [`Connection::read_batch`]),
//!   two-sided [`Connection::send`] / [`Connection::recv`] with credit-based flow control.
//! * Backends: [`tcp::TcpTransport`] (always built) and, with the `verbs` feature,
//!   [`verbs::transport::VerbsTransport`] (RDMA RC queue pairs over libibverbs).
//! * Every peer proves knowledge of the cluster secret ([`auth`]) before anything else is
//!   exchanged. Wire formats: `docs/protocol.md`.
//!
//! Both backends run on the caller's glommio executor (one per core): the TCP backend
//! spawns its reader/responder tasks with `glommio::spawn_local`; the verbs backend polls
//! its completion queues from the futures of the operations themselves (busy-poll up to a
//! budget, then yield), so it needs no reactor.
//!
//! The verbs module walks through the verbs objects in the order they are used:
//! device → PD → MR → CQ → QP → handshake → post → poll; see [`verbs`].
//!
//! # Memory locking
//!
//! RDMA registration pins pages, which counts against `RLIMIT_MEMLOCK`. A non-root user
//! needs `ulimit -l` at least the sum of all registered regions plus a few MiB (or
//! `unlimited`, e.g. `* - memlock unlimited` in `/etc/security/limits.conf`, or
//! `LimitMEMLOCK=infinity` in a systemd unit); root with `CAP_IPC_LOCK` is not limited.
//! glommio's io_uring rings are locked memory too.

#![warn(missing_docs)]

pub mod auth;
pub mod error;
pub mod tcp;
pub mod transport;
pub mod verbs;
pub mod wire;

pub use error::{Error, RemoteStatus, Result};
pub use transport::{Access, Connection, FabricConfig, LocalMr, Op, RemoteRegion, Transport};
pub use verbs::memory::Region;
