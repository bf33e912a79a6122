//! Every failure point, walked: for each operation the n-th syscall is made
//! to fail (`fault::fail_nth(n)`) for n = 1, 2, ... until the operation
//! completes without reaching it. Each failure must come back as
//! `Error::Os` (with the limiter's failure hook called once), leave the
//! pool's counts as they were, and leave every slot usable and clean: the
//! pool still serves its full capacity, each slot reading zeroes or its
//! image. Failures while releasing never surface (drop cannot fail) but
//! must not let a tenant's bytes through either.
//!
//! Also: a limiter that panics part-way through an instantiation or a grow
//! leaks nothing.

use instance_pool::fault;
use instance_pool::*;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

const MIB: usize = 1 << 20;
const PAGE: usize = WASM_PAGE_SIZE;
const TOTAL: u32 = 4;
const TABLE_ELEMENTS: u32 = 1024;
/// Memories start at 2 pages, tables at 16 elements.
const MIN_PAGES: u64 = 2;
const MIN_ELEMENTS: u32 = 16;
/// Safety net: no operation here makes anywhere near this many syscalls.
const MAX_STEPS: u64 = 100;

/// What the limiter saw, in order.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    MemoryGrowing(usize, usize, Option<usize>),
    TableGrowing(u32, u32, Option<u32>),
    /// The failure hook; `true` when the error was `Error::Os`.
    MemoryGrowFailed(bool),
    TableGrowFailed(bool),
}

/// Where a limiter panics.
#[derive(Clone, Copy, Debug, PartialEq)]
enum PanicIn {
    MemoryGrowing,
    TableGrowing,
    MemoryGrowFailed,
}

#[derive(Default)]
struct Recorder {
    calls: Vec<Call>,
    panic_in: Option<PanicIn>,
}

impl Recorder {
    fn maybe_panic(&self, here: PanicIn) {
        if self.panic_in == Some(here) {
            panic!("limiter panics in {here:?} (on purpose)");
        }
    }
}

impl ResourceLimiter for Recorder {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> bool {
        self.calls
            .push(Call::MemoryGrowing(current, desired, maximum));
        self.maybe_panic(PanicIn::MemoryGrowing);
        true
    }
    fn table_growing(&mut self, current: u32, desired: u32, maximum: Option<u32>) -> bool {
        self.calls
            .push(Call::TableGrowing(current, desired, maximum));
        self.maybe_panic(PanicIn::TableGrowing);
        true
    }
    fn memory_grow_failed(&mut self, error: &Error) {
        self.calls
            .push(Call::MemoryGrowFailed(matches!(error, Error::Os(_))));
        self.maybe_panic(PanicIn::MemoryGrowFailed);
    }
    fn table_grow_failed(&mut self, error: &Error) {
        self.calls
            .push(Call::TableGrowFailed(matches!(error, Error::Os(_))));
    }
}

/// How the pool resets slots.
#[derive(Clone, Copy, Debug)]
struct Setup {
    keep_resident: usize,
    table_keep_resident: usize,
    batch: usize,
}

const SETUPS: [Setup; 6] = [
    Setup {
        keep_resident: 0,
        table_keep_resident: 0,
        batch: 1,
    },
    Setup {
        keep_resident: 64 << 10,
        table_keep_resident: 4096,
        batch: 1,
    },
    Setup {
        keep_resident: MIB,
        table_keep_resident: 8192,
        batch: 1,
    },
    Setup {
        keep_resident: 0,
        table_keep_resident: 4096,
        batch: 3,
    },
    // Batches larger than the pool: every release is queued until an
    // acquisition finds the pool empty (or an explicit flush).
    Setup {
        keep_resident: 0,
        table_keep_resident: 0,
        batch: 8,
    },
    Setup {
        keep_resident: 64 << 10,
        table_keep_resident: 0,
        batch: 8,
    },
];

fn pool(setup: Setup) -> PoolingInstanceAllocator {
    let mut c = PoolingConfig::default();
    c.total_instances(TOTAL)
        .total_memories(TOTAL)
        .total_tables(TOTAL)
        .max_memory_size(MIB)
        .memory_guard_size(64 << 10)
        .table_elements(TABLE_ELEMENTS)
        .memory_keep_resident(setup.keep_resident)
        .table_keep_resident(setup.table_keep_resident)
        .decommit_batch_size(setup.batch);
    PoolingInstanceAllocator::new(&c).unwrap()
}

