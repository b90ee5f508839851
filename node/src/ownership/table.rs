//! The ownership table: fragments (key ranges → owner node, core, epoch, state) and node
//! membership. Pure data, no I/O: the raft state machine feeds it committed [`Change`]s in log
//! order, and because [`Table::apply`] is deterministic every replica ends up identical.
//!
//! A change that does not make sense (unknown fragment, split point outside the range, owner
//! that is not a member, ...) is refused with a [`TableError`] and leaves the table untouched;
//! it is committed to the log like any other entry, so every replica refuses it the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

/// A node id, the same number raft uses for the node.
pub type NodeId = u64;

/// Fragments a [`Change::Form`] creates per member.
pub const FRAGMENTS_PER_MEMBER: usize = 16;
/// Upper bound on the fragments [`Change::Form`] creates (one per first key byte at most).
pub const MAX_FORM_FRAGMENTS: usize = 256;
/// Bound on the cores a member may announce (a peer controls this number).
pub const MAX_CORES: u32 = 1024;
/// Bound on a split key's length (a proposer controls it; keys longer than this are not
/// useful dividers).
pub const MAX_SPLIT_KEY: usize = 4096;

/// A node of the cluster and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Raft node id.
    pub id: NodeId,
    /// Where clients connect (RESP).
    pub client_addr: SocketAddr,
    /// The control bus (raft and joins).
    pub bus_addr: SocketAddr,
    /// Fabric endpoint of each core, index = core; empty when the node has no fabric yet.
    pub fabric_addrs: Vec<SocketAddr>,
    /// Data cores of the node.
    pub cores: u32,
    /// Memory the node offers for fragments.
    pub capacity_bytes: u64,
}

/// Life cycle of a fragment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FragmentState {
    /// Served by its owner.
    Stable,
    /// Being copied to `to`; `phase` is the migration engine's step.
    Migrating {
        /// Destination node.
        to: NodeId,
        /// Migration phase (meaning owned by `migrate`).
        phase: u8,
    },
    /// No longer served (kept so the ranges still tile the key space).
    Retired,
}

/// One fragment: the key range `[lo, hi)` and who serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentEntry {
    /// Fragment id, never reused.
    pub id: u64,
    /// Inclusive lower bound.
    pub lo: Vec<u8>,
    /// Exclusive upper bound; `None` = +infinity.
    pub hi: Option<Vec<u8>>,
    /// Owning node.
    pub owner: NodeId,
    /// Owning core on that node.
    pub core: u32,
    /// Bumped by every change to this fragment.
    pub epoch: u64,
    /// Life cycle state.
    pub state: FragmentState,
}

impl FragmentEntry {
    /// Whether `key` falls in `[lo, hi)`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.lo.as_slice() && self.hi.as_deref().is_none_or(|hi| key < hi)
    }
}

/// The replicated table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Raft log index of the last applied entry (the table's version).
    pub applied: u64,
    /// Whether [`Change::Form`] has spread the key space over the members.
    pub formed: bool,
    /// Members the cluster waits for before forming (set by [`Change::Expect`]).
    pub expected_size: u32,
    /// Members by id.
    pub members: BTreeMap<NodeId, Member>,
    /// Raft voters (mirrored from raft's membership entries, see [`Table::set_voters`]).
    pub voters: BTreeSet<NodeId>,
    /// Fragments by lower bound; once formed they tile `[b"", +inf)`.
    #[serde(with = "fragments_as_list")]
    pub fragments: BTreeMap<Vec<u8>, FragmentEntry>,
    /// Id the next created fragment gets.
    pub next_fragment_id: u64,
}

/// Fragments travel as a list (each entry carries its `lo`): JSON maps need string keys.
mod fragments_as_list {
    use super::FragmentEntry;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<Vec<u8>, FragmentEntry>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Vec<u8>, FragmentEntry>, D::Error> {
        let list = Vec::<FragmentEntry>::deserialize(d)?;
        let mut map = BTreeMap::new();
        for f in list {
            if let Some(dup) = map.insert(f.lo.clone(), f) {
                return Err(serde::de::Error::custom(format!(
                    "two fragments start at {:?}",
                    dup.lo
                )));
            }
        }
        Ok(map)
    }
}

