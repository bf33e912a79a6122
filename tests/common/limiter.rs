//! The recording limiter: it records every call with its exact arguments
//! (bytes for memories, elements for tables), answers from a script or
//! from its per-kind answers, reports the caps it is given, and can panic
//! in a chosen hook.

use instance_pool::{
    Error, InstanceAllocator, Memory, Resource, ResourceLimiter, Result, Store, Table,
};
use std::collections::VecDeque;

/// A result or error, comparable: the variant and its fields (the text of
/// messages and OS errors is left out).
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// `Ok`, with the value as a `u64` (old sizes; `0` for `()`).
    Ok(u64),
    Unsupported,
    StoreLimit(Resource, usize),
    PoolExhausted(Resource, u32),
    LimiterDenied(Resource, usize),
    MaximumExceeded(Resource, usize, usize),
    OutOfBounds(u32, u32),
    InvalidConfig,
    Os,
    /// A variant added since: its `Debug` text.
    Other(String),
}

impl Outcome {
    /// The outcome an error is.
    pub fn of_error(e: &Error) -> Outcome {
        match e {
            Error::Unsupported(_) => Outcome::Unsupported,
            Error::StoreLimit { resource, limit } => Outcome::StoreLimit(*resource, *limit),
            Error::PoolExhausted { resource, limit } => Outcome::PoolExhausted(*resource, *limit),
            Error::LimiterDenied { resource, desired } => {
                Outcome::LimiterDenied(*resource, *desired)
            }
            Error::MaximumExceeded {
                resource,
                desired,
                maximum,
            } => Outcome::MaximumExceeded(*resource, *desired, *maximum),
            Error::OutOfBounds { index, size } => Outcome::OutOfBounds(*index, *size),
            Error::InvalidConfig(_) => Outcome::InvalidConfig,
            Error::Os(_) => Outcome::Os,
            other => Outcome::Other(format!("{other:?}")),
        }
    }

    /// The outcome a result is.
    pub fn of<T: Into<u64>>(r: Result<T>) -> Outcome {
        match r {
            Ok(v) => Outcome::Ok(v.into()),
            Err(e) => Outcome::of_error(&e),
        }
    }
}

/// One call the limiter saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// `memory_growing(current, desired, maximum)`, in bytes.
    MemoryGrowing(usize, usize, Option<usize>),
    /// `table_growing(current, desired, maximum)`, in elements.
    TableGrowing(u32, u32, Option<u32>),
    /// `memory_grow_failed` with the error it was given.
    MemoryGrowFailed(Outcome),
    /// `table_grow_failed` with the error it was given.
    TableGrowFailed(Outcome),
}

/// A limiter hook, for [`Recorder::panic_in`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Hook {
    MemoryGrowing,
    TableGrowing,
    MemoryGrowFailed,
    TableGrowFailed,
}

/// Records every call; answers the growing calls from `script` while it
/// lasts, then with `allow_memory` / `allow_table`.
#[derive(Debug)]
pub struct Recorder {
    /// Every call so far, in order.
    pub calls: Vec<Call>,
    /// Answers for the next growing calls (memory or table), one consumed
    /// per call.
    pub script: VecDeque<bool>,
    /// The answer to `memory_growing` once `script` is used up.
    pub allow_memory: bool,
    /// The answer to `table_growing` once `script` is used up.
    pub allow_table: bool,
    /// The store's instance cap.
    pub instances: usize,
    /// The store's memory cap.
    pub memories: usize,
    /// The store's table cap.
    pub tables: usize,
    /// The hook that panics (after recording its call), if any.
    pub panic_in: Option<Hook>,
}

impl Default for Recorder {
    /// Allows everything; caps of 10,000 (the trait's defaults).
    fn default() -> Self {
        Recorder::with_caps(10_000, 10_000, 10_000)
    }
}

impl Recorder {
    /// Allows everything, with these store caps.
    pub fn with_caps(instances: usize, memories: usize, tables: usize) -> Self {
        Recorder {
            calls: Vec::new(),
            script: VecDeque::new(),
            allow_memory: true,
            allow_table: true,
            instances,
            memories,
            tables,
            panic_in: None,
        }
    }

    /// Refuses the `n`-th growing call from now (0-based), allows the ones
    /// before it; after it, `allow_memory` / `allow_table` answer.
    pub fn deny_nth(&mut self, n: usize) {
        self.script = std::iter::repeat_n(true, n).chain([false]).collect();
    }

    fn record(&mut self, call: Call, hook: Hook) {
        self.calls.push(call);
        if self.panic_in == Some(hook) {
            panic!("limiter panics in {hook:?} (on purpose)");
        }
    }
}

impl ResourceLimiter for Recorder {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> bool {
        let call = Call::MemoryGrowing(current, desired, maximum);
        self.record(call, Hook::MemoryGrowing);
        self.script.pop_front().unwrap_or(self.allow_memory)
    }
    fn table_growing(&mut self, current: u32, desired: u32, maximum: Option<u32>) -> bool {
        self.record(
            Call::TableGrowing(current, desired, maximum),
            Hook::TableGrowing,
        );
        self.script.pop_front().unwrap_or(self.allow_table)
    }
    fn memory_grow_failed(&mut self, error: &Error) {
        let call = Call::MemoryGrowFailed(Outcome::of_error(error));
        self.record(call, Hook::MemoryGrowFailed);
    }
    fn table_grow_failed(&mut self, error: &Error) {
        let call = Call::TableGrowFailed(Outcome::of_error(error));
        self.record(call, Hook::TableGrowFailed);
    }
    fn instances(&self) -> usize {
        self.instances
    }
    fn memories(&self) -> usize {
        self.memories
    }
    fn tables(&self) -> usize {
        self.tables
    }
}

/// A store on `allocator` with a default [`Recorder`] installed.
pub fn store(allocator: &impl InstanceAllocator) -> Store<Recorder> {
    store_with(allocator, Recorder::default())
}

/// A store on `allocator` with `recorder` installed.
pub fn store_with(allocator: &impl InstanceAllocator, recorder: Recorder) -> Store<Recorder> {
    let mut s = Store::new(allocator, recorder);
    s.limiter(|r| r);
    s
}

/// A recording store on `allocator` holding one memory of `min` pages (at
/// most `max`), the instantiation's limiter calls cleared.
pub fn store_with_memory(
    allocator: &impl InstanceAllocator,
    min: u64,
    max: Option<u64>,
) -> (Store<Recorder>, Memory) {
    let mut s = store(allocator);
    let m = s
        .instantiate(&super::one_memory(min, max))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    s.data_mut().calls.clear();
    (s, m)
}

/// A recording store on `allocator` holding one table of `min` elements
/// (at most `max`), the instantiation's limiter calls cleared.
pub fn store_with_table(
    allocator: &impl InstanceAllocator,
    min: u32,
    max: Option<u32>,
) -> (Store<Recorder>, Table) {
    let mut s = store(allocator);
    let t = s
        .instantiate(&super::one_table(min, max))
        .unwrap()
        .table(&s, 0)
        .unwrap();
    s.data_mut().calls.clear();
    (s, t)
}
