//! [`MemorySlot`]: one linear memory's slot and every transition of it (see
//! the [module docs](super) for the states).

use crate::MemoryImage;
use crate::layout::MemoryPlan;
use crate::sys::{self, Claim, Mmap, SlotPtr};
use std::io;
use std::sync::Arc;

/// One memory slot: a fixed base, `capacity` bytes it can reach, `guard`
/// bytes after that which always fault.
///
/// A slot of a pool's slab holds its [`Claim`] there; an on-demand slot owns
/// its reservation (and unmaps it when dropped). Either way the type holds
/// everything its transitions need, so no caller matches on who owns it.
#[derive(Debug)]
pub(crate) struct MemorySlot {
    /// Where byte 0 is; never moves.
    pub(super) base: SlotPtr,
    pub(super) capacity: usize,
    pub(super) guard: usize,
    /// The memory's size in bytes: a multiple of the wasm page, `<= accessible`
    /// except while a transition is under way.
    pub(super) size: usize,
    /// The largest size of this tenancy: with [`SlotMode::checked`], what a
    /// release scans (the engine kept every access below the size).
    pub(super) high: usize,
    /// `[0, accessible)` is read-write and unmarked (unless `needs_scrub`).
    /// With [`SlotMode::checked`], the whole capacity once prepared.
    pub(super) accessible: usize,
    /// `[0, rw)` is mapped read-write, `[rw, capacity)` `PROT_NONE`. With
    /// guard markers, `[accessible, rw)` carries a marker on every page;
    /// without, `rw == accessible`.
    pub(super) rw: usize,
    /// How this slot's pool protects and resets it.
    pub(super) mode: SlotMode,
    /// Bytes before `base` that are this slot's leading guard: marked with
    /// the slot in the dense layout.
    pub(super) lead: usize,
    /// The image mapped copy-on-write over `[0, image.mapped_len())`.
    pub(super) image: Option<Arc<MemoryImage>>,
    /// A reset failed part-way: protections are unknown, so nothing may be
    /// written before the slot is remapped whole.
    pub(super) needs_scrub: bool,
    /// A pool slot's claim on its slab (`None` on demand).
    pub(super) claim: Option<Claim>,
    /// The reservation an on-demand slot owns (`guard | slot | guard`).
    pub(super) _reservation: Option<Mmap>,
}

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

/// How a pool protects and resets its slots (the same for every slot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SlotMode {
    /// Bytes past the size fault by guard markers (`MADV_GUARD_INSTALL`)
    /// rather than `PROT_NONE`.
    pub markers: bool,
    /// Resets find the pages a tenant wrote with `PAGEMAP_SCAN` and restore
    /// only those.
    pub dirty_scan: bool,
    /// The slot lies in a read-write slab (the dense layout): every byte no
    /// tenant may reach is marked, the slot's guards included, from its
    /// first use; nothing is ever `mprotect`ed or file-mapped (images are
    /// copied). Implies `markers`.
    pub dense: bool,
    /// The engine checks every access against the size
    /// ([`MemoryProtection::BoundsChecked`](crate::MemoryProtection::BoundsChecked)):
    /// the whole capacity is read-write from the slot's first use, resizing
    /// changes no protection, only the guards fault (in the dense layout,
    /// by markers on the guards alone).
    pub checked: bool,
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

