//! Everything of the fabric that needs `unsafe`.
//!
//! * [`memory`] (always built): memfd-backed shared regions.
//! * With the `verbs` feature: a small safe wrapper over libibverbs, one verbs concept per
//!   file — [`device`] (discovery, context, ports, GIDs), [`pd`] (protection domain),
//!   [`mr`] (memory registration of existing regions), [`cq`] (completion queue),
//!   [`qp`] (RC queue pair, state machine and posting), [`connect`] (the TCP bootstrap
//!   handshake that exchanges QP numbers, PSNs and GIDs after authentication) — and the
//!   verbs [`Transport`](crate::Transport) built on them ([`transport`]).
//!
//! # How verbs work, in the order you use them
//!
//! 1. **Device** — `Device::open(Some("rxe0"))` finds the device by name in
//!    `ibv_get_device_list`, opens a context and queries the port (state, MTU) and the
//!    RoCEv2 GID (the IPv4-mapped GID of the port, auto-detected or forced by index).
//! 2. **PD** — `ProtectionDomain::new(&device)`: every MR and QP belongs to one PD; a QP can
//!    only touch memory registered in its PD. The PD keeps the device context alive.
//! 3. **MR** — `MemoryRegion::register(&pd, region, access)` pins an *existing* mapping (the
//!    caller's memfd [`Region`](memory::Region)) and returns lkey/rkey. The MR holds a clone
//!    of the region, so the memory outlives the registration.
//! 4. **CQ** — `CompletionQueue::new(&device, depth)`: work completions land here; the owning
//!    core polls it (busy-poll up to a budget, then yields to the executor).
//! 5. **QP** — `QueuePair::new(&pd, &cq, caps)`: an RC QP, created in RESET. It holds its PD
//!    and CQ, so neither can be destroyed first.
//! 6. **Handshake** — over an authenticated TCP connection both sides exchange
//!    `{QPN, PSN, GID, MTU, ...}`; then each QP goes INIT → RTR (needs the peer's QPN, PSN,
//!    GID) → RTS (own PSN, timeouts), and a final byte says both are ready.
//! 7. **Post** — READ/WRITE/SEND work requests are chained into one list and posted with one
//!    `ibv_post_send` (one doorbell); only the last of a batch is signaled; small sends go
//!    inline. Receives are pre-posted.
//! 8. **Poll** — `ibv_poll_cq` returns completions; a signaled completion also retires the
//!    unsignaled requests posted before it (RC completes in order). An error completion puts
//!    the QP in the error state: every outstanding request is flushed with an error, the
//!    connection is reported broken and must be re-established.

pub mod memory;

#[cfg(feature = "verbs")]
pub mod connect;
#[cfg(feature = "verbs")]
pub mod cq;
#[cfg(feature = "verbs")]
pub mod device;
#[cfg(feature = "verbs")]
pub mod mr;
#[cfg(feature = "verbs")]
pub mod pd;
#[cfg(feature = "verbs")]
pub mod qp;
#[cfg(feature = "verbs")]
pub mod transport;
