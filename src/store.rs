//! [`Store`]: a tenant's memories, tables and instances, its limiter, and
//! the one place where growth is decided ([`grow_protocol`]).

use crate::allocator::{Backend, InstanceAllocator};
use crate::memory::{Memory, MemoryEntry};
use crate::table::{Table, TableEntry};
use crate::{Error, InstanceLayout, Resource, ResourceLimiter, ResourceLimiterAsync, Result};
use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

type SyncLimiter<T> = Box<dyn FnMut(&mut T) -> &mut (dyn ResourceLimiter) + Send + Sync>;
type AsyncLimiter<T> = Box<dyn FnMut(&mut T) -> &mut (dyn ResourceLimiterAsync) + Send + Sync>;

enum Limiter<T> {
    Sync(SyncLimiter<T>),
    Async(AsyncLimiter<T>),
}

/// A tenant: host data `T`, the instances it made, and the slots they hold.
///
/// Dropping a store returns all its slots to the pool. A store keeps its
/// own handle on the allocator, so it may outlive the allocator value it
/// was made from.
pub struct Store<T> {
    id: u64,
    backend: Backend,
    limiter: Option<Limiter<T>>,
    inner: StoreInner,
    data: T,
}

#[derive(Debug, Default)]
pub(crate) struct StoreInner {
    instances: Vec<InstanceRecord>,
    pub memories: Vec<MemoryEntry>,
    pub tables: Vec<TableEntry>,
}

#[derive(Debug)]
struct InstanceRecord {
    memories: Range<u32>,
    tables: Range<u32>,
}

/// An instance: a plain index into its store, `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Instance {
    store: u64,
    index: u32,
}

impl Instance {
    /// The instance's `idx`-th memory, if it has one.
    pub fn memory<T>(&self, store: &Store<T>, idx: usize) -> Option<Memory> {
        let record = store.instance(*self);
        let index = record.memories.clone().nth(idx)?;
        Some(Memory {
            store: self.store,
            index,
        })
    }

    /// The instance's `idx`-th table, if it has one.
    pub fn table<T>(&self, store: &Store<T>, idx: usize) -> Option<Table> {
        let record = store.instance(*self);
        let index = record.tables.clone().nth(idx)?;
        Some(Table {
            store: self.store,
            index,
        })
    }
}

/// The store's limiter, borrowed for one operation. Without a limiter every
/// growth is allowed and the default caps of 10,000 apply.
pub(crate) struct LimiterCtx<'a, T> {
    data: &'a mut T,
    limiter: &'a mut Option<Limiter<T>>,
}

impl<T> LimiterCtx<'_, T> {
    async fn growing(
        &mut self,
        resource: Resource,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> bool {
        let table = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        match (self.limiter.as_mut(), resource) {
            (None, _) => true,
            (Some(Limiter::Sync(f)), Resource::Table) => {
                f(self.data).table_growing(table(current), table(desired), maximum.map(table))
            }
            (Some(Limiter::Sync(f)), _) => f(self.data).memory_growing(current, desired, maximum),
            (Some(Limiter::Async(f)), Resource::Table) => {
                f(self.data)
                    .table_growing(table(current), table(desired), maximum.map(table))
                    .await
            }
            (Some(Limiter::Async(f)), _) => {
                f(self.data).memory_growing(current, desired, maximum).await
            }
        }
    }

    fn grow_failed(&mut self, resource: Resource, error: &Error) {
        match (self.limiter.as_mut(), resource) {
            (None, _) => {}
            (Some(Limiter::Sync(f)), Resource::Table) => f(self.data).table_grow_failed(error),
            (Some(Limiter::Sync(f)), _) => f(self.data).memory_grow_failed(error),
            (Some(Limiter::Async(f)), Resource::Table) => f(self.data).table_grow_failed(error),
            (Some(Limiter::Async(f)), _) => f(self.data).memory_grow_failed(error),
        }
    }

    /// `(instances, memories, tables)` caps, read now.
    fn caps(&mut self) -> (usize, usize, usize) {
        match self.limiter.as_mut() {
            None => {
                let d = crate::limits::DEFAULT_STORE_CAP;
                (d, d, d)
            }
            Some(Limiter::Sync(f)) => {
                let l = f(self.data);
                (l.instances(), l.memories(), l.tables())
            }
            Some(Limiter::Async(f)) => {
                let l = f(self.data);
                (l.instances(), l.memories(), l.tables())
            }
        }
    }
}

