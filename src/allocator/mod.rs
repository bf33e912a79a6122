//! Allocators: where an instance's memories and tables come from.
//!
//! [`PoolingInstanceAllocator`] hands out slots of one reserved slab;
//! [`OnDemandInstanceAllocator`] maps each memory on its own, the baseline.
//! Both implement the sealed [`InstanceAllocator`], which is all
//! [`Store::new`](crate::Store::new) needs. A store holds an [`Allocator`]:
//! the operations every allocator has (those only a pool does, such as
//! waiting and counting instances, do nothing on demand), so a store never
//! asks which kind it has. What a store holds is [`Holdings`], given back
//! in one place when dropped.

mod on_demand;
mod pooling;

pub use on_demand::OnDemandInstanceAllocator;
pub(crate) use pooling::Pool;
pub use pooling::{
    PoolMetrics, PooledStack, PoolingInstanceAllocator, StackPool, StackPoolMetrics,
};

pub(crate) use pooling::Attempt;

use crate::layout::MemoryPlan;
use crate::slot::{MemorySlot, TableSlot};
use crate::{InstanceLayout, Result};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// What a store (or an instantiation in progress) holds: instance
/// counts, memories and tables. Dropping it gives everything back through
/// the allocator's one release path, which wakes waiting instantiations.
pub(crate) struct Holdings {
    allocator: Allocator,
    /// How a failed attempt gives back (see [`Attempt`]).
    attempt: Attempt,
    /// Instance slots held (counted by a pool only).
    pub instances: u32,
    pub memories: Vec<MemoryEntry>,
    pub tables: Vec<TableEntry>,
}

impl Holdings {
    /// Nothing held yet.
    pub fn new(allocator: Allocator) -> Self {
        Holdings {
            allocator,
            attempt: Attempt::Alone,
            instances: 0,
            memories: Vec::new(),
            tables: Vec::new(),
        }
    }

    /// The allocator it gives back to.
    pub fn allocator(&self) -> &Allocator {
        &self.allocator
    }

    /// Moves everything `other` holds into `self`.
    pub fn append(&mut self, mut other: Holdings) {
        self.instances += std::mem::take(&mut other.instances);
        self.memories.append(&mut other.memories);
        self.tables.append(&mut other.tables);
    }
}

impl Drop for Holdings {
    fn drop(&mut self) {
        let memories = self.memories.drain(..).rev().map(|m| (m.slot, m.plan));
        let tables = self.tables.drain(..).rev().map(|t| t.slot);
        let instances = std::mem::take(&mut self.instances);
        match &self.allocator.0 {
            Kind::Pool(p) => p.release(memories, tables, instances, self.attempt),
            // Unmapped and freed as they drop.
            Kind::OnDemand(_) => {
                memories.for_each(drop);
                tables.for_each(drop);
            }
        }
    }
}

impl std::fmt::Debug for Holdings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holdings")
            .field("instances", &self.instances)
            .field("memories", &self.memories.len())
            .field("tables", &self.tables.len())
            .finish()
    }
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
    /// [`Error::Unsupported`](crate::Error::Unsupported) if the layout can
    /// never be served; nothing is taken.
    pub(crate) fn check_layout(&self, layout: &InstanceLayout) -> Result<()> {
        layout.check()?;
        match &self.0 {
            Kind::Pool(p) => p.check_layout(layout),
            Kind::OnDemand(_) => Ok(()),
        }
    }

    /// Takes what `layout` needs (an instance, its memories and tables, of
    /// size 0: no OS work yet). Where the pool is exhausted and `deadline`
    /// is later, waits for slots in the pool's admission queue. Only slots
    /// are taken here, never a limiter's answer: a waiter's place in the
    /// queue ends once it has its slots.
    pub(crate) async fn take(
        &self,
        layout: &InstanceLayout,
        deadline: Option<Instant>,
    ) -> Result<Holdings> {
        let attempt = |attempt| self.take_now(layout, attempt);
        let mut held = match (&self.0, deadline) {
            (Kind::Pool(p), Some(deadline)) => p.admission.run(deadline, attempt).await?,
            _ => attempt(Attempt::Alone)?,
        };
        held.attempt = Attempt::Alone;
        Ok(held)
    }

    /// One attempt of [`take`](Self::take); on failure, what it took goes
    /// back as `attempt` says.
    fn take_now(&self, layout: &InstanceLayout, attempt: Attempt) -> Result<Holdings> {
        let mut held = Holdings::new(self.clone());
        held.attempt = attempt;
        if let Kind::Pool(p) = &self.0 {
            p.acquire_instance()?;
            held.instances = 1;
        }
        for plan in &layout.memories {
            let (slot, maximum) = match &self.0 {
                Kind::Pool(p) => p.acquire_memory(plan)?,
                Kind::OnDemand(d) => d.reserve_memory(plan)?,
            };
            held.memories.push(MemoryEntry {
                slot,
                maximum,
                plan: plan.clone(),
            });
        }
        for ty in &layout.tables {
            let (slot, maximum) = match &self.0 {
                Kind::Pool(p) => {
                    let (slot, maximum) = p.acquire_table(ty)?;
                    (slot, Some(maximum))
                }
                Kind::OnDemand(_) => (TableSlot::on_heap(), ty.maximum),
            };
            held.tables.push(TableEntry {
                slot,
                minimum: ty.minimum,
                maximum,
            });
        }
        Ok(held)
    }

    /// The OS work of an instantiation: the image in place, `size` bytes
    /// accessible.
    pub(crate) fn prepare_memory(&self, entry: &mut MemoryEntry, size: usize) -> io::Result<()> {
        match &self.0 {
            Kind::Pool(p) => p.prepare_memory(&mut entry.slot, &entry.plan, size),
            Kind::OnDemand(_) => entry.slot.prepare(&entry.plan, size).map(drop),
        }
    }

    /// `(memory, table)` bytes a reset restores in place (0 on demand).
    pub(crate) fn keep_resident(&self) -> (usize, usize) {
        match &self.0 {
            Kind::Pool(p) => p.keep_resident(),
            Kind::OnDemand(_) => (0, 0),
        }
    }

    /// How long `instantiate_async` waits for slots (0 on demand).
    pub(crate) fn admission_timeout(&self) -> Duration {
        match &self.0 {
            Kind::Pool(p) => p.admission_timeout(),
            Kind::OnDemand(_) => Duration::ZERO,
        }
    }

    /// Counts a limiter refusal (a pool's metric).
    pub(crate) fn limiter_denied(&self) {
        if let Kind::Pool(p) = &self.0 {
            p.limiter_denied();
        }
    }
}
