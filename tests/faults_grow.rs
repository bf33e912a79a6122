//! Every failure point of a memory or table grow, walked (see
//! `faults_instantiate.rs`): each failure is `Error::Os` reported once to
//! the limiter, leaves the memory or table as it was and still growable,
//! and leaves the end of the accessible memory where it was.

mod common;
use common::assert_nothing_in_use;
use common::config::{self, MIB, Resets};
use common::fault::{MAX_STEPS, with_first_failing, with_nth_failing};
use common::guard::{Expect, after_failed_grow, run};
use common::limiter::{Call, Outcome, store, store_with_memory};
use common::tenants::{
    Before, MIN_ELEMENTS, MIN_PAGES, PAGE, TABLE_ELEMENTS, assert_fresh, assert_full_capacity,
    dirty, images, layout, pool, prepare, setups,
};

use instance_pool::*;

/// Walks every failure point of a memory grow by 3 pages.
fn walk_grow(setup: Resets, before: Before, image: bool) -> u64 {
    let ctx = format!("{setup:?} {before:?} image={image}");
    for n in 1..=MAX_STEPS {
        let pool = pool(setup);
        let images = images();
        prepare(&pool, &images, before, image);
        let mut store = store(&pool);
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
                        Call::MemoryGrowFailed(Outcome::Os)
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
    for setup in setups() {
        for before in [Before::Cold, Before::WarmSame, Before::WarmOtherImage] {
            for image in [false, true] {
                let points = walk_grow(setup, before, image);
                if setup.shape.faults_past_size() {
                    assert!(points >= 1, "{setup:?} {before:?}: grow makes a syscall");
                } else {
                    // The slot is open to its capacity: growing is a size.
                    assert_eq!(points, 0, "{setup:?} {before:?}: grow makes no syscall");
                }
            }
        }
    }
}

#[test]
fn table_grow_failures_are_os_errors_reported_once_to_the_limiter() {
    for setup in setups() {
        for n in 1..=MAX_STEPS {
            let pool = pool(setup);
            let images = images();
            let mut store = store(&pool);
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
                    assert_eq!(
                        store.data().calls,
                        [grow_call, Call::TableGrowFailed(Outcome::Os)]
                    );
                    assert_eq!(t.size(&store), MIN_ELEMENTS);
                }
                Err(e) => panic!("{setup:?}: failure {n} gave {e:?}"),
            }
            drop(store);
            assert_full_capacity(&pool, &images);
        }
    }
}

#[test]
fn os_failure_during_grow_is_os_error_and_calls_failure_hook_once() {
    let p = config::pool(&config::small_two_per_instance(100));
    let (mut s, m) = store_with_memory(&p, 1, None);
    let err = with_first_failing(|| m.grow(&mut s, 1)).unwrap_err();
    assert!(matches!(err, Error::Os(_)));
    let calls = &s.data().calls;
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1], Call::MemoryGrowFailed(Outcome::Os));
    assert_eq!(m.size(&s), 1);
    // The memory still grows afterwards.
    assert_eq!(m.grow(&mut s, 1).unwrap(), 1);
    m.data_mut(&mut s)[2 * PAGE - 1] = 1;
}

// ---- the accessible end after a failed grow ----

/// The grow's `mprotect` is made to fail through the fault seam.
fn os_fails(store: &mut Store<StoreLimits>, m: Memory) {
    *store.data_mut() = StoreLimits::default();
    let r = with_first_failing(|| m.grow(store, 1));
    assert!(matches!(r, Err(Error::Os(_))), "{r:?}");
}

#[test]
fn write_at_data_size_after_failed_grow_faults() {
    run(
        "write_at_data_size_after_failed_grow_faults",
        Expect::Fault,
        || after_failed_grow(0, os_fails),
    );
}

#[test]
fn write_before_data_size_after_failed_grow_does_not_fault() {
    run(
        "write_before_data_size_after_failed_grow_does_not_fault",
        Expect::NoFault,
        || after_failed_grow(-1, os_fails),
    );
}

