//! augur-fabric: moves bytes between nodes; knows nothing about keys.
//!
//! * [`Transport`] / [`Connection`]: connect/accept an authenticated peer, register an
//!   existing memfd [`Region`] and hand its [`RemoteRegion`] descriptor to peers, one-sided
//!   [`Connection::read`] / [`Connection::write`] (batched: [`Connection::read_batch`]),
//!   two-sided [`Connection::send`] / [`Connection::recv`] with credit-based flow control.
//! * Backends: [`tcp::TcpTransport`] (always built) and, with the `verbs` feature,
//!   [`verbs::transport::VerbsTransport`] (RDMA RC queue pairs over libibverbs);
//!   [`any::AnyTransport`] picks one of them at run time ([`any::Backend`]).
//! * Every peer proves knowledge of the cluster secret ([`auth`]) before anything else is
//!   exchanged. Wire formats: `docs/protocol.md`.
//!
//! Both backends run on the caller's glommio executor (one per core): the TCP backend
//! spawns a reader and a writer task per connection with `glommio::spawn_local`; the verbs backend polls
//! its completion queues from the futures of the operations themselves (busy-poll up to a
//! budget, then yield), so it needs no reactor.
//!
//! # Example
//!
//! ```no_run
//! use augur_fabric::tcp::TcpTransport;
//! use augur_fabric::{Access, Connection, FabricConfig, LocalMr, Region, RemoteRegion, Transport};
//!
//! # async fn demo() -> augur_fabric::Result<()> {
//! let cfg = FabricConfig::new(b"the cluster secret, >= 16 bytes".to_vec());
//! let owner = TcpTransport::bind(cfg.clone(), "127.0.0.1:0".parse().unwrap())?;
//! let reader = TcpTransport::bind(cfg, "127.0.0.1:0".parse().unwrap())?;
//! let (r, o) = futures_lite::future::zip(reader.connect(owner.local_addr()), owner.accept()).await;
//! let (r, o) = (r?, o?);
//!
//! // the owner registers a memfd region and sends its descriptor
//! let src = Region::new("fragment", 1 << 20)?;
//! src.write_at(0, b"hello")?;
//! let src_mr = owner.register(&src, Access::READ)?;
//! o.send(&src_mr.descriptor().encode()).await?;
//!
//! // the reader pulls it with a one-sided read into its own region
//! let desc = RemoteRegion::decode(&r.recv().await?)?;
//! let dst = Region::new("copy", 1 << 20)?;
//! let dst_mr = reader.register(&dst, Access::LOCAL)?;
//! r.read(&desc, 0, desc.len, &dst_mr, 0).await?;
//! # Ok(()) }
//! ```
//! (Run inside a glommio `LocalExecutor`.) The verbs backend is used the same way with
//! `verbs::transport::VerbsTransport::bind`.
//!
//! # Verbs, step by step
//!
//! The [`verbs`] module documents the verbs objects in the order they are used — device →
//! PD → MR → CQ → QP → handshake → post → poll — one file per concept
//! (`fabric/src/verbs/{device,pd,mr,cq,qp,connect}.rs`), with the transport on top in
//! `verbs/transport.rs`. All `unsafe` of the crate is under `fabric/src/verbs`.
//!
//! # Memory locking
//!
//! RDMA registration pins pages, which counts against `RLIMIT_MEMLOCK`. A non-root user
//! needs `ulimit -l` at least the sum of all registered regions plus a few MiB (or
//! `unlimited`, e.g. `* - memlock unlimited` in `/etc/security/limits.conf`, or
//! `LimitMEMLOCK=infinity` in a systemd unit); root with `CAP_IPC_LOCK` is not limited.
//! glommio's io_uring rings are locked memory too.

#![warn(missing_docs)]

pub mod any;
pub mod auth;
pub mod error;
mod shared_socket;
pub mod tcp;
pub mod transport;
pub mod verbs;
pub mod wire;

pub use any::{AnyConnection, AnyMr, AnyTransport, Backend};
pub use error::{Error, RemoteStatus, Result};
pub use transport::{Access, Connection, FabricConfig, LocalMr, Op, RemoteRegion, Transport};
pub use verbs::memory::Region;
