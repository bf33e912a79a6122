//! [`OnDemandInstanceAllocator`]: one reservation per memory, made at
//! instantiation and unmapped at release. The baseline a pool is measured
//! against.

use crate::Result;
use crate::layout::MemoryPlan;
use crate::slot::MemorySlot;

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
    /// A reservation for `plan`'s memory, and the maximum the limiter sees.
    pub(crate) fn reserve_memory(&self, plan: &MemoryPlan) -> Result<(MemorySlot, usize)> {
        let capacity = plan.ty.declared_max_bytes();
        Ok((MemorySlot::reserve(capacity, self.guard_size)?, capacity))
    }
}