/// One change to the table: one raft log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Add a member, or update its addresses when the id is already a member.
    Join(Member),
    /// Remove a member that owns no fragment.
    Leave(NodeId),
    /// Set the number of members the cluster waits for before forming.
    Expect {
        /// Members to wait for.
        size: u32,
    },
    /// Spread the key space over the members (once).
    Form,
    /// Split a fragment at `at`; the upper part becomes a new fragment.
    Split {
        /// Fragment to split.
        fragment: u64,
        /// Divider: the new fragment's lower bound.
        at: Vec<u8>,
    },
    /// Merge two adjacent fragments of the same owner and core; `left` survives.
    Merge {
        /// Lower fragment (survives).
        left: u64,
        /// Upper fragment (disappears).
        right: u64,
    },
    /// Hand a fragment to a node and core; ends any migration (state becomes `Stable`).
    SetOwner {
        /// Fragment.
        fragment: u64,
        /// New owner.
        owner: NodeId,
        /// Core on the new owner.
        core: u32,
    },
    /// Change a fragment's life cycle state.
    SetState {
        /// Fragment.
        fragment: u64,
        /// New state.
        state: FragmentState,
    },
}

/// A fragment a change touched, at its new epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touched {
    /// Fragment id.
    pub id: u64,
    /// Its epoch after the change.
    pub epoch: u64,
}

/// What an applied change did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Raft log index of the change (the table's version once it is visible).
    pub index: u64,
    /// Fragments created or changed, at their new epochs (for a split: the lower part, then
    /// the new upper part).
    pub touched: Vec<Touched>,
}

/// Why a change was refused. The table is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum TableError {
    /// No fragment with that id.
    #[error("unknown fragment {0}")]
    UnknownFragment(u64),
    /// No member with that id.
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    /// A core number the node does not have.
    #[error("node {node} has {cores} cores, core {core} does not exist")]
    NoSuchCore {
        /// Node.
        node: NodeId,
        /// Requested core.
        core: u32,
        /// Cores the node has.
        cores: u32,
    },
    /// A member announcement that does not make sense.
    #[error("invalid member {id}: {reason}")]
    InvalidMember {
        /// Node.
        id: NodeId,
        /// Why.
        reason: String,
    },
    /// Form on a formed table.
    #[error("the table is already formed")]
    AlreadyFormed,
    /// Form without members.
    #[error("cannot form a table without members")]
    NoMembers,
    /// A split point not strictly inside the fragment.
    #[error("split point is not strictly inside fragment {0}")]
    SplitOutside(u64),
    /// A split key longer than [`MAX_SPLIT_KEY`].
    #[error("split key of {0} bytes is longer than {MAX_SPLIT_KEY}")]
    SplitKeyTooLong(usize),
    /// Merge of fragments that do not touch (`left.hi != right.lo`).
    #[error("fragments {left} and {right} are not adjacent")]
    NotAdjacent {
        /// Left fragment.
        left: u64,
        /// Right fragment.
        right: u64,
    },
    /// Merge of fragments with different owners or cores.
    #[error("fragments {left} and {right} have different owners or cores")]
    DifferentOwners {
        /// Left fragment.
        left: u64,
        /// Right fragment.
        right: u64,
    },
    /// The fragment's state forbids the change (e.g. splitting a migrating fragment).
    #[error("fragment {fragment} is {state:?}: {what} needs it Stable")]
    NotStable {
        /// Fragment.
        fragment: u64,
        /// Its state.
        state: FragmentState,
        /// The refused operation.
        what: String,
    },
    /// A member still owns or receives fragments.
    #[error("node {node} still owns or receives fragment {fragment}")]
    StillOwns {
        /// Node.
        node: NodeId,
        /// One of its fragments.
        fragment: u64,
    },
    /// Migration to the node that already owns the fragment.
    #[error("fragment {0} cannot migrate to its own owner")]
    MigrateToSelf(u64),
    /// Expect with size 0.
    #[error("expected cluster size must be at least 1")]
    ZeroExpected,
}

/// Jump consistent hash (Lamping & Veach, 2014): maps `key` to a bucket in `0..buckets` so that
/// growing `buckets` by one moves only `1/buckets` of the keys. `buckets <= 0` gives 0.
pub fn jump_consistent_hash(mut key: u64, buckets: i32) -> i32 {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    // b < buckets <= i32::MAX, and b = -1 only when buckets <= 0.
    i32::try_from(b.max(0)).unwrap_or(0)
}

impl Table {
    /// An empty, unformed table.
    pub fn new() -> Table {
        Table::default()
    }