/// The grow protocol, for memories and tables, at instantiation (from 0 to
/// the minimum) and after. The caller has already answered a grow by 0.
///
/// 1. Ask the limiter `growing(current, desired, maximum)`. `false`:
///    [`Error::LimiterDenied`], no failure hook.
/// 2. `desired > maximum`, or the request `overflowed` its type (then
///    `desired` is saturated): [`Error::MaximumExceeded`]; else `apply` (the
///    OS work), whose failure is [`Error::Os`].
/// 3. Either failure calls the limiter's failure hook exactly once.
#[allow(clippy::too_many_arguments, reason = "replaced by a request value")]
pub(crate) async fn grow_protocol<T>(
    limiter: &mut LimiterCtx<'_, T>,
    backend: &Backend,
    resource: Resource,
    current: usize,
    desired: usize,
    maximum: Option<usize>,
    overflowed: bool,
    apply: impl FnOnce() -> io::Result<()>,
) -> Result<()> {
    if !limiter.growing(resource, current, desired, maximum).await {
        backend.limiter_denied();
        return Err(Error::LimiterDenied { resource, desired });
    }
    let result = match maximum {
        Some(maximum) if overflowed || desired > maximum => Err(Error::MaximumExceeded {
            resource,
            desired,
            maximum,
        }),
        None if overflowed => Err(Error::MaximumExceeded {
            resource,
            desired,
            maximum: desired,
        }),
        _ => apply().map_err(Error::Os),
    };
    if let Err(e) = &result {
        limiter.grow_failed(resource, e);
    }
    result
}

/// Slots taken by an instantiation in progress; released on drop (an error
/// or a panic part-way) unless committed.
struct Taking<'a> {
    backend: &'a Backend,
    /// Wake a waiting instantiation after rolling back. Off for the head
    /// waiter itself: only the head tries, so its own rollback can help
    /// nobody, and waking itself would make it spin.
    notify: bool,
    instance: bool,
    memories: Vec<MemoryEntry>,
    tables: Vec<TableEntry>,
}

impl Drop for Taking<'_> {
    fn drop(&mut self) {
        for m in self.memories.drain(..).rev() {
            self.backend.release_memory(m);
        }
        for t in self.tables.drain(..).rev() {
            self.backend.release_table(t);
        }
        if self.instance {
            self.backend.release_instance();
        }
        if self.notify {
            self.backend.released();
        }
    }
}

