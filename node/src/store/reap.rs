//! Replaced regions are unmapped off the data core.
//!
//! Dropping a fragment unmaps its region; for a 16 MiB region whose pages were all
//! touched that is milliseconds of page-table teardown (measured 2.5–3.5 ms on the
//! development machine), and every client of the core would wait for it right after
//! each split or compaction. [`drop_later`] hands the value to one background thread
//! that drops it instead. Nothing is read from it any more: the core swapped its
//! replacement in (and retired it) first; the fabric's registrations hold their own
//! handle of the memfd, so remote readers are not affected.

use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};

type Garbage = Box<dyn Send>;

static REAPER: OnceLock<Mutex<Option<Sender<Garbage>>>> = OnceLock::new();

fn start() -> Mutex<Option<Sender<Garbage>>> {
    let (tx, rx) = mpsc::channel::<Garbage>();
    let spawned = std::thread::Builder::new()
        .name("augur-reaper".into())
        .spawn(move || {
            for garbage in rx {
                drop(garbage);
            }
        });
    match spawned {
        Ok(_) => Mutex::new(Some(tx)),
        Err(e) => {
            tracing::warn!("no reaper thread ({e}); replaced regions are dropped in place");
            Mutex::new(None)
        }
    }
}

/// Drop `value` (a replaced fragment, an abandoned rebuild) on the reaper thread; in
/// place if there is none.
pub fn drop_later<T: Send + 'static>(value: T) {
    let sender = REAPER
        .get_or_init(start)
        .lock()
        .ok()
        .and_then(|s| s.as_ref().cloned());
    match sender {
        Some(tx) => {
            // Only fails if the thread is gone; then the value comes back to drop here.
            let _ = tx.send(Box::new(value));
        }
        None => drop(value),
    }
}
