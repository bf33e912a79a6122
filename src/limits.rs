//! Resource limiters: the host's say over every byte and element a tenant
//! takes, [`StoreLimits`], the ready-made one, and the grow protocol
//! ([`grow`]): the one place where the limiter is asked and growth decided.

use crate::{Error, Resource};
use std::future::Future;
use std::io;
use std::pin::Pin;

/// The default per-store cap on instances, memories and tables.
pub const DEFAULT_STORE_CAP: usize = 10_000;

/// Used by hosts to limit the resources an instance takes within a store.
///
/// Installed with [`Store::limiter`](crate::Store::limiter). Memory sizes are
/// bytes (always multiples of [`WASM_PAGE_SIZE`](crate::WASM_PAGE_SIZE)),
/// table sizes elements. `maximum` is supplied by the allocator: a pool
/// passes `Some(min(declared maximum, slot capacity))`.
///
/// Growing by zero never calls the limiter. Returning `false` fails the
/// growth with [`Error::LimiterDenied`] and calls no failure hook; returning
/// `true` when `desired > maximum` (or when the OS then fails) fails the
/// growth and calls the matching `*_grow_failed` hook exactly once.
pub trait ResourceLimiter {
    /// A linear memory wants to grow from `current` to `desired` bytes.
    /// Return whether that is permitted.
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> bool;

    /// A table wants to grow from `current` to `desired` elements.
    /// Return whether that is permitted.
    fn table_growing(&mut self, current: u32, desired: u32, maximum: Option<u32>) -> bool;

    /// A memory growth that [`memory_growing`](Self::memory_growing)
    /// permitted failed (past the maximum, or the OS refused).
    fn memory_grow_failed(&mut self, _error: &Error) {}

    /// A table growth that [`table_growing`](Self::table_growing) permitted
    /// failed (past the maximum, or out of memory).
    fn table_grow_failed(&mut self, _error: &Error) {}

    /// The most instances the store may hold. Re-read at each instantiation.
    fn instances(&self) -> usize {
        DEFAULT_STORE_CAP
    }

    /// The most tables the store may hold. Re-read at each instantiation.
    fn tables(&self) -> usize {
        DEFAULT_STORE_CAP
    }

    /// The most linear memories the store may hold. Re-read at each
    /// instantiation.
    fn memories(&self) -> usize {
        DEFAULT_STORE_CAP
    }
}

/// A boxed future a [`ResourceLimiterAsync`] returns.
pub type LimiterFuture<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

/// [`ResourceLimiter`] for hosts that must wait to answer (a quota service).
///
/// The same protocol; the two growing methods return a future. Installed
/// with [`Store::limiter_async`](crate::Store::limiter_async) and used by
/// the `*_async` calls; the synchronous calls block the thread on its futures.
pub trait ResourceLimiterAsync: Send {
    /// A linear memory wants to grow from `current` to `desired` bytes.
    fn memory_growing<'a>(
        &'a mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> LimiterFuture<'a>;

    /// A table wants to grow from `current` to `desired` elements.
    fn table_growing<'a>(
        &'a mut self,
        current: u32,
        desired: u32,
        maximum: Option<u32>,
    ) -> LimiterFuture<'a>;

    /// A permitted memory growth failed.
    fn memory_grow_failed(&mut self, _error: &Error) {}

    /// A permitted table growth failed.
    fn table_grow_failed(&mut self, _error: &Error) {}

    /// The most instances the store may hold.
    fn instances(&self) -> usize {
        DEFAULT_STORE_CAP
    }

    /// The most tables the store may hold.
    fn tables(&self) -> usize {
        DEFAULT_STORE_CAP
    }

    /// The most linear memories the store may hold.
    fn memories(&self) -> usize {
        DEFAULT_STORE_CAP
    }
}

