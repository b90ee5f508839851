//! One-sided reads of other nodes' fragments, both ends of them on this core.
//!
//! - **Owner side** ([`Exports`]): when a peer asks to read a key, the core registers
//!   the region of the fragment holding it with its fabric endpoint (a second mapping of
//!   the same memfd, read-only for peers) and answers with the descriptor. A region
//!   replaced by a compaction or split is retired by the shard and stays registered
//!   for [`GRACE`], so a reader with a stale descriptor reads the retired marker, not
//!   freed memory; then it is dropped.
//! - **Reader side** ([`Descriptors`]): descriptors are cached by key range for at
//!   most [`DESCRIPTOR_TTL`] (well inside the grace period); a `Retired` answer
//!   drops the entry and asks again.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Bound;
use std::time::{Duration, Instant};

use augur_fabric::{Access, AnyMr, AnyTransport, LocalMr, Region, Transport};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cmd::KeyOp;
use crate::resp::Frame;
use crate::router::remote_read::{RemoteFragment, RemoteValue};
use crate::store::Fragment;

/// Whether a one-sided read can answer `op` (it needs only the value and expiry).
pub fn one_sided(op: &KeyOp) -> bool {
    matches!(
        op,
        KeyOp::Get | KeyOp::Exists | KeyOp::StrLen | KeyOp::Ttl { .. }
    )
}

/// The reply to a one-sided-readable `op`, as `cmd::keyop::apply` would give it.
pub fn reply_for(op: &KeyOp, value: RemoteValue, now: u64) -> Frame {
    let found = match value {
        RemoteValue::Found {
            value,
            expire_at_ms,
        } => Some((value, expire_at_ms)),
        RemoteValue::Missing => None,
    };
    match (op, found) {
        (KeyOp::Get, Some((v, _))) => Frame::Bulk(v),
        (KeyOp::Get, None) => Frame::Null,
        (KeyOp::Exists, f) => Frame::Integer(f.is_some() as i64),
        (KeyOp::StrLen, f) => Frame::Integer(f.map_or(0, |(v, _)| v.len() as i64)),
        (KeyOp::Ttl { .. }, None) => Frame::Integer(-2),
        (KeyOp::Ttl { .. }, Some((_, None))) => Frame::Integer(-1),
        (KeyOp::Ttl { millis }, Some((_, Some(t)))) => {
            let left = t.saturating_sub(now) as i64;
            Frame::Integer(if *millis { left } else { (left + 500) / 1000 })
        }
        _ => Frame::error("ERR internal: not a one-sided read"),
    }
}

/// How long a replaced region stays readable by peers.
pub const GRACE: Duration = Duration::from_secs(5);
/// How long a reader trusts a descriptor before asking again.
pub const DESCRIPTOR_TTL: Duration = Duration::from_secs(1);

/// A descriptor as it crosses the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireFragment {
    pub fragment_id: u64,
    /// `RemoteRegion::encode` output (32 bytes).
    pub region: Vec<u8>,
    pub bucket_count: u64,
    pub generation: u64,
}

impl WireFragment {
    /// The inverse of [`WireFragment::decode`].
    pub fn encode(d: &RemoteFragment) -> WireFragment {
        WireFragment {
            fragment_id: d.fragment_id,
            region: d.region.encode().to_vec(),
            bucket_count: d.bucket_count,
            generation: d.generation,
        }
    }

    pub fn decode(&self) -> Option<RemoteFragment> {
        Some(RemoteFragment {
            fragment_id: self.fragment_id,
            region: augur_fabric::RemoteRegion::decode(&self.region).ok()?,
            bucket_count: self.bucket_count,
            generation: self.generation,
        })
    }
}

/// The answer to "describe the fragment holding this key".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Described {
    /// Read it from this core's endpoint: the fragment covers `[lo, hi)`.
    Here {
        lo: Bytes,
        hi: Option<Bytes>,
        fragment: WireFragment,
    },
    /// Another core of the owner holds it: ask that core's endpoint.
    OtherCore(u32),
    /// This node does not own the key.
    NotHere,
}

struct Export {
    generation: u64,
    /// The region's identity (`store::Region::identity`): a fragment keeps its id and
    /// generation when it migrates, so those alone could name an old copy.
    identity: u64,
    mr: AnyMr,
}

