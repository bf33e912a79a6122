//! [`PooledMemoryCreator`]: Wasmtime's linear memories in the pool's slots.

use super::bake::Shape;
use super::context;
use crate::allocator::{Pool, PoolRef};
use crate::layout::MemoryPlan;
use crate::slot::MemorySlot;
use crate::{MemoryProtection, MemoryType, PoolingInstanceAllocator, WASM_PAGE_SIZE};
use std::sync::Arc;

/// A [`wasmtime::MemoryCreator`] that places every linear memory in a memory
/// slot of a [`PoolingInstanceAllocator`] (either layout). See the
/// [module docs](super) for what it needs from Wasmtime's `Config`.
///
/// Each memory takes one slot of the pool's `total_memories` (the pool's
/// `total_instances` is not counted: Wasmtime keeps its own instance
/// records), and the pool's metrics count it like a store's.
#[derive(Clone)]
pub struct PooledMemoryCreator {
    /// The pool; each memory's reference to it comes from here too (one
    /// per shard, as a store's: see `PoolingInstanceAllocator::store_ref`).
    allocator: PoolingInstanceAllocator,
}

impl std::fmt::Debug for PooledMemoryCreator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (slot, guard) = self.pool().memory_geometry();
        f.debug_struct("PooledMemoryCreator")
            .field("slot_size", &slot)
            .field("guard_size", &guard)
            .finish()
    }
}

impl PooledMemoryCreator {
    /// A creator drawing from `pool` (which it keeps alive).
    pub fn new(pool: &PoolingInstanceAllocator) -> Self {
        PooledMemoryCreator {
            allocator: pool.clone(),
        }
    }

    fn pool(&self) -> &Arc<Pool> {
        &self.allocator.inner
    }

    /// Sets this creator on `config`, with the memory settings it needs (see
    /// the [module docs](super)): the on-demand strategy; for linear
    /// memories and GC heaps alike a reservation of the pool's
    /// `max_memory_size`, a guard of its `memory_guard_size`, no moving and
    /// no reservation for growth; no copy-on-write data initialisation.
    ///
    /// For a pool on
    /// [`MemoryProtection::BoundsChecked`](crate::MemoryProtection::BoundsChecked)
    /// it also turns `signals_based_traps` off, so that Wasmtime's code checks
    /// every access against the memory's size instead of relying on the
    /// bytes past it faulting (in such a pool they do not, up to the slot's
    /// end). [`PooledModule::new`](super::PooledModule::new) refuses an
    /// engine where they were turned on again.
    ///
    /// Call it last: a later `memory_*` or `gc_heap_*` setting undoes what it
    /// set. A changed reservation or guard is refused at the first
    /// `new_memory` that sees it, with a message naming the setting; a later
    /// `allocation_strategy(Pooling)` or `memory_init_cow(true)` cannot be
    /// seen by the creator (the module docs say what happens then).
    pub fn install(self, config: &mut wasmtime::Config) -> &mut wasmtime::Config {
        let (slot, guard) = self.pool().memory_geometry();
        config
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand)
            .memory_reservation(slot as u64)
            .memory_guard_size(guard as u64)
            .memory_reservation_for_growth(0)
            .memory_may_move(false)
            .memory_init_cow(false)
            // Explicit, so that a later `gc_heap_*` call (which makes
            // Wasmtime stop copying the `memory_*` values) keeps these.
            .gc_heap_reservation(slot as u64)
            .gc_heap_guard_size(guard as u64)
            .gc_heap_reservation_for_growth(0)
            .gc_heap_may_move(false);
        if self.pool().memory_protection() == MemoryProtection::BoundsChecked {
            config.signals_based_traps(false);
        }
        config.with_host_memory(Arc::new(self))
    }

    /// Checks a request against the slots and takes one, `minimum` bytes
    /// accessible: the next slot reserved by a
    /// [`PooledModule`](super::PooledModule) instantiation on this thread
    /// (with its image), else a zeroed one. On error nothing is taken and
    /// the refusal is counted.
    fn create(
        &self,
        ty: &wasmtime::MemoryType,
        minimum: usize,
        reserved: Option<usize>,
        guard: usize,
    ) -> Result<PooledLinearMemory, String> {
        let memory = self.check(ty, minimum, reserved, guard).and_then(|()| {
            let (mut slot, plan) = match context::take(self.pool(), Shape::of(ty), minimum) {
                Some(reserved) => reserved,
                None => {
                    let plan = MemoryPlan {
                        ty: MemoryType::new((minimum / WASM_PAGE_SIZE) as u64, None),
                        image: None,
                    };
                    let (slot, _maximum) = self
                        .pool()
                        .acquire_memory(&plan)
                        .map_err(|e| format!("instance_pool: {e}"))?;
                    (slot, plan)
                }
            };
            if let Err(e) = self.pool().prepare_memory(&mut slot, &plan, minimum) {
                self.pool().release_memory(slot, plan.ty);
                return Err(format!(
                    "instance_pool: preparing a memory of {minimum} bytes: {e}"
                ));
            }
            Ok(PooledLinearMemory {
                pool: self.allocator.store_ref(),
                slot: Some(slot),
                plan,
                capacity: self.pool().memory_geometry().0,
            })
        });
        if memory.is_err() {
            self.pool().creator_refused();
        }
        memory
    }

    /// Whether the slots honour a request exactly as `install` set them up.
    /// Wasmtime asks for linear memories and GC heaps alike, with the same
    /// type shape, so a refusal names both settings.
    fn check(
        &self,
        ty: &wasmtime::MemoryType,
        minimum: usize,
        reserved: Option<usize>,
        guard: usize,
    ) -> Result<(), String> {
        let (slot_size, slot_guard) = self.pool().memory_geometry();
        const CALL_LAST: &str =
            "call PooledMemoryCreator::install after every other memory setting";
        if ty.page_size() != WASM_PAGE_SIZE as u64 {
            return Err(format!(
                "instance_pool: a memory page size of {} bytes is not supported (only {WASM_PAGE_SIZE})",
                ty.page_size()
            ));
        }
        let reserved = reserved.unwrap_or(slot_size);
        if reserved != slot_size {
            return Err(format!(
                "instance_pool: Wasmtime asks a reservation of {reserved} bytes, but the pool's slots are {slot_size} (max_memory_size): Config::memory_reservation, or Config::gc_heap_reservation for a GC heap (new_memory cannot tell which), was changed after install set both to {slot_size}; {CALL_LAST}"
            ));
        }
        if guard != slot_guard {
            return Err(format!(
                "instance_pool: Wasmtime asks a guard of {guard} bytes, but the pool's slots have {slot_guard} (memory_guard_size): Config::memory_guard_size, or Config::gc_heap_guard_size for a GC heap (new_memory cannot tell which), was changed after install set both to {slot_guard}; {CALL_LAST}"
            ));
        }
        if minimum > slot_size {
            return Err(format!(
                "instance_pool: a minimum of {minimum} bytes (the memory's declared minimum, or Config::gc_heap_initial_size for a GC heap) exceeds the pool's slots of {slot_size} (max_memory_size)"
            ));
        }
        Ok(())
    }
}