impl<T> Store<T> {
    /// A new, empty store holding `data`, drawing slots from `allocator`.
    pub fn new(allocator: &impl InstanceAllocator, data: T) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Store {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            backend: allocator.backend(),
            limiter: None,
            inner: StoreInner::default(),
            data,
        }
    }

    /// The host data.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// The host data, mutably.
    pub fn data_mut(&mut self) -> &mut T {
        &mut self.data
    }

    /// Installs a limiter, found in the host data by `limiter`. Replaces any
    /// limiter installed before (sync or async).
    pub fn limiter(
        &mut self,
        limiter: impl FnMut(&mut T) -> &mut (dyn ResourceLimiter) + Send + Sync + 'static,
    ) {
        self.limiter = Some(Limiter::Sync(Box::new(limiter)));
    }

    /// Installs an async limiter. The `*_async` calls await its futures;
    /// the synchronous calls block the thread on them.
    pub fn limiter_async(
        &mut self,
        limiter: impl FnMut(&mut T) -> &mut (dyn ResourceLimiterAsync) + Send + Sync + 'static,
    ) {
        self.limiter = Some(Limiter::Async(Box::new(limiter)));
    }

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
        block_on(self.instantiate_inner(layout, true))
    }

    /// [`instantiate`](Self::instantiate), asking an async limiter without
    /// blocking. When the pool is exhausted it waits for a slot, first come
    /// first served, for up to the pool's
    /// [`admission_timeout`](crate::PoolingConfig::admission_timeout)
    /// (zero by default: fail at once).
    pub async fn instantiate_async(&mut self, layout: &InstanceLayout) -> Result<Instance> {
        let timeout = self.backend.admission_timeout();
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
        let pool = match &self.backend {
            Backend::Pool(p) if !timeout.is_zero() => p.clone(),
            _ => return self.instantiate_inner(layout, true).await,
        };
        let deadline = Instant::now() + timeout;
        self.precheck(layout)?;
        let mut ticket = pool.admission.enqueue();
        loop {
            if !ticket.turn(deadline).await {
                // Out of time: one last try, whatever our place.
                return self.instantiate_inner(layout, true).await;
            }
            let epoch = ticket.epoch();
            match self.instantiate_inner(layout, false).await {
                Err(Error::PoolExhausted { .. }) => ticket.failed_at(epoch),
                done => return done,
            }
        }
    }

    /// Puts every instance back to its just-instantiated state, in place:
    /// memories at their minimum holding their image then zeroes, tables at
    /// their minimum holding zeroes. The store keeps its slots and counts,
    /// and the limiter is not asked again for minimums it granted.
    ///
    /// Cheaper than dropping the store and instantiating again: no slot
    /// changes hands, no image is remapped. The first `*_keep_resident`
    /// bytes are restored with writes; the rest is discarded with `madvise`.
    /// An [`Error::Os`] leaves tables reset and memories with correct
    /// contents but possibly larger than their minimum; reset again or drop
    /// the store.
    pub fn reset(&mut self) -> Result<()> {
        let (memory_keep, table_keep) = self.backend.keep_resident();
        // Tables cannot fail; do them first so an OS error leaves only
        // memories to redo.
        for t in &mut self.inner.tables {
            t.reset(table_keep);
        }
        for m in &mut self.inner.memories {
            m.reset(memory_keep)?;
        }
        Ok(())
    }

    /// The checks that waiting cannot change: the layout against the
    /// allocator, then the store's caps.
    fn precheck(&mut self, layout: &InstanceLayout) -> Result<()> {
        let id = self.id;
        let (mut limiter, inner, backend) = self.parts(id);
        backend.check_layout(layout)?;
        let (max_instances, max_memories, max_tables) = limiter.caps();
        let over = |have: usize, adding: usize, cap: usize| have.saturating_add(adding) > cap;
        if over(inner.instances.len(), 1, max_instances) {
            return Err(Error::StoreLimit {
                resource: Resource::Instance,
                limit: max_instances,
            });
        }
        if over(inner.memories.len(), layout.memories.len(), max_memories) {
            return Err(Error::StoreLimit {
                resource: Resource::Memory,
                limit: max_memories,
            });
        }
        if over(inner.tables.len(), layout.tables.len(), max_tables) {
            return Err(Error::StoreLimit {
                resource: Resource::Table,
                limit: max_tables,
            });
        }
        Ok(())
    }

    async fn instantiate_inner(
        &mut self,
        layout: &InstanceLayout,
        notify: bool,
    ) -> Result<Instance> {
        self.precheck(layout)?;
        let id = self.id;
        let (mut limiter, inner, backend) = self.parts(id);
        let mut taking = Taking {
            backend,
            notify,
            instance: false,
            memories: Vec::new(),
            tables: Vec::new(),
        };
        backend.acquire_instance()?;
        taking.instance = true;
        for plan in &layout.memories {
            taking.memories.push(backend.acquire_memory(plan)?);
        }
        for ty in &layout.tables {
            taking.tables.push(backend.acquire_table(ty)?);
        }

        for (entry, plan) in taking.memories.iter_mut().zip(&layout.memories) {
            let min = plan.ty.min_bytes();
            grow_protocol(
                &mut limiter,
                backend,
                Resource::Memory,
                0,
                min,
                Some(entry.maximum),
                false,
                || backend.prepare_memory(entry, plan, min),
            )
            .await?;
        }
        for (entry, ty) in taking.tables.iter_mut().zip(&layout.tables) {
            let maximum = entry.maximum.map(|m| m as usize);
            grow_protocol(
                &mut limiter,
                backend,
                Resource::Table,
                0,
                ty.minimum as usize,
                maximum,
                false,
                || entry.resize(ty.minimum, 0),
            )
            .await?;
        }

        let to_u32 = |n: usize| u32::try_from(n).expect("store caps keep counts in u32");
        let m0 = to_u32(inner.memories.len());
        let t0 = to_u32(inner.tables.len());
        inner.memories.append(&mut taking.memories);
        inner.tables.append(&mut taking.tables);
        taking.instance = false;
        inner.instances.push(InstanceRecord {
            memories: m0..to_u32(inner.memories.len()),
            tables: t0..to_u32(inner.tables.len()),
        });
        Ok(Instance {
            store: id,
            index: to_u32(inner.instances.len() - 1),
        })
    }

    /// The limiter, the slots and the allocator, borrowed apart; panics if
    /// `store_id` is not this store's.
    pub(crate) fn parts(
        &mut self,
        store_id: u64,
    ) -> (LimiterCtx<'_, T>, &mut StoreInner, &Backend) {
        assert_eq!(
            store_id, self.id,
            "handle used with a store it does not belong to"
        );
        (
            LimiterCtx {
                data: &mut self.data,
                limiter: &mut self.limiter,
            },
            &mut self.inner,
            &self.backend,
        )
    }

    fn instance(&self, i: Instance) -> &InstanceRecord {
        assert_eq!(
            i.store, self.id,
            "instance used with a store it does not belong to"
        );
        &self.inner.instances[i.index as usize]
    }

    pub(crate) fn memory(&self, m: Memory) -> &MemoryEntry {
        assert_eq!(
            m.store, self.id,
            "memory used with a store it does not belong to"
        );
        &self.inner.memories[m.index as usize]
    }

    pub(crate) fn table(&self, t: Table) -> &TableEntry {
        assert_eq!(
            t.store, self.id,
            "table used with a store it does not belong to"
        );
        &self.inner.tables[t.index as usize]
    }

    pub(crate) fn table_mut(&mut self, t: Table) -> &mut TableEntry {
        assert_eq!(
            t.store, self.id,
            "table used with a store it does not belong to"
        );
        &mut self.inner.tables[t.index as usize]
    }
}

impl<T> Drop for Store<T> {
    fn drop(&mut self) {
        for m in self.inner.memories.drain(..) {
            self.backend.release_memory(m);
        }
        for t in self.inner.tables.drain(..) {
            self.backend.release_table(t);
        }
        for _ in self.inner.instances.drain(..) {
            self.backend.release_instance();
        }
        self.backend.released();
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data", &self.data)
            .field("instances", &self.inner.instances.len())
            .field("memories", &self.inner.memories.len())
            .field("tables", &self.inner.tables.len())
            .finish()
    }
}

/// Runs `fut` on this thread. A synchronous limiter never makes it wait,
/// so the first poll (with a no-op waker, nothing allocated) finishes it;
/// only an async limiter's pending future parks the thread.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut fut = pin!(fut);
    if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        return v;
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