    /// The fragment whose range holds `key`; `None` before forming. O(log n).
    pub fn fragment_for(&self, key: &[u8]) -> Option<&FragmentEntry> {
        let (_, f) = self
            .fragments
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        f.contains(key).then_some(f)
    }

    /// The fragment with id `id` (O(n): ids are not indexed; routers use [`Self::fragment_for`]).
    pub fn fragment(&self, id: u64) -> Option<&FragmentEntry> {
        self.fragments.values().find(|f| f.id == id)
    }

    /// Records raft's voter set (from a membership log entry) at log index `index`.
    pub fn set_voters(&mut self, index: u64, voters: BTreeSet<NodeId>) {
        self.applied = index;
        self.voters = voters;
    }

    /// Marks log index `index` applied (an entry that carries no change, e.g. a blank one).
    pub fn set_applied(&mut self, index: u64) {
        self.applied = index;
    }

    /// Applies `change` as raft log entry `index`: the version moves to `index` whether or not
    /// the change is accepted (a refused change is still a committed entry).
    pub fn apply_at(&mut self, index: u64, change: &Change) -> Result<Applied, TableError> {
        self.applied = index;
        self.apply(change)
    }

    /// Applies `change` (deterministically). On error the table is unchanged.
    pub fn apply(&mut self, change: &Change) -> Result<Applied, TableError> {
        let touched = match change {
            Change::Join(m) => self.join(m)?,
            Change::Leave(id) => self.leave(*id)?,
            Change::Expect { size } => {
                if *size == 0 {
                    return Err(TableError::ZeroExpected);
                }
                self.expected_size = *size;
                Vec::new()
            }
            Change::Form => self.form()?,
            Change::Split { fragment, at } => self.split(*fragment, at)?,
            Change::Merge { left, right } => self.merge(*left, *right)?,
            Change::SetOwner {
                fragment,
                owner,
                core,
            } => self.set_owner(*fragment, *owner, *core)?,
            Change::SetState { fragment, state } => self.set_state(*fragment, state)?,
        };
        Ok(Applied {
            index: self.applied,
            touched,
        })
    }

    fn key_of(&self, id: u64) -> Result<Vec<u8>, TableError> {
        self.fragment(id)
            .map(|f| f.lo.clone())
            .ok_or(TableError::UnknownFragment(id))
    }

    fn check_core(&self, node: NodeId, core: u32) -> Result<(), TableError> {
        let m = self
            .members
            .get(&node)
            .ok_or(TableError::NotAMember(node))?;
        if core >= m.cores {
            return Err(TableError::NoSuchCore {
                node,
                core,
                cores: m.cores,
            });
        }
        Ok(())
    }

    fn join(&mut self, m: &Member) -> Result<Vec<Touched>, TableError> {
        let invalid = |reason: String| TableError::InvalidMember { id: m.id, reason };
        if m.cores == 0 || m.cores > MAX_CORES {
            return Err(invalid(format!("cores {} not in 1..={MAX_CORES}", m.cores)));
        }
        if !m.fabric_addrs.is_empty() && m.fabric_addrs.len() != m.cores as usize {
            return Err(invalid(format!(
                "{} fabric addresses for {} cores",
                m.fabric_addrs.len(),
                m.cores
            )));
        }
        // A re-join must not strand fragments on cores the node no longer has.
        if let Some(f) = self
            .fragments
            .values()
            .find(|f| f.owner == m.id && f.core >= m.cores)
        {
            return Err(invalid(format!(
                "owns fragment {} on core {}, re-joins with {} cores",
                f.id, f.core, m.cores
            )));
        }
        self.members.insert(m.id, m.clone());
        Ok(Vec::new())
    }

    fn leave(&mut self, id: NodeId) -> Result<Vec<Touched>, TableError> {
        if !self.members.contains_key(&id) {
            return Err(TableError::NotAMember(id));
        }
        if let Some(f) = self.fragments.values().find(|f| {
            f.owner == id || matches!(f.state, FragmentState::Migrating { to, .. } if to == id)
        }) {
            return Err(TableError::StillOwns {
                node: id,
                fragment: f.id,
            });
        }
        self.members.remove(&id);
        Ok(Vec::new())
    }

