//! A memory slot at rest: given up by its tenant ([`MemorySlot::release`]),
//! [`Released`] now or [`Queued`] for its batch's revocation, then parked
//! ([`Parked`]) until its next tenant.

use super::memory::{MemorySlot, Parked};
use crate::layout::MemoryPlan;
use crate::sys::{Claim, SlotPtr};

/// A released slot, after the part it keeps resident was restored.
#[derive(Debug)]
pub(crate) enum Released {
    /// Nothing left to revoke: free now.
    Ready(Claim, Parked),
    /// `[from, to)` must still be discarded and made `PROT_NONE`.
    Revoke(Queued),
}

/// A released slot waiting for [`revoke`] over `[from(), to())`.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(super) slot: MemorySlot,
    pub(super) keep: usize,
    /// With guard markers: `[keep, open)` is only discarded (the next
    /// instance of the same layout reaches it anyway), `[open, to)` also
    /// marked. Without: `keep`.
    pub(super) open: usize,
}

impl Queued {
    /// The slot's byte 0.
    pub fn base(&self) -> SlotPtr {
        self.slot.base
    }

    /// The address `offset` bytes into the slot.
    ///
    /// # Panics
    /// If `offset` is past the slot's capacity.
    pub fn at(&self, offset: usize) -> SlotPtr {
        assert!(offset <= self.slot.capacity);
        // SAFETY: inside the slot (or one past its end, its guard's start).
        unsafe { self.slot.base.add(offset) }
    }

    /// Bytes from the slot's byte 0 to the end of its trailing guard.
    pub fn capacity_and_guard(&self) -> usize {
        self.slot.capacity + self.slot.guard
    }

    /// Offset where the range to revoke starts.
    pub fn from(&self) -> usize {
        self.keep
    }

    /// Offset where the range to revoke ends.
    pub fn to(&self) -> usize {
        self.slot.accessible
    }

    /// Offset where guard markers start (with guard markers only).
    pub fn mark_from(&self) -> usize {
        self.open
    }

    /// The batch holding this slot was revoked (`ok`), or failed: then the
    /// slot is scrubbed. Either way it can be handed out again.
    pub fn finish(mut self, ok: bool) -> (Claim, Parked) {
        if ok {
            self.slot.accessible = self.open;
            if !self.slot.mode.markers {
                self.slot.rw = self.open;
            }
        } else {
            self.slot.scrub();
        }
        // A scrubbed slot is fresh; one whose scrub failed still holds its
        // restored pages.
        let resident = if ok || self.slot.needs_scrub {
            self.keep
        } else {
            0
        };
        self.slot.park(resident)
    }
}

impl MemorySlot {
    /// Bytes of `[0, accessible)` a reset restores in place and keeps.
    ///
    /// With guard markers at most `plan`'s minimum: markers cannot keep a
    /// page resident while making it fault, as `PROT_NONE` does, so what
    /// the next instance of the same layout could not reach is revoked.
    pub(super) fn kept(&self, keep_resident: usize, plan: &MemoryPlan) -> usize {
        let keep = keep_resident.min(self.accessible);
        if self.mode.markers {
            keep.min(plan.ty.min_bytes())
        } else {
            keep
        }
    }

    /// Gives the slot up: restores its first `keep_resident` bytes in place
    /// (see [`kept`](Self::kept) for `plan`'s part) and says what is left to
    /// revoke. A slot that needs a scrub is left untouched (writing to it
    /// could fault); it is remapped before reuse.
    pub fn release(mut self, keep_resident: usize, plan: &MemoryPlan) -> Released {
        if self.needs_scrub {
            self.accessible = 0;
            let (claim, parked) = self.park(0);
            return Released::Ready(claim, parked);
        }
        let keep = self.kept(keep_resident, plan);
        self.restore(0, keep);
        if self.accessible > keep {
            // With markers, what the next instance of this layout reaches
            // anyway is only discarded, not marked: marking costs a
            // page-table entry per page, and an image's whole minimum would
            // be marked and unmarked again on every cycle.
            let open = if self.mode.markers {
                plan.ty.min_bytes().min(self.accessible).max(keep)
            } else {
                keep
            };
            Released::Revoke(Queued {
                slot: self,
                keep,
                open,
            })
        } else {
            let (claim, parked) = self.park(keep);
            Released::Ready(claim, parked)
        }
    }

    /// What a pool keeps of a free slot, and the claim to give back to
    /// its slab.
    pub(super) fn park(self, resident: usize) -> (Claim, Parked) {
        let claim = self.claim.expect("only a pool's slots are released");
        let parked = Parked {
            accessible: self.accessible,
            rw: self.rw,
            image: self.image,
            needs_scrub: self.needs_scrub,
            resident,
        };
        (claim, parked)
    }
}
