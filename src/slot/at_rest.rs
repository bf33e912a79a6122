//! A memory slot at rest: given up by its tenant ([`MemorySlot::release`]),
//! [`Released`] now or [`Queued`] for its batch's revocation, then parked
//! ([`Parked`]) until its next tenant.

use super::memory::{MemorySlot, Parked};
use crate::MemoryType;
use crate::sys::{Claim, SlotPtr};

/// A released slot, after the part it keeps resident was restored.
#[derive(Debug)]
pub(crate) enum Released {
    /// Nothing left to revoke: free now.
    Ready(Claim, Parked),
    /// Pages still to discard, and maybe a tail to make fault: see
    /// [`Queued`].
    Revoke(Queued),
}

/// A released slot waiting for its batch's revocation
/// ([`revoke_marked`](super::revoke_marked),
/// [`revoke_protected`](super::revoke_protected)): the pages it
/// populated in `[keep, open)` are discarded (`written`: the next instance
/// of the same layout reaches that part anyway, so it stays accessible, and
/// what nobody wrote is left alone, an image's file pages above all), and
/// the tail `[open, to)` past the layout's minimum is discarded and made to
/// fault (marked, or `PROT_NONE`).
#[derive(Debug)]
pub(crate) struct Queued {
    pub(super) slot: MemorySlot,
    pub(super) keep: usize,
    pub(super) open: usize,
    /// Runs `(offset, len)` of `[keep, open)` to discard.
    pub(super) written: Vec<(usize, usize)>,
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

    /// Where the tail to make fault starts.
    pub fn from(&self) -> usize {
        self.open
    }

    /// Where the tail to make fault ends: with
    /// [`SlotMode::checked`](super::SlotMode::checked) there is none.
    pub fn to(&self) -> usize {
        if self.slot.mode.checked {
            self.open
        } else {
            self.slot.accessible
        }
    }

    /// Runs before the tail to discard only.
    pub fn written(&self) -> &[(usize, usize)] {
        &self.written
    }

    /// Bytes the revocation discards: the written runs and the tail (all
    /// of it, populated or not: an upper bound of what the slot holds
    /// resident until then).
    pub fn held_bytes(&self) -> usize {
        let runs: usize = self.written.iter().map(|&(_, len)| len).sum();
        runs + (self.to() - self.from())
    }

    /// The batch holding this slot was revoked (`ok`), or failed: then the
    /// slot is scrubbed. Either way it can be handed out again.
    pub fn finish(mut self, ok: bool) -> (Claim, Parked) {
        if ok && self.slot.mode.checked {
            // Open to the capacity still: nothing was made to fault.
        } else if ok {
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
    /// With guard markers at most the memory's minimum (`min`): markers cannot keep a
    /// page resident while making it fault, as `PROT_NONE` does, so what
    /// the next instance of the same layout could not reach is revoked. With
    /// [`SlotMode::checked`](super::SlotMode::checked) nothing is made to
    /// fault, so all of `keep_resident` is kept.
    pub(super) fn kept(&self, keep_resident: usize, min: usize) -> usize {
        let keep = keep_resident.min(self.accessible);
        if self.mode.markers && !self.mode.checked {
            keep.min(min)
        } else {
            keep
        }
    }

    /// Gives the slot up: restores its first `keep_resident` bytes in place
    /// (see [`kept`](Self::kept) for the part of `ty`'s minimum) and says what is left to
    /// revoke. A slot that needs a scrub is left untouched (writing to it
    /// could fault); it is remapped before reuse.
    pub fn release(mut self, keep_resident: usize, ty: &MemoryType) -> Released {
        if self.needs_scrub {
            self.accessible = 0;
            let (claim, parked) = self.park(0);
            return Released::Ready(claim, parked);
        }
        let keep = self.kept(keep_resident, ty.min_bytes());
        // What the next instance of this layout reaches anyway stays
        // accessible, only its populated pages discarded: making it fault
        // costs a page-table entry a page with markers, and with `mprotect`
        // a TLB flush now and a widening at the next instantiation, and an
        // image's pages would be faulted in again by every tenant.
        //
        // With `checked` the slot stays open to its capacity, and the tenant
        // reached no further than its largest size: only that much is
        // scanned (the rest of `keep` is as the last reset left it), pages
        // it wrote past `keep` are discarded, nothing is made to fault.
        let (written, open) = if self.mode.checked {
            let reached = self.high.min(self.accessible);
            (self.restore_and_find(keep.min(reached), reached), reached)
        } else {
            let open = ty.min_bytes().min(self.accessible).max(keep);
            (self.restore_and_find(keep, open), open)
        };
        if written.is_empty() && (self.mode.checked || open >= self.accessible) {
            let (claim, parked) = self.park(keep);
            return Released::Ready(claim, parked);
        }
        Released::Revoke(Queued {
            slot: self,
            keep,
            open,
            written,
        })
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