/// A [`ResourceLimiter`] with fixed limits, built by [`StoreLimitsBuilder`].
///
/// It checks only its own limits: each memory's size against
/// `memory_size`, each table's elements against `table_elements` (reaching a
/// limit exactly is allowed). Whether `desired` exceeds the allocator's
/// `maximum` is the allocator's business ([`Error::MaximumExceeded`]).
/// The default has no size limits and caps of 10,000.
#[derive(Clone, Debug)]
pub struct StoreLimits {
    memory_size: Option<usize>,
    table_elements: Option<u32>,
    instances: usize,
    tables: usize,
    memories: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            memory_size: None,
            table_elements: None,
            instances: DEFAULT_STORE_CAP,
            tables: DEFAULT_STORE_CAP,
            memories: DEFAULT_STORE_CAP,
        }
    }
}

impl StoreLimits {
    /// The instance cap (also what both limiter traits report; inherent so
    /// that calling it is not ambiguous when both traits are in scope).
    pub fn instances(&self) -> usize {
        self.instances
    }

    /// The table cap.
    pub fn tables(&self) -> usize {
        self.tables
    }

    /// The memory cap.
    pub fn memories(&self) -> usize {
        self.memories
    }
}

impl ResourceLimiter for StoreLimits {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> bool {
        self.memory_size.is_none_or(|limit| desired <= limit)
    }

    fn table_growing(&mut self, _current: u32, desired: u32, _maximum: Option<u32>) -> bool {
        self.table_elements.is_none_or(|limit| desired <= limit)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

impl ResourceLimiterAsync for StoreLimits {
    fn memory_growing<'a>(
        &'a mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> LimiterFuture<'a> {
        let ok = ResourceLimiter::memory_growing(self, current, desired, maximum);
        Box::pin(std::future::ready(ok))
    }

    fn table_growing<'a>(
        &'a mut self,
        current: u32,
        desired: u32,
        maximum: Option<u32>,
    ) -> LimiterFuture<'a> {
        let ok = ResourceLimiter::table_growing(self, current, desired, maximum);
        Box::pin(std::future::ready(ok))
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

/// Builds a [`StoreLimits`]; every setter is optional.
#[derive(Clone, Debug, Default)]
pub struct StoreLimitsBuilder(StoreLimits);

impl StoreLimitsBuilder {
    /// No size limits, caps of 10,000.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most bytes any one linear memory may grow to.
    pub fn memory_size(mut self, bytes: usize) -> Self {
        self.0.memory_size = Some(bytes);
        self
    }

    /// The most elements any one table may grow to.
    pub fn table_elements(mut self, elements: u32) -> Self {
        self.0.table_elements = Some(elements);
        self
    }

    /// The most instances the store may hold.
    pub fn instances(mut self, limit: usize) -> Self {
        self.0.instances = limit;
        self
    }

    /// The most tables the store may hold.
    pub fn tables(mut self, limit: usize) -> Self {
        self.0.tables = limit;
        self
    }

    /// The most memories the store may hold.
    pub fn memories(mut self, limit: usize) -> Self {
        self.0.memories = limit;
        self
    }

    /// The finished limits.
    pub fn build(self) -> StoreLimits {
        self.0
    }
}

/// A store's limiter: a closure finding it in the host data `T`.
pub(crate) enum Limiter<T> {
    Sync(Box<dyn FnMut(&mut T) -> &mut (dyn ResourceLimiter) + Send + Sync>),
    Async(Box<dyn FnMut(&mut T) -> &mut (dyn ResourceLimiterAsync) + Send + Sync>),
}

/// The store's limiter and host data, borrowed for one operation. Without
/// a limiter every growth is allowed and the default caps of 10,000 apply.
pub(crate) struct LimiterCtx<'a, T> {
    pub data: &'a mut T,
    pub limiter: Option<&'a mut Limiter<T>>,
}

/// The installed limiter, found in the host data for one call.
enum Hooks<'a> {
    Sync(&'a mut dyn ResourceLimiter),
    Async(&'a mut dyn ResourceLimiterAsync),
}

/// An answer to a growing call: now (a sync limiter) or later.
enum Answer<'a> {
    Now(bool),
    Later(LimiterFuture<'a>),
}

/// Table sizes are `u32` in the limiter; the protocol's are `usize`.
fn elements(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl<'a> Hooks<'a> {
    fn growing(self, g: &Growth) -> Answer<'a> {
        let (cur, want, max) = (g.current, g.desired, g.maximum);
        let table = |c, d, m: Option<usize>| (elements(c), elements(d), m.map(elements));
        match (self, g.resource) {
            (Hooks::Sync(l), Resource::Table) => {
                let (c, d, m) = table(cur, want, max);
                Answer::Now(l.table_growing(c, d, m))
            }
            (Hooks::Sync(l), _) => Answer::Now(l.memory_growing(cur, want, max)),
            (Hooks::Async(l), Resource::Table) => {
                let (c, d, m) = table(cur, want, max);
                Answer::Later(l.table_growing(c, d, m))
            }
            (Hooks::Async(l), _) => Answer::Later(l.memory_growing(cur, want, max)),
        }
    }

    fn grow_failed(self, resource: Resource, error: &Error) {
        match (self, resource) {
            (Hooks::Sync(l), Resource::Table) => l.table_grow_failed(error),
            (Hooks::Sync(l), _) => l.memory_grow_failed(error),
            (Hooks::Async(l), Resource::Table) => l.table_grow_failed(error),
            (Hooks::Async(l), _) => l.memory_grow_failed(error),
        }
    }

    fn caps(self) -> (usize, usize, usize) {
        match self {
            Hooks::Sync(l) => (l.instances(), l.memories(), l.tables()),
            Hooks::Async(l) => (l.instances(), l.memories(), l.tables()),
        }
    }
}

impl<T> LimiterCtx<'_, T> {
    fn hooks(&mut self) -> Option<Hooks<'_>> {
        Some(match self.limiter.as_deref_mut()? {
            Limiter::Sync(f) => Hooks::Sync(f(self.data)),
            Limiter::Async(f) => Hooks::Async(f(self.data)),
        })
    }

