//! What one core's clients accessed during a tick, per cluster fragment, counted with
//! the kernels' recorder (plain counters, no atomics, a few ns per access), and the
//! compact summary a node ships once per tick.

use augur_kernels::stats::{AccessKind, CoreRecorder};
use serde::{Deserialize, Serialize};

/// Leading key bytes the prefix write series aggregate by.
const PREFIX_LEN: usize = 4;
/// Most client connections per core whose access order a tick's summary carries...
pub const MAX_SEQUENCES: usize = 256;
/// ... and most fragment changes per connection per tick (a walk crosses a few).
pub const MAX_SEQUENCE_LEN: usize = 32;

/// Accesses to one cluster fragment during one tick, by one node's clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentCounts {
    pub fragment: u64,
    pub reads: u32,
    pub writes: u32,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// How busy a node was during a tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Share of one CPU the process used, in percent (200 = two CPUs busy).
    pub cpu_percent: f32,
    /// Region bytes in use.
    pub used_memory: u64,
    /// Resident set size of the process.
    pub rss: u64,
    /// Open client connections.
    pub connections: u64,
    /// Commands processed during the tick.
    pub commands: u64,
    /// Key requests sent to other nodes during the tick (messages and one-sided reads).
    pub remote_ops: u64,
}

/// One core's report for one tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TickSummary {
    pub node: u64,
    pub core: u32,
    /// How long the tick lasted, in ms.
    pub tick_ms: u64,
    pub fragments: Vec<FragmentCounts>,
    /// Bytes this core holds of each table fragment it serves (the cost of moving it).
    #[serde(default)]
    pub sizes: Vec<(u64, u64)>,
    /// Sent by core 0 only, for the whole node.
    pub resources: Option<Resources>,
    /// For the sequence (Markov) model: per client connection of this core (an id unique
    /// on the node), the fragments it went to during the tick, in order, each listed
    /// when the connection moved to it from another.
    #[serde(default)]
    pub sequences: Vec<(u64, Vec<u64>)>,
}

/// A core's recorder, indexed by the route table's dense fragment index.
pub struct AccessRecorder {
    recorder: CoreRecorder,
    fragments: usize,
    /// This tick's fragment changes per connection (bounded as the constants say).
    sequences: std::collections::HashMap<u64, Vec<u32>>,
    /// Where each connection seen last tick or this one was last, and whether it was
    /// seen this tick: a connection that stays in one fragment adds nothing.
    last: std::collections::HashMap<u64, (u32, bool)>,
}

impl AccessRecorder {
    pub fn new(fragments: usize) -> AccessRecorder {
        AccessRecorder {
            recorder: CoreRecorder::new(fragments, 1, PREFIX_LEN),
            fragments,
            sequences: Default::default(),
            last: Default::default(),
        }
    }

    /// Connection `client` (0: not a client connection) went to `fragment`.
    pub fn record_order(&mut self, client: u64, fragment: u32) {
        if client == 0 {
            return;
        }
        let room = self.last.len() < MAX_SEQUENCES * 4;
        match self.last.get_mut(&client) {
            Some((at, seen)) => {
                *seen = true;
                if *at == fragment {
                    return;
                }
                *at = fragment;
            }
            None if room => {
                self.last.insert(client, (fragment, true));
            }
            None => {}
        }
        let room = self.sequences.len() < MAX_SEQUENCES;
        match self.sequences.get_mut(&client) {
            Some(order) if order.len() < MAX_SEQUENCE_LEN => order.push(fragment),
            Some(_) => {}
            None if room => {
                self.sequences.insert(client, vec![fragment]);
            }
            None => {}
        }
    }

    /// Take the tick's access orders, naming fragments by their cluster ids.
    pub fn drain_orders(&mut self, fragment_id: impl Fn(u32) -> u64) -> Vec<(u64, Vec<u64>)> {
        self.last.retain(|_, (_, seen)| std::mem::take(seen));
        std::mem::take(&mut self.sequences)
            .into_iter()
            .map(|(c, order)| (c, order.into_iter().map(&fragment_id).collect()))
            .collect()
    }

    /// Count one access by a client of this node.
    #[inline]
    pub fn record(&mut self, fragment: u32, write: bool, bytes: usize) {
        if fragment as usize >= self.fragments {
            self.fragments = fragment as usize + 1;
            self.recorder.ensure_fragments(self.fragments);
        }
        let kind = if write {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        self.recorder
            .record(fragment, 0, kind, bytes.min(u32::MAX as usize) as u32);
    }

    /// Take the tick's counts, naming fragments by their cluster ids.
    pub fn drain(&mut self, fragment_id: impl Fn(u32) -> u64) -> Vec<FragmentCounts> {
        let mut out = Vec::new();
        self.recorder.drain(|index, _node, c| {
            out.push(FragmentCounts {
                fragment: fragment_id(index),
                reads: c.reads,
                writes: c.writes,
                read_bytes: c.read_bytes,
                write_bytes: c.write_bytes,
            })
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_come_out_once_per_tick_by_cluster_id() {
        let mut r = AccessRecorder::new(4);
        r.record(1, false, 10);
        r.record(1, false, 20);
        r.record(1, true, 5);
        r.record(9, true, 1); // beyond the table: it grows
        let mut got = r.drain(|i| 100 + u64::from(i));
        got.sort_by_key(|c| c.fragment);
        assert_eq!(
            got,
            vec![
                FragmentCounts {
                    fragment: 101,
                    reads: 2,
                    writes: 1,
                    read_bytes: 30,
                    write_bytes: 5
                },
                FragmentCounts {
                    fragment: 109,
                    reads: 0,
                    writes: 1,
                    read_bytes: 0,
                    write_bytes: 1
                },
            ]
        );
        assert!(r.drain(u64::from).is_empty());
    }

    #[test]
    fn access_order_lists_each_move_of_a_connection_once() {
        let mut r = AccessRecorder::new(4);
        for f in [1, 1, 2, 2, 2, 1, 3] {
            r.record_order(7, f);
        }
        r.record_order(8, 2);
        r.record_order(0, 3); // not a client: no order
        let mut got = r.drain_orders(|i| 100 + u64::from(i));
        got.sort();
        assert_eq!(got, vec![(7, vec![101, 102, 101, 103]), (8, vec![102])]);
        // Next tick: staying where it was adds nothing; moving does.
        r.record_order(7, 3);
        r.record_order(8, 1);
        assert_eq!(r.drain_orders(u64::from), vec![(8, vec![1])]);
    }

    #[test]
    fn access_order_is_bounded() {
        let mut r = AccessRecorder::new(4);
        for client in 1..=(MAX_SEQUENCES as u64 + 50) {
            for step in 0..(MAX_SEQUENCE_LEN as u32 * 2) {
                r.record_order(client, step % 2);
            }
        }
        let got = r.drain_orders(u64::from);
        assert_eq!(got.len(), MAX_SEQUENCES);
        assert!(got.iter().all(|(_, o)| o.len() == MAX_SEQUENCE_LEN));
    }
}
