//! [`StackSlot`]: one fiber stack of a stack pool, `guard | stack`, used
//! from its top down.

use crate::sys::{self, Claim, SlotPtr};

/// One stack: `size` read-write bytes above `bottom`, and a guard below
/// `bottom` that faults, so a stack overflow is a fault, never another
/// stack's bytes.
#[derive(Debug)]
pub(crate) struct StackSlot {
    /// `guard | stack` of a stack slab, from the claim's base.
    claim: Claim,
    bottom: SlotPtr,
    guard: usize,
    size: usize,
}

impl StackSlot {
    /// A slot of a stack slab: `guard` bytes, then the stack's `size`.
    /// Usable once [`prepare`](Self::prepare)d (at its first use; the pool
    /// keeps free stacks zero).
    ///
    /// # Panics
    /// If the claim's slot is smaller than `guard + size`.
    pub fn in_slab(claim: Claim, guard: usize, size: usize) -> Self {
        assert!(
            guard.checked_add(size) <= Some(claim.len()),
            "stack larger than its claim"
        );
        // SAFETY: `guard` lies inside the claim's slot.
        let bottom = unsafe { claim.base().add(guard) };
        StackSlot {
            claim,
            bottom,
            guard,
            size,
        }
    }

    /// A stack's first use: its guard marked (`markers`: the slab is
    /// read-write) or its stack made read-write (the slab is `PROT_NONE`).
    pub fn prepare(&mut self, markers: bool) -> std::io::Result<()> {
        // SAFETY: the guard and the stack are this slot's own part of the
        // slab, never used before, referenced by nobody.
        unsafe {
            if markers {
                sys::guard_install(self.claim.base(), self.guard)
            } else {
                sys::protect_read_write(self.bottom, self.size)
            }
        }
    }

    /// The claim to give back to the slab.
    pub fn into_claim(self) -> Claim {
        self.claim
    }

    /// The lowest usable byte.
    pub fn bottom(&self) -> *mut u8 {
        self.bottom.as_ptr()
    }

    /// One past the highest usable byte: where a stack pointer starts.
    pub fn top(&self) -> *mut u8 {
        self.bottom.as_ptr().wrapping_add(self.size)
    }

    /// Usable bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Makes the stack read as zeroes again: its top `keep_resident` bytes
    /// (where a stack is used first) with `memset`, staying resident; the
    /// rest discarded with `madvise` (zeroed with writes if that fails).
    /// Returns the bytes kept resident.
    pub fn reset(&mut self, keep_resident: usize) -> usize {
        let keep = keep_resident.min(self.size);
        let rest = self.size - keep;
        // SAFETY: `[bottom, bottom + size)` is read-write and this slot's
        // alone (`&mut self`); nothing references it while it is reset.
        unsafe {
            std::ptr::write_bytes(self.bottom.as_ptr().add(rest), 0, keep);
            if rest > 0 && sys::decommit(self.bottom, rest).is_err() {
                std::ptr::write_bytes(self.bottom.as_ptr(), 0, rest);
            }
        }
        keep
    }
}