/// The regions this core has registered for peers to read.
#[derive(Default)]
pub struct Exports {
    live: RefCell<HashMap<u64, Export>>,
    retiring: RefCell<Vec<(Instant, AnyMr)>>,
}

impl Exports {
    /// The descriptor of `fragment`'s current region, registering it if needed.
    pub fn describe(
        &self,
        transport: &AnyTransport,
        fragment: &Fragment,
    ) -> Result<RemoteFragment, String> {
        let id = fragment.id();
        let generation = fragment.generation();
        let identity = fragment.region().identity();
        if let Some(e) = self.live.borrow().get(&id) {
            if e.generation == generation && e.identity == identity {
                return Ok(RemoteFragment::describe(fragment, e.mr.descriptor()));
            }
        }
        let file = fragment
            .export_fd()
            .map_err(|e| format!("exporting fragment {id}: {e}"))?;
        let region = Region::from_file(file, fragment.region_len())
            .map_err(|e| format!("mapping fragment {id}: {e}"))?;
        let mr = transport
            .register(&region, Access::READ)
            .map_err(|e| format!("registering fragment {id}: {e}"))?;
        let described = RemoteFragment::describe(fragment, mr.descriptor());
        let old = self.live.borrow_mut().insert(
            id,
            Export {
                generation,
                identity,
                mr,
            },
        );
        if let Some(old) = old {
            self.retiring.borrow_mut().push((Instant::now(), old.mr));
        }
        Ok(described)
    }

    /// Retire registrations of regions this core no longer serves (replaced, or the
    /// fragment moved away), and drop those retired for longer than the grace period.
    /// `still_current(id, generation, identity)` says whether this core still serves
    /// that region.
    pub fn tidy(&self, still_current: impl Fn(u64, u64, u64) -> bool) {
        let now = Instant::now();
        let stale: Vec<u64> = self
            .live
            .borrow()
            .iter()
            .filter(|(id, e)| !still_current(**id, e.generation, e.identity))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(e) = self.live.borrow_mut().remove(&id) {
                self.retiring.borrow_mut().push((now, e.mr));
            }
        }
        self.retiring
            .borrow_mut()
            .retain(|(since, _)| now.duration_since(*since) < GRACE);
    }

    pub fn registered(&self) -> usize {
        self.live.borrow().len() + self.retiring.borrow().len()
    }
}

pub struct Cached {
    pub hi: Option<Bytes>,
    pub addr: SocketAddr,
    pub fragment: RemoteFragment,
    fetched: Instant,
}

/// Descriptors of other nodes' fragments this core has read from, by range.
#[derive(Default)]
pub struct Descriptors {
    by_lo: RefCell<BTreeMap<Bytes, Cached>>,
}

/// Most ranges a core remembers; past it the cache starts over (bounded memory).
const MAX_CACHED: usize = 65_536;

impl Descriptors {
    /// A fresh descriptor covering `key`.
    pub fn get(&self, key: &[u8]) -> Option<(SocketAddr, RemoteFragment)> {
        let cache = self.by_lo.borrow();
        let (_, c) = cache
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let inside = c.hi.as_ref().is_none_or(|hi| key < &hi[..]);
        (inside && c.fetched.elapsed() < DESCRIPTOR_TTL).then_some((c.addr, c.fragment))
    }

    pub fn put(&self, lo: Bytes, hi: Option<Bytes>, addr: SocketAddr, fragment: RemoteFragment) {
        let mut cache = self.by_lo.borrow_mut();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        // A new range replaces every cached one it overlaps.
        let overlapping: Vec<Bytes> = cache
            .range::<Bytes, _>((
                Bound::Unbounded,
                hi.clone().map_or(Bound::Unbounded, Bound::Excluded),
            ))
            .filter(|(_, c)| c.hi.as_ref().is_none_or(|h| *h > lo))
            .map(|(l, _)| l.clone())
            .collect();
        for l in overlapping {
            cache.remove(&l);
        }
        cache.insert(
            lo,
            Cached {
                hi,
                addr,
                fragment,
                fetched: Instant::now(),
            },
        );
    }

    /// Forget the range holding `key` (its region was retired or unreadable).
    pub fn forget(&self, key: &[u8]) {
        let mut cache = self.by_lo.borrow_mut();
        let lo = cache
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(l, _)| l.clone());
        if let Some(lo) = lo {
            cache.remove(&lo);
        }
    }
}
