//! [`MemorySlot`]: one linear memory's slot and every transition of it (see
//! the [module docs](super) for the states).

use crate::MemoryImage;
use crate::layout::MemoryPlan;
use crate::sys::{self, Mmap, SlotPtr};
use std::cell::RefCell;
use std::io;
use std::sync::Arc;

thread_local! {
    /// Runs of written pages, reused by every reset on this thread.
    static WRITTEN: RefCell<sys::WrittenPages> = RefCell::default();
}

/// One memory slot: a fixed base, `capacity` bytes it can reach, `guard`
/// bytes after that which always fault.
///
/// A slot of a pool's slab knows its `index` there; an on-demand slot owns
/// its reservation (and unmaps it when dropped). Either way the type holds
/// everything its transitions need, so no caller matches on who owns it.
#[derive(Debug)]
pub(crate) struct MemorySlot {
    /// Where byte 0 is; never moves.
    base: SlotPtr,
    capacity: usize,
    guard: usize,
    /// The memory's size in bytes: a multiple of the wasm page, `<= accessible`
    /// except while a transition is under way.
    size: usize,
    /// `[0, accessible)` is read-write and unmarked (unless `needs_scrub`).
    accessible: usize,
    /// `[0, rw)` is mapped read-write, `[rw, capacity)` `PROT_NONE`. With
    /// guard markers, `[accessible, rw)` carries a marker on every page;
    /// without, `rw == accessible`.
    rw: usize,
    /// How this slot's pool protects and resets it.
    mode: SlotMode,
    /// The image mapped copy-on-write over `[0, image.mapped_len())`.
    image: Option<Arc<MemoryImage>>,
    /// A reset failed part-way: protections are unknown, so nothing may be
    /// written before the slot is remapped whole.
    needs_scrub: bool,
    /// The slot's number in its pool's slab (0 for an on-demand slot).
    index: u32,
    /// The reservation an on-demand slot owns (`guard | slot | guard`).
    _reservation: Option<Mmap>,
}

/// How a pool protects and resets its slots (the same for every slot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SlotMode {
    /// Bytes past the size fault by guard markers (`MADV_GUARD_INSTALL`)
    /// rather than `PROT_NONE`.
    pub markers: bool,
    /// Resets find the pages a tenant wrote with `PAGEMAP_SCAN` and restore
    /// only those.
    pub dirty_scan: bool,
}

/// Below this many bytes a reset writes the whole range: cheaper than
/// asking the kernel which pages were written.
const SCAN_MIN: usize = 64 << 10;

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
    /// The image this slot holds mapped (0: none): its key for affinity.
    pub fn affinity(&self) -> u64 {
        self.image.as_ref().map_or(0, |i| i.id())
    }
}

