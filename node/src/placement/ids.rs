//! Stable dense indices for the kernels: fragment ids (u64, come and go with splits and
//! merges) → `FragmentIndex`, node ids (u64) → `NodeId`. An index keeps its meaning while its
//! id lives, so forecaster history stays attached to the right fragment; a fragment's index is
//! recycled only after the caller made the predictor forget it.

use std::collections::HashMap;

use augur_kernels::stats::{FragmentIndex, NodeId};

#[derive(Debug, Default)]
pub struct FragmentIds {
    index_of: HashMap<u64, FragmentIndex>,
    id_of: Vec<Option<u64>>,
    free: Vec<FragmentIndex>,
}

impl FragmentIds {
    /// Sync with the fragments present now; returns the indices of fragments that vanished
    /// (to be forgotten by the predictor before they are handed out again).
    pub fn sync<'a>(&mut self, present: impl Iterator<Item = &'a u64>) -> Vec<FragmentIndex> {
        let present: Vec<u64> = present.copied().collect();
        let keep: std::collections::HashSet<u64> = present.iter().copied().collect();
        let mut gone = Vec::new();
        self.index_of.retain(|id, index| {
            if keep.contains(id) {
                true
            } else {
                gone.push(*index);
                false
            }
        });
        for &index in &gone {
            if let Some(slot) = self.id_of.get_mut(index as usize) {
                *slot = None;
            }
        }
        // Lowest indices first, so the dense range stays compact.
        self.free.extend(gone.iter().copied());
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        for id in present {
            if self.index_of.contains_key(&id) {
                continue;
            }
            let index = match self.free.pop() {
                Some(index) => index,
                None => {
                    let Ok(index) = FragmentIndex::try_from(self.id_of.len()) else {
                        continue;
                    };
                    self.id_of.push(None);
                    index
                }
            };
            self.id_of[index as usize] = Some(id);
            self.index_of.insert(id, index);
        }
        gone
    }

    pub fn index(&self, id: u64) -> Option<FragmentIndex> {
        self.index_of.get(&id).copied()
    }

    /// One past the highest index handed out (the predictor's fragment count).
    pub fn len(&self) -> usize {
        self.id_of.len()
    }
}

/// Node ids get indices in order of first sight and keep them (members rarely leave, and a
/// node that rejoins keeps its history). Bounded: beyond `max` nodes, new ones are ignored.
#[derive(Debug, Default)]
pub struct NodeIds {
    index_of: HashMap<u64, NodeId>,
    id_of: Vec<u64>,
}

impl NodeIds {
    pub fn intern(&mut self, id: u64, max: usize) -> Option<NodeId> {
        if let Some(index) = self.index_of.get(&id) {
            return Some(*index);
        }
        if self.id_of.len() >= max {
            return None;
        }
        let index = NodeId::try_from(self.id_of.len()).ok()?;
        self.id_of.push(id);
        self.index_of.insert(id, index);
        Some(index)
    }

    pub fn index(&self, id: u64) -> Option<NodeId> {
        self.index_of.get(&id).copied()
    }

    pub fn id(&self, index: NodeId) -> Option<u64> {
        self.id_of.get(usize::from(index)).copied()
    }

    pub fn len(&self) -> usize {
        self.id_of.len()
    }
}
