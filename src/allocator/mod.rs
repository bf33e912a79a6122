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
#[cfg(feature = "wasmtime")]
pub(crate) use pooling::Pool;
pub(crate) use pooling::PoolRef;
pub use pooling::{
    PoolMetrics, PooledStack, PoolingInstanceAllocator, StackPool, StackPoolMetrics,
};

pub(crate) use pooling::Attempt;

use crate::layout::MemoryPlan;
use crate::slot::{MemorySlot, TableSlot};
use crate::{InstanceLayout, MemoryImage, MemoryType, Result};
use std::borrow::Borrow;
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
        Allocator(Kind::Pool(self.store_ref()))
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
    /// The memory's type: its minimum, for `reset` and the release.
    pub ty: MemoryType,
    /// The layout's image where the slot does not hold it (copied in, or
    /// not in place yet); a mapped image is the slot's own, so a request
    /// on a warm slot takes no reference to it (a count both cores would
    /// write).
    pub image: Option<Arc<MemoryImage>>,
}

impl MemoryEntry {
    /// What `reset` puts back: the minimum and the image.
    pub fn plan(&self) -> MemoryPlan {
        MemoryPlan {
            ty: self.ty,
            image: self.image.clone().or_else(|| self.slot.image().cloned()),
        }
    }

    /// Keeps `plan`'s image unless the slot now holds it.
    pub fn keep_image(&mut self, plan: &MemoryPlan) {
        self.image = plan.image.as_ref().filter(|i| !self.slot.holds(i)).cloned();
    }
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

/// Instance counts, memories and tables: what [`Holdings`] hold.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// Instance slots held (counted by a pool only).
    pub instances: u32,
    pub memories: Vec<MemoryEntry>,
    pub tables: Vec<TableEntry>,
}

/// What a store (`A`: the [`Allocator`] it owns) or an instantiation in
/// progress (`A`: one borrowed from its store, so that taking slots
/// clones no reference count) holds. Dropping it gives everything back
/// through the allocator's one release path, which wakes waiting
/// instantiations.
pub(crate) struct Holdings<A: Borrow<Allocator> = Allocator> {
    allocator: A,
    /// How a failed attempt gives back (see [`Attempt`]).
    attempt: Attempt,
    held: Held,
}

impl<A: Borrow<Allocator>> Holdings<A> {
    /// Nothing held yet.
    pub fn new(allocator: A) -> Self {
        Holdings {
            allocator,
            attempt: Attempt::Alone,
            held: Held::default(),
        }
    }

    /// The allocator it gives back to.
    pub fn allocator(&self) -> &Allocator {
        self.allocator.borrow()
    }

    /// What it holds, no longer given back when it drops: for a store to
    /// [`append`](Holdings::append) at once.
    pub fn detach(mut self) -> Held {
        std::mem::take(&mut self.held)
    }
}

impl Holdings {
    /// Moves everything `other` holds into `self`.
    pub fn append(&mut self, mut other: Held) {
        self.held.instances += other.instances;
        self.held.memories.append(&mut other.memories);
        self.held.tables.append(&mut other.tables);
    }
}

impl<A: Borrow<Allocator>> std::ops::Deref for Holdings<A> {
    type Target = Held;
    fn deref(&self) -> &Held {
        &self.held
    }
}

impl<A: Borrow<Allocator>> std::ops::DerefMut for Holdings<A> {
    fn deref_mut(&mut self) -> &mut Held {
        &mut self.held
    }
}

impl<A: Borrow<Allocator>> Drop for Holdings<A> {
    fn drop(&mut self) {
        let held = std::mem::take(&mut self.held);
        if held.instances == 0 && held.memories.is_empty() && held.tables.is_empty() {
            return;
        }
        let memories = held.memories.into_iter().rev().map(|m| (m.slot, m.ty));
        let tables = held.tables.into_iter().rev().map(|t| t.slot);
        match &self.allocator.borrow().0 {
            Kind::Pool(p) => p.release(memories, tables, held.instances, self.attempt),
            // Unmapped and freed as they drop.
            Kind::OnDemand(_) => {
                memories.for_each(drop);
                tables.for_each(drop);
            }
        }
    }
}

impl<A: Borrow<Allocator>> std::fmt::Debug for Holdings<A> {
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
    Pool(Arc<PoolRef>),
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
    ) -> Result<Holdings<&Allocator>> {
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
    fn take_now(&self, layout: &InstanceLayout, attempt: Attempt) -> Result<Holdings<&Allocator>> {
        let mut held = Holdings::new(self);
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
                ty: plan.ty,
                image: None,
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

    /// The OS work of an instantiation: `plan`'s image in place, `size`
    /// bytes accessible.
    pub(crate) fn prepare_memory(
        &self,
        entry: &mut MemoryEntry,
        plan: &MemoryPlan,
        size: usize,
    ) -> io::Result<()> {
        let done = match &self.0 {
            Kind::Pool(p) => p.prepare_memory(&mut entry.slot, plan, size),
            Kind::OnDemand(_) => entry.slot.prepare(plan, size).map(drop),
        };
        entry.keep_image(plan);
        done
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
