//! Resets in place: writing back what a fresh slot holds, only where a
//! tenant wrote when the kernel can tell.

use super::memory::MemorySlot;
use crate::layout::MemoryPlan;
use crate::sys;
use std::cell::RefCell;
use std::io;

thread_local! {
    /// Runs of written pages, reused by every reset on this thread.
    static WRITTEN: RefCell<sys::WrittenPages> = RefCell::default();
}

/// Below this many bytes a reset writes the whole range: cheaper than
/// asking the kernel which pages were written.
const SCAN_MIN: usize = 64 << 10;

impl MemorySlot {
    /// Back to what `plan`'s instantiation left, in place: `[0, minimum)`
    /// holds the image then zeroes, and only that much is accessible. The
    /// first `keep_resident` bytes are restored with writes and stay
    /// resident; the rest is discarded with `madvise` (which brings a mapped
    /// image's pages back).
    pub fn reset(&mut self, plan: &MemoryPlan, keep_resident: usize) -> io::Result<()> {
        if self.needs_scrub {
            // An earlier failure left protections unknown: nothing may be
            // written before the slot is remapped, and prepared afresh.
            self.size = 0;
            return self.prepare(plan, plan.ty.min_bytes()).map(drop);
        }
        let keep = self.kept(keep_resident, plan.ty.min_bytes());
        // With `checked` the slot stays open to its capacity, and the tenant
        // reached no further than its largest size: the rest is as the last
        // reset left it (as at a release).
        let end = if self.mode.checked {
            self.high.min(self.accessible)
        } else {
            self.accessible
        };
        self.restore(0, keep.min(end));
        if end > keep {
            // SAFETY: `[keep, end)` is read-write and ours; `&mut self`
            // excludes any slice into it.
            let discarded = unsafe { sys::decommit(self.base.add(keep), end - keep) };
            if discarded.is_err() {
                self.restore(keep, end);
            }
        }
        // A new tenancy, in place: what it reaches starts at the minimum.
        self.high = 0;
        // The image first, while its bytes are accessible whatever the
        // shrink below does.
        if let Some(img) = plan.image.as_ref().filter(|i| self.copies(i)) {
            self.bytes_mut()[..img.len()].copy_from_slice(img.bytes());
        }
        self.resize(plan.ty.min_bytes())
    }

    /// Puts back what a fresh slot holds in `[from, to)`: the mapped image's
    /// bytes where it covers, zeroes after.
    ///
    /// Only pages the tenant wrote are written back, where that is known
    /// ([`SlotMode::dirty_scan`]: `PAGEMAP_SCAN` reports anonymous pages
    /// present or swapped out, never the file's own pages): an image page
    /// nobody wrote stays the shared page of the image's file. Without the
    /// scan, or if it fails, the image's part is discarded with `madvise`
    /// (which brings the file's pages back) and the rest set to zero.
    pub(super) fn restore(&mut self, from: usize, to: usize) {
        if from >= to {
            return;
        }
        debug_assert!(to <= self.accessible && !self.needs_scrub);
        let mapped_end = self
            .image
            .as_ref()
            .map_or(0, |i| i.mapped_len())
            .clamp(from, to);
        if self.mode.dirty_scan && (mapped_end > from || to - from > SCAN_MIN) {
            let scanned = self.scan(from, to, |slot, off, len| slot.write_back(off, off + len));
            if scanned.is_ok() {
                return;
            }
        }
        if mapped_end > from {
            // SAFETY: `[from, mapped_end)` is the read-write image mapping of
            // this slot; `&mut self` excludes any reference into it.
            let discarded = unsafe { sys::decommit(self.base.add(from), mapped_end - from) };
            if discarded.is_err() {
                self.write_back(from, mapped_end);
            }
        }
        self.write_back(mapped_end, to);
    }

    /// Restores `[0, keep)` ([`restore`](Self::restore)) and returns the
    /// runs `(offset, len)` of `[keep, open)` whose pages the tenant
    /// populated, to discard (all of it when the kernel cannot tell): with
    /// one `PAGEMAP_SCAN` over `[0, open)` where the kernel has it.
    pub(super) fn restore_and_find(&mut self, keep: usize, open: usize) -> Vec<(usize, usize)> {
        let mut runs = Vec::new();
        if self.mode.dirty_scan && open > keep {
            let scanned = self.scan(0, open, |slot, off, len| {
                if off < keep {
                    slot.write_back(off, (off + len).min(keep));
                }
                let (from, to) = (off.max(keep), off + len);
                if to > from {
                    runs.push((from, to - from));
                }
            });
            if scanned.is_ok() {
                return runs;
            }
            runs.clear();
        }
        self.restore(0, keep);
        if open > keep {
            runs.push((keep, open - keep));
        }
        runs
    }

    /// Calls `found(self, offset, len)` for each run of `[from, to)` the tenant
    /// wrote, offsets from byte 0, in order (`PAGEMAP_SCAN`).
    fn scan(
        &mut self,
        from: usize,
        to: usize,
        mut found: impl FnMut(&mut Self, usize, usize),
    ) -> io::Result<()> {
        let mut scan = |written: &mut sys::WrittenPages| {
            // SAFETY: `from < to <= accessible <= capacity`.
            let r = sys::written_pages(unsafe { self.base.add(from) }, to - from, written);
            if r.is_ok() {
                for &(off, len) in &written.runs {
                    found(self, from + off, len.min(to - from - off));
                }
            }
            r
        };
        // During thread exit (a store kept in a `thread_local!` and dropped
        // there) this thread's buffer may be gone already: `with` would
        // abort the process, so scan into a fresh one.
        WRITTEN
            .try_with(|w| scan(&mut w.borrow_mut()))
            .unwrap_or_else(|_| scan(&mut sys::WrittenPages::default()))
    }

    /// Writes the image's bytes over `[from, to)` where it covers, zeroes
    /// after. No syscall.
    fn write_back(&mut self, from: usize, to: usize) {
        if from >= to {
            return;
        }
        // SAFETY: `[0, accessible)` is read-write (the slot is not waiting
        // for a scrub) and `&mut self` excludes any reference into it.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), to) };
        let src = self.image.as_ref().map_or(&[][..], |i| i.bytes());
        let copy_end = src.len().clamp(from, to);
        if copy_end > from {
            bytes[from..copy_end].copy_from_slice(&src[from..copy_end]);
        }
        bytes[copy_end..].fill(0);
    }
}
