//! [`Store`]: a tenant's memories, tables and instances, and its limiter.
//! Instantiation, growth and reset run here, on the records the allocator
//! gave out; the public handles (`Memory`, `Table`) only delegate.

mod instantiate;

use crate::allocator::{Allocator, Holdings, InstanceAllocator, MemoryEntry, TableEntry};
use crate::limits::{self, Growth, Limiter, LimiterCtx};
use crate::{Error, Resource, ResourceLimiter, ResourceLimiterAsync, Result, WASM_PAGE_SIZE};
use std::future::Future;
use std::ops::Range;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// A tenant: host data `T`, the instances it made, and the slots they hold.
///
/// Dropping a store returns all its slots to the pool. A store keeps its
/// own handle on the allocator, so it may outlive the allocator value it
/// was made from.
pub struct Store<T> {
    id: u64,
    limiter: Option<Limiter<T>>,
    inner: StoreInner,
    data: T,
}

#[derive(Debug)]
struct StoreInner {
    instances: Vec<InstanceRecord>,
    /// Every slot the store holds (given back when the store drops), and
    /// the allocator they came from.
    held: Holdings,
}

#[derive(Debug)]
struct InstanceRecord {
    memories: Range<u32>,
    tables: Range<u32>,
}

/// An instance: a plain index into its store, `Copy`. Its memories and
/// tables are found with [`Instance::memory`] and [`Instance::table`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Instance {
    pub(crate) store: u64,
    pub(crate) index: u32,
}