// SAFETY: every memory this creator returns is a pool slot held alone by
// the returned `PooledLinearMemory` until Wasmtime drops it: page aligned,
// `minimum` bytes accessible, never moving, and every byte from its size up
// to `base + reserved + guard` faults (`check` admits only the slot's own
// size and trailing guard; the slot layer keeps every byte past the size
// faulting). The bytes are zero (a fresh or reset slot), except in a memory
// a `PooledModule` baked: there they are what the original module's active
// segments would write, and the module Wasmtime runs has none for it (the
// trait's "should be zero filled" is what makes Wasmtime's own writes
// right; nothing relies on it for soundness).
unsafe impl wasmtime::MemoryCreator for PooledMemoryCreator {
    fn new_memory(
        &self,
        ty: wasmtime::MemoryType,
        minimum: usize,
        _maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn wasmtime::LinearMemory>, String> {
        let memory = self.create(&ty, minimum, reserved_size_in_bytes, guard_size_in_bytes)?;
        Ok(Box::new(memory))
    }
}

/// A Wasmtime linear memory in a pool slot; back to the pool, reset, when
/// Wasmtime drops it.
pub struct PooledLinearMemory {
    pool: Arc<PoolRef>,
    slot: Option<MemorySlot>,
    plan: MemoryPlan,
    /// The slot's size (the reservation `install` set): growth never goes
    /// past it.
    capacity: usize,
}

impl std::fmt::Debug for PooledLinearMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledLinearMemory")
            .field("size", &self.slot().size())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl PooledLinearMemory {
    fn slot(&self) -> &MemorySlot {
        self.slot
            .as_ref()
            .expect("a memory holds its slot until dropped")
    }

    /// `grow_to` without the counting.
    fn widen(&mut self, new_size: usize) -> wasmtime::Result<()> {
        if !new_size.is_multiple_of(WASM_PAGE_SIZE) {
            wasmtime::bail!("instance_pool: a memory size of {new_size} bytes is not whole pages");
        }
        if new_size > self.capacity {
            wasmtime::bail!(
                "instance_pool: growing to {new_size} bytes exceeds the reservation of {}",
                self.capacity
            );
        }
        let slot = self.slot.as_mut().expect("a memory holds its slot");
        slot.resize(new_size.max(slot.size()))
            .map_err(wasmtime::Error::new)
    }
}

// SAFETY: `as_ptr` is the slot's fixed base; `[0, byte_size)` is read-write
// and ours; `grow_to` only widens access inside the slot (never past the
// reservation) and never moves the base; everything past the size faults.
unsafe impl wasmtime::LinearMemory for PooledLinearMemory {
    fn byte_size(&self) -> usize {
        self.slot().size()
    }

    fn byte_capacity(&self) -> usize {
        self.capacity
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        let grown = self.widen(new_size);
        if grown.is_err() {
            self.pool.creator_grow_failed();
        }
        grown
    }

    fn as_ptr(&self) -> *mut u8 {
        self.slot().base().as_ptr()
    }
}

impl Drop for PooledLinearMemory {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            // The plan's image goes after the slot is back.
            self.pool.release_memory(slot, self.plan.ty);
        }
    }
}
