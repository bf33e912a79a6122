//! [`DecommitQueue`]: released memory slots waiting for their `madvise` and
//! `mprotect`, so that neighbours can share one call.
//!
//! Every call that removes access or pages sends a TLB shootdown to each
//! other core running the process; merging the resets of contiguous slots
//! into one range turns many shootdowns into one. A batch is flushed every
//! `decommit_batch_size` releases, and at once when an acquisition finds no
//! free slot. With a batch size of 1 a release does its own calls, without
//! taking the queue's lock.
//!
//! What one revocation does to a batch is the slot layer's business
//! ([`revoke_marked`](crate::slot::revoke_marked),
//! [`revoke_protected`](crate::slot::revoke_protected)).

use crate::slot::Queued;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Room reserved for a batch up front; a larger batch grows as it fills
/// (a batch size is only bounded by the number of slots).
const PREALLOCATED: usize = 64;

pub(crate) struct DecommitQueue {
    batch: usize,
    pending: Mutex<Vec<Queued>>,
    len: AtomicUsize,
}

impl DecommitQueue {
    pub fn new(batch: usize) -> Self {
        DecommitQueue {
            batch,
            pending: Mutex::new(Vec::with_capacity(batch.min(PREALLOCATED))),
            len: AtomicUsize::new(0),
        }
    }

    /// Queues `p`; runs `finish` on the whole batch once it is full. With a
    /// batch of 1, `finish` runs at once without the lock.
    pub fn push(&self, p: Queued, finish: impl FnOnce(Vec<Queued>)) {
        if self.batch <= 1 {
            return finish(vec![p]);
        }
        let mut pending = self.pending.lock();
        pending.push(p);
        self.len.store(pending.len(), Ordering::Relaxed);
        if pending.len() >= self.batch {
            let batch = std::mem::replace(
                &mut *pending,
                Vec::with_capacity(self.batch.min(PREALLOCATED)),
            );
            // Finish under the lock: a thread that finds the pool exhausted
            // and flushes waits for us, so it sees these slots freed.
            finish(batch);
            self.len.store(0, Ordering::Relaxed);
        }
    }

    /// Runs `finish` on whatever is queued (under the lock, see `push`).
    pub fn flush(&self, finish: impl FnOnce(Vec<Queued>)) {
        self.flush_then(finish, || ())
    }

    /// [`flush`](Self::flush), then `then`, both under the lock: no release
    /// can be queued in between.
    pub fn flush_then<R>(&self, finish: impl FnOnce(Vec<Queued>), then: impl FnOnce() -> R) -> R {
        let mut pending = self.pending.lock();
        let batch = std::mem::take(&mut *pending);
        finish(batch);
        self.len.store(0, Ordering::Relaxed);
        then()
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}