    fn form(&mut self) -> Result<Vec<Touched>, TableError> {
        if self.formed {
            return Err(TableError::AlreadyFormed);
        }
        if self.members.is_empty() {
            return Err(TableError::NoMembers);
        }
        let nodes: Vec<&Member> = self.members.values().collect();
        let count = (FRAGMENTS_PER_MEMBER * nodes.len()).min(MAX_FORM_FRAGMENTS);
        let buckets = i32::try_from(nodes.len()).unwrap_or(i32::MAX);
        let lo_of = |i: usize| -> Vec<u8> {
            if i == 0 {
                Vec::new()
            } else {
                // i < count <= 256, so i * 256 / count < 256.
                vec![(i * 256 / count) as u8]
            }
        };
        let mut per_node: BTreeMap<NodeId, u32> = BTreeMap::new();
        let mut created = Vec::with_capacity(count);
        for i in 0..count {
            let id = self.next_fragment_id + i as u64;
            let bucket = jump_consistent_hash(id, buckets) as usize;
            let node = nodes[bucket.min(nodes.len() - 1)];
            let nth = per_node.entry(node.id).or_insert(0);
            let core = *nth % node.cores;
            *nth += 1;
            created.push(FragmentEntry {
                id,
                lo: lo_of(i),
                hi: (i + 1 < count).then(|| lo_of(i + 1)),
                owner: node.id,
                core,
                epoch: 1,
                state: FragmentState::Stable,
            });
        }
        self.next_fragment_id += count as u64;
        self.formed = true;
        let touched = created
            .iter()
            .map(|f| Touched {
                id: f.id,
                epoch: f.epoch,
            })
            .collect();
        for f in created {
            self.fragments.insert(f.lo.clone(), f);
        }
        Ok(touched)
    }

    fn split(&mut self, id: u64, at: &[u8]) -> Result<Vec<Touched>, TableError> {
        if at.len() > MAX_SPLIT_KEY {
            return Err(TableError::SplitKeyTooLong(at.len()));
        }
        let lo = self.key_of(id)?;
        let f = &self.fragments[&lo];
        if f.state != FragmentState::Stable {
            return Err(TableError::NotStable {
                fragment: id,
                state: f.state.clone(),
                what: "split".into(),
            });
        }
        if !(at > f.lo.as_slice() && f.hi.as_deref().is_none_or(|hi| at < hi)) {
            return Err(TableError::SplitOutside(id));
        }
        let new_id = self.next_fragment_id;
        let Some(left) = self.fragments.get_mut(&lo) else {
            return Err(TableError::UnknownFragment(id));
        };
        left.epoch += 1;
        let right = FragmentEntry {
            id: new_id,
            lo: at.to_vec(),
            hi: left.hi.replace(at.to_vec()),
            owner: left.owner,
            core: left.core,
            epoch: left.epoch,
            state: FragmentState::Stable,
        };
        let touched = vec![
            Touched {
                id,
                epoch: left.epoch,
            },
            Touched {
                id: new_id,
                epoch: right.epoch,
            },
        ];
        self.fragments.insert(right.lo.clone(), right);
        self.next_fragment_id += 1;
        Ok(touched)
    }

    fn merge(&mut self, left: u64, right: u64) -> Result<Vec<Touched>, TableError> {
        let llo = self.key_of(left)?;
        let rlo = self.key_of(right)?;
        let (l, r) = (&self.fragments[&llo], &self.fragments[&rlo]);
        if l.hi.as_ref() != Some(&r.lo) {
            return Err(TableError::NotAdjacent { left, right });
        }
        if l.owner != r.owner || l.core != r.core {
            return Err(TableError::DifferentOwners { left, right });
        }
        for f in [l, r] {
            if f.state != FragmentState::Stable {
                return Err(TableError::NotStable {
                    fragment: f.id,
                    state: f.state.clone(),
                    what: "merge".into(),
                });
            }
        }
        // Past both epochs: a request routed with either old epoch is stale.
        let epoch = l.epoch.max(r.epoch) + 1;
        let Some(r) = self.fragments.remove(&rlo) else {
            return Err(TableError::UnknownFragment(right));
        };
        let Some(l) = self.fragments.get_mut(&llo) else {
            return Err(TableError::UnknownFragment(left));
        };
        l.hi = r.hi;
        l.epoch = epoch;
        Ok(vec![Touched { id: left, epoch }])
    }

