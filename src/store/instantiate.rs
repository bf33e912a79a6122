//! Instantiation: the checks, the slots (waiting for them if asked), the
//! limiter's word on each minimum, and the OS work; all or nothing.

use super::{Instance, InstanceRecord, Store, block_on, counted};
use crate::limits::{self, Growth, LimiterCtx};
use crate::{Error, InstanceLayout, Resource, Result};
use std::time::{Duration, Instant};

impl<T> Store<T> {
    /// Instantiates `layout`: takes an instance, a memory slot per memory
    /// and a table slot per table, asks the limiter for each minimum, and
    /// makes each memory its minimum size with its image.
    ///
    /// Checks, in order: [`Error::Unsupported`] (the layout cannot fit this
    /// allocator; nothing is taken), [`Error::StoreLimit`] (the store's caps,
    /// re-read now: reaching a cap is fine, one past it is not),
    /// [`Error::PoolExhausted`], then the limiter for each memory's minimum
    /// (`memory_growing(0, min, maximum)`, even for a minimum of 0) and each
    /// table's. A failure part-way releases everything taken.
    pub fn instantiate(&mut self, layout: &InstanceLayout) -> Result<Instance> {
        block_on(self.instantiate_inner(layout, None))
    }

    /// [`instantiate`](Self::instantiate), asking an async limiter without
    /// blocking. When the pool is exhausted it waits for a slot, first come
    /// first served, for up to the pool's
    /// [`admission_timeout`](crate::PoolingConfig::admission_timeout)
    /// (zero by default: fail at once).
    pub async fn instantiate_async(&mut self, layout: &InstanceLayout) -> Result<Instance> {
        let timeout = self.inner.held.allocator().admission_timeout();
        self.instantiate_waiting(layout, timeout).await
    }

    /// [`instantiate`](Self::instantiate), but when the pool is exhausted,
    /// waits up to `timeout` for a slot (blocking the thread), first come
    /// first served, then fails with [`Error::PoolExhausted`]. Waiters are
    /// woken as stores release slots; nothing polls. Per-store caps and
    /// unsupported layouts fail at once: waiting cannot help them.
    pub fn instantiate_timeout(
        &mut self,
        layout: &InstanceLayout,
        timeout: Duration,
    ) -> Result<Instance> {
        block_on(self.instantiate_waiting(layout, timeout))
    }

    /// [`instantiate_timeout`](Self::instantiate_timeout) without blocking
    /// the thread.
    pub async fn instantiate_async_timeout(
        &mut self,
        layout: &InstanceLayout,
        timeout: Duration,
    ) -> Result<Instance> {
        self.instantiate_waiting(layout, timeout).await
    }

    async fn instantiate_waiting(
        &mut self,
        layout: &InstanceLayout,
        timeout: Duration,
    ) -> Result<Instance> {
        // A timeout past what an `Instant` can hold waits for ever (a
        // century, in practice).
        let now = Instant::now();
        let deadline = (!timeout.is_zero()).then(|| {
            now.checked_add(timeout)
                .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
                .unwrap_or(now)
        });
        self.instantiate_inner(layout, deadline).await
    }

    /// The checks that waiting cannot change: the layout against the
    /// allocator, then the store's caps.
    fn precheck(&mut self, layout: &InstanceLayout) -> Result<()> {
        self.inner.held.allocator().check_layout(layout)?;
        let (mut limiter, inner) = self.parts();
        let (max_instances, max_memories, max_tables) = limiter.caps();
        let over = |have: usize, adding: usize, cap: usize| have.saturating_add(adding) > cap;
        if over(inner.instances.len(), 1, max_instances) {
            return Err(Error::StoreLimit {
                resource: Resource::Instance,
                limit: max_instances,
            });
        }
        if over(
            inner.held.memories.len(),
            layout.memories.len(),
            max_memories,
        ) {
            return Err(Error::StoreLimit {
                resource: Resource::Memory,
                limit: max_memories,
            });
        }
        if over(inner.held.tables.len(), layout.tables.len(), max_tables) {
            return Err(Error::StoreLimit {
                resource: Resource::Table,
                limit: max_tables,
            });
        }
        Ok(())
    }

    /// Instantiates `layout`: the checks, then its slots (waiting for them
    /// until `deadline`, if any, when the pool is exhausted), then the
    /// limiter's word on each minimum and the OS work. A failure gives back
    /// everything taken.
    async fn instantiate_inner(
        &mut self,
        layout: &InstanceLayout,
        deadline: Option<Instant>,
    ) -> Result<Instance> {
        self.precheck(layout)?;
        let id = self.id;
        let (mut limiter, inner) = (
            LimiterCtx {
                data: &mut self.data,
                limiter: self.limiter.as_mut(),
            },
            &mut self.inner,
        );
        let allocator = inner.held.allocator();
        let mut taking = allocator.take(layout, deadline).await?;

        for (entry, plan) in taking.memories.iter_mut().zip(&layout.memories) {
            let min = plan.ty.min_bytes();
            let growth = Growth {
                resource: Resource::Memory,
                current: 0,
                desired: min,
                maximum: Some(entry.maximum),
                overflowed: false,
            };
            let r = limits::grow(&mut limiter, growth, || {
                allocator.prepare_memory(entry, plan, min)
            });
            counted(allocator, r.await)?;
        }
        for entry in taking.tables.iter_mut() {
            let growth = Growth {
                resource: Resource::Table,
                current: 0,
                desired: entry.minimum as usize,
                maximum: entry.maximum.map(|m| m as usize),
                overflowed: false,
            };
            let min = entry.minimum;
            let r = limits::grow(&mut limiter, growth, || entry.slot.grow(min, 0));
            counted(allocator, r.await)?;
        }

        let to_u32 = |n: usize| u32::try_from(n).expect("store caps keep counts in u32");
        let memories = to_u32(inner.held.memories.len() + taking.memories.len());
        let tables = to_u32(inner.held.tables.len() + taking.tables.len());
        let record = InstanceRecord {
            memories: to_u32(inner.held.memories.len())..memories,
            tables: to_u32(inner.held.tables.len())..tables,
        };
        // Nothing between these two can fail: the slots are held by one
        // or the other.
        let taken = taking.detach();
        inner.held.append(taken);
        inner.instances.push(record);
        Ok(Instance {
            store: id,
            index: to_u32(inner.instances.len() - 1),
        })
    }
}
