//! [`PoolingInstanceAllocator`]: wires the memory pool, the table pool and
//! the instance count together. Each mechanism has its own file:
//! `memory_pool` (the slab and slot resets), `table_pool`, `index` (which
//! free slot to hand out), `decommit` (batched resets), `metrics`.

mod admission;
mod background;
mod decommit;
mod index;
mod memory_pool;
mod metrics;
mod permits;
mod stack_pool;
mod table_pool;

pub(crate) use admission::Attempt;
pub use metrics::PoolMetrics;
pub use stack_pool::{PooledStack, StackPool, StackPoolMetrics};

use crate::config::PoolingConfig;
use crate::layout::MemoryPlan;
use crate::slot::{ImageWork, MemorySlot, TableSlot};
use crate::sys::{self, Slab};
use crate::{Error, InstanceLayout, MemoryType, Resource, Result, TableType};
use memory_pool::MemoryPool;
use metrics::Counters;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use table_pool::TablePool;

/// A pool's slab of `count` slots (see [`Slab::new`]), or
/// [`Error::InvalidConfig`] naming the settings that make it: `describe`
/// says what it holds and from which settings.
fn reserve_slab(
    count: u32,
    pre: usize,
    slot: usize,
    gap: usize,
    read_write: bool,
    describe: impl Fn() -> String,
) -> Result<Slab> {
    Slab::new(count, pre, slot, gap, read_write).map_err(|e| {
        Error::InvalidConfig(if e.kind() == io::ErrorKind::InvalidInput {
            format!("reservation overflows for {}", describe())
        } else {
            // No overflow: the size was computed before the mapping.
            let len = pre + count as usize * (slot + gap);
            format!("cannot reserve {len} bytes for {}: {e}", describe())
        })
    })
}

/// Kernel mappings one memory slot may use (image, read-write, `PROT_NONE`).
const MAPPINGS_PER_MEMORY: usize = 3;

/// Hands out memories and tables from one slab reserved up front.
///
/// Clones share the pool; each [`Store`](crate::Store) keeps it alive.
/// See [`PoolingConfig`] for the knobs and the crate docs for the layout.
#[derive(Clone)]
pub struct PoolingInstanceAllocator {
    pub(crate) inner: Arc<Pool>,
    /// What stores hold: one reference a shard (see [`PoolRef`]).
    refs: Arc<[Arc<PoolRef>]>,
}

/// A store's way to its pool. A store holds one of a few (one per shard,
/// chosen by its thread), not the pool's own `Arc`: the reference count
/// every `Store::new` and store drop writes is then a line of the thread's
/// shard, not one every core writes. Each keeps the pool alive; the pool
/// does not know them (no cycle).
#[repr(align(128))]
pub(crate) struct PoolRef(Arc<Pool>);

impl std::ops::Deref for PoolRef {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        &self.0
    }
}

impl PoolingInstanceAllocator {
    /// The reference a store made on this thread holds.
    pub(crate) fn store_ref(&self) -> Arc<PoolRef> {
        self.refs[index::thread_number() % self.refs.len()].clone()
    }
}

impl std::fmt::Debug for PoolingInstanceAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolingInstanceAllocator")
            .field("config", &self.inner.config)
            .field("memory_protection", &self.inner.memories.protection())
            .field("batched_revocation", &self.inner.memories.batched())
            .field("dirty_page_scan", &self.inner.memories.dirty_scan())
            .field("memory_layout", &self.inner.memories.layout())
            .finish()
    }
}

/// The pool behind every clone of a [`PoolingInstanceAllocator`].
///
/// Aligned to a cache line pair, so that the `Arc`'s reference count (every
/// store clones it) shares no line with what requests read.
#[repr(align(128))]
pub(crate) struct Pool {
    config: PoolingConfig,
    pub(crate) admission: admission::Admission,
    instances: permits::Permits,
    memories: MemoryPool,
    tables: TablePool,
    counters: Counters,
}

