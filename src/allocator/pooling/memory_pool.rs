//! [`MemoryPool`]: the linear-memory slab and everything done to a slot.
//!
//! One `PROT_NONE`, `MAP_NORESERVE` reservation holds every slot:
//!
//! ```text
//!  ┌───────┬──────────────┬───────┬──────────────┬───────┬─────┬──────────────┬───────┐
//!  │ Guard │    Slot 0    │ Guard │    Slot 1    │ Guard │ ... │   Slot N-1   │ Guard │
//!  └───────┴──────────────┴───────┴──────────────┴───────┴─────┴──────────────┴───────┘
//!  ◄─pre──►◄─slot_size───►◄guard─►
//!          ◄──────── stride ─────►
//! base(i) = reservation + pre + i * stride
//! ```
//!
//! `slot_size` is `max_memory_size`, `guard` is `memory_guard_size`, `pre`
//! is one guard when `guard_before_memory` is set (a slot's trailing guard is
//! the next slot's leading guard), else 0.
//!
//! Within a slot, `[0, accessible)` is read-write and the rest `PROT_NONE`;
//! when an image is mapped, `[0, image)` is a private file mapping of it.
//! A slot therefore uses at most three kernel mappings (image, anonymous
//! read-write, `PROT_NONE` tail merged with the guard).
//!
//! Reset of a released slot with `accessible` bytes: `[0, keep_resident)`
//! is restored in place (the image's bytes copied back, zeroes after) and
//! stays resident and accessible; `[keep_resident, accessible)` is released
//! with `madvise(MADV_DONTNEED)` (which brings back the image's own pages)
//! and made `PROT_NONE`, through the [`DecommitQueue`].

use super::decommit::{DecommitQueue, Pending};
use super::index::{SlotIndex, Taken};
use super::metrics::Counters;
use crate::config::PoolingConfig;
use crate::layout::MemoryPlan;
use crate::memory::{MemoryEntry, MemoryOwner, restore_contents};
use crate::sys::{self, Mmap, SlotPtr};
use crate::{Error, MemoryImage, Resource, Result, WASM_PAGE_SIZE};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// What a free memory slot holds, carried through the free lists.
#[derive(Debug, Default)]
pub(crate) struct MemorySlotState {
    /// `[0, accessible)` is read-write.
    pub accessible: usize,
    /// The image mapped at the start of the slot, if any.
    pub image: Option<Arc<MemoryImage>>,
    /// A reset failed part-way: the slot must be remapped before reuse.
    pub needs_scrub: bool,
    /// Bytes kept resident by the last reset (for metrics).
    pub resident: usize,
}

impl MemorySlotState {
    fn affinity(&self) -> u64 {
        self.image.as_ref().map_or(0, |i| i.id())
    }
}

pub(crate) struct MemoryPool {
    slab: Mmap,
    pre_guard: usize,
    slot_size: usize,
    guard_size: usize,
    stride: usize,
    keep_resident: usize,
    total: u32,
    index: SlotIndex<MemorySlotState>,
    decommit: DecommitQueue,
    in_use: AtomicU32,
}

impl MemoryPool {
    pub fn new(config: &PoolingConfig, shards: usize) -> Result<MemoryPool> {
        let slot_size = config.max_memory_size;
        let guard_size = config.memory_guard_size;
        let pre_guard = if config.guard_before_memory {
            guard_size
        } else {
            0
        };
        let stride = slot_size.checked_add(guard_size);
        let total_len = stride
            .and_then(|s| s.checked_mul(config.total_memories as usize))
            .and_then(|t| t.checked_add(pre_guard));
        let (Some(stride), Some(total_len)) = (stride, total_len) else {
            return Err(Error::InvalidConfig(format!(
                "memory reservation overflows: total_memories ({}) x (max_memory_size ({slot_size}) + memory_guard_size ({guard_size}))",
                config.total_memories
            )));
        };
        let slab = Mmap::reserve(total_len).map_err(|e| {
            Error::InvalidConfig(format!(
                "cannot reserve {total_len} bytes for {} memory slots (max_memory_size {slot_size}, memory_guard_size {guard_size}): {e}",
                config.total_memories
            ))
        })?;
        Ok(MemoryPool {
            slab,
            pre_guard,
            slot_size,
            guard_size,
            stride,
            keep_resident: config.memory_keep_resident.min(slot_size),
            total: config.total_memories,
            index: SlotIndex::new(config.total_memories, shards, config.max_unused_warm_slots),
            decommit: DecommitQueue::new(config.decommit_batch_size),
            in_use: AtomicU32::new(0),
        })
    }

