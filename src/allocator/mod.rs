//! Allocators: where an instance's memories and tables come from.
//!
//! [`PoolingInstanceAllocator`] hands out slots of one reserved slab;
//! [`OnDemandInstanceAllocator`] maps each memory on its own, the baseline.
//! Both implement the sealed [`InstanceAllocator`], which is all
//! [`Store::new`](crate::Store::new) needs.

mod on_demand;
pub(crate) mod pooling;

pub use on_demand::OnDemandInstanceAllocator;
pub(crate) use pooling::zero_table_elements;
pub use pooling::{PoolMetrics, PoolingInstanceAllocator};

use crate::layout::MemoryPlan;
use crate::memory::MemoryEntry;
use crate::table::TableEntry;
use crate::{InstanceLayout, Result, TableType};
use pooling::PoolInner;
use std::io;
use std::sync::Arc;

mod sealed {
    pub trait Sealed {
        fn backend(&self) -> super::Backend;
    }
}

/// Something a [`Store`](crate::Store) can draw its instances' memories and
/// tables from. Sealed: its methods are the crate's business.
pub trait InstanceAllocator: sealed::Sealed + Send + Sync {}

impl sealed::Sealed for PoolingInstanceAllocator {
    fn backend(&self) -> Backend {
        Backend::Pool(self.inner.clone())
    }
}
impl InstanceAllocator for PoolingInstanceAllocator {}

impl sealed::Sealed for OnDemandInstanceAllocator {
    fn backend(&self) -> Backend {
        Backend::OnDemand(self.clone())
    }
}
impl InstanceAllocator for OnDemandInstanceAllocator {}

/// The allocator a store holds on to.
#[doc(hidden)]
#[derive(Clone)]
pub enum Backend {
    Pool(Arc<PoolInner>),
    OnDemand(OnDemandInstanceAllocator),
}

impl Backend {
    /// [`Error::Unsupported`](crate::Error::Unsupported) if the layout can
    /// never be served; nothing is taken.
    pub(crate) fn check_layout(&self, layout: &InstanceLayout) -> Result<()> {
        layout.check()?;
        match self {
            Backend::Pool(p) => p.check_layout(layout),
            Backend::OnDemand(_) => Ok(()),
        }
    }

    pub(crate) fn acquire_instance(&self) -> Result<()> {
        match self {
            Backend::Pool(p) => p.acquire_instance(),
            Backend::OnDemand(_) => Ok(()),
        }
    }

    pub(crate) fn release_instance(&self) {
        if let Backend::Pool(p) = self {
            p.release_instance()
        }
    }

    pub(crate) fn acquire_memory(&self, plan: &MemoryPlan) -> Result<MemoryEntry> {
        match self {
            Backend::Pool(p) => p.memories.acquire(plan, &p.counters),
            Backend::OnDemand(d) => d.reserve_memory(plan),
        }
    }

    /// The OS work of an instantiation: the image in place, `size` bytes
    /// accessible.
    pub(crate) fn prepare_memory(
        &self,
        entry: &mut MemoryEntry,
        plan: &MemoryPlan,
        size: usize,
    ) -> io::Result<()> {
        match self {
            Backend::Pool(p) => p.memories.prepare(entry, plan, size, &p.counters),
            Backend::OnDemand(_) => OnDemandInstanceAllocator::prepare_memory(entry, plan, size),
        }
    }

    pub(crate) fn release_memory(&self, entry: MemoryEntry) {
        match self {
            Backend::Pool(p) => p.memories.release(entry, &p.counters),
            Backend::OnDemand(_) => drop(entry),
        }
    }

    pub(crate) fn acquire_table(&self, ty: &TableType) -> Result<TableEntry> {
        match self {
            Backend::Pool(p) => p.tables.acquire(ty, &p.counters),
            Backend::OnDemand(_) => Ok(OnDemandInstanceAllocator::table(ty)),
        }
    }

    pub(crate) fn release_table(&self, entry: TableEntry) {
        match self {
            Backend::Pool(p) => p.tables.release(entry, &p.counters),
            Backend::OnDemand(_) => drop(entry),
        }
    }

    /// `(memory, table)` bytes a reset restores in place.
    pub(crate) fn keep_resident(&self) -> (usize, usize) {
        match self {
            Backend::Pool(p) => (p.memories.keep_resident(), p.tables.keep_resident()),
            Backend::OnDemand(_) => (0, 0),
        }
    }

    /// A store (or a failed instantiation) gave slots back: wake a waiter.
    pub(crate) fn released(&self) {
        if let Backend::Pool(p) = self {
            p.admission.released()
        }
    }

    /// How long `instantiate_async` waits for a slot by default.
    pub(crate) fn admission_timeout(&self) -> std::time::Duration {
        match self {
            Backend::Pool(p) => p.config.admission_timeout,
            Backend::OnDemand(_) => std::time::Duration::ZERO,
        }
    }

    pub(crate) fn limiter_denied(&self) {
        if let Backend::Pool(p) = self {
            p.counters.denied()
        }
    }
}
