//! What one core's clients accessed during a tick, per cluster fragment, counted with
//! the kernels' recorder (plain counters, no atomics, a few ns per access), and the
//! compact summary a node ships once per tick.

use augur_kernels::stats::{AccessKind, CoreRecorder};
use serde::{Deserialize, Serialize};

/// Leading key bytes the prefix write series aggregate by.
const PREFIX_LEN: usize = 4;

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
}

/// A core's recorder, indexed by the route table's dense fragment index.
pub struct AccessRecorder {
    recorder: CoreRecorder,
    fragments: usize,
}

impl AccessRecorder {
    pub fn new(fragments: usize) -> AccessRecorder {
        AccessRecorder {
            recorder: CoreRecorder::new(fragments, 1, PREFIX_LEN),
            fragments,
        }
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
}