/// Image bytes: recognisable, not page-aligned in length.
fn image_bytes(seed: u8) -> Vec<u8> {
    (0..5000u32)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

struct Images {
    main: Arc<MemoryImage>,
    main_bytes: Vec<u8>,
    other: Arc<MemoryImage>,
}

fn images() -> Images {
    let main_bytes = image_bytes(1);
    Images {
        main: MemoryImage::new(&main_bytes).unwrap(),
        main_bytes,
        other: MemoryImage::new(&image_bytes(2)).unwrap(),
    }
}

fn layout(image: Option<&Arc<MemoryImage>>) -> InstanceLayout {
    let ty = MemoryType::new(MIN_PAGES, Some(16));
    let l = match image {
        Some(i) => InstanceLayout::new().memory_with_image(ty, i.clone()),
        None => InstanceLayout::new().memory(ty),
    };
    l.table(TableType::new(MIN_ELEMENTS, Some(TABLE_ELEMENTS)))
}

fn new_store(pool: &PoolingInstanceAllocator) -> Store<Recorder> {
    let mut store = Store::new(pool, Recorder::default());
    store.limiter(|r| r);
    store
}

/// A fresh instance: the memory reads `image` then zeroes up to its
/// minimum, the table reads zeroes.
fn assert_fresh(store: &Store<Recorder>, inst: Instance, image: Option<&[u8]>) {
    let m = inst.memory(store, 0).unwrap();
    assert_eq!(m.size(store), MIN_PAGES);
    let data = m.data(store);
    assert_eq!(data.len(), MIN_PAGES as usize * PAGE);
    let image = image.unwrap_or(&[]);
    assert!(
        data[..image.len()] == *image,
        "memory does not hold its image"
    );
    if let Some(at) = data[image.len()..].iter().position(|&b| b != 0) {
        panic!(
            "fresh memory has {:#x} at byte {}",
            data[image.len() + at],
            image.len() + at
        );
    }
    let t = inst.table(store, 0).unwrap();
    assert_eq!(t.size(store), MIN_ELEMENTS);
    for i in 0..MIN_ELEMENTS {
        assert_eq!(t.get(store, i), Some(0), "fresh table element {i}");
    }
}

/// What a tenant does: fills its whole slot and table with garbage.
fn dirty(store: &mut Store<Recorder>, inst: Instance) {
    let m = inst.memory(store, 0).unwrap();
    let pages = m.size(store);
    m.grow(store, 16 - pages).unwrap();
    m.data_mut(store).fill(0xA5);
    let t = inst.table(store, 0).unwrap();
    t.grow(store, TABLE_ELEMENTS - MIN_ELEMENTS, 0xDEAD)
        .unwrap();
    for i in 0..MIN_ELEMENTS {
        t.set(store, i, 0xBEEF).unwrap();
    }
}

fn assert_nothing_in_use(pool: &PoolingInstanceAllocator) {
    let m = pool.metrics();
    assert_eq!(
        (m.instances_in_use, m.memories_in_use, m.tables_in_use),
        (0, 0, 0),
        "{m:?}"
    );
}

/// The pool still serves its full capacity, twice over (so the slots the
/// first round dirties are checked clean by the second), each slot reading
/// zeroes or its image; one more is `PoolExhausted`.
fn assert_full_capacity(pool: &PoolingInstanceAllocator, images: &Images) {
    assert!(!fault::pending());
    for _round in 0..2 {
        let mut stores = Vec::new();
        for i in 0..TOTAL {
            let mut store = new_store(pool);
            let with_image = i % 2 == 0;
            let l = layout(with_image.then_some(&images.main));
            let inst = store
                .instantiate(&l)
                .unwrap_or_else(|e| panic!("slot {i} of {TOTAL} not served: {e:?}"));
            assert_fresh(
                &store,
                inst,
                with_image.then_some(images.main_bytes.as_slice()),
            );
            dirty(&mut store, inst);
            stores.push(store);
        }
        let m = pool.metrics();
        assert_eq!(
            (m.instances_in_use, m.memories_in_use, m.tables_in_use),
            (TOTAL, TOTAL, TOTAL)
        );
        let mut extra = new_store(pool);
        assert!(matches!(
            extra.instantiate(&layout(None)),
            Err(Error::PoolExhausted {
                resource: Resource::Instance,
                limit: TOTAL
            })
        ));
        drop(stores);
        assert_nothing_in_use(pool);
    }
}

/// What the slots look like before the operation under test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Before {
    /// A fresh pool.
    Cold,
    /// One slot was used (and dirtied) with the same image (or no image,
    /// as the operation) and reset.
    WarmSame,
    /// ... with a different image.
    WarmOtherImage,
    /// ... with no image.
    WarmNoImage,
    /// Every slot was used and released, and the resets are still queued
    /// (batch > 1): the acquisition has to flush them first.
    AllQueued,
}

