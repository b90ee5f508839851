//! SCAN cursors. A cursor names the last key a scan returned and when the scan
//! started; the node keeps them (bounded, least recently used dropped first), since a
//! key cannot fit in the integer cursor clients expect.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

const MAX_CURSORS: usize = 16_384;

#[derive(Debug, Clone)]
pub struct Cursor {
    pub after: Bytes,
    pub started: Instant,
    last_used: Instant,
}

pub struct Cursors {
    next: u64,
    open: HashMap<u64, Cursor>,
}

impl Default for Cursors {
    fn default() -> Self {
        // Start from a clock-derived number so cursors of a restarted node do not
        // silently continue an old scan.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Cursors {
            next: (seed % (1 << 40)) << 16 | 1,
            open: HashMap::new(),
        }
    }
}

impl Cursors {
    pub fn get(&mut self, id: u64) -> Option<Cursor> {
        self.open.remove(&id)
    }

    pub fn open(&mut self, after: Bytes, started: Instant) -> u64 {
        if self.open.len() >= MAX_CURSORS {
            if let Some((&oldest, _)) = self.open.iter().min_by_key(|(_, c)| c.last_used) {
                self.open.remove(&oldest);
            }
        }
        self.next = self.next.wrapping_add(1).max(1);
        let id = self.next;
        self.open.insert(
            id,
            Cursor {
                after,
                started,
                last_used: Instant::now(),
            },
        );
        id
    }
}
