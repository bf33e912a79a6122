//! Instantiations and grows cut short by the limiter leak nothing: a
//! limiter that panics part-way (the panic reaches the caller), and an
//! async limiter whose answer never comes, its future dropped.

mod common;
use common::limiter::{Hook, store};
use common::tenants::{
    MIN_ELEMENTS, MIN_PAGES, assert_fresh, assert_full_capacity, dirty, images, layout, pool,
    setups,
};
use common::{assert_nothing_in_use, in_use};

use instance_pool::*;
use std::panic::{AssertUnwindSafe, catch_unwind};

// ---- limiters that panic ----

fn assert_panics<R: std::fmt::Debug>(f: impl FnOnce() -> R) {
    let r = catch_unwind(AssertUnwindSafe(f));
    assert!(
        r.is_err(),
        "the limiter's panic did not reach the caller: {r:?}"
    );
}

#[test]
fn limiter_panic_in_memory_growing_during_instantiate_leaks_nothing() {
    for setup in setups() {
        let pool = pool(setup);
        let images = images();
        let mut store = store(&pool);
        store.data_mut().panic_in = Some(Hook::MemoryGrowing);
        assert_panics(|| store.instantiate(&layout(Some(&images.main))));
        assert_nothing_in_use(&pool);
        // The store survives the panic and works once the limiter does.
        store.data_mut().panic_in = None;
        let inst = store.instantiate(&layout(Some(&images.main))).unwrap();
        assert_fresh(&store, inst, Some(&images.main_bytes));
        drop(store);
        assert_nothing_in_use(&pool);
        assert_full_capacity(&pool, &images);
    }
}

/// The table's limiter call comes after the memory is prepared (image
/// mapped, made accessible): that memory must be rolled back too.
#[test]
fn limiter_panic_in_table_growing_during_instantiate_leaks_nothing() {
    for setup in setups() {
        let pool = pool(setup);
        let images = images();
        let mut store = store(&pool);
        let first = store.instantiate(&layout(None)).unwrap();
        dirty(&mut store, first);
        store.data_mut().panic_in = Some(Hook::TableGrowing);
        assert_panics(|| store.instantiate(&layout(Some(&images.other))));
        assert_eq!(in_use(&pool), (1, 1, 1));
        drop(store);
        assert_nothing_in_use(&pool);
        assert_full_capacity(&pool, &images);
    }
}

#[test]
fn limiter_panic_during_grow_leaks_nothing() {
    for setup in setups() {
        let pool = pool(setup);
        let images = images();
        let mut store = store(&pool);
        let inst = store.instantiate(&layout(Some(&images.main))).unwrap();
        let m = inst.memory(&store, 0).unwrap();
        let t = inst.table(&store, 0).unwrap();
        store.data_mut().panic_in = Some(Hook::MemoryGrowing);
        assert_panics(|| m.grow(&mut store, 4));
        assert_eq!(m.size(&store), MIN_PAGES);
        store.data_mut().panic_in = Some(Hook::TableGrowing);
        assert_panics(|| t.grow(&mut store, 4, 1));
        assert_eq!(t.size(&store), MIN_ELEMENTS);
        // A panic in the failure hook (growing past the slot).
        store.data_mut().panic_in = Some(Hook::MemoryGrowFailed);
        assert_panics(|| m.grow(&mut store, 100));
        assert_eq!(m.size(&store), MIN_PAGES);
        assert_fresh(&store, inst, Some(&images.main_bytes));
        store.data_mut().panic_in = None;
        dirty(&mut store, inst);
        drop(store);
        assert_nothing_in_use(&pool);
        assert_full_capacity(&pool, &images);
    }
}

// ---- cancelled async instantiations and grows ----

/// An async limiter whose answer never comes for the call it is told to
/// stall (by kind); every other call is answered yes at once.
struct Stalling {
    stall_memory: bool,
}

impl ResourceLimiterAsync for Stalling {
    fn memory_growing<'a>(
        &'a mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> LimiterFuture<'a> {
        if self.stall_memory {
            Box::pin(std::future::pending())
        } else {
            Box::pin(std::future::ready(true))
        }
    }
    fn table_growing<'a>(
        &'a mut self,
        _current: u32,
        _desired: u32,
        _maximum: Option<u32>,
    ) -> LimiterFuture<'a> {
        if self.stall_memory {
            Box::pin(std::future::ready(true))
        } else {
            Box::pin(std::future::pending())
        }
    }
}

/// Polls `fut` once; it must still be waiting for the limiter.
fn poll_once_pending<F: std::future::Future>(fut: F) {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        fut.as_mut().poll(&mut cx).is_pending(),
        "the stalled limiter should keep the call waiting"
    );
}

/// An instantiation abandoned while the limiter is deciding (its future
/// dropped) releases whatever it had taken, including a memory already
/// prepared with its image when the table's answer is the one pending.
#[test]
fn cancelled_async_instantiation_leaks_nothing() {
    for setup in setups() {
        for stall_memory in [true, false] {
            let pool = pool(setup);
            let images = images();
            let mut store = Store::new(&pool, Stalling { stall_memory });
            store.limiter_async(|l| l);
            let layout = layout(Some(&images.main));
            poll_once_pending(store.instantiate_async(&layout));
            assert_nothing_in_use(&pool);
            // The store is still usable once the limiter answers.
            store.data_mut().stall_memory = !stall_memory;
            store.limiter(|_| Box::leak(Box::new(StoreLimits::default())));
            let inst = store.instantiate(&layout).unwrap();
            let m = inst.memory(&store, 0).unwrap();
            assert_eq!(m.size(&store), MIN_PAGES);
            drop(store);
            assert_nothing_in_use(&pool);
            assert_full_capacity(&pool, &images);
        }
    }
}

/// A grow abandoned while the limiter is deciding changes nothing.
#[test]
fn cancelled_async_grow_changes_nothing() {
    let pool = pool(setups()[0]);
    let images = images();
    let mut store = Store::new(
        &pool,
        Stalling {
            stall_memory: false,
        },
    );
    // Instantiate with a limiter that answers, then install the stalling one.
    store.limiter(|_| Box::leak(Box::new(StoreLimits::default())));
    let inst = store.instantiate(&layout(Some(&images.main))).unwrap();
    store.limiter_async(|l| l);
    let m = inst.memory(&store, 0).unwrap();
    let t = inst.table(&store, 0).unwrap();
    store.data_mut().stall_memory = true;
    poll_once_pending(m.grow_async(&mut store, 3));
    assert_eq!(m.size(&store), MIN_PAGES);
    store.data_mut().stall_memory = false;
    poll_once_pending(t.grow_async(&mut store, 3, 1));
    assert_eq!(t.size(&store), MIN_ELEMENTS);
    let data = m.data(&store);
    assert_eq!(
        &data[..images.main_bytes.len()],
        images.main_bytes.as_slice()
    );
    drop(store);
    assert_nothing_in_use(&pool);
    assert_full_capacity(&pool, &images);
}