const BEFORES: [Before; 5] = [
    Before::Cold,
    Before::WarmSame,
    Before::WarmOtherImage,
    Before::WarmNoImage,
    Before::AllQueued,
];

fn prepare(pool: &PoolingInstanceAllocator, images: &Images, before: Before, image: bool) {
    let use_once = |img: Option<&Arc<MemoryImage>>| {
        let mut store = new_store(pool);
        let inst = store.instantiate(&layout(img)).unwrap();
        dirty(&mut store, inst);
    };
    match before {
        Before::Cold => {}
        Before::WarmSame => use_once(image.then_some(&images.main)),
        Before::WarmOtherImage => use_once(Some(&images.other)),
        Before::WarmNoImage => use_once(None),
        Before::AllQueued => {
            let stores: Vec<_> = (0..TOTAL)
                .map(|i| {
                    let mut store = new_store(pool);
                    let img = [Some(&images.main), Some(&images.other), None][i as usize % 3];
                    let inst = store.instantiate(&layout(img)).unwrap();
                    dirty(&mut store, inst);
                    store
                })
                .collect();
            drop(stores);
        }
    }
    if before != Before::AllQueued {
        pool.flush_decommits();
    }
}

/// Arms the failure of the `n`-th syscall from now, runs `op`, disarms;
/// returns `op`'s result and whether the failure was reached.
fn with_nth_failing<R>(n: u64, op: impl FnOnce() -> R) -> (R, bool) {
    fault::reset();
    fault::fail_nth(n);
    let r = op();
    let reached = !fault::pending();
    fault::fail_nth(0);
    (r, reached)
}

/// Walks every failure point of one instantiation; returns how many there
/// were.
fn walk_instantiate(setup: Setup, before: Before, image: bool) -> u64 {
    let ctx = format!("{setup:?} {before:?} image={image}");
    for n in 1..=MAX_STEPS {
        let pool = pool(setup);
        let images = images();
        prepare(&pool, &images, before, image);
        let in_use_before = pool.metrics();
        let l = layout(image.then_some(&images.main));
        let mut store = new_store(&pool);
        let (result, reached) = with_nth_failing(n, || store.instantiate(&l));
        match result {
            Ok(inst) => {
                assert_fresh(&store, inst, image.then_some(images.main_bytes.as_slice()));
                if reached {
                    // Only a flush of queued resets (a release) may swallow
                    // a failure: its slot is scrubbed instead.
                    assert_eq!(
                        before,
                        Before::AllQueued,
                        "{ctx}: syscall {n} failed but instantiate succeeded"
                    );
                }
            }
            Err(Error::Os(_)) => {
                assert!(reached, "{ctx}: Os error without an injected failure");
                let min = MIN_PAGES as usize * PAGE;
                assert_eq!(
                    store.data().calls,
                    [
                        Call::MemoryGrowing(0, min, Some(MIB)),
                        Call::MemoryGrowFailed(true)
                    ],
                    "{ctx}: failure {n}"
                );
                let m = pool.metrics();
                assert_eq!(
                    (m.instances_in_use, m.memories_in_use, m.tables_in_use),
                    (
                        in_use_before.instances_in_use,
                        in_use_before.memories_in_use,
                        in_use_before.tables_in_use
                    ),
                    "{ctx}: failure {n} changed the counts"
                );
            }
            Err(e) => panic!("{ctx}: failure {n} gave {e:?}, not Error::Os"),
        }
        drop(store);
        assert_nothing_in_use(&pool);
        assert_full_capacity(&pool, &images);
        if !reached {
            return n - 1;
        }
    }
    panic!("{ctx}: instantiate never completed");
}