    /// `(instances, memories, tables)` caps, read now.
    pub fn caps(&mut self) -> (usize, usize, usize) {
        let d = DEFAULT_STORE_CAP;
        self.hooks().map_or((d, d, d), Hooks::caps)
    }
}

/// One growth for [`grow`] to decide: of a memory (bytes) or a table
/// (elements), at instantiation (from 0 to the minimum) or after.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Growth {
    pub resource: Resource,
    pub current: usize,
    /// What the limiter sees: saturated if the request `overflowed`.
    pub desired: usize,
    /// Supplied by the allocator; `None`: unbounded.
    pub maximum: Option<usize>,
    /// The request did not fit its type (then `desired` is saturated).
    pub overflowed: bool,
}

/// The grow protocol. The caller has already answered a grow by 0.
///
/// 1. Ask the limiter `growing(current, desired, maximum)`. `false`:
///    [`Error::LimiterDenied`], no failure hook.
/// 2. `desired > maximum`, or the request overflowed its type:
///    [`Error::MaximumExceeded`]; else `apply` (the OS work), whose failure
///    is [`Error::Os`].
/// 3. Either failure calls the limiter's failure hook exactly once.
pub(crate) async fn grow<T>(
    limiter: &mut LimiterCtx<'_, T>,
    growth: Growth,
    apply: impl FnOnce() -> io::Result<()>,
) -> Result<(), Error> {
    let allowed = match limiter.hooks().map(|h| h.growing(&growth)) {
        None => true,
        Some(Answer::Now(ok)) => ok,
        Some(Answer::Later(fut)) => fut.await,
    };
    let Growth {
        resource,
        desired,
        maximum,
        overflowed,
        ..
    } = growth;
    if !allowed {
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
    if let (Err(e), Some(h)) = (&result, limiter.hooks()) {
        h.grow_failed(resource, e);
    }
    result
}
