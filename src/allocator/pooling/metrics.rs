//! [`PoolMetrics`]: what the pool is doing, for dashboards and tests.

use super::index::{default_shards, thread_number};
use crate::{MemoryLayout, MemoryProtection, Resource};
use crossbeam_utils::CachePadded;
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
    /// Instantiations waiting for a slot now.
    pub waiters: usize,
    /// Time spent waiting for slots, summed over every wait so far.
    pub wait_time: std::time::Duration,
    /// How bytes past a memory's size fault in this pool: `GuardMarkers`,
    /// `Mprotect` or `BoundsChecked` (never `Auto`: the choice made at
    /// creation).
    pub memory_protection: MemoryProtection,
    /// Whether a batch of revocations discards its pages with one
    /// `process_madvise` (and, with guard markers, marks with another;
    /// else one `madvise` per range). Pools with a `decommit_batch_size`
    /// above 1, on a kernel that has it, do this.
    pub batched_revocation: bool,
    /// Whether full batches are revoked on the pool's own thread
    /// (`background_revocation`, and the thread could be started).
    pub background_revocation: bool,
    /// Whether resets write back only the pages tenants wrote
    /// (`PAGEMAP_SCAN`).
    pub dirty_page_scan: bool,
    /// Where the memory slots live.
    pub memory_layout: MemoryLayout,
    /// Memory requests the Wasmtime adapter's `PooledMemoryCreator`
    /// refused: a reservation, guard, page size or minimum the slots cannot
    /// honour, an exhausted pool (also in `memories_exhausted`), or a slot
    /// that could not be prepared.
    pub creator_refusals: u64,
    /// Growths of a Wasmtime memory that failed in its slot (`grow_to`: past
    /// the reservation, not whole pages, or the OS refused). Growths that
    /// Wasmtime's own limiter or the memory's maximum refuse never reach
    /// the pool and are not counted.
    pub creator_failed_grows: u64,
}

/// The pool's counters; cheap relaxed atomics. Those every request moves
/// are striped by thread (a cache line each), so that threads on other
/// cores do not bounce one line between them; a snapshot sums the stripes.
#[derive(Debug)]
pub(crate) struct Counters {
    stripes: Box<[CachePadded<Stripe>]>,
    exhausted: [AtomicU64; 3],
    denials: AtomicU64,
    creator_refusals: AtomicU64,
    creator_failed_grows: AtomicU64,
}

/// One thread group's share of the hot counters.
#[derive(Debug, Default)]
struct Stripe {
    acquisitions: [AtomicU64; 3],
    mapped: AtomicU64,
    reused: AtomicU64,
    copied: AtomicU64,
    resident: AtomicI64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            stripes: (0..default_shards()).map(|_| Default::default()).collect(),
            exhausted: Default::default(),
            denials: Default::default(),
            creator_refusals: Default::default(),
            creator_failed_grows: Default::default(),
        }
    }
}

fn slot(r: Resource) -> usize {
    match r {
        Resource::Instance => 0,
        Resource::Memory => 1,
        Resource::Table => 2,
    }
}

impl Counters {
    /// This thread's stripe.
    fn mine(&self) -> &Stripe {
        &self.stripes[thread_number() % self.stripes.len()]
    }

    pub fn acquired(&self, r: Resource) {
        self.mine().acquisitions[slot(r)].fetch_add(1, Relaxed);
    }
    pub fn exhausted(&self, r: Resource) {
        self.exhausted[slot(r)].fetch_add(1, Relaxed);
    }
    pub fn denied(&self) {
        self.denials.fetch_add(1, Relaxed);
    }
    pub fn image_mapped(&self) {
        self.mine().mapped.fetch_add(1, Relaxed);
    }
    pub fn image_reused(&self) {
        self.mine().reused.fetch_add(1, Relaxed);
    }
    pub fn image_copied(&self) {
        self.mine().copied.fetch_add(1, Relaxed);
    }
    pub fn resident_add(&self, bytes: usize) {
        self.mine().resident.fetch_add(bytes as i64, Relaxed);
    }
    pub fn resident_sub(&self, bytes: usize) {
        self.mine().resident.fetch_sub(bytes as i64, Relaxed);
    }

    /// Fills the counter fields of `m`.
    pub fn fill(&self, m: &mut PoolMetrics) {
        let get = |a: &AtomicU64| a.load(Relaxed);
        let sum = |f: fn(&Stripe) -> &AtomicU64| self.stripes.iter().map(|s| get(f(s))).sum();
        m.instance_acquisitions = sum(|s| &s.acquisitions[0]);
        m.memory_acquisitions = sum(|s| &s.acquisitions[1]);
        m.table_acquisitions = sum(|s| &s.acquisitions[2]);
        m.instances_exhausted = get(&self.exhausted[0]);
        m.memories_exhausted = get(&self.exhausted[1]);
        m.tables_exhausted = get(&self.exhausted[2]);
        m.limiter_denials = get(&self.denials);
        m.images_mapped = sum(|s| &s.mapped);
        m.images_reused = sum(|s| &s.reused);
        m.images_copied = sum(|s| &s.copied);
        let resident: i64 = self.stripes.iter().map(|s| s.resident.load(Relaxed)).sum();
        m.unused_resident_bytes = resident.max(0) as u64;
        m.creator_refusals = get(&self.creator_refusals);
        m.creator_failed_grows = get(&self.creator_failed_grows);
    }
}

