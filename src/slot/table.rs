//! [`TableSlot`]: one table's elements, in a pool's slab or on the heap.

use crate::sys::{self, Claim};
use std::io;

const ELEM: usize = std::mem::size_of::<usize>();

/// One table: `size` pointer-sized elements (0 is null).
///
/// In a pool's slab the elements past `size` are always zero, so growing
/// with a null `init` writes nothing and a released slot only has its used
/// part zeroed. An on-demand table is a heap vector.
#[derive(Debug)]
pub(crate) struct TableSlot {
    storage: Storage,
    size: u32,
}

#[derive(Debug)]
enum Storage {
    /// A slot of a read-write table slab (64-byte aligned; host-page
    /// aligned when it is a page or more), with room for `capacity`
    /// elements.
    Slab {
        claim: Claim,
        capacity: u32,
    },
    Heap(Vec<usize>),
}

impl TableSlot {
    /// A slot of a read-write table slab, `capacity` elements at the
    /// claim's base. The pool keeps free slots zero.
    ///
    /// # Panics
    /// If the claim's slot cannot hold `capacity` aligned elements.
    pub fn in_slab(claim: Claim, capacity: u32) -> Self {
        let fits = (capacity as usize).checked_mul(ELEM) <= Some(claim.len());
        assert!(fits && claim.base().as_ptr().cast::<usize>().is_aligned());
        TableSlot {
            storage: Storage::Slab { claim, capacity },
            size: 0,
        }
    }

    /// An empty table of its own on the heap.
    pub fn on_heap() -> Self {
        TableSlot {
            storage: Storage::Heap(Vec::new()),
            size: 0,
        }
    }

    /// The size in elements.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// A slab slot's claim, to give back (`None` on the heap).
    pub fn into_claim(self) -> Option<Claim> {
        match self.storage {
            Storage::Slab { claim, .. } => Some(claim),
            Storage::Heap(_) => None,
        }
    }

    /// The elements.
    pub fn elements(&self) -> &[usize] {
        match &self.storage {
            // Zero elements need no pointer at all (a slab of 0-element
            // slots has a dangling base).
            Storage::Slab { .. } if self.size == 0 => &[],
            // SAFETY: the claim gives this slot alone `capacity >= size`
            // aligned elements of a read-write slab,
            // owned by this slot; they change only through `&mut self`.
            Storage::Slab { claim, .. } => unsafe {
                std::slice::from_raw_parts(claim.base().as_ptr().cast(), self.size as usize)
            },
            Storage::Heap(v) => v,
        }
    }

    /// The elements, writable.
    pub fn elements_mut(&mut self) -> &mut [usize] {
        match &mut self.storage {
            Storage::Slab { .. } if self.size == 0 => &mut [],
            // SAFETY: as in `elements`; `&mut self` makes it exclusive.
            Storage::Slab { claim, .. } => unsafe {
                std::slice::from_raw_parts_mut(claim.base().as_ptr().cast(), self.size as usize)
            },
            Storage::Heap(v) => v,
        }
    }

    /// Grows to `size` elements, the new ones set to `init`. The caller
    /// has checked `size` against the maximum (a slab slot's capacity).
    pub fn grow(&mut self, size: u32, init: usize) -> io::Result<()> {
        let old = self.size;
        match &mut self.storage {
            Storage::Slab { capacity, .. } => {
                if size > *capacity {
                    return Err(io::Error::from(io::ErrorKind::OutOfMemory));
                }
                self.size = size;
                // Slab slots are zero past the size already.
                if init != 0 {
                    self.elements_mut()[old as usize..].fill(init);
                }
            }
            Storage::Heap(v) => {
                v.try_reserve_exact((size - old) as usize)
                    .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
                v.resize(size as usize, init);
                self.size = size;
            }
        }
        Ok(())
    }

    /// Zeroes every element and sets the size to 0. In a slab: with `memset`
    /// up to `keep_resident` bytes (at least the first host page: a small
    /// table is never worth a syscall, a shootdown and a later page fault),
    /// with `madvise` beyond. Returns the bytes that stay resident.
    pub fn clear(&mut self, keep_resident: usize) -> usize {
        let used = self.size as usize * ELEM;
        self.size = 0;
        match &mut self.storage {
            Storage::Slab { claim, .. } => {
                let base = claim.base();
                let page = sys::page_size();
                // Slots smaller than a page share it: they are only ever
                // written, never released with `madvise` (used < page).
                let resident = keep_resident.max(page).min(used);
                // SAFETY: `[0, used)` is inside this slot, which `&mut self`
                // holds alone.
                unsafe { std::ptr::write_bytes(base.as_ptr(), 0, resident) };
                if used > resident {
                    // `resident` is page-aligned here and slots are whole
                    // pages, so the rounded range stays inside this slot.
                    let len = used.next_multiple_of(page) - resident;
                    // SAFETY: inside this slot, unreferenced.
                    if unsafe { sys::decommit(base.add(resident), len) }.is_err() {
                        // SAFETY: as above; zeroing needs no syscall.
                        unsafe {
                            std::ptr::write_bytes(base.as_ptr().add(resident), 0, used - resident)
                        };
                    }
                }
                resident
            }
            Storage::Heap(v) => {
                v.clear();
                0
            }
        }
    }
}