/// A previous tenant grew the slot to 8 pages; this one grows from 2 to 12
/// with every `mprotect` refused. On the marker path that growth removes
/// markers up to 8 pages before its `mprotect` fails: they must be back,
/// so the byte at the size still faults. (Where nothing needs an
/// `mprotect`, the dense layout, the growth succeeds and the byte at the
/// new size faults all the same.)
fn past_high_water_with_mprotect_refused() -> *mut u8 {
    let pool = config::pool(&common::guard::config(1));
    {
        let (mut first, m) = common::guard::tenant(&pool, 2, None);
        m.grow(&mut first, 6).unwrap();
    }
    let (mut store, m) = common::guard::tenant(&pool, 2, None);
    instance_pool::fault::reset();
    instance_pool::fault::refuse(Syscall::Mprotect);
    let r = m.grow(&mut store, 10);
    instance_pool::fault::reset();
    let expected = if r.is_ok() { 12 } else { 2 };
    assert_eq!(m.size(&store), expected, "{r:?}");
    let size = m.data_size(&store);
    std::mem::forget(pool);
    common::guard::addr(store, m, size as isize)
}

#[test]
fn write_at_data_size_after_a_failed_grow_past_the_high_water_faults() {
    run(
        "write_at_data_size_after_a_failed_grow_past_the_high_water_faults",
        Expect::Fault,
        past_high_water_with_mprotect_refused,
    );
}

// ---- a failed widening closes again what it opened ----
//
// A slot's previous tenant grew it from 2 to 8 pages: its high water. The
// next tenant (2 pages) grows to 12 and the grow's last syscall fails. On
// the marker path the growth has by then removed the markers up to the
// high water and only its `mprotect` past it fails: the markers must be
// back, for this tenant and for the slot's next one.

/// A pool of one slot (of `c`) whose first tenant grew from 2 to 8 pages,
/// wrote all of it and left.
fn high_water_pool(c: &PoolingConfig) -> PoolingInstanceAllocator {
    let pool = config::pool(c);
    let (mut first, m) = common::guard::tenant(&pool, 2, None);
    m.grow(&mut first, 6).unwrap();
    m.data_mut(&mut first).fill(0xEE);
    pool
}

/// How many syscalls `op` makes when none fails.
fn syscalls_of<R>(op: impl FnOnce() -> R) -> u64 {
    let (_, reached) = with_nth_failing(MAX_STEPS, op);
    assert!(!reached);
    instance_pool::fault::counts().fallible()
}

/// A tenant of 2 pages, holding a pattern, in [`high_water_pool`], whose
/// grow to 12 pages failed at its last syscall (counted on a twin pool):
/// checked to be `Error::Os` leaving the size and bytes as they were.
fn after_failed_widening(c: &PoolingConfig) -> (PoolingInstanceAllocator, Store<()>, Memory) {
    let last = {
        let pool = high_water_pool(c);
        let (mut s, m) = common::guard::tenant(&pool, 2, None);
        syscalls_of(|| m.grow(&mut s, 10).unwrap())
    };
    let pool = high_water_pool(c);
    let (mut store, m) = common::guard::tenant(&pool, 2, None);
    let bytes = common::pattern(2 * PAGE, 7);
    m.data_mut(&mut store).copy_from_slice(&bytes);
    let (r, reached) = with_nth_failing(last, || m.grow(&mut store, 10));
    assert!(reached, "syscall {last} of the grow not reached");
    assert!(matches!(r, Err(Error::Os(_))), "{r:?}");
    assert_eq!(m.data(&store), bytes, "the failed grow changed the memory");
    (pool, store, m)
}

/// [`after_failed_widening`], then the slot's next tenant (2 pages).
fn next_after_failed_widening(c: &PoolingConfig) -> (PoolingInstanceAllocator, Store<()>, Memory) {
    let (pool, store, m) = after_failed_widening(c);
    let base = m.data_ptr(&store);
    drop(store);
    let (store, m) = common::guard::tenant(&pool, 2, None);
    assert_eq!(m.data_ptr(&store), base, "not the same slot");
    assert!(m.data(&store).iter().all(|&b| b == 0));
    (pool, store, m)
}

/// In a pool of one slot (of `c`) whose first tenant grew from 2 to 8
/// pages: an instantiation of 12 pages fails at its last syscall (its
/// widening past the high water), then a tenant of 2 pages gets the slot.
fn next_after_failed_instantiation(
    c: &PoolingConfig,
) -> (PoolingInstanceAllocator, Store<()>, Memory) {
    let twelve = InstanceLayout::new().memory(MemoryType::new(12, None));
    let last = {
        let pool = high_water_pool(c);
        let mut s = Store::new(&pool, ());
        syscalls_of(|| s.instantiate(&twelve).unwrap())
    };
    let pool = high_water_pool(c);
    let mut failed = Store::new(&pool, ());
    let (r, reached) = with_nth_failing(last, || failed.instantiate(&twelve));
    assert!(reached, "syscall {last} of the instantiation not reached");
    assert!(matches!(r, Err(Error::Os(_))), "{r:?}");
    assert_nothing_in_use(&pool);
    let (store, m) = common::guard::tenant(&pool, 2, None);
    assert!(m.data(&store).iter().all(|&b| b == 0));
    (pool, store, m)
}