impl MemorySlot {
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
            high: 0,
            accessible: 0,
            rw: 0,
            mode: SlotMode::default(),
            lead: 0,
            image: None,
            needs_scrub: false,
            claim: None,
            _reservation: Some(mmap),
        })
    }

    /// A slot of a pool's slab, as it was parked: `capacity` bytes at the
    /// claim's base, then a `guard` that always faults; `lead` bytes before
    /// the base are its leading guard (marked with it in the dense layout).
    ///
    /// # Panics
    /// If the claim's slot is smaller than `capacity + guard`.
    pub fn in_slab(
        claim: Claim,
        capacity: usize,
        guard: usize,
        p: Parked,
        mode: SlotMode,
        lead: usize,
    ) -> Self {
        assert!(
            capacity.checked_add(guard) <= Some(claim.len()),
            "slot larger than its claim"
        );
        MemorySlot {
            base: claim.base(),
            capacity,
            guard,
            size: 0,
            high: 0,
            accessible: p.accessible,
            rw: p.rw,
            mode,
            lead,
            image: p.image,
            needs_scrub: p.needs_scrub,
            claim: Some(claim),
            _reservation: None,
        }
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
        if self.mode.dense && self.rw < self.capacity {
            self.mark_fresh()?;
        }
        // The dense layout copies images: a file mapping per slot would
        // bring back the kernel mappings it exists to save.
        let want = plan
            .image
            .as_ref()
            .filter(|i| i.is_mapped() && !self.mode.dense);
        let same = self.image.as_ref().map(|i| i.id()) == want.map(|i| i.id());
        let mut work = ImageWork::None;
        if !same && self.mode.checked {
            // Everything open goes: the old image's pages and the bytes a
            // reset kept (its copy of the image among them).
            self.remap(self.accessible)?;
        } else if !same && self.mode.markers {
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
        if self.mode.checked && self.accessible < self.capacity {
            // Open to the capacity, once per slot (or per image change): one
            // `mprotect` adding access, no TLB flush.
            self.widen(self.capacity)?;
            self.accessible = self.capacity;
        }
        self.resize(size)?;
        if let Some(img) = plan.image.as_ref().filter(|i| self.copies(i)) {
            self.bytes_mut()[..img.len()].copy_from_slice(img.bytes());
            work = ImageWork::Copied;
        }
        Ok(work)
    }

    /// The image this slot holds mapped, if any.
    pub fn image(&self) -> Option<&Arc<MemoryImage>> {
        self.image.as_ref()
    }

    /// Whether this slot holds `image` mapped.
    pub fn holds(&self, image: &MemoryImage) -> bool {
        self.image.as_ref().is_some_and(|i| i.id() == image.id())
    }

    /// Whether this slot gets `image` by copying it in.
    pub(super) fn copies(&self, image: &MemoryImage) -> bool {
        image.is_copied() || (self.mode.dense && !image.is_empty())
    }

    /// A dense slot's first use (or first after a scrub): marks the whole
    /// slot and its guards, since its slab is read-write everywhere.
    /// With [`SlotMode::checked`] only the guards are marked and the whole
    /// slot is left accessible.
    fn mark_fresh(&mut self) -> io::Result<()> {
        // SAFETY: `[base - lead, base + capacity + guard)` is this slot, its
        // guards, and nothing any tenant holds (a guard belongs to no slot).
        unsafe {
            let start = self.base.sub(self.lead);
            if self.mode.checked {
                sys::guard_install(start, self.lead)?;
                sys::guard_install(self.base.add(self.capacity), self.guard)?;
            } else {
                sys::guard_install(start, self.lead + self.capacity + self.guard)?;
            }
        }
        self.accessible = if self.mode.checked { self.capacity } else { 0 };
        self.rw = self.capacity;
        Ok(())
    }

    /// Replaces `[0, len)` with fresh `PROT_NONE` memory: no image, no
    /// marker, no page.
    fn remap(&mut self, len: usize) -> io::Result<()> {
        // SAFETY: the slot is ours and nothing references its bytes. A
        // dense slot stays read-write (and unmarked until its next use, see
        // `mark_fresh`), so its slab stays one mapping.
        unsafe {
            if self.mode.dense {
                sys::map_anonymous_rw_fixed(self.base, len)?
            } else {
                sys::map_anonymous_none_fixed(self.base, len)?
            }
        };
        self.accessible = 0;
        self.rw = 0;
        self.image = None;
        self.needs_scrub = false;
        Ok(())
    }

    /// After a failed reset: remap the slot fresh, or mark it to be
    /// remapped before its next use. Either way its bytes never reach a
    /// tenant.
    pub fn scrub(&mut self) {
        if self.remap(self.capacity).is_err() {
            self.needs_scrub = true;
        }
    }
}
