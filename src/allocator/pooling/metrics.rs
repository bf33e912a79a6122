//! [`PoolMetrics`]: what the pool is doing, for dashboards and tests.

use crate::Resource;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// A snapshot of a pool's state and counters
/// ([`PoolingInstanceAllocator::metrics`](crate::PoolingInstanceAllocator::metrics)).
///
/// "In use" means held by a live store; warm (idle, previously used) and
/// queued (waiting for their reset) slots are not in use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolMetrics {
    /// Instances held by live stores.
    pub instances_in_use: u32,
    /// Memory slots held by live stores.
    pub memories_in_use: u32,
    /// Table slots held by live stores.
    pub tables_in_use: u32,
    /// Idle memory slots that were used before (they may hold an image
    /// mapping and resident pages).
    pub unused_warm_memories: u32,
    /// Idle table slots that were used before.
    pub unused_warm_tables: u32,
    /// Bytes that resets kept resident (`*_keep_resident`) in idle slots.
    pub unused_resident_bytes: u64,
    /// Released memories waiting in the decommit queue.
    pub decommit_queue_len: usize,
    /// Successful instance acquisitions since the pool was made.
    pub instance_acquisitions: u64,
    /// Memory slot acquisitions.
    pub memory_acquisitions: u64,
    /// Table slot acquisitions.
    pub table_acquisitions: u64,
    /// Acquisitions refused because every instance was taken.
    pub instances_exhausted: u64,
    /// ... every memory slot was taken.
    pub memories_exhausted: u64,
    /// ... every table slot was taken.
    pub tables_exhausted: u64,
    /// Growths (and instantiation minimums) the limiter refused.
    pub limiter_denials: u64,
    /// Instantiations that mapped an image into a slot with `mmap`.
    pub images_mapped: u64,
    /// Instantiations that found their image already mapped in a warm slot.
    pub images_reused: u64,
    /// Instantiations that copied an image because it has no memfd.
    pub images_copied: u64,
}

/// The pool's counters; cheap relaxed atomics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    acquisitions: [AtomicU64; 3],
    exhausted: [AtomicU64; 3],
    denials: AtomicU64,
    mapped: AtomicU64,
    reused: AtomicU64,
    copied: AtomicU64,
    resident: AtomicI64,
}

fn slot(r: Resource) -> usize {
    match r {
        Resource::Instance => 0,
        Resource::Memory => 1,
        Resource::Table => 2,
    }
}

impl Counters {
    pub fn acquired(&self, r: Resource) {
        self.acquisitions[slot(r)].fetch_add(1, Relaxed);
    }
    pub fn exhausted(&self, r: Resource) {
        self.exhausted[slot(r)].fetch_add(1, Relaxed);
    }
    pub fn denied(&self) {
        self.denials.fetch_add(1, Relaxed);
    }
    pub fn image_mapped(&self) {
        self.mapped.fetch_add(1, Relaxed);
    }
    pub fn image_reused(&self) {
        self.reused.fetch_add(1, Relaxed);
    }
    pub fn image_copied(&self) {
        self.copied.fetch_add(1, Relaxed);
    }
    pub fn resident_add(&self, bytes: usize) {
        self.resident.fetch_add(bytes as i64, Relaxed);
    }
    pub fn resident_sub(&self, bytes: usize) {
        self.resident.fetch_sub(bytes as i64, Relaxed);
    }

    /// Fills the counter fields of `m`.
    pub fn fill(&self, m: &mut PoolMetrics) {
        let get = |a: &AtomicU64| a.load(Relaxed);
        m.instance_acquisitions = get(&self.acquisitions[0]);
        m.memory_acquisitions = get(&self.acquisitions[1]);
        m.table_acquisitions = get(&self.acquisitions[2]);
        m.instances_exhausted = get(&self.exhausted[0]);
        m.memories_exhausted = get(&self.exhausted[1]);
        m.tables_exhausted = get(&self.exhausted[2]);
        m.limiter_denials = get(&self.denials);
        m.images_mapped = get(&self.mapped);
        m.images_reused = get(&self.reused);
        m.images_copied = get(&self.copied);
        m.unused_resident_bytes = self.resident.load(Relaxed).max(0) as u64;
    }
}
