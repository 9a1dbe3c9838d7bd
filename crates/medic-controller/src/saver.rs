//! The state's writer: a thread of its own that writes the latest state handed to it.
//!
//! A decision changes the saved state on the checks' thread, where a write (the whole state
//! serialized, fsynced and renamed: milliseconds with thousands of shards) would delay every
//! check due meanwhile — and when fifty servers die at once, fifty writes in a row. So the
//! state is handed over ([`Saver::put`]) and written by this thread, the latest superseding
//! any not yet written: a burst costs the checks fifty clones and the disk one or two writes.
//! Whoever must know the state is on disk before going on waits for it ([`Saver::flush`]): an
//! operator's maintenance mark before the reply, a recovery's last steps before its end is
//! journaled, `run` before it returns. Every write goes through the same thread, so an older
//! state is never written after a newer one.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::store::{Saved, Store};

/// Hands states to the writer thread.
#[derive(Clone)]
pub struct Saver {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Saver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saver")
            .field("path", &self.shared.store.path())
            .finish_non_exhaustive()
    }
}

struct Shared {
    store: Store,
    slot: Mutex<Slot>,
    changed: Condvar,
}

#[derive(Default)]
struct Slot {
    latest: Option<Saved>,
    /// States handed over so far, and how many of them are on disk (the latest written covers
    /// every earlier one).
    queued: u64,
    written: u64,
    /// The last write's failure, if it failed.
    error: Option<String>,
}

impl Saver {
    /// Starts the writer thread for `store`. It ends with the process.
    pub fn spawn(store: Store) -> std::io::Result<Saver> {
        let shared = Arc::new(Shared {
            store,
            slot: Mutex::new(Slot::default()),
            changed: Condvar::new(),
        });
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("medic-state".to_owned())
            .spawn(move || writer.run())?;
        Ok(Saver { shared })
    }

    /// Hands `saved` over to be written soon. Returns its ticket for [`Saver::wait`].
    pub fn put(&self, saved: Saved) -> u64 {
        let mut slot = self.shared.lock();
        slot.latest = Some(saved);
        slot.queued += 1;
        self.shared.changed.notify_all();
        slot.queued
    }

    /// Waits until the state of `ticket` (or a later one) is on disk: that write's failure, if
    /// it failed.
    pub fn wait(&self, ticket: u64) -> Result<(), String> {
        let mut slot = self.shared.lock();
        while slot.written < ticket {
            slot = self
                .shared
                .changed
                .wait(slot)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        slot.error.clone().map_or(Ok(()), Err)
    }

    /// Writes `saved` and waits until it is on disk.
    pub fn save_now(&self, saved: Saved) -> Result<(), String> {
        let ticket = self.put(saved);
        self.wait(ticket)
    }

    /// Waits until every state handed over so far is on disk.
    pub fn flush(&self) -> Result<(), String> {
        let ticket = self.shared.lock().queued;
        self.wait(ticket)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn run(&self) {
        loop {
            let (saved, ticket) = {
                let mut slot = self.lock();
                while slot.latest.is_none() {
                    slot = self
                        .changed
                        .wait(slot)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                let Some(saved) = slot.latest.take() else {
                    continue;
                };
                (saved, slot.queued)
            };
            let result = self.store.save(&saved).map_err(|e| e.to_string());
            if let Err(e) = &result {
                tracing::error!(error = %e, "Cannot save the state.");
            }
            let mut slot = self.lock();
            slot.written = ticket;
            slot.error = result.err();
            self.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(topology: &str) -> Saved {
        Saved {
            topology: topology.to_owned(),
            observed: medic_plan::ObservedState {
                machines: Default::default(),
                shards: Default::default(),
                services: Default::default(),
            },
            maintenance: Default::default(),
            unmonitored: Default::default(),
            unmonitored_servers: Default::default(),
            replacements: Vec::new(),
            retries: Default::default(),
            recoveries: Vec::new(),
            kept_unanswered: Default::default(),
            spare_launches: Vec::new(),
            switchbacks: Default::default(),
        }
    }

    #[test]
    fn the_latest_state_handed_over_is_the_one_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let saver = Saver::spawn(Store::new(dir.path())).unwrap();
        for i in 0..200 {
            saver.put(state(&format!("t{i}")));
        }
        saver.flush().unwrap();
        let on_disk = Store::new(dir.path()).load().unwrap().unwrap();
        assert_eq!(on_disk.topology, "t199");
        saver.save_now(state("last")).unwrap();
        assert_eq!(
            Store::new(dir.path()).load().unwrap().unwrap().topology,
            "last"
        );
    }

    #[test]
    fn a_write_that_fails_is_reported_to_whoever_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let saver = Saver::spawn(Store::new(&dir.path().join("missing"))).unwrap();
        let e = saver.save_now(state("x")).unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }
}