    /// Bytes a reset restores in place and keeps resident.
    pub fn keep_resident(&self) -> usize {
        self.keep_resident
    }

    /// Accessible bytes a slot can reach.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    fn base(&self, index: u32) -> SlotPtr {
        debug_assert!(index < self.total);
        // SAFETY: index < total, so the offset is inside the reservation
        // (its length is pre + total * stride).
        unsafe {
            self.slab
                .ptr()
                .add(self.pre_guard + index as usize * self.stride)
        }
    }

    /// Takes a slot for `plan`: the pool-wide count and a free slot (no
    /// syscall). Flushes pending resets and retries before reporting
    /// exhaustion.
    pub fn acquire(&self, plan: &MemoryPlan, counters: &Counters) -> Result<MemoryEntry> {
        let affinity = plan
            .image
            .as_ref()
            .filter(|i| i.is_mapped())
            .map_or(0, |i| i.id());
        let taken = match self.index.acquire(affinity) {
            Some(t) => t,
            None => {
                self.flush(counters);
                self.index.acquire(affinity).ok_or_else(|| {
                    counters.exhausted(Resource::Memory);
                    Error::PoolExhausted {
                        resource: Resource::Memory,
                        limit: self.total,
                    }
                })?
            }
        };
        self.in_use.fetch_add(1, Ordering::Relaxed);
        counters.acquired(Resource::Memory);
        let Taken { index, state } = taken;
        counters.resident_sub(state.resident);
        let page_cap = self.slot_size / WASM_PAGE_SIZE * WASM_PAGE_SIZE;
        Ok(MemoryEntry {
            base: self.base(index),
            size: 0,
            capacity: self.slot_size,
            guard: self.guard_size,
            maximum: plan.ty.declared_max_bytes().min(page_cap),
            accessible: state.accessible,
            plan: plan.clone(),
            owner: MemoryOwner::Pool {
                index,
                image: state.image,
                needs_scrub: state.needs_scrub,
            },
        })
    }

    /// Makes the slot hold `plan`'s image and exactly `size` accessible
    /// bytes. Only the work the slot's state requires is done: a warm slot
    /// with the same image and enough access needs no syscall at all.
    /// On error the entry still describes the slot truthfully, so release
    /// resets it.
    pub fn prepare(
        &self,
        entry: &mut MemoryEntry,
        plan: &MemoryPlan,
        size: usize,
        counters: &Counters,
    ) -> io::Result<()> {
        let MemoryOwner::Pool {
            image, needs_scrub, ..
        } = &mut entry.owner
        else {
            unreachable!("pool prepares pool memories only")
        };
        let base = entry.base;
        if *needs_scrub {
            // SAFETY: the slot is ours and nothing references its bytes.
            unsafe { sys::map_anonymous_none_fixed(base, self.slot_size)? };
            entry.accessible = 0;
            *image = None;
            *needs_scrub = false;
        }
        let want = plan.image.as_ref().filter(|i| i.is_mapped());
        let same = image.as_ref().map(|i| i.id()) == want.map(|i| i.id());
        if !same {
            // SAFETY: `[0, accessible)` is inside our slot, and no reference
            // into it exists while we hold the entry mutably.
            unsafe { sys::protect_none(base, entry.accessible)? };
            entry.accessible = 0;
            if let Some(old) = image {
                // SAFETY: the old image's mapping lies at the start of our
                // slot (it fit the minimum it was mapped for); unreferenced.
                unsafe { sys::map_anonymous_none_fixed(base, old.mapped_len())? };
                *image = None;
            }
            if let Some(new) = want {
                let fd = new.file().expect("mapped image has a file");
                // SAFETY: the image fits the layout's minimum (checked before
                // anything is taken), which fits the slot; unreferenced.
                unsafe { sys::map_file_private_fixed(base, new.mapped_len(), fd)? };
                *image = Some(new.clone());
                entry.accessible = new.mapped_len();
                counters.image_mapped();
            }
        } else if want.is_some() {
            counters.image_reused();
        }
        entry.resize(size)?;
        if let Some(img) = plan.image.as_ref().filter(|i| !i.is_mapped()) {
            // SAFETY: `[0, size)` is read-write and ours; the image fits in
            // the minimum (checked with the layout).
            unsafe {
                std::ptr::copy_nonoverlapping(img.bytes().as_ptr(), base.as_ptr(), img.len())
            };
            counters.image_copied();
        }
        Ok(())
    }

    /// Resets a released slot and returns it to the free lists (now, or
    /// after its batch is flushed).
    pub fn release(&self, entry: MemoryEntry, counters: &Counters) {
        let MemoryOwner::Pool {
            index,
            image,
            needs_scrub,
        } = entry.owner
        else {
            unreachable!("pool releases pool memories only")
        };
        if needs_scrub {
            // A failed reset left its protections unknown (an `mprotect` can
            // fail part-way), so writing to it could fault: leave it as it
            // is. It is remapped whole before anyone gets it again.
            let state = MemorySlotState {
                accessible: 0,
                image,
                needs_scrub,
                resident: 0,
            };
            self.in_use.fetch_sub(1, Ordering::Relaxed);
            return self.return_slot(index, state, counters);
        }
        let keep = self.keep_resident.min(entry.accessible);
        // SAFETY: the store is gone and the slot's state is known (not
        // `needs_scrub`), so `[0, accessible)` is read-write and unreferenced.
        unsafe { restore_contents(entry.base, 0, keep, image.as_deref()) };
        let mut state = MemorySlotState {
            accessible: entry.accessible,
            image,
            needs_scrub,
            resident: keep,
        };
        if entry.accessible > keep {
            state.accessible = keep;
            let pending = Pending {
                index,
                base: entry.base,
                from: keep,
                to: entry.accessible,
                state,
            };
            self.in_use.fetch_sub(1, Ordering::Relaxed);
            self.decommit
                .push(pending, |batch| self.finish(batch, counters));
        } else {
            // Not in use before it is free: in_use never exceeds the total.
            self.in_use.fetch_sub(1, Ordering::Relaxed);
            self.return_slot(index, state, counters);
        }
    }

    /// Runs any pending resets now.
    pub fn flush(&self, counters: &Counters) {
        self.decommit.flush(|batch| self.finish(batch, counters));
    }

    /// Issues a batch's syscalls (merged over neighbouring slots) and
    /// returns its slots.
    fn finish(&self, batch: Vec<Pending>, counters: &Counters) {
        for run in super::decommit::runs(batch, self.stride) {
            let failed = run.range().is_some_and(|(start, len)| {
                // SAFETY: the run covers only released slots (and the guards
                // between them), none referenced by anyone.
                unsafe {
                    sys::decommit(start, len)
                        .and_then(|()| sys::protect_none(start, len))
                        .is_err()
                }
            });
            for mut p in run.into_slots() {
                if failed {
                    self.scrub(&mut p);
                }
                self.return_slot(p.index, p.state, counters);
            }
        }
    }

    /// After a failed reset: remap the slot fresh, or mark it to be remapped
    /// before its next use. Either way its bytes never reach a tenant.
    fn scrub(&self, p: &mut Pending) {
        // SAFETY: the slot is released and unreferenced.
        match unsafe { sys::map_anonymous_none_fixed(p.base, self.slot_size) } {
            Ok(()) => p.state = MemorySlotState::default(),
            Err(_) => p.state.needs_scrub = true,
        }
    }

    fn return_slot(&self, index: u32, state: MemorySlotState, counters: &Counters) {
        counters.resident_add(state.resident);
        self.index.release(index, state.affinity(), state);
    }

    pub fn in_use(&self) -> u32 {
        self.in_use.load(Ordering::Relaxed)
    }

    pub fn unused_warm(&self) -> u32 {
        self.index.unused_warm()
    }

    pub fn queued(&self) -> usize {
        self.decommit.len()
    }
}

impl Drop for MemoryPool {
    fn drop(&mut self) {
        // Pending slots hold image references; let them go with the slab.
        self.decommit.flush(|_| {});
    }
}
