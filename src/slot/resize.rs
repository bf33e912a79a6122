//! Growing and shrinking a [`MemorySlot`]: its size and what is
//! accessible, on each protection (see [`SlotMode`]).

use super::memory::MemorySlot;
#[cfg(doc)]
use super::memory::SlotMode;
use crate::sys;
use std::io;

impl MemorySlot {
    /// Sets the accessible part to `[0, size)` and the size to `size`.
    ///
    /// With `mprotect`: adding access is one call without a TLB shootdown,
    /// removing it one with, both under the mmap lock taken for writing.
    /// With guard markers: growing within the part tenants reached before
    /// removes markers (the mmap lock taken for reading, no new mapping);
    /// only growing past it widens the read-write part, once per high
    /// water. A shrink that fails leaves protections unknown: the slot then
    /// needs a scrub before anything writes to it.
    ///
    /// With [`SlotMode::checked`] the slot is open to its capacity: only the
    /// size changes, no syscall.
    pub fn resize(&mut self, size: usize) -> io::Result<()> {
        debug_assert!(size <= self.capacity);
        if self.mode.checked && self.accessible == self.capacity {
            self.size = size;
            self.high = self.high.max(size);
            return Ok(());
        }
        let result = if size >= self.accessible {
            self.widen(size)
        } else {
            // SAFETY: `[size, accessible)` lies inside this slot; `&mut self`
            // excludes any slice past `size`.
            let r = unsafe {
                if self.mode.markers {
                    sys::guard_install(self.base.add(size), self.accessible - size)
                } else {
                    sys::protect_none(self.base.add(size), self.accessible - size)
                }
            };
            if r.is_err() {
                self.needs_scrub = true;
            } else if !self.mode.markers {
                self.rw = size;
            }
            r
        };
        result?;
        self.accessible = size;
        self.size = size;
        self.high = self.high.max(size);
        Ok(())
    }

    /// Opens `[accessible, size)`. On error nothing past the size is left
    /// open: markers removed on the way are installed again and a part
    /// `mprotect` opened is closed again, or else the slot needs a scrub.
    pub(super) fn widen(&mut self, size: usize) -> io::Result<()> {
        let unmark_to = size.min(self.rw).max(self.accessible);
        let mut unmarked = None;
        if self.mode.markers && unmark_to > self.accessible {
            let (from, len) = (self.accessible, unmark_to - self.accessible);
            // SAFETY: `[from, from + len)` is inside this slot's read-write
            // part; removing markers invalidates no reference.
            if let Err(e) = unsafe { sys::guard_remove(self.base.add(from), len) } {
                self.close_again(from, len, false);
                return Err(e);
            }
            unmarked = Some((from, len));
        }
        let open_from = self.rw.max(self.accessible);
        if size > open_from {
            // SAFETY: `[open_from, size)` lies inside this slot (size <=
            // capacity); widening access invalidates no reference.
            let opened =
                unsafe { sys::protect_read_write(self.base.add(open_from), size - open_from) };
            if let Err(e) = opened {
                // A failed mprotect may have changed part of its range.
                self.close_again(open_from, size - open_from, true);
                if let Some((from, len)) = unmarked {
                    self.close_again(from, len, false);
                }
                return Err(e);
            }
            self.rw = size;
        }
        Ok(())
    }

    /// After a failed widening: makes `[from, from + len)` fault again
    /// (`PROT_NONE` when `protect`, else guard markers), or marks the slot
    /// as needing a scrub, so that it reaches nobody before it is remapped.
    fn close_again(&mut self, from: usize, len: usize, protect: bool) {
        // SAFETY: the range lies inside this slot, past its size: nothing
        // references it.
        let closed = unsafe {
            if protect {
                sys::protect_none(self.base.add(from), len)
            } else {
                sys::guard_install(self.base.add(from), len)
            }
        };
        if closed.is_err() {
            self.needs_scrub = true;
        }
    }
}