/// The child's pool (its shape from the parent), leaked with the tenant;
/// the address is `base + offset`.
fn leak(
    setup: fn(&PoolingConfig) -> (PoolingInstanceAllocator, Store<()>, Memory),
    offset: usize,
) -> *mut u8 {
    let (pool, store, m) = setup(&common::guard::config(1));
    std::mem::forget(pool);
    common::guard::addr(store, m, offset as isize)
}

const HIGH_WATER_LAST_BYTE: usize = 8 * PAGE - 1;

#[test]
fn write_at_data_size_after_a_widening_failing_at_its_last_syscall_faults() {
    run(
        "write_at_data_size_after_a_widening_failing_at_its_last_syscall_faults",
        Expect::Fault,
        || leak(after_failed_widening, 2 * PAGE),
    );
}

#[test]
fn write_at_the_high_water_after_a_failed_widening_faults() {
    run(
        "write_at_the_high_water_after_a_failed_widening_faults",
        Expect::Fault,
        || leak(after_failed_widening, HIGH_WATER_LAST_BYTE),
    );
}

#[test]
fn write_before_data_size_after_a_failed_widening_does_not_fault() {
    run(
        "write_before_data_size_after_a_failed_widening_does_not_fault",
        Expect::NoFault,
        || leak(after_failed_widening, 2 * PAGE - 1),
    );
}

#[test]
fn write_at_data_size_of_the_next_tenant_after_a_failed_widening_faults() {
    run(
        "write_at_data_size_of_the_next_tenant_after_a_failed_widening_faults",
        Expect::Fault,
        || leak(next_after_failed_widening, 2 * PAGE),
    );
}

#[test]
fn write_at_the_high_water_of_the_next_tenant_after_a_failed_widening_faults() {
    run(
        "write_at_the_high_water_of_the_next_tenant_after_a_failed_widening_faults",
        Expect::Fault,
        || leak(next_after_failed_widening, HIGH_WATER_LAST_BYTE),
    );
}

#[test]
fn write_at_data_size_after_an_instantiation_failing_to_widen_faults() {
    run(
        "write_at_data_size_after_an_instantiation_failing_to_widen_faults",
        Expect::Fault,
        || leak(next_after_failed_instantiation, 2 * PAGE),
    );
}

#[test]
fn write_at_the_high_water_after_an_instantiation_failing_to_widen_faults() {
    run(
        "write_at_the_high_water_after_an_instantiation_failing_to_widen_faults",
        Expect::Fault,
        || leak(next_after_failed_instantiation, HIGH_WATER_LAST_BYTE),
    );
}

/// The bytes side, on every shape: after a failed widening the memory
/// keeps its bytes and still grows (zeroes past its old size), and the
/// slot's next tenants read zeroes.
#[test]
fn a_failed_widening_leaves_the_memory_growable_and_the_slot_clean() {
    for shape in config::SHAPES {
        let mut c = common::guard::config(1);
        shape.apply(&mut c);
        let (pool, mut store, m) = after_failed_widening(&c);
        let kept = m.data(&store).to_vec();
        assert_eq!(m.grow(&mut store, 10).unwrap(), 2, "{shape:?}");
        let data = m.data(&store);
        assert_eq!(&data[..2 * PAGE], kept.as_slice(), "{shape:?}");
        assert!(data[2 * PAGE..].iter().all(|&b| b == 0), "{shape:?}");
        m.data_mut(&mut store).fill(0x99);
        drop(store);
        let (mut next, m) = common::guard::tenant(&pool, 2, None);
        m.grow(&mut next, 14).unwrap();
        assert!(m.data(&next).iter().all(|&b| b == 0), "{shape:?}");
        drop((next, pool));
        for setup in [next_after_failed_widening, next_after_failed_instantiation] {
            let (_pool, mut store, m) = setup(&c);
            m.grow(&mut store, 14).unwrap();
            assert!(m.data(&store).iter().all(|&b| b == 0), "{shape:?}");
        }
    }
}
