//! [`OnDemandInstanceAllocator`]: one reservation per memory, made at
//! instantiation and unmapped at release. The baseline a pool is measured
//! against.

use crate::layout::MemoryPlan;
use crate::memory::{MemoryEntry, MemoryOwner};
use crate::sys::{self, Mmap};
use crate::table::{TableEntry, TableOwner};
use crate::{Result, TableType};
use std::io;

/// Maps each memory on its own: `guard | reservation | guard`, where the
/// reservation is the declared maximum (4 GiB when none), `PROT_NONE` past
/// the memory's size. Tables are heap vectors.
///
/// The limiter sees `maximum = Some(declared)` (`Some(4 GiB)` when
/// undeclared) for memories and the declared maximum (`None` when
/// unbounded) for tables. No pool-wide caps; the store's caps still apply.
#[derive(Clone, Debug)]
pub struct OnDemandInstanceAllocator {
    guard_size: usize,
}

impl Default for OnDemandInstanceAllocator {
    /// Guards of 32 MiB on each side, as the pool's default.
    fn default() -> Self {
        OnDemandInstanceAllocator {
            guard_size: 32 << 20,
        }
    }
}

impl OnDemandInstanceAllocator {
    pub(crate) fn reserve_memory(&self, plan: &MemoryPlan) -> Result<MemoryEntry> {
        let capacity = plan.ty.declared_max_bytes();
        let mmap = Mmap::reserve(capacity + 2 * self.guard_size)?;
        // SAFETY: the reservation is `guard + capacity + guard` long.
        let base = unsafe { mmap.ptr().add(self.guard_size) };
        Ok(MemoryEntry {
            base,
            size: 0,
            capacity,
            guard: self.guard_size,
            maximum: capacity,
            accessible: 0,
            plan: plan.clone(),
            owner: MemoryOwner::OnDemand(mmap),
        })
    }

    pub(crate) fn prepare_memory(
        entry: &mut MemoryEntry,
        plan: &MemoryPlan,
        size: usize,
    ) -> io::Result<()> {
        match &plan.image {
            Some(image) if image.is_mapped() => {
                let fd = image.file().expect("mapped image has a file");
                // SAFETY: a fresh reservation of ours; the image fits in the
                // minimum, which fits in the reservation.
                unsafe { sys::map_file_private_fixed(entry.base, image.mapped_len(), fd)? };
                entry.accessible = image.mapped_len();
                entry.resize(size)
            }
            Some(image) => {
                entry.resize(size)?;
                // SAFETY: `[0, size)` is read-write and ours; len <= size.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        image.bytes().as_ptr(),
                        entry.base.as_ptr(),
                        image.len(),
                    )
                };
                Ok(())
            }
            None => entry.resize(size),
        }
    }

    pub(crate) fn table(ty: &TableType) -> TableEntry {
        TableEntry {
            size: 0,
            minimum: ty.minimum,
            maximum: ty.maximum,
            owner: TableOwner::OnDemand(Vec::new()),
        }
    }
}
