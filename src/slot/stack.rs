//! [`StackSlot`]: one fiber stack of a stack pool, `guard | stack`, used
//! from its top down.

use crate::sys::{self, SlotPtr};

/// One stack: `size` read-write bytes above `bottom`, and a guard below
/// `bottom` that faults, so a stack overflow is a fault, never another
/// stack's bytes.
#[derive(Debug)]
pub(crate) struct StackSlot {
    bottom: SlotPtr,
    size: usize,
    index: u32,
}

impl StackSlot {
    /// Slot `index` of a stack slab.
    ///
    /// # Safety
    /// `[bottom, bottom + size)` is read-write, belongs to this slot alone
    /// until it is released, and holds nothing another user wrote.
    pub unsafe fn in_slab(bottom: SlotPtr, size: usize, index: u32) -> Self {
        StackSlot {
            bottom,
            size,
            index,
        }
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

    /// The slot's number in its slab.
    pub fn index(&self) -> u32 {
        self.index
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
