//! What happens to a memory slot after its tenant: [`Released`], the
//! queue entry [`Queued`] waiting for its batch, the syscalls that revoke a
//! batch, and [`Parked`], what a free slot keeps.

use super::memory::{MemorySlot, SlotMode};
use crate::MemoryImage;
use crate::layout::MemoryPlan;
use crate::sys::{self, SlotPtr};
use std::io;
use std::sync::Arc;

/// What a free pool slot keeps while it waits in the free lists.
#[derive(Debug, Default)]
pub(crate) struct Parked {
    pub(super) accessible: usize,
    pub(super) rw: usize,
    pub(super) image: Option<Arc<MemoryImage>>,
    pub(super) needs_scrub: bool,
    /// Bytes the last reset kept resident (for metrics).
    pub resident: usize,
}

impl Parked {
    /// The image this slot holds mapped, if any: its key for affinity.
    pub fn affinity(&self) -> Option<u64> {
        self.image.as_ref().map(|i| i.id())
    }
}

/// A released slot, after the part it keeps resident was restored.
#[derive(Debug)]
pub(crate) enum Released {
    /// Nothing left to revoke: free now.
    Ready(u32, Parked),
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
    /// The slot's number in its slab.
    pub fn index(&self) -> u32 {
        self.slot.index
    }

    /// The slot's byte 0.
    pub fn base(&self) -> SlotPtr {
        self.slot.base
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
    pub fn finish(mut self, ok: bool) -> (u32, Parked) {
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
        (self.slot.index, self.slot.park(resident))
    }
}

/// Discards the pages of `[start, start + len)` and makes it `PROT_NONE`:
/// what a batch of released slots needs, over one merged range.
///
/// # Safety
/// The range covers only released slots (and the guards between them)
/// of one reservation, none of them referenced by anyone.
pub(crate) unsafe fn revoke(start: SlotPtr, len: usize) -> io::Result<()> {
    // SAFETY: the caller owns the range and nothing references it.
    unsafe { sys::decommit(start, len).and_then(|()| sys::protect_none(start, len)) }
}

/// Revokes released slots that use guard markers: discards the pages of
/// every `discard` range (one `process_madvise`, one TLB flush, where the
/// kernel has it), then marks every `mark` range, now empty, which needs no
/// flush. A lone range that is marked whole is one `MADV_GUARD_INSTALL`,
/// which discards as it marks.
///
/// # Safety
/// Each range lies inside a released slot of the caller's, unreferenced.
pub(crate) unsafe fn revoke_marked(
    discard: &[(SlotPtr, usize)],
    mark: &[(SlotPtr, usize)],
    batched: bool,
) -> io::Result<()> {
    use sys::RangeAdvice::*;
    let marks_all = discard.len() == 1 && mark.len() == 1 && discard[0] == mark[0];
    // SAFETY: the caller's promise.
    unsafe {
        if !marks_all {
            sys::madvise_ranges(discard, DontNeed, batched)?;
        }
        sys::madvise_ranges(mark, GuardInstall, batched)
    }
}

impl MemorySlot {
    /// A slot of a pool's slab at `base`, as it was parked.
    pub fn in_slab(
        base: SlotPtr,
        capacity: usize,
        guard: usize,
        index: u32,
        p: Parked,
        mode: SlotMode,
        lead: usize,
    ) -> Self {
        MemorySlot {
            base,
            capacity,
            guard,
            size: 0,
            accessible: p.accessible,
            rw: p.rw,
            mode,
            lead,
            image: p.image,
            needs_scrub: p.needs_scrub,
            index,
            _reservation: None,
        }
    }

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
            return Released::Ready(self.index, self.park(0));
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
            Released::Ready(self.index, self.park(keep))
        }
    }

    /// What a pool keeps of a free slot.
    pub(super) fn park(self, resident: usize) -> Parked {
        Parked {
            accessible: self.accessible,
            rw: self.rw,
            image: self.image,
            needs_scrub: self.needs_scrub,
            resident,
        }
    }
}