fn walk_instantiate_all(image: bool) {
    for setup in SETUPS {
        for before in BEFORES {
            if before == Before::AllQueued && setup.batch == 1 {
                continue;
            }
            let points = walk_instantiate(setup, before, image);
            if before == Before::Cold {
                assert!(points >= 1, "{setup:?}: a cold instantiate makes syscalls");
            }
        }
    }
}

#[test]
fn instantiate_failures_without_image_are_os_errors_and_leak_nothing() {
    walk_instantiate_all(false);
}

#[test]
fn instantiate_failures_with_image_are_os_errors_and_leak_nothing() {
    walk_instantiate_all(true);
}

/// A failure while instantiating a store's second instance takes nothing
/// from the first.
#[test]
fn instantiate_failure_in_a_store_with_an_instance_keeps_the_first() {
    let images = images();
    for n in 1..=MAX_STEPS {
        let pool = pool(SETUPS[0]);
        let mut store = new_store(&pool);
        let first = store.instantiate(&layout(Some(&images.main))).unwrap();
        dirty(&mut store, first);
        let l = layout(Some(&images.other));
        let (result, reached) = with_nth_failing(n, || store.instantiate(&l));
        let m = pool.metrics();
        if result.is_ok() {
            assert!(!reached);
            assert_eq!(
                (m.instances_in_use, m.memories_in_use, m.tables_in_use),
                (2, 2, 2)
            );
            return;
        }
        assert!(matches!(result, Err(Error::Os(_))));
        assert_eq!(
            (m.instances_in_use, m.memories_in_use, m.tables_in_use),
            (1, 1, 1)
        );
        let mem = first.memory(&store, 0).unwrap();
        assert!(mem.data(&store).iter().all(|&b| b == 0xA5));
        drop(store);
        assert_full_capacity(&pool, &images);
    }
    panic!("never completed");
}

/// Walks every failure point of a memory grow by 3 pages.
fn walk_grow(setup: Setup, before: Before, image: bool) -> u64 {
    let ctx = format!("{setup:?} {before:?} image={image}");
    for n in 1..=MAX_STEPS {
        let pool = pool(setup);
        let images = images();
        prepare(&pool, &images, before, image);
        let mut store = new_store(&pool);
        let inst = store
            .instantiate(&layout(image.then_some(&images.main)))
            .unwrap();
        let m = inst.memory(&store, 0).unwrap();
        store.data_mut().calls.clear();
        let (result, reached) = with_nth_failing(n, || m.grow(&mut store, 3));
        let (current, desired) = (MIN_PAGES as usize * PAGE, (MIN_PAGES as usize + 3) * PAGE);
        match result {
            Ok(old) => {
                assert!(!reached, "{ctx}: syscall {n} failed but grow succeeded");
                assert_eq!(old, MIN_PAGES);
                assert_eq!(
                    store.data().calls,
                    [Call::MemoryGrowing(current, desired, Some(MIB))]
                );
                assert_eq!(m.data_size(&store), desired);
                let data = m.data(&store);
                assert!(data[current..].iter().all(|&b| b == 0));
                drop(store);
                assert_nothing_in_use(&pool);
                assert_full_capacity(&pool, &images);
                return n - 1;
            }
            Err(Error::Os(_)) => {
                assert!(reached);
                assert_eq!(
                    store.data().calls,
                    [
                        Call::MemoryGrowing(current, desired, Some(MIB)),
                        Call::MemoryGrowFailed(true)
                    ],
                    "{ctx}: failure {n}"
                );
            }
            Err(e) => panic!("{ctx}: failure {n} gave {e:?}, not Error::Os"),
        }
        // Unchanged, and still fully usable.
        assert_eq!(m.size(&store), MIN_PAGES, "{ctx}");
        assert_fresh(&store, inst, image.then_some(images.main_bytes.as_slice()));
        m.data_mut(&mut store).fill(7);
        assert_eq!(m.grow(&mut store, 3).unwrap(), MIN_PAGES);
        assert!(m.data(&store)[current..].iter().all(|&b| b == 0), "{ctx}");
        assert!(m.data(&store)[..current].iter().all(|&b| b == 7), "{ctx}");
        dirty(&mut store, inst);
        drop(store);
        assert_nothing_in_use(&pool);
        assert_full_capacity(&pool, &images);
    }
    panic!("{ctx}: grow never completed");
}

