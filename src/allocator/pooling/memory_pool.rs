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
//! and made `PROT_NONE`, through the [`DecommitQueue`]. What is done to a
//! slot is [`MemorySlot`]'s business; this file decides where slots are and
//! which one a tenant gets.

use super::background::{How, Revoker};
use super::decommit::DecommitQueue;
use super::index::{SlotIndex, Taken};
use super::metrics::Counters;
use crate::config::{MemoryLayout, MemoryProtection, PoolingConfig};
use crate::layout::MemoryPlan;
use crate::slot::{MemorySlot, Parked, Queued, Released, SlotMode};
use crate::sys::{self, Claim, Slab};
use crate::{Error, MemoryType, Resource, Result, WASM_PAGE_SIZE};

pub(crate) struct MemoryPool {
    slab: Slab,
    pre_guard: usize,
    slot_size: usize,
    guard_size: usize,
    keep_resident: usize,
    total: u32,
    index: SlotIndex<Parked>,
    decommit: DecommitQueue,
    /// How every slot is protected and reset.
    mode: SlotMode,
    /// Batches' discards go through `process_madvise` (batches of more
    /// than one slot, where the kernel has it).
    batched: bool,
    /// The thread full batches go to (`background_revocation`).
    revoker: Option<Revoker>,
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
        let dense = config.memory_layout == MemoryLayout::Dense;
        let count = config.total_memories;
        let slab = super::reserve_slab(count, pre_guard, slot_size, guard_size, dense, || {
            format!(
                "{count} memory slots: total_memories ({count}) x (max_memory_size ({slot_size}) + memory_guard_size ({guard_size}))"
            )
        })?;
        let checked = config.memory_protection == MemoryProtection::BoundsChecked;
        let markers = dense
            || config
                .memory_protection
                .markers(sys::features().guard_markers);
        let mode = SlotMode {
            markers,
            dense,
            dirty_scan: config.dirty_page_scan && sys::features().pagemap_scan,
            checked,
        };
        let mut pool = MemoryPool {
            slab,
            pre_guard,
            slot_size,
            guard_size,
            keep_resident: config.memory_keep_resident.min(slot_size),
            total: config.total_memories,
            index: SlotIndex::new(config.total_memories, shards, config.max_unused_warm_slots),
            decommit: DecommitQueue::new(config.decommit_batch_size, shards),
            mode,
            batched: config.decommit_batch_size > 1 && sys::features().process_madvise,
            revoker: None,
        };
        if config.background_revocation {
            pool.revoker = Revoker::start(pool.how());
        }
        Ok(pool)
    }

    /// The protection in force (never `Auto`).
    pub fn protection(&self) -> MemoryProtection {
        if self.mode.checked {
            MemoryProtection::BoundsChecked
        } else if self.mode.markers {
            MemoryProtection::GuardMarkers
        } else {
            MemoryProtection::Mprotect
        }
    }

    /// Whether batches go through `process_madvise`.
    pub fn batched(&self) -> bool {
        self.batched
    }

    /// Whether full batches are revoked on the pool's own thread.
    pub fn background(&self) -> bool {
        self.revoker.is_some()
    }

    /// The layout of the slab.
    pub fn layout(&self) -> MemoryLayout {
        if self.mode.dense {
            MemoryLayout::Dense
        } else {
            MemoryLayout::Guarded
        }
    }

    /// Whether resets write back only written pages.
    pub fn dirty_scan(&self) -> bool {
        self.mode.dirty_scan
    }

    /// Bytes a reset restores in place and keeps resident.
    pub fn keep_resident(&self) -> usize {
        self.keep_resident
    }

    /// Accessible bytes a slot can reach.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Takes a slot for `plan`: the pool-wide count and a free slot (no
    /// syscall). Flushes pending resets and retries before reporting
    /// exhaustion. Returns the slot and the maximum the limiter sees.
    pub fn acquire(&self, plan: &MemoryPlan, counters: &Counters) -> Result<(MemorySlot, usize)> {
        let affinity = plan
            .image
            .as_ref()
            .filter(|i| i.is_mapped())
            .map(|i| i.id());
        let taken = loop {
            let empty = match self.index.acquire(affinity) {
                Ok(t) => break t,
                Err(empty) => empty,
            };
            // Free what the background thread revoked, or revoke what is
            // queued ourselves (now, not behind the thread), and try again.
            if self.take_done(counters) || self.flush_here(counters) {
                continue;
            }
            // Nothing queued: every slot was held when the index looked,
            // or on its way back (a store's release, or a batch another
            // thread is revoking, has made it no longer held). Exhaustion
            // is exact: only when every slot is held.
            // In a forked child, slots the parent's revoker held at the fork
            // never come back.
            let lost = self.revoker.as_ref().map_or(0, |r| r.lost()) as u32;
            if empty.in_use.saturating_add(lost) >= self.total {
                counters.exhausted(Resource::Memory);
                return Err(Error::PoolExhausted {
                    resource: Resource::Memory,
                    limit: self.total,
                });
            }
            std::thread::yield_now();
        };
        counters.acquired(Resource::Memory);
        let Taken { index, state } = taken;
        counters.resident_sub(state.resident);
        let page_cap = self.slot_size / WASM_PAGE_SIZE * WASM_PAGE_SIZE;
        let slot = MemorySlot::in_slab(
            self.slab.claim(index),
            self.slot_size,
            self.guard_size,
            state,
            self.mode,
            // The leading guard: the pre-guard for slot 0, else the
            // previous slot's trailing guard.
            if index == 0 {
                self.pre_guard
            } else {
                self.guard_size
            },
        );
        Ok((slot, plan.ty.declared_max_bytes().min(page_cap)))
    }

    /// Resets a released slot and returns it to the free lists (now, or
    /// after its batch is revoked).
    pub fn release(&self, slot: MemorySlot, ty: &MemoryType, counters: &Counters) {
        let released = slot.release(self.keep_resident, ty);
        // Not held before it is free: held slots never exceed the total.
        self.index.unhold();
        match released {
            Released::Ready(claim, parked) => self.return_slot(claim, parked, counters),
            Released::Revoke(queued) => {
                // Batches shrink as the pool fills: with half as many slots
                // free as queued, revoke now, so that acquisitions rarely
                // find only queued slots (and pay for the revocation).
                // (An estimate from this thread's shard: the exact sum
                // reads every core's line.)
                let limit = self.index.free_estimate() as usize / 2;
                self.decommit
                    .push(queued, limit, |batch| self.finish(batch, counters))
            }
        }
        self.take_done(counters);
    }

    /// Runs any pending resets now, and waits for the batches in flight on
    /// the background thread; whether there were any.
    pub fn flush(&self, counters: &Counters) -> bool {
        let mut any = self.flush_here(counters);
        if let Some(r) = &self.revoker {
            while r.in_flight() > r.lost() {
                any = true;
                std::thread::yield_now();
            }
        }
        self.take_done(counters) || any
    }

    /// Revokes what is queued in this thread; whether anything was.
    fn flush_here(&self, counters: &Counters) -> bool {
        self.decommit
            .flush(|batch| self.revoke_here(batch, counters))
    }

    /// Revokes a full batch: on the background thread if there is one and
    /// the pool has slack for it, else here. Slack: at least twice as many
    /// free slots as will be in flight, as for queueing (see `release`),
    /// so that acquisitions rarely run dry waiting for the thread (it is
    /// woken, and that costs more than a revocation on a small pool).
    fn finish(&self, batch: Vec<Queued>, counters: &Counters) {
        let batch = match &self.revoker {
            Some(r) if (r.in_flight() + batch.len()) * 2 <= self.index.free() as usize => {
                match r.send(batch) {
                    Ok(()) => return,
                    Err(batch) => batch,
                }
            }
            _ => batch,
        };
        self.revoke_here(batch, counters);
    }

    /// Revokes a batch and returns its slots; a failed revocation's slots
    /// are scrubbed.
    fn revoke_here(&self, batch: Vec<Queued>, counters: &Counters) {
        self.how().revoke(batch, |claim, parked| {
            self.return_slot(claim, parked, counters)
        });
    }

    fn how(&self) -> How {
        // Without tails (`checked`) a batch only discards: the marked path
        // does no more.
        How {
            marked: self.mode.markers || self.mode.checked,
            batched: self.batched,
        }
    }

    /// Frees the slots the background thread revoked; whether there were
    /// any.
    fn take_done(&self, counters: &Counters) -> bool {
        let Some(r) = &self.revoker else {
            return false;
        };
        let done = r.take_done();
        let any = !done.is_empty();
        for (claim, parked) in done {
            self.return_slot(claim, parked, counters);
        }
        any
    }

    fn return_slot(&self, claim: Claim, parked: Parked, counters: &Counters) {
        counters.resident_add(parked.resident);
        let index = claim.index();
        // Unclaimed before it is free: the next acquisition claims it.
        self.slab.unclaim(claim);
        self.index.put_back(index, parked.affinity(), parked);
    }

    pub fn in_use(&self) -> u32 {
        self.index.in_use()
    }

    pub fn unused_warm(&self) -> u32 {
        self.index.unused_warm()
    }

    /// Released slots not yet free: queued, or in a batch on the
    /// background thread.
    pub fn queued(&self) -> usize {
        self.decommit.len() + self.revoker.as_ref().map_or(0, |r| r.in_flight())
    }
}

impl Drop for MemoryPool {
    fn drop(&mut self) {
        // The thread ends before the slab goes: none of its syscalls may
        // reach the slab's range once unmapped (or mapped again by
        // someone else).
        if let Some(r) = &mut self.revoker {
            r.stop();
            drop(r.take_done());
        }
        // Pending slots hold image references; let them go with the slab.
        self.decommit.flush(|_| {});
    }
}