impl<T> Store<T> {
    /// A new, empty store holding `data`, drawing slots from `allocator`.
    pub fn new(allocator: &impl InstanceAllocator, data: T) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Store {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            limiter: None,
            inner: StoreInner {
                instances: Vec::new(),
                held: Holdings::new(allocator.allocator()),
            },
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

    /// Puts every instance back to its just-instantiated state, in place:
    /// memories at their minimum holding their image then zeroes, tables at
    /// their minimum holding zeroes. The store keeps its slots and counts,
    /// and the limiter is not asked again for minimums it granted.
    ///
    /// Cheaper than dropping the store and instantiating again: no slot
    /// changes hands, no image is remapped. The first `*_keep_resident`
    /// bytes are restored with writes; the rest is discarded with `madvise`.
    /// Every memory and table is reset even when one fails: an
    /// [`Error::Os`] (the first one met) leaves every table reset and every
    /// memory with correct contents, some possibly still larger than their
    /// minimum; reset again or drop the store.
    pub fn reset(&mut self) -> Result<()> {
        let (memory_keep, table_keep) = self.inner.held.allocator().keep_resident();
        for t in &mut self.inner.held.tables {
            t.slot.clear(table_keep);
            // Cannot fail: the slot held this many elements already.
            let _ = t.slot.grow(t.minimum, 0);
        }
        let mut first_error = None;
        for m in &mut self.inner.held.memories {
            let plan = m.plan();
            let reset = m.slot.reset(&plan, memory_keep);
            // A reset that failed may have unmapped the slot's image.
            m.keep_image(&plan);
            if let Err(e) = reset {
                first_error.get_or_insert(Error::Os(e));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Grows memory `index` by `delta_pages`, returning the old size in
    /// pages (see [`Memory::grow`](crate::Memory::grow)).
    pub(crate) async fn grow_memory(
        &mut self,
        store: u64,
        index: u32,
        delta_pages: u64,
    ) -> Result<u64> {
        self.check(store);
        let (mut limiter, inner) = self.parts();
        let entry = &mut inner.held.memories[index as usize];
        let current = entry.slot.size();
        let pages = (current / WASM_PAGE_SIZE) as u64;
        if delta_pages == 0 {
            return Ok(pages);
        }
        // Saturate to the largest page-aligned size when the sum overflows:
        // the limiter still sees a real request, and the maximum refuses it.
        let exact = pages
            .checked_add(delta_pages)
            .and_then(|p| p.checked_mul(WASM_PAGE_SIZE as u64))
            .and_then(|b| usize::try_from(b).ok());
        let desired = exact.unwrap_or(usize::MAX & !(WASM_PAGE_SIZE - 1));
        let growth = Growth {
            resource: Resource::Memory,
            current,
            desired,
            maximum: Some(entry.maximum),
            overflowed: exact.is_none(),
        };
        let r = limits::grow(&mut limiter, growth, || entry.slot.resize(desired)).await;
        counted(inner.held.allocator(), r)?;
        Ok(pages)
    }

    /// Grows table `index` by `delta` elements set to `init`, returning the
    /// old size (see [`Table::grow`](crate::Table::grow)).
    pub(crate) async fn grow_table(
        &mut self,
        store: u64,
        index: u32,
        delta: u32,
        init: usize,
    ) -> Result<u32> {
        self.check(store);
        let (mut limiter, inner) = self.parts();
        let entry = &mut inner.held.tables[index as usize];
        let current = entry.slot.size();
        if delta == 0 {
            return Ok(current);
        }
        let (desired, overflowed) = match current.checked_add(delta) {
            Some(d) => (d, false),
            None => (u32::MAX, true),
        };
        let growth = Growth {
            resource: Resource::Table,
            current: current as usize,
            desired: desired as usize,
            maximum: entry.maximum.map(|m| m as usize),
            overflowed,
        };
        let r = limits::grow(&mut limiter, growth, || entry.slot.grow(desired, init)).await;
        counted(inner.held.allocator(), r)?;
        Ok(current)
    }

    /// The limiter and the records, borrowed apart.
    fn parts(&mut self) -> (LimiterCtx<'_, T>, &mut StoreInner) {
        (
            LimiterCtx {
                data: &mut self.data,
                limiter: self.limiter.as_mut(),
            },
            &mut self.inner,
        )
    }

    /// Panics if a handle from store `store` is used with this one.
    fn check(&self, store: u64) {
        assert_eq!(
            store, self.id,
            "handle used with a store it does not belong to"
        );
    }

    /// The index in this store of instance `i`'s `idx`-th memory.
    pub(crate) fn instance_memory(&self, i: Instance, idx: usize) -> Option<u32> {
        self.instance(i).memories.clone().nth(idx)
    }

    /// The index in this store of instance `i`'s `idx`-th table.
    pub(crate) fn instance_table(&self, i: Instance, idx: usize) -> Option<u32> {
        self.instance(i).tables.clone().nth(idx)
    }

    fn instance(&self, i: Instance) -> &InstanceRecord {
        self.check(i.store);
        &self.inner.instances[i.index as usize]
    }

    /// Memory `index` of this store, for a handle from store `store`.
    pub(crate) fn memory(&self, store: u64, index: u32) -> &MemoryEntry {
        self.check(store);
        &self.inner.held.memories[index as usize]
    }

    /// Memory `index`, mutably.
    pub(crate) fn memory_mut(&mut self, store: u64, index: u32) -> &mut MemoryEntry {
        self.check(store);
        &mut self.inner.held.memories[index as usize]
    }

    /// Table `index` of this store, for a handle from store `store`.
    pub(crate) fn table(&self, store: u64, index: u32) -> &TableEntry {
        self.check(store);
        &self.inner.held.tables[index as usize]
    }

    /// Table `index`, mutably.
    pub(crate) fn table_mut(&mut self, store: u64, index: u32) -> &mut TableEntry {
        self.check(store);
        &mut self.inner.held.tables[index as usize]
    }
}

/// Counts a limiter refusal in the pool's metrics.
fn counted<R>(allocator: &Allocator, result: Result<R>) -> Result<R> {
    if let Err(Error::LimiterDenied { .. }) = &result {
        allocator.limiter_denied();
    }
    result
}

impl<T: std::fmt::Debug> std::fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data", &self.data)
            .field("instances", &self.inner.instances.len())
            .field("memories", &self.inner.held.memories.len())
            .field("tables", &self.inner.held.tables.len())
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