#[test]
fn memory_grow_failures_are_os_errors_reported_once_to_the_limiter() {
    for setup in SETUPS {
        for before in [Before::Cold, Before::WarmSame, Before::WarmOtherImage] {
            for image in [false, true] {
                let points = walk_grow(setup, before, image);
                assert!(points >= 1, "{setup:?} {before:?}: grow makes a syscall");
            }
        }
    }
}

#[test]
fn table_grow_failures_are_os_errors_reported_once_to_the_limiter() {
    for setup in SETUPS {
        for n in 1..=MAX_STEPS {
            let pool = pool(setup);
            let images = images();
            let mut store = new_store(&pool);
            let inst = store.instantiate(&layout(None)).unwrap();
            let t = inst.table(&store, 0).unwrap();
            store.data_mut().calls.clear();
            let (result, reached) = with_nth_failing(n, || t.grow(&mut store, 100, 3));
            let grow_call =
                Call::TableGrowing(MIN_ELEMENTS, MIN_ELEMENTS + 100, Some(TABLE_ELEMENTS));
            match result {
                Ok(old) => {
                    assert!(!reached);
                    assert_eq!(old, MIN_ELEMENTS);
                    assert_eq!(store.data().calls, [grow_call]);
                    assert_eq!(t.get(&store, MIN_ELEMENTS + 99), Some(3));
                    drop(store);
                    assert_full_capacity(&pool, &images);
                    break;
                }
                Err(Error::Os(_)) => {
                    assert!(reached);
                    assert_eq!(store.data().calls, [grow_call, Call::TableGrowFailed(true)]);
                    assert_eq!(t.size(&store), MIN_ELEMENTS);
                }
                Err(e) => panic!("{setup:?}: failure {n} gave {e:?}"),
            }
            drop(store);
            assert_full_capacity(&pool, &images);
        }
    }
}

/// Walks every failure point of releasing `stores` tenants (each dirtying
/// its whole slot and table) and flushing the resets. A failure must not
/// surface, and must not let any dirty byte reach the next tenants.
fn walk_release(setup: Setup, image: bool, stores: u32) -> u64 {
    let ctx = format!("{setup:?} image={image} stores={stores}");
    for n in 1..=MAX_STEPS {
        let pool = pool(setup);
        let images = images();
        let live: Vec<_> = (0..stores)
            .map(|_| {
                let mut store = new_store(&pool);
                let inst = store
                    .instantiate(&layout(image.then_some(&images.main)))
                    .unwrap();
                dirty(&mut store, inst);
                store
            })
            .collect();
        let ((), reached) = with_nth_failing(n, || {
            drop(live);
            pool.flush_decommits();
        });
        assert_nothing_in_use(&pool);
        assert_eq!(pool.metrics().decommit_queue_len, 0, "{ctx}");
        assert_full_capacity(&pool, &images);
        if !reached {
            return n - 1;
        }
    }
    panic!("{ctx}: release never completed");
}

#[test]
fn release_failures_never_surface_and_never_leak_bytes() {
    for setup in SETUPS {
        for image in [false, true] {
            for stores in [1, TOTAL] {
                let points = walk_release(setup, image, stores);
                // A whole dirty 1 MiB slot beyond keep_resident must be
                // discarded with a syscall.
                if setup.keep_resident < MIB {
                    assert!(points >= 1, "{setup:?}: release makes syscalls");
                }
            }
        }
    }
}

