//! [`DecommitQueue`]: released memory slots waiting for their `madvise` and
//! `mprotect`, so that neighbours can share one call.
//!
//! Every call that removes access or pages sends a TLB shootdown to each
//! other core running the process; revoking many slots in one call turns
//! many shootdowns into one. A batch is revoked every `decommit_batch_size`
//! releases while the pool has slack (sooner, down to every release, as it
//! fills: see `MemoryPool::release`), and at once when an acquisition finds
//! no free slot. The queue is sharded like the slot index: a thread queues
//! into its home shard, behind that shard's lock on its own cache line, so
//! two cores releasing share no line; a flush takes every shard's slots.
//! A shard's batch is also cut short once its slots hold
//! [`BATCH_BYTES`] to discard, so that a large batch of large tenants
//! does not keep gigabytes resident while it fills.
//! A lock is only held to add a slot or take a batch out: the revocation
//! runs after it, so no release waits for another's TLB flush. With a
//! batch size of 1 a release does its own calls, without taking a lock.
//!
//! What one revocation does to a batch is the slot layer's business
//! ([`revoke_marked`](crate::slot::revoke_marked),
//! [`revoke_protected`](crate::slot::revoke_protected)).

use super::index::thread_number;
use crate::slot::Queued;
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Room reserved for a batch up front; a larger batch grows as it fills
/// (a batch size is only bounded by the number of slots).
const PREALLOCATED: usize = 64;

/// The bytes a shard's queued slots may hold to discard (their written runs
/// and tails, [`Queued::held_bytes`]) before its batch is revoked, however
/// few slots it has: at most 32 MiB a core waits for one TLB flush, with
/// a tenant's large memory or many tenants' small ones alike.
pub(crate) const BATCH_BYTES: usize = 32 << 20;

pub(crate) struct DecommitQueue {
    batch: usize,
    shards: Box<[CachePadded<Shard>]>,
}

struct Shard {
    pending: Mutex<Pending>,
    len: AtomicUsize,
}

#[derive(Default)]
struct Pending {
    slots: Vec<Queued>,
    /// The sum of the slots' [`Queued::held_bytes`].
    bytes: usize,
}

impl DecommitQueue {
    pub fn new(batch: usize, shards: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| {
                CachePadded::new(Shard {
                    pending: Mutex::new(Pending::default()),
                    len: AtomicUsize::new(0),
                })
            })
            .collect();
        DecommitQueue { batch, shards }
    }

    /// Queues `p` in the calling thread's shard; once `limit` slots are
    /// queued there (at most the configured batch, at least 1), or they
    /// hold [`BATCH_BYTES`] to discard, takes them all and runs `finish`
    /// on them after unlocking: a revocation flushes TLBs, and no other
    /// release or acquisition waits for it. With a batch of 1, `finish`
    /// runs at once without a lock.
    pub fn push(&self, p: Queued, limit: usize, finish: impl FnOnce(Vec<Queued>)) {
        if self.batch <= 1 {
            return finish(vec![p]);
        }
        let shard = &self.shards[thread_number() % self.shards.len()];
        let mut pending = shard.pending.lock();
        if pending.slots.capacity() == 0 {
            pending.slots.reserve(self.batch.min(PREALLOCATED));
        }
        pending.bytes += p.held_bytes();
        pending.slots.push(p);
        let full =
            pending.slots.len() >= limit.clamp(1, self.batch) || pending.bytes >= BATCH_BYTES;
        let batch = full.then(|| {
            pending.bytes = 0;
            std::mem::replace(
                &mut pending.slots,
                Vec::with_capacity(self.batch.min(PREALLOCATED)),
            )
        });
        shard.len.store(pending.slots.len(), Ordering::Relaxed);
        drop(pending);
        if let Some(batch) = batch {
            finish(batch);
        }
    }

    /// Takes whatever is queued in every shard (each lock held only to take
    /// its part) and runs `finish` on it, as one batch, unless empty.
    /// Whether anything was taken.
    pub fn flush(&self, finish: impl FnOnce(Vec<Queued>)) -> bool {
        let mut batch = Vec::new();
        for shard in self.shards.iter() {
            let mut pending = shard.pending.lock();
            shard.len.store(0, Ordering::Relaxed);
            pending.bytes = 0;
            if batch.is_empty() {
                batch = std::mem::take(&mut pending.slots);
            } else {
                batch.append(&mut pending.slots);
            }
        }
        let any = !batch.is_empty();
        if any {
            finish(batch);
        }
        any
    }

    /// Slots queued now (a sum over shards).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.len.load(Ordering::Relaxed))
            .sum()
    }
}
