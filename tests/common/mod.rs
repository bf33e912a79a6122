//! Helpers shared by the integration tests.
//!
//! Every test binary compiles all of this module and uses a different part
//! of it, hence the `dead_code` allowances.
//!
//! - [`config`]: the small pool shapes the tests build.
//! - [`limiter`]: the one recording limiter, and [`limiter::Outcome`].
//! - [`tenants`]: a four-slot pool whose tenants dirty everything, and the
//!   checks that the next tenants find their slots clean.
//! - [`fork`]: a case run in a forked child, with a watchdog.
//! - [`guard`]: writing one byte in a child process, to observe guards.
//! - [`images`]: a pool of one large slot, and a tenant checking its image.
//! - [`model`]: a plain model of the pool, checked step by step.
//! - `fault` (feature `fault-injection`): making the n-th syscall fail.
//! - `jit` (feature `wasmtime-examples`): the probe module Wasmtime runs.

#[allow(dead_code, reason = "each test binary uses some of the pool shapes")]
pub mod config;
#[cfg(feature = "fault-injection")]
#[allow(dead_code, reason = "only the fault-injection tests use the seam")]
pub mod fault;
#[allow(dead_code, reason = "only the fork tests fork")]
pub mod fork;
#[allow(dead_code, reason = "only the guard tests run child processes")]
pub mod guard;
#[allow(dead_code, reason = "only the image and syscall tests use it")]
pub mod images;
#[cfg(feature = "wasmtime-examples")]
#[allow(dead_code, reason = "only the Wasmtime tests run JIT code")]
pub mod jit;
#[allow(dead_code, reason = "not every test binary records limiter calls")]
pub mod limiter;
#[allow(dead_code, reason = "only the model tests use the model")]
pub mod model;
#[allow(dead_code, reason = "only the failure and interruption tests use it")]
pub mod tenants;

use instance_pool::{
    InstanceLayout, Memory, MemoryType, PoolingInstanceAllocator, Resource, Store, TableType,
};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Runs `fut` on this thread, parking until its waker fires: the smallest
/// executor, so the async API is tested without a runtime dependency.
#[allow(dead_code, reason = "not every test binary is async")]
pub fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// Proptest settings for this crate: `cases` cases, regressions kept next
/// to the test file (`tests/<name>.regressions`), since the repository's
/// top level holds no other folders.
#[allow(dead_code, reason = "not every test binary runs proptests")]
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..proptest::test_runner::Config::default()
    }
}

/// A seeded random number generator (proptest's ChaCha): the same
/// sequence on every run for the same `stream`, a different one for each
/// `stream`. Use it through `proptest::prelude::RngExt`.
#[allow(
    dead_code,
    reason = "only the stress tests draw numbers outside proptest"
)]
pub fn seeded_rng(stream: u64) -> proptest::test_runner::TestRng {
    let mut seed = [0x5e; 32];
    seed[..8].copy_from_slice(&stream.to_le_bytes());
    proptest::test_runner::TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &seed)
}

/// `(instances, memories, tables)` in use in `pool` now.
#[allow(dead_code, reason = "not every test binary counts slots")]
pub fn in_use(pool: &PoolingInstanceAllocator) -> (u32, u32, u32) {
    let m = pool.metrics();
    (m.instances_in_use, m.memories_in_use, m.tables_in_use)
}

/// Nothing is in use in `pool`.
#[allow(dead_code, reason = "not every test binary counts slots")]
pub fn assert_nothing_in_use(pool: &PoolingInstanceAllocator) {
    assert_eq!(in_use(pool), (0, 0, 0), "{:?}", pool.metrics());
}

/// `len` recognisable image bytes, none of them zero, differing by `seed`.
#[allow(dead_code, reason = "not every test binary uses images")]
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// Index of `r` in `[instances, memories, tables]` arrays.
#[allow(dead_code, reason = "not every test binary counts per resource")]
pub fn resource_index(r: Resource) -> usize {
    match r {
        Resource::Instance => 0,
        Resource::Memory => 1,
        Resource::Table => 2,
    }
}

/// `i` folded into `0..len`, or `None` when `len` is 0: how random
/// operations pick a store, memory or table.
#[allow(dead_code, reason = "only the random-operation tests pick")]
pub fn pick(i: usize, len: usize) -> Option<usize> {
    (len > 0).then(|| i % len)
}

/// A layout of one memory of `min` pages (at most `max`).
#[allow(dead_code, reason = "not every test binary uses it")]
pub fn one_memory(min: u64, max: Option<u64>) -> InstanceLayout {
    InstanceLayout::new().memory(MemoryType::new(min, max))
}

/// A layout of one table of `min` elements (at most `max`).
#[allow(dead_code, reason = "not every test binary uses it")]
pub fn one_table(min: u32, max: Option<u32>) -> InstanceLayout {
    InstanceLayout::new().table(TableType::new(min, max))
}

/// `n` stores on `pool`, each with one memory of one page, handed to `each`
/// once instantiated.
#[allow(dead_code, reason = "not every test binary builds stores in bulk")]
pub fn stores_with(
    pool: &PoolingInstanceAllocator,
    n: usize,
    each: impl Fn(&mut Store<()>, Memory),
) -> Vec<Store<()>> {
    (0..n)
        .map(|_| {
            let mut s = Store::new(pool, ());
            let m = s
                .instantiate(&one_memory(1, None))
                .unwrap()
                .memory(&s, 0)
                .unwrap();
            each(&mut s, m);
            s
        })
        .collect()
}
