//! Allocators: where an instance's memories and tables come from.
//!
//! [`PoolingInstanceAllocator`] hands out slots of one reserved slab;
//! [`OnDemandInstanceAllocator`] maps each memory on its own, the baseline.
//! Both implement the sealed [`InstanceAllocator`], which is all
//! [`Store::new`](crate::Store::new) needs. A store holds an [`Allocator`]:
//! the few operations every allocator has, and [`Allocator::pool`] for what
//! only a pool does (instance counts, waiting, keep-resident resets,
//! metrics).

mod on_demand;
mod pooling;

pub use on_demand::OnDemandInstanceAllocator;
pub(crate) use pooling::Pool;
pub use pooling::{
    PoolMetrics, PooledStack, PoolingInstanceAllocator, StackPool, StackPoolMetrics,
};

use crate::layout::MemoryPlan;
use crate::slot::{MemorySlot, TableSlot};
use crate::{InstanceLayout, Result, TableType};
use std::io;
use std::sync::Arc;

mod sealed {
    pub trait Sealed {
        fn allocator(&self) -> super::Allocator;
    }
}

/// Something a [`Store`](crate::Store) can draw its instances' memories and
/// tables from. Sealed: its methods are the crate's business.
pub trait InstanceAllocator: sealed::Sealed + Send + Sync {}

impl sealed::Sealed for PoolingInstanceAllocator {
    fn allocator(&self) -> Allocator {
        Allocator(Kind::Pool(self.inner.clone()))
    }
}
impl InstanceAllocator for PoolingInstanceAllocator {}

impl sealed::Sealed for OnDemandInstanceAllocator {
    fn allocator(&self) -> Allocator {
        Allocator(Kind::OnDemand(self.clone()))
    }
}
impl InstanceAllocator for OnDemandInstanceAllocator {}

/// A store's record of one memory: its slot, and what instantiation made
/// of it.
#[derive(Debug)]
pub(crate) struct MemoryEntry {
    pub slot: MemorySlot,
    /// The maximum passed to the limiter, in bytes.
    pub maximum: usize,
    /// The minimum and image, for `reset`.
    pub plan: MemoryPlan,
}

/// A store's record of one table.
#[derive(Debug)]
pub(crate) struct TableEntry {
    pub slot: TableSlot,
    /// The size instantiation gave it, for `reset`.
    pub minimum: u32,
    /// The maximum passed to the limiter (`None`: unbounded).
    pub maximum: Option<u32>,
}

/// The allocator a store holds on to. `pub` only because the sealed
/// trait returns it; it is unreachable from outside the crate.
#[derive(Clone)]
pub struct Allocator(Kind);

#[derive(Clone)]
enum Kind {
    /// Slots of a pool.
    Pool(Arc<Pool>),
    /// A reservation per memory, a vector per table.
    OnDemand(OnDemandInstanceAllocator),
}

impl Allocator {
    /// The pool, for what only a pool does.
    pub(crate) fn pool(&self) -> Option<&Arc<Pool>> {
        match &self.0 {
            Kind::Pool(p) => Some(p),
            Kind::OnDemand(_) => None,
        }
    }

    /// [`Error::Unsupported`](crate::Error::Unsupported) if the layout can
    /// never be served; nothing is taken.
    pub(crate) fn check_layout(&self, layout: &InstanceLayout) -> Result<()> {
        layout.check()?;
        self.pool().map_or(Ok(()), |p| p.check_layout(layout))
    }

    /// A memory for `plan`, of size 0 (no OS work yet but a reservation).
    pub(crate) fn acquire_memory(&self, plan: &MemoryPlan) -> Result<MemoryEntry> {
        let (slot, maximum) = match &self.0 {
            Kind::Pool(p) => p.acquire_memory(plan)?,
            Kind::OnDemand(d) => d.reserve_memory(plan)?,
        };
        Ok(MemoryEntry {
            slot,
            maximum,
            plan: plan.clone(),
        })
    }

    /// The OS work of an instantiation: the image in place, `size` bytes
    /// accessible.
    pub(crate) fn prepare_memory(&self, entry: &mut MemoryEntry, size: usize) -> io::Result<()> {
        match &self.0 {
            Kind::Pool(p) => p.prepare_memory(&mut entry.slot, &entry.plan, size),
            Kind::OnDemand(_) => entry.slot.prepare(&entry.plan, size).map(drop),
        }
    }

    /// Gives a memory back: reset into the pool, or unmapped.
    pub(crate) fn release_memory(&self, entry: MemoryEntry) {
        match &self.0 {
            Kind::Pool(p) => p.release_memory(entry.slot, &entry.plan),
            Kind::OnDemand(_) => drop(entry),
        }
    }

    /// A table of `ty`, of size 0.
    pub(crate) fn acquire_table(&self, ty: &TableType) -> Result<TableEntry> {
        let (slot, maximum) = match &self.0 {
            Kind::Pool(p) => {
                let (slot, maximum) = p.acquire_table(ty)?;
                (slot, Some(maximum))
            }
            Kind::OnDemand(_) => (TableSlot::on_heap(), ty.maximum),
        };
        Ok(TableEntry {
            slot,
            minimum: ty.minimum,
            maximum,
        })
    }

    /// Gives a table back: zeroed into the pool, or freed.
    pub(crate) fn release_table(&self, entry: TableEntry) {
        match &self.0 {
            Kind::Pool(p) => p.release_table(entry.slot),
            Kind::OnDemand(_) => drop(entry),
        }
    }
}