impl PoolingInstanceAllocator {
    /// Validates `config` and reserves the slabs.
    ///
    /// [`Error::InvalidConfig`], naming the field and value, for: 0
    /// `total_instances`; a byte size that is not a multiple of the host
    /// page; `max_memory_size` above 4 GiB; more memories (tables) per
    /// instance than in total; a `decommit_batch_size` of 0; a reservation
    /// whose size overflows or that `mmap` refuses; more kernel mappings
    /// than `vm.max_map_count` allows.
    pub fn new(config: &PoolingConfig) -> Result<Self> {
        config.validate()?;
        let guarded = config.memory_layout == crate::MemoryLayout::Guarded;
        if let Some(max_maps) = sys::max_map_count().filter(|_| guarded) {
            let needed = (config.total_memories as usize).saturating_mul(MAPPINGS_PER_MEMORY);
            let used = sys::mapping_count().unwrap_or(0);
            if needed.saturating_add(used) > max_maps {
                return Err(Error::InvalidConfig(format!(
                    "total_memories ({}) may need {needed} kernel mappings, with {used} in use; vm.max_map_count is {max_maps} (memory_layout(MemoryLayout::Dense) needs 2 for any number of slots)",
                    config.total_memories
                )));
            }
        }
        let shards = index::default_shards();
        let inner = Arc::new(Pool {
            memories: MemoryPool::new(config, shards)?,
            tables: TablePool::new(config, shards)?,
            config: config.clone(),
            instances: permits::Permits::new(config.total_instances, shards),
            admission: admission::Admission::default(),
            counters: Counters::default(),
        });
        let refs = (0..shards)
            .map(|_| Arc::new(PoolRef(inner.clone())))
            .collect();
        Ok(PoolingInstanceAllocator { inner, refs })
    }

    /// A snapshot of the pool's counts and counters.
    pub fn metrics(&self) -> PoolMetrics {
        let p = &self.inner;
        let mut m = PoolMetrics {
            instances_in_use: p.instances.taken(),
            memories_in_use: p.memories.in_use(),
            tables_in_use: p.tables.in_use(),
            unused_warm_memories: p.memories.unused_warm(),
            unused_warm_tables: p.tables.unused_warm(),
            decommit_queue_len: p.memories.queued(),
            waiters: p.admission.waiters(),
            wait_time: p.admission.wait_time(),
            memory_protection: p.memories.protection(),
            batched_revocation: p.memories.batched(),
            background_revocation: p.memories.background(),
            dirty_page_scan: p.memories.dirty_scan(),
            memory_layout: p.memories.layout(),
            ..PoolMetrics::default()
        };
        p.counters.fill(&mut m);
        m
    }

    /// Runs pending slot resets now (see
    /// [`PoolingConfig::decommit_batch_size`]).
    pub fn flush_decommits(&self) {
        self.inner.memories.flush(&self.inner.counters);
    }

    /// The configuration the pool was made with.
    pub fn config(&self) -> &PoolingConfig {
        &self.inner.config
    }
}

