//! [`DecommitQueue`]: released memory slots waiting for their `madvise` and
//! `mprotect`, so that neighbours can share one call.
//!
//! Every call that removes access or pages sends a TLB shootdown to each
//! other core running the process; revoking many slots in one call turns
//! many shootdowns into one. A batch is revoked every `decommit_batch_size`
//! releases while the pool has slack (sooner, down to every release, as it
//! fills: see `MemoryPool::release`), and at once when an acquisition finds
//! no free slot. The queue's lock is only held to add a slot or take a
//! batch out: the revocation runs after it, so no release waits for
//! another's TLB flush. With a batch size of 1 a release does its own
//! calls, without taking the lock.
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

    /// Queues `p`; once `limit` slots are queued (at most the configured
    /// batch, at least 1), takes them all and runs `finish` on them after
    /// unlocking: a revocation flushes TLBs, and no other release or
    /// acquisition waits for it. With a batch of 1, `finish` runs at once
    /// without the lock.
    pub fn push(&self, p: Queued, limit: usize, finish: impl FnOnce(Vec<Queued>)) {
        if self.batch <= 1 {
            return finish(vec![p]);
        }
        let mut pending = self.pending.lock();
        pending.push(p);
        let full = pending.len() >= limit.clamp(1, self.batch);
        let batch = full.then(|| {
            std::mem::replace(
                &mut *pending,
                Vec::with_capacity(self.batch.min(PREALLOCATED)),
            )
        });
        self.len.store(pending.len(), Ordering::Relaxed);
        drop(pending);
        if let Some(batch) = batch {
            finish(batch);
        }
    }

    /// Takes whatever is queued (the lock is held only to take it) and runs
    /// `finish` on it unless empty. Whether anything was taken.
    pub fn flush(&self, finish: impl FnOnce(Vec<Queued>)) -> bool {
        let batch = {
            let mut pending = self.pending.lock();
            self.len.store(0, Ordering::Relaxed);
            std::mem::take(&mut *pending)
        };
        let any = !batch.is_empty();
        if any {
            finish(batch);
        }
        any
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}