/// How an instantiation got its image in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ImageWork {
    /// No image.
    None,
    /// Mapped from its memfd with one `mmap`.
    Mapped,
    /// Already mapped in this warm slot: no syscall.
    Reused,
    /// Copied in (the image has no memfd).
    Copied,
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
    slot: MemorySlot,
    keep: usize,
    /// With guard markers: `[keep, open)` is only discarded (the next
    /// instance of the same layout reaches it anyway), `[open, to)` also
    /// marked. Without: `keep`.
    open: usize,
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
    ) -> Self {
        MemorySlot {
            base,
            capacity,
            guard,
            size: 0,
            accessible: p.accessible,
            rw: p.rw,
            mode,
            image: p.image,
            needs_scrub: p.needs_scrub,
            index,
            _reservation: None,
        }
    }

    /// A fresh reservation of its own: `guard | capacity | guard`, all
    /// `PROT_NONE`.
    pub fn reserve(capacity: usize, guard: usize) -> io::Result<Self> {
        let overflow = || io::Error::from(io::ErrorKind::OutOfMemory);
        let len = guard
            .checked_mul(2)
            .and_then(|g| g.checked_add(capacity))
            .ok_or_else(overflow)?;
        let mmap = Mmap::reserve(len)?;
        // SAFETY: the reservation is `guard + capacity + guard` long.
        let base = unsafe { mmap.ptr().add(guard) };
        Ok(MemorySlot {
            base,
            capacity,
            guard,
            size: 0,
            accessible: 0,
            rw: 0,
            mode: SlotMode::default(),
            image: None,
            needs_scrub: false,
            index: 0,
            _reservation: Some(mmap),
        })
    }

    /// Byte 0.
    pub fn base(&self) -> SlotPtr {
        self.base
    }

    /// The size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Bytes from the base the memory can reach without moving.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes after the capacity that always fault.
    pub fn guard(&self) -> usize {
        self.guard
    }

    /// The memory's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `[base, base + size)` is read-write (size <= accessible)
        // and belongs to whoever holds this slot; it changes only through
        // `&mut self`, which this borrow excludes.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.size) }
    }

    /// The memory's bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.size) }
    }

    /// Makes the slot hold `plan`'s image and exactly `size` accessible
    /// bytes. Only the work the slot's state requires is done: a warm slot
    /// with the same image and enough access needs no syscall at all. On
    /// error the slot still describes itself truthfully, so a release
    /// resets it.
    pub fn prepare(&mut self, plan: &MemoryPlan, size: usize) -> io::Result<ImageWork> {
        if self.needs_scrub {
            self.remap(self.capacity)?;
        }
        let want = plan.image.as_ref().filter(|i| i.is_mapped());
        let same = self.image.as_ref().map(|i| i.id()) == want.map(|i| i.id());
        let mut work = ImageWork::None;
        if !same && self.mode.markers {
            // Markers and the old image's pages go with one remap of the part
            // tenants have reached.
            self.remap(self.rw)?;
        }
        if !same {
            // SAFETY: `[0, accessible)` is inside our slot, and no reference
            // into it exists while we hold the slot mutably.
            unsafe { sys::protect_none(self.base, self.accessible)? };
            self.accessible = 0;
            self.rw = 0;
            if let Some(old) = &self.image {
                // SAFETY: the old image's mapping lies at the start of our
                // slot (it fit the minimum it was mapped for); unreferenced.
                unsafe { sys::map_anonymous_none_fixed(self.base, old.mapped_len())? };
                self.image = None;
            }
            if let Some(new) = want {
                let Some(fd) = new.file() else {
                    return Err(io::Error::other("a mapped image has no file"));
                };
                // SAFETY: the image fits the layout's minimum (checked before
                // anything is taken), which fits the slot; unreferenced.
                unsafe { sys::map_file_private_fixed(self.base, new.mapped_len(), fd)? };
                self.image = Some(new.clone());
                self.accessible = new.mapped_len();
                self.rw = new.mapped_len();
                work = ImageWork::Mapped;
            }
        } else if want.is_some() {
            work = ImageWork::Reused;
        }
        self.resize(size)?;
        if let Some(img) = plan.image.as_ref().filter(|i| i.is_copied()) {
            self.bytes_mut()[..img.len()].copy_from_slice(img.bytes());
            work = ImageWork::Copied;
        }
        Ok(work)
    }

    /// Sets the accessible part to `[0, size)` and the size to `size`.
    ///
    /// With `mprotect`: adding access is one call without a TLB shootdown,
    /// removing it one with, both under the mmap lock taken for writing.
    /// With guard markers: growing within the part tenants reached before
    /// removes markers (the mmap lock taken for reading, no new mapping);
    /// only growing past it widens the read-write part, once per high
    /// water. A shrink that fails leaves protections unknown: the slot then
    /// needs a scrub before anything writes to it.
    pub fn resize(&mut self, size: usize) -> io::Result<()> {
        debug_assert!(size <= self.capacity);
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
        Ok(())
    }

    /// Opens `[accessible, size)`.
    fn widen(&mut self, size: usize) -> io::Result<()> {
        let unmark_to = size.min(self.rw).max(self.accessible);
        if self.mode.markers && unmark_to > self.accessible {
            let (from, len) = (self.accessible, unmark_to - self.accessible);
            // SAFETY: `[from, from + len)` is inside this slot's read-write
            // part; removing markers invalidates no reference.
            if let Err(e) = unsafe { sys::guard_remove(self.base.add(from), len) } {
                // Part of the range may be open now: mark it again, or the
                // slot must not reach anyone before a scrub.
                // SAFETY: as above; nothing references bytes past the size.
                if unsafe { sys::guard_install(self.base.add(from), len) }.is_err() {
                    self.needs_scrub = true;
                }
                return Err(e);
            }
        }
        let open_from = self.rw.max(self.accessible);
        if size > open_from {
            // SAFETY: `[open_from, size)` lies inside this slot (size <=
            // capacity); widening access invalidates no reference.
            unsafe { sys::protect_read_write(self.base.add(open_from), size - open_from)? };
            self.rw = size;
        }
        Ok(())
    }

    /// Replaces `[0, len)` with fresh `PROT_NONE` memory: no image, no
    /// marker, no page.
    fn remap(&mut self, len: usize) -> io::Result<()> {
        // SAFETY: the slot is ours and nothing references its bytes.
        unsafe { sys::map_anonymous_none_fixed(self.base, len)? };
        self.accessible = 0;
        self.rw = 0;
        self.image = None;
        self.needs_scrub = false;
        Ok(())
    }

    /// Back to what `plan`'s instantiation left, in place: `[0, minimum)`
    /// holds the image then zeroes, and only that much is accessible. The
    /// first `keep_resident` bytes are restored with writes and stay
    /// resident; the rest is discarded with `madvise` (which brings a mapped
    /// image's pages back).
    pub fn reset(&mut self, plan: &MemoryPlan, keep_resident: usize) -> io::Result<()> {
        let keep = self.kept(keep_resident, plan);
        self.restore(0, keep);
        if self.accessible > keep {
            // SAFETY: `[keep, accessible)` is read-write and ours; `&mut self`
            // excludes any slice into it.
            let discarded = unsafe { sys::decommit(self.base.add(keep), self.accessible - keep) };
            if discarded.is_err() {
                self.restore(keep, self.accessible);
            }
        }
        self.resize(plan.ty.min_bytes())?;
        if let Some(img) = plan.image.as_ref().filter(|i| i.is_copied()) {
            self.bytes_mut()[..img.len()].copy_from_slice(img.bytes());
        }
        Ok(())
    }

    /// Bytes of `[0, accessible)` a reset restores in place and keeps.
    ///
    /// With guard markers at most `plan`'s minimum: markers cannot keep a
    /// page resident while making it fault, as `PROT_NONE` does, so what
    /// the next instance of the same layout could not reach is revoked.
    fn kept(&self, keep_resident: usize, plan: &MemoryPlan) -> usize {
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

    /// After a failed reset: remap the slot fresh, or mark it to be
    /// remapped before its next use. Either way its bytes never reach a
    /// tenant.
    pub fn scrub(&mut self) {
        if self.remap(self.capacity).is_err() {
            self.needs_scrub = true;
        }
    }

    /// What a pool keeps of a free slot.
    fn park(self, resident: usize) -> Parked {
        Parked {
            accessible: self.accessible,
            rw: self.rw,
            image: self.image,
            needs_scrub: self.needs_scrub,
            resident,
        }
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
    fn restore(&mut self, from: usize, to: usize) {
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
            let scanned = WRITTEN.with_borrow_mut(|written| {
                let r = sys::written_pages(
                    // SAFETY: `from < to <= accessible <= capacity`.
                    unsafe { self.base.add(from) },
                    to - from,
                    written,
                );
                if r.is_ok() {
                    for &(off, len) in &written.runs {
                        self.write_back(from + off, (from + off + len).min(to));
                    }
                }
                r
            });
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