// The Wasmtime adapter's counters, reached through the pool it holds.
#[cfg(feature = "wasmtime")]
impl super::Pool {
    /// `PooledMemoryCreator::new_memory` refused a request.
    pub(crate) fn creator_refused(&self) {
        self.counters.creator_refusals.fetch_add(1, Relaxed);
    }

    /// A Wasmtime memory's `grow_to` failed.
    pub(crate) fn creator_grow_failed(&self) {
        self.counters.creator_failed_grows.fetch_add(1, Relaxed);
    }
}

/// The Prometheus text exposition format (version 0.0.4): one `# HELP`,
/// one `# TYPE` and the samples per metric family, names prefixed
/// `instance_pool_`, per-resource families labelled `resource`. Serve it
/// as `text/plain; version=0.0.4` from whatever HTTP server the host has.
/// One Prometheus family of one value: its `HELP`, `TYPE` and sample
/// lines, named `instance_pool_{name}` (the stack pool's metrics use it too).
pub(super) fn family(
    f: &mut std::fmt::Formatter<'_>,
    name: &str,
    kind: &str,
    help: &str,
    value: &dyn std::fmt::Display,
) -> std::fmt::Result {
    writeln!(f, "# HELP instance_pool_{name} {help}")?;
    writeln!(f, "# TYPE instance_pool_{name} {kind}")?;
    writeln!(f, "instance_pool_{name} {value}")
}

impl std::fmt::Display for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_resource = |f: &mut std::fmt::Formatter<'_>,
                            name: &str,
                            kind: &str,
                            help: &str,
                            values: [u64; 3]|
         -> std::fmt::Result {
            writeln!(f, "# HELP instance_pool_{name} {help}")?;
            writeln!(f, "# TYPE instance_pool_{name} {kind}")?;
            for (resource, v) in ["instance", "memory", "table"].iter().zip(values) {
                writeln!(f, "instance_pool_{name}{{resource=\"{resource}\"}} {v}")?;
            }
            Ok(())
        };
        let single = family;
        per_resource(
            f,
            "in_use",
            "gauge",
            "Slots held by live stores.",
            [
                self.instances_in_use,
                self.memories_in_use,
                self.tables_in_use,
            ]
            .map(u64::from),
        )?;
        per_resource(
            f,
            "acquisitions_total",
            "counter",
            "Slots handed out since the pool was made.",
            [
                self.instance_acquisitions,
                self.memory_acquisitions,
                self.table_acquisitions,
            ],
        )?;
        per_resource(
            f,
            "exhausted_total",
            "counter",
            "Acquisitions refused because every slot was taken.",
            [
                self.instances_exhausted,
                self.memories_exhausted,
                self.tables_exhausted,
            ],
        )?;
        writeln!(
            f,
            "# HELP instance_pool_unused_warm Idle slots that were used before."
        )?;
        writeln!(f, "# TYPE instance_pool_unused_warm gauge")?;
        writeln!(
            f,
            "instance_pool_unused_warm{{resource=\"memory\"}} {}",
            self.unused_warm_memories
        )?;
        writeln!(
            f,
            "instance_pool_unused_warm{{resource=\"table\"}} {}",
            self.unused_warm_tables
        )?;
        single(
            f,
            "unused_resident_bytes",
            "gauge",
            "Bytes kept resident in idle slots.",
            &self.unused_resident_bytes,
        )?;
        single(
            f,
            "decommit_queue_length",
            "gauge",
            "Released memories waiting for their reset.",
            &self.decommit_queue_len,
        )?;
        single(
            f,
            "limiter_denials_total",
            "counter",
            "Growths the limiter refused.",
            &self.limiter_denials,
        )?;
        writeln!(
            f,
            "# HELP instance_pool_images_total Instantiations with an image, by how it got there."
        )?;
        writeln!(f, "# TYPE instance_pool_images_total counter")?;
        for (how, v) in [
            ("mapped", self.images_mapped),
            ("reused", self.images_reused),
            ("copied", self.images_copied),
        ] {
            writeln!(f, "instance_pool_images_total{{how=\"{how}\"}} {v}")?;
        }
        writeln!(
            f,
            "# HELP instance_pool_info How the pool protects and revokes memory."
        )?;
        writeln!(f, "# TYPE instance_pool_info gauge")?;
        writeln!(
            f,
            "instance_pool_info{{layout=\"{}\",protection=\"{}\",revocation=\"{}\",revoker=\"{}\",reset=\"{}\"}} 1",
            self.memory_layout.name(),
            self.memory_protection.name(),
            if self.batched_revocation {
                "process_madvise"
            } else {
                "madvise"
            },
            if self.background_revocation {
                "background"
            } else {
                "inline"
            },
            if self.dirty_page_scan {
                "dirty_pages"
            } else {
                "whole"
            }
        )?;
        single(
            f,
            "waiters",
            "gauge",
            "Instantiations waiting for a slot now.",
            &self.waiters,
        )?;
        single(
            f,
            "wait_seconds_total",
            "counter",
            "Time spent waiting for slots.",
            &format_args!("{:.6}", self.wait_time.as_secs_f64()),
        )?;
        single(
            f,
            "creator_refusals_total",
            "counter",
            "Wasmtime memory requests the PooledMemoryCreator refused.",
            &self.creator_refusals,
        )?;
        single(
            f,
            "creator_failed_grows_total",
            "counter",
            "Wasmtime memory growths that failed in their slot.",
            &self.creator_failed_grows,
        )
    }
}
