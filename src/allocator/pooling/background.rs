//! [`Revoker`]: a thread of the pool's own that revokes full batches
//! (`PoolingConfig::background_revocation`), so that the release that
//! filled a batch returns without waiting for its TLB flush.
//!
//! A batch goes to the thread over a channel; the thread revokes it (no
//! lock held) and puts its slots on a `done` list, which the pool's
//! releases and acquisitions move into the free lists (`take_done`). No
//! slot is free before its revocation ended, and none is lost: a slot is
//! always in exactly one of the queue, a batch in flight, `done`, or the
//! free lists. The pool joins the thread before its slab goes.

use crate::slot::{self, Parked, Queued};
use crate::sys::{self, Claim};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

/// How batches are revoked: the pool's, copied for the thread.
#[derive(Clone, Copy, Debug)]
pub(crate) struct How {
    /// Without tails to make `PROT_NONE`: `revoke_marked`.
    pub marked: bool,
    /// Through `process_madvise`.
    pub batched: bool,
}

impl How {
    /// Revokes `batch` here and hands each slot to `done`.
    pub fn revoke(self, batch: Vec<Queued>, done: impl FnMut(Claim, Parked)) {
        if self.marked {
            slot::revoke_marked(batch, self.batched, done);
        } else {
            slot::revoke_protected(batch, self.batched, done);
        }
    }
}

#[derive(Default)]
struct Shared {
    /// Revoked slots not yet back in the free lists.
    done: Mutex<Vec<(Claim, Parked)>>,
    /// `done`'s length, read without the lock.
    ready: AtomicUsize,
    /// Slots sent to the thread and not yet on `done`.
    in_flight: AtomicUsize,
}

pub(crate) struct Revoker {
    /// `None` once stopped: the thread's channel then ends.
    tx: Option<Sender<Vec<Queued>>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// The fork generation of the process that runs the thread.
    generation: u64,
}

impl Revoker {
    /// Starts the thread; `None` if it cannot be started (the pool then
    /// revokes inline).
    pub fn start(how: How) -> Option<Revoker> {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel::<Vec<Queued>>();
        let theirs = shared.clone();
        let thread = sys::spawn_thread("instance-pool-revoker", move || {
            let mut revoked = Vec::new();
            while let Ok(batch) = rx.recv() {
                let n = batch.len();
                how.revoke(batch, |claim, parked| revoked.push((claim, parked)));
                {
                    let mut done = theirs.done.lock();
                    done.append(&mut revoked);
                    theirs.ready.store(done.len(), Ordering::Release);
                }
                theirs.in_flight.fetch_sub(n, Ordering::AcqRel);
            }
        })
        .ok()?;
        Some(Revoker {
            tx: Some(tx),
            thread: Some(thread),
            shared,
            generation: sys::fork_generation(),
        })
    }

    /// Hands `batch` to the thread, or gives it back to be revoked inline
    /// (in a forked child, which has no such thread).
    pub fn send(&self, batch: Vec<Queued>) -> Result<(), Vec<Queued>> {
        if sys::fork_generation() != self.generation {
            return Err(batch);
        }
        let n = batch.len();
        self.shared.in_flight.fetch_add(n, Ordering::AcqRel);
        let sent = match &self.tx {
            Some(tx) => tx.send(batch).map_err(|e| e.0),
            None => Err(batch),
        };
        if sent.is_err() {
            self.shared.in_flight.fetch_sub(n, Ordering::AcqRel);
        }
        sent
    }

    /// Takes every revoked slot waiting to be freed (no lock taken when
    /// there is none). None in a forked child: the parent's thread may
    /// have held the list's lock at the fork.
    pub fn take_done(&self) -> Vec<(Claim, Parked)> {
        if self.shared.ready.load(Ordering::Acquire) == 0
            || sys::fork_generation() != self.generation
        {
            return Vec::new();
        }
        let mut done = self.shared.done.lock();
        self.shared.ready.store(0, Ordering::Release);
        std::mem::take(&mut *done)
    }

    /// Slots in batches the thread has not finished: they come back (see
    /// [`lost`](Self::lost) for a forked child).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// Slots that will never come back to this process: in a forked child,
    /// those on their way back at the fork (in a batch the parent's thread
    /// held, or revoked and not yet freed; at most a batch more, counted
    /// twice, if the fork fell between the two counts).
    ///
    /// Also those of a batch the thread held if it ended early (it would
    /// have panicked, a bug): waiting for them would never end.
    pub fn lost(&self) -> usize {
        if sys::fork_generation() != self.generation {
            self.in_flight() + self.shared.ready.load(Ordering::Acquire)
        } else if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            self.in_flight()
        } else {
            0
        }
    }

    /// Ends the thread after the batches it was sent, and waits for it
    /// (not in a forked child, where it does not run).
    pub fn stop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take()
            && sys::fork_generation() == self.generation
        {
            // A panic there is a bug already reported on that thread; the
            // pool is going either way.
            let _ = thread.join();
        }
    }
}