/// A failure while releasing a queued batch because an acquisition found
/// the pool empty: the acquisition still succeeds on a clean slot.
#[test]
fn failed_flush_during_acquisition_still_serves_a_clean_slot() {
    let setup = SETUPS[4];
    let mut reached_any = false;
    for n in 1..=MAX_STEPS {
        let pool = pool(setup);
        let images = images();
        prepare(&pool, &images, Before::AllQueued, false);
        let mut store = new_store(&pool);
        let l = layout(None);
        let (result, reached) = with_nth_failing(n, || store.instantiate(&l));
        match result {
            Ok(inst) => assert_fresh(&store, inst, None),
            Err(Error::Os(_)) => assert!(reached),
            Err(e) => panic!("{e:?}"),
        }
        reached_any |= reached;
        drop(store);
        assert_full_capacity(&pool, &images);
        if !reached {
            assert!(reached_any);
            return;
        }
    }
    panic!("never completed");
}

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
    for setup in SETUPS {
        let pool = pool(setup);
        let images = images();
        let mut store = new_store(&pool);
        store.data_mut().panic_in = Some(PanicIn::MemoryGrowing);
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
    for setup in SETUPS {
        let pool = pool(setup);
        let images = images();
        let mut store = new_store(&pool);
        let first = store.instantiate(&layout(None)).unwrap();
        dirty(&mut store, first);
        store.data_mut().panic_in = Some(PanicIn::TableGrowing);
        assert_panics(|| store.instantiate(&layout(Some(&images.other))));
        let m = pool.metrics();
        assert_eq!(
            (m.instances_in_use, m.memories_in_use, m.tables_in_use),
            (1, 1, 1)
        );
        drop(store);
        assert_nothing_in_use(&pool);
        assert_full_capacity(&pool, &images);
    }
}

#[test]
fn limiter_panic_during_grow_leaks_nothing() {
    for setup in SETUPS {
        let pool = pool(setup);
        let images = images();
        let mut store = new_store(&pool);
        let inst = store.instantiate(&layout(Some(&images.main))).unwrap();
        let m = inst.memory(&store, 0).unwrap();
        let t = inst.table(&store, 0).unwrap();
        store.data_mut().panic_in = Some(PanicIn::MemoryGrowing);
        assert_panics(|| m.grow(&mut store, 4));
        assert_eq!(m.size(&store), MIN_PAGES);
        store.data_mut().panic_in = Some(PanicIn::TableGrowing);
        assert_panics(|| t.grow(&mut store, 4, 1));
        assert_eq!(t.size(&store), MIN_ELEMENTS);
        // A panic in the failure hook (growing past the slot).
        store.data_mut().panic_in = Some(PanicIn::MemoryGrowFailed);
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
    for setup in SETUPS {
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
    let pool = pool(SETUPS[0]);
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

// ---- Store::reset ----

/// Walks every failure point of `Store::reset` on a tenant that grew and
/// dirtied its whole slot and table. A failure is absorbed (and the reset
/// complete) or is `Error::Os` and leaves
/// the memory correct (its image then zeroes, over whatever size it still
/// has); resetting again then succeeds, and the pool stays whole.
fn walk_reset(setup: Setup, image: bool) -> u64 {
    let ctx = format!("{setup:?} image={image}");
    for n in 1..=MAX_STEPS {
        let pool = pool(setup);
        let images = images();
        let img = image.then_some(images.main_bytes.as_slice());
        let mut store = new_store(&pool);
        let inst = store
            .instantiate(&layout(image.then_some(&images.main)))
            .unwrap();
        dirty(&mut store, inst);
        let (result, reached) = with_nth_failing(n, || store.reset());
        match result {
            // A failed `madvise` may be made up for with writes: then the
            // reset succeeds, and must still be complete (checked below).
            Ok(()) => {}
            Err(Error::Os(_)) => {
                assert!(reached, "{ctx}");
                let m = inst.memory(&store, 0).unwrap();
                let data = m.data(&store);
                let expected = img.unwrap_or(&[]);
                assert!(data[..expected.len()] == *expected, "{ctx}: image lost");
                assert!(
                    data[expected.len()..].iter().all(|&b| b == 0),
                    "{ctx}: failure {n} left the old bytes"
                );
                store.reset().unwrap();
            }
            Err(e) => panic!("{ctx}: failure {n} gave {e:?}, not Error::Os"),
        }
        assert_fresh(&store, inst, img);
        let m = pool.metrics();
        assert_eq!(
            (m.instances_in_use, m.memories_in_use, m.tables_in_use),
            (1, 1, 1)
        );
        dirty(&mut store, inst);
        drop(store);
        assert_nothing_in_use(&pool);
        assert_full_capacity(&pool, &images);
        if !reached {
            return n - 1;
        }
    }
    panic!("{ctx}: reset never completed");
}

#[test]
fn reset_failures_are_os_errors_and_never_leak_bytes() {
    for setup in SETUPS {
        for image in [false, true] {
            let points = walk_reset(setup, image);
            if setup.keep_resident < MIB {
                assert!(points >= 1, "{setup:?}: reset makes syscalls");
            }
        }
    }
}