    fn set_owner(&mut self, id: u64, owner: NodeId, core: u32) -> Result<Vec<Touched>, TableError> {
        let lo = self.key_of(id)?;
        self.check_core(owner, core)?;
        let Some(f) = self.fragments.get_mut(&lo) else {
            return Err(TableError::UnknownFragment(id));
        };
        f.owner = owner;
        f.core = core;
        f.state = FragmentState::Stable;
        f.epoch += 1;
        Ok(vec![Touched { id, epoch: f.epoch }])
    }

    fn set_state(&mut self, id: u64, state: &FragmentState) -> Result<Vec<Touched>, TableError> {
        let lo = self.key_of(id)?;
        if let FragmentState::Migrating { to, .. } = state {
            if !self.members.contains_key(to) {
                return Err(TableError::NotAMember(*to));
            }
            if self.fragments[&lo].owner == *to {
                return Err(TableError::MigrateToSelf(id));
            }
        }
        let Some(f) = self.fragments.get_mut(&lo) else {
            return Err(TableError::UnknownFragment(id));
        };
        f.state = state.clone();
        f.epoch += 1;
        Ok(vec![Touched { id, epoch: f.epoch }])
    }

    /// Checks that the fragments tile `[b"", +inf)` exactly (each `hi` is the next `lo`, the
    /// first `lo` is empty, the last `hi` is `None`) and that every owner is a member with
    /// that core. Empty is fine before forming. Used by tests and debug assertions.
    pub fn check_tiling(&self) -> Result<(), String> {
        if !self.formed {
            return if self.fragments.is_empty() {
                Ok(())
            } else {
                Err("fragments before forming".into())
            };
        }
        let mut expect_lo: Option<Vec<u8>> = Some(Vec::new());
        for (lo, f) in &self.fragments {
            if lo != &f.lo {
                return Err(format!(
                    "fragment {} keyed by {lo:?} has lo {:?}",
                    f.id, f.lo
                ));
            }
            match &expect_lo {
                None => return Err(format!("fragment {} after the +inf fragment", f.id)),
                Some(e) if e != lo => {
                    return Err(format!("gap or overlap: expected lo {e:?}, got {lo:?}"))
                }
                Some(_) => {}
            }
            if let Some(hi) = &f.hi {
                if hi <= lo {
                    return Err(format!("fragment {} is empty or inverted", f.id));
                }
            }
            if self.check_core(f.owner, f.core).is_err() {
                return Err(format!("fragment {} has a bad owner/core", f.id));
            }
            expect_lo = f.hi.clone();
        }
        if expect_lo.is_some() {
            return Err("the last fragment does not reach +inf".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(id: NodeId, cores: u32) -> Member {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        Member {
            id,
            client_addr: a(6000 + id as u16),
            bus_addr: a(7000 + id as u16),
            fabric_addrs: (0..cores).map(|c| a(8000 + c as u16)).collect(),
            cores,
            capacity_bytes: 1 << 30,
        }
    }

    fn formed(n: u64, cores: u32) -> Table {
        let mut t = Table::new();
        for id in 1..=n {
            t.apply(&Change::Join(member(id, cores))).unwrap();
        }
        t.apply(&Change::Form).unwrap();
        t
    }

    #[test]
    fn jump_hash_known_answers() {
        // The reference vectors used by the Go and C++ ports of the paper's algorithm.
        assert_eq!(jump_consistent_hash(1, 1), 0);
        assert_eq!(jump_consistent_hash(42, 57), 43);
        assert_eq!(jump_consistent_hash(0xDEAD_10CC, 1), 0);
        assert_eq!(jump_consistent_hash(0xDEAD_10CC, 666), 361);
        assert_eq!(jump_consistent_hash(256, 1024), 520);
        assert_eq!(jump_consistent_hash(0, -10), 0);
        assert_eq!(jump_consistent_hash(0xDEAD_10CC, -666), 0);
    }

    #[test]
    fn jump_hash_moves_few_keys_when_growing() {
        let moved = (0..10_000u64)
            .filter(|&k| jump_consistent_hash(k, 10) != jump_consistent_hash(k, 11))
            .count();
        // Expected 1/11 of the keys (~909); every moved key goes to the new bucket.
        assert!((700..1100).contains(&moved), "moved {moved}");
        for k in 0..10_000u64 {
            let (a, b) = (jump_consistent_hash(k, 10), jump_consistent_hash(k, 11));
            assert!(a == b || b == 10);
        }
    }

    #[test]
    fn form_single_node() {
        let t = formed(1, 2);
        assert!(t.formed);
        assert_eq!(t.fragments.len(), 16);
        t.check_tiling().unwrap();
        let firsts: Vec<&FragmentEntry> = t.fragments.values().collect();
        assert_eq!(firsts[0].lo, b"");
        assert_eq!(firsts[1].lo, vec![16]);
        assert_eq!(firsts[15].lo, vec![240]);
        assert_eq!(firsts[15].hi, None);
        for (i, f) in firsts.iter().enumerate() {
            assert_eq!(f.id, i as u64);
            assert_eq!(f.owner, 1);
            assert_eq!(f.core, i as u32 % 2);
            assert_eq!(f.epoch, 1);
        }
        assert_eq!(t.next_fragment_id, 16);
    }

    #[test]
    fn form_spreads_by_jump_hash() {
        let t = formed(3, 4);
        assert_eq!(t.fragments.len(), 48);
        t.check_tiling().unwrap();
        let mut nth: BTreeMap<NodeId, u32> = BTreeMap::new();
        for (i, f) in t.fragments.values().enumerate() {
            assert_eq!(
                f.lo,
                if i == 0 {
                    vec![]
                } else {
                    vec![(i * 256 / 48) as u8]
                }
            );
            let want = [1u64, 2, 3][jump_consistent_hash(f.id, 3) as usize];
            assert_eq!(f.owner, want, "fragment {}", f.id);
            let n = nth.entry(want).or_insert(0);
            assert_eq!(f.core, *n % 4);
            *n += 1;
        }
        // Every node gets a fair share (jump hash is uniform; 48 over 3 ≈ 16 each).
        for n in nth.values() {
            assert!((8..=24).contains(n), "{nth:?}");
        }
    }

    #[test]
    fn form_caps_at_256() {
        let t = formed(20, 1);
        assert_eq!(t.fragments.len(), 256);
        t.check_tiling().unwrap();
        for (i, f) in t.fragments.values().enumerate().skip(1) {
            assert_eq!(f.lo, vec![i as u8]);
        }
    }

    #[test]
    fn form_refused_twice_and_without_members() {
        let mut t = Table::new();
        assert_eq!(t.apply(&Change::Form), Err(TableError::NoMembers));
        let mut t2 = formed(2, 1);
        let before = t2.clone();
        assert_eq!(t2.apply(&Change::Form), Err(TableError::AlreadyFormed));
        assert_eq!(t2, before);
        t.apply(&Change::Join(member(1, 1))).unwrap();
        t.apply(&Change::Form).unwrap();
    }

    #[test]
    fn fragment_for_finds_the_range() {
        let t = formed(1, 1);
        assert_eq!(t.fragment_for(b"").unwrap().id, 0);
        assert_eq!(t.fragment_for(&[15, 255]).unwrap().id, 0);
        assert_eq!(t.fragment_for(&[16]).unwrap().id, 1);
        assert_eq!(t.fragment_for(&[255, 255, 255]).unwrap().id, 15);
        assert!(Table::new().fragment_for(b"x").is_none());
    }

    #[test]
    fn split_and_merge_bump_epochs() {
        let mut t = formed(1, 1);
        let a = t
            .apply(&Change::Split {
                fragment: 3,
                at: vec![50, 1],
            })
            .unwrap();
        assert_eq!(
            a.touched,
            vec![Touched { id: 3, epoch: 2 }, Touched { id: 16, epoch: 2 }]
        );
        t.check_tiling().unwrap();
        assert_eq!(t.fragment_for(&[50, 0]).unwrap().id, 3);
        assert_eq!(t.fragment_for(&[50, 1]).unwrap().id, 16);
        assert_eq!(t.fragment_for(&[63]).unwrap().id, 16);
        assert_eq!(t.next_fragment_id, 17);
        let m = t.apply(&Change::Merge { left: 3, right: 16 }).unwrap();
        assert_eq!(m.touched, vec![Touched { id: 3, epoch: 3 }]);
        assert_eq!(t.fragment(3).unwrap().hi, Some(vec![64]));
        assert!(t.fragment(16).is_none());
        t.check_tiling().unwrap();
    }

    #[test]
    fn owner_and_state_changes_bump_epochs() {
        let mut t = formed(2, 2);
        let f = t.fragment(0).unwrap().clone();
        let other = if f.owner == 1 { 2 } else { 1 };
        t.apply(&Change::SetState {
            fragment: 0,
            state: FragmentState::Migrating {
                to: other,
                phase: 1,
            },
        })
        .unwrap();
        assert_eq!(t.fragment(0).unwrap().epoch, 2);
        t.apply(&Change::SetOwner {
            fragment: 0,
            owner: other,
            core: 1,
        })
        .unwrap();
        let g = t.fragment(0).unwrap();
        assert_eq!(
            (g.owner, g.core, g.epoch, &g.state),
            (other, 1, 3, &FragmentState::Stable)
        );
    }

    #[test]
    fn invalid_changes_are_refused_intact() {
        let mut t = formed(2, 2);
        let owner0 = t.fragment(0).unwrap().owner;
        let other = if owner0 == 1 { 2 } else { 1 };
        let right_of_0 = t.fragment(1).unwrap().clone();
        let cases: Vec<(Change, TableError)> = vec![
            (
                Change::Split {
                    fragment: 99,
                    at: vec![1],
                },
                TableError::UnknownFragment(99),
            ),
            (
                Change::Split {
                    fragment: 0,
                    at: vec![],
                },
                TableError::SplitOutside(0),
            ),
            (
                Change::Split {
                    fragment: 1,
                    at: right_of_0.hi.clone().unwrap(),
                },
                TableError::SplitOutside(1),
            ),
            (
                Change::Split {
                    fragment: 1,
                    at: vec![0],
                },
                TableError::SplitOutside(1),
            ),
            (
                Change::Split {
                    fragment: 1,
                    at: vec![9; MAX_SPLIT_KEY + 1],
                },
                TableError::SplitKeyTooLong(MAX_SPLIT_KEY + 1),
            ),
            (
                Change::Merge { left: 0, right: 2 },
                TableError::NotAdjacent { left: 0, right: 2 },
            ),
            (
                Change::Merge { left: 1, right: 0 },
                TableError::NotAdjacent { left: 1, right: 0 },
            ),
            (
                Change::SetOwner {
                    fragment: 0,
                    owner: 9,
                    core: 0,
                },
                TableError::NotAMember(9),
            ),
            (
                Change::SetOwner {
                    fragment: 0,
                    owner: other,
                    core: 2,
                },
                TableError::NoSuchCore {
                    node: other,
                    core: 2,
                    cores: 2,
                },
            ),
            (
                Change::SetState {
                    fragment: 0,
                    state: FragmentState::Migrating { to: 9, phase: 0 },
                },
                TableError::NotAMember(9),
            ),
            (
                Change::SetState {
                    fragment: 0,
                    state: FragmentState::Migrating {
                        to: owner0,
                        phase: 0,
                    },
                },
                TableError::MigrateToSelf(0),
            ),
            (Change::Leave(9), TableError::NotAMember(9)),
            (
                Change::Leave(owner0),
                TableError::StillOwns {
                    node: owner0,
                    fragment: 0,
                },
            ),
            (Change::Form, TableError::AlreadyFormed),
            (Change::Expect { size: 0 }, TableError::ZeroExpected),
        ];
        for (change, want) in cases {
            let before = t.clone();
            assert_eq!(t.apply(&change), Err(want), "{change:?}");
            assert_eq!(t, before, "{change:?} modified the table");
        }
        // A member announcing nonsense, or shrinking below a core it owns on.
        let mut bad = member(1, 2);
        bad.cores = 0;
        assert!(matches!(
            t.apply(&Change::Join(bad)),
            Err(TableError::InvalidMember { .. })
        ));
        let mut bad = member(1, 3);
        bad.fabric_addrs.pop();
        assert!(t.apply(&Change::Join(bad)).is_err());
        if t.fragments.values().any(|f| f.owner == 1 && f.core == 1) {
            assert!(t.apply(&Change::Join(member(1, 1))).is_err());
        }
        assert_eq!(t, formed(2, 2));
    }

    #[test]
    fn merge_refuses_different_owner_or_unstable() {
        let mut t = formed(2, 1);
        let frags: Vec<FragmentEntry> = t.fragments.values().cloned().collect();
        let pair = frags.windows(2).find(|w| w[0].owner != w[1].owner).unwrap();
        let before = t.clone();
        assert!(matches!(
            t.apply(&Change::Merge {
                left: pair[0].id,
                right: pair[1].id
            }),
            Err(TableError::DifferentOwners { .. })
        ));
        assert_eq!(t, before);
        let same = frags.windows(2).find(|w| w[0].owner == w[1].owner).unwrap();
        t.apply(&Change::SetState {
            fragment: same[1].id,
            state: FragmentState::Retired,
        })
        .unwrap();
        assert!(matches!(
            t.apply(&Change::Merge {
                left: same[0].id,
                right: same[1].id
            }),
            Err(TableError::NotStable { .. })
        ));
    }

    #[test]
    fn join_updates_and_leave_needs_no_fragments() {
        let mut t = Table::new();
        t.apply(&Change::Join(member(1, 1))).unwrap();
        let mut moved = member(1, 1);
        moved.client_addr = "127.0.0.1:9999".parse().unwrap();
        t.apply(&Change::Join(moved.clone())).unwrap();
        assert_eq!(t.members[&1], moved);
        t.apply(&Change::Join(member(2, 1))).unwrap();
        t.apply(&Change::Leave(2)).unwrap();
        assert_eq!(t.members.len(), 1);
        t.apply(&Change::Form).unwrap();
        t.apply(&Change::Join(member(3, 1))).unwrap();
        // A member that owns nothing may leave a formed cluster.
        t.apply(&Change::Leave(3)).unwrap();
    }

    #[test]
    fn apply_at_sets_the_version_even_when_refused() {
        let mut t = Table::new();
        let a = t.apply_at(5, &Change::Join(member(1, 1))).unwrap();
        assert_eq!(a.index, 5);
        assert!(t.apply_at(6, &Change::Leave(42)).is_err());
        assert_eq!(t.applied, 6);
    }

    #[test]
    fn serde_round_trip() {
        let t = formed(3, 2);
        let s = serde_json::to_vec(&t).unwrap();
        let back: Table = serde_json::from_slice(&s).unwrap();
        assert_eq!(back, t);
    }

    fn arb_change() -> impl Strategy<Value = Change> {
        let key = proptest::collection::vec(any::<u8>(), 0..4);
        prop_oneof![
            (1u64..6, 1u32..4).prop_map(|(id, cores)| Change::Join(member(id, cores))),
            (1u64..6).prop_map(Change::Leave),
            Just(Change::Form),
            (0u64..80, key).prop_map(|(fragment, at)| Change::Split { fragment, at }),
            (0u64..80, 0u64..80).prop_map(|(left, right)| Change::Merge { left, right }),
            (0u64..80, 1u64..6, 0u32..4).prop_map(|(fragment, owner, core)| Change::SetOwner {
                fragment,
                owner,
                core
            }),
            (0u64..80, 0u64..6, 0u8..3).prop_map(|(fragment, to, phase)| Change::SetState {
                fragment,
                state: match phase {
                    0 => FragmentState::Stable,
                    1 => FragmentState::Migrating { to, phase },
                    _ => FragmentState::Retired,
                }
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn changes_keep_the_key_space_tiled(changes in proptest::collection::vec(arb_change(), 1..120)) {
            let mut t = Table::new();
            for c in &changes {
                let before = t.clone();
                match t.apply(c) {
                    Ok(a) => {
                        // Every touched fragment's epoch went up.
                        for touched in &a.touched {
                            let old = before.fragment(touched.id).map_or(0, |f| f.epoch);
                            prop_assert!(touched.epoch > old);
                            prop_assert_eq!(t.fragment(touched.id).map(|f| f.epoch), Some(touched.epoch));
                        }
                    }
                    Err(_) => prop_assert_eq!(&t, &before),
                }
                prop_assert_eq!(t.check_tiling(), Ok(()));
                // Every key finds exactly the fragment that contains it.
                if t.formed {
                    for k in [&b""[..], &[0][..], &[7, 7][..], &[128][..], &[255, 255][..]] {
                        let f = t.fragment_for(k);
                        prop_assert!(f.is_some_and(|f| f.contains(k)));
                        prop_assert_eq!(t.fragments.values().filter(|f| f.contains(k)).count(), 1);
                    }
                }
            }
        }

        #[test]
        fn replicas_agree(changes in proptest::collection::vec(arb_change(), 1..60)) {
            // Determinism: two tables fed the same log are identical.
            let (mut a, mut b) = (Table::new(), Table::new());
            for (i, c) in changes.iter().enumerate() {
                let ra = a.apply_at(i as u64 + 1, c);
                let rb = b.apply_at(i as u64 + 1, c);
                prop_assert_eq!(ra, rb);
            }
            prop_assert_eq!(a, b);
        }
    }
}