impl Pool {
    /// [`Error::Unsupported`] if the layout can never fit this pool.
    pub(crate) fn check_layout(&self, layout: &InstanceLayout) -> Result<()> {
        let c = &self.config;
        if layout.memories.len() > c.max_memories_per_instance as usize {
            return Err(Error::Unsupported(format!(
                "{} memories exceed max_memories_per_instance of {}",
                layout.memories.len(),
                c.max_memories_per_instance
            )));
        }
        if layout.tables.len() > c.max_tables_per_instance as usize {
            return Err(Error::Unsupported(format!(
                "{} tables exceed max_tables_per_instance of {}",
                layout.tables.len(),
                c.max_tables_per_instance
            )));
        }
        for (i, m) in layout.memories.iter().enumerate() {
            if m.ty.min_bytes() > self.memories.slot_size() {
                return Err(Error::Unsupported(format!(
                    "memory {i}: minimum of {} bytes exceeds the slot size (max_memory_size) of {}",
                    m.ty.min_bytes(),
                    self.memories.slot_size()
                )));
            }
        }
        for (i, t) in layout.tables.iter().enumerate() {
            if t.minimum > self.tables.elements() {
                return Err(Error::Unsupported(format!(
                    "table {i}: minimum of {} elements exceeds table_elements of {}",
                    t.minimum,
                    self.tables.elements()
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn acquire_instance(&self) -> Result<()> {
        let limit = self.config.total_instances;
        if self.instances.take() {
            self.counters.acquired(Resource::Instance);
            Ok(())
        } else {
            self.counters.exhausted(Resource::Instance);
            Err(Error::PoolExhausted {
                resource: Resource::Instance,
                limit,
            })
        }
    }

    /// A memory slot for `plan` and the maximum the limiter sees.
    pub(crate) fn acquire_memory(&self, plan: &MemoryPlan) -> Result<(MemorySlot, usize)> {
        self.memories.acquire(plan, &self.counters)
    }

    /// The OS work of an instantiation (see [`MemorySlot::prepare`]),
    /// counted by how the image got there.
    pub(crate) fn prepare_memory(
        &self,
        slot: &mut MemorySlot,
        plan: &MemoryPlan,
        size: usize,
    ) -> io::Result<()> {
        match slot.prepare(plan, size)? {
            ImageWork::None => {}
            ImageWork::Mapped => self.counters.image_mapped(),
            ImageWork::Reused => self.counters.image_reused(),
            ImageWork::Copied => self.counters.image_copied(),
        }
        Ok(())
    }

    /// The one way slots come back, whoever held them (a store, a failed
    /// instantiation, an engine's memory): memories reset (or queued for
    /// it), tables zeroed, instance counts returned, then waiting
    /// instantiations woken, unless this is a queued attempt giving back
    /// (see [`Attempt::Queued`]).
    pub(crate) fn release(
        &self,
        memories: impl Iterator<Item = (MemorySlot, MemoryType)>,
        tables: impl Iterator<Item = TableSlot>,
        instances: u32,
        attempt: Attempt,
    ) {
        for (slot, ty) in memories {
            self.memories.release(slot, &ty, &self.counters);
        }
        for slot in tables {
            self.tables.release(slot, &self.counters);
        }
        if instances > 0 {
            self.instances.give_back(instances);
        }
        if attempt == Attempt::Alone {
            self.admission.released();
        }
    }

    /// [`release`](Self::release) of one memory.
    #[cfg(feature = "wasmtime")]
    pub(crate) fn release_memory(&self, slot: MemorySlot, ty: MemoryType) {
        let none = std::iter::empty();
        self.release(std::iter::once((slot, ty)), none, 0, Attempt::Alone);
    }

    /// A table slot for `ty` and the maximum the limiter sees.
    pub(crate) fn acquire_table(&self, ty: &TableType) -> Result<(TableSlot, u32)> {
        self.tables.acquire(ty, &self.counters)
    }

    /// `(memory, table)` bytes a reset restores in place.
    pub(crate) fn keep_resident(&self) -> (usize, usize) {
        (self.memories.keep_resident(), self.tables.keep_resident())
    }

    /// `(slot size, trailing guard)` of a memory slot, in bytes.
    #[cfg(feature = "wasmtime")]
    pub(crate) fn memory_geometry(&self) -> (usize, usize) {
        (self.memories.slot_size(), self.config.memory_guard_size)
    }

    /// The memory protection in force (never `Auto`).
    #[cfg(feature = "wasmtime")]
    pub(crate) fn memory_protection(&self) -> crate::MemoryProtection {
        self.memories.protection()
    }

    /// How long `instantiate_async` waits for a slot by default.
    pub(crate) fn admission_timeout(&self) -> Duration {
        self.config.admission_timeout
    }

    /// The limiter refused a growth.
    pub(crate) fn limiter_denied(&self) {
        self.counters.denied()
    }
}
