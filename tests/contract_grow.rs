//! The contract for growing, one behaviour per test, with exact expected
//! values (limiter arguments in bytes and elements): growing by zero, the
//! limiter's arguments, its refusals, and growth it allows that cannot be
//! done. (A grow the OS fails is in `faults_grow.rs`.)

mod common;
use common::config::{self, MIB as SLOT};
use common::limiter::{Call, Outcome, store, store_with_memory, store_with_table};
use common::one_memory;

use instance_pool::*;

const PAGE: usize = WASM_PAGE_SIZE;

fn pool() -> PoolingInstanceAllocator {
    config::pool(&config::small_two_per_instance(100))
}

// ---- grow by zero ----

#[test]
fn memory_grow_by_zero_returns_size_and_skips_limiter() {
    let p = pool();
    let (mut s, m) = store_with_memory(&p, 3, None);
    assert_eq!(m.grow(&mut s, 0).unwrap(), 3);
    assert_eq!(m.size(&s), 3);
    assert!(s.data().calls.is_empty());
}

#[test]
fn table_grow_by_zero_returns_size_and_skips_limiter() {
    let p = pool();
    let (mut s, t) = store_with_table(&p, 7, None);
    assert_eq!(t.grow(&mut s, 0, 0).unwrap(), 7);
    assert!(s.data().calls.is_empty());
}

// ---- the limiter's arguments ----

#[test]
fn memory_grow_calls_limiter_in_bytes_with_declared_maximum() {
    let p = pool();
    let (mut s, m) = store_with_memory(&p, 1, Some(10));
    assert_eq!(m.grow(&mut s, 2).unwrap(), 1);
    assert_eq!(
        s.data().calls,
        [Call::MemoryGrowing(PAGE, 3 * PAGE, Some(10 * PAGE))]
    );
    assert_eq!(m.size(&s), 3);
    assert_eq!(m.data_size(&s), 3 * PAGE);
}

#[test]
fn pool_memory_maximum_is_slot_capacity_when_declared_is_larger_or_absent() {
    let p = pool();
    let mut s = store(&p);
    let i = s
        .instantiate(
            &InstanceLayout::new()
                .memory(MemoryType::new(0, None))
                .memory(MemoryType::new(0, Some(1000))),
        )
        .unwrap();
    assert_eq!(
        s.data().calls,
        [
            Call::MemoryGrowing(0, 0, Some(SLOT)),
            Call::MemoryGrowing(0, 0, Some(SLOT))
        ]
    );
    let m = i.memory(&s, 1).unwrap();
    s.data_mut().calls.clear();
    m.grow(&mut s, 1).unwrap();
    assert_eq!(s.data().calls, [Call::MemoryGrowing(0, PAGE, Some(SLOT))]);
}

#[test]
fn table_grow_calls_limiter_in_elements_with_pool_maximum() {
    let p = pool();
    let mut s = store(&p);
    let i = s
        .instantiate(
            &InstanceLayout::new()
                .table(TableType::new(2, Some(50)))
                .table(TableType::new(0, None)),
        )
        .unwrap();
    let (t0, t1) = (i.table(&s, 0).unwrap(), i.table(&s, 1).unwrap());
    s.data_mut().calls.clear();
    assert_eq!(t0.grow(&mut s, 3, 9).unwrap(), 2);
    assert_eq!(t1.grow(&mut s, 1, 0).unwrap(), 0);
    assert_eq!(
        s.data().calls,
        [
            Call::TableGrowing(2, 5, Some(50)),
            Call::TableGrowing(0, 1, Some(100))
        ]
    );
    assert_eq!(t0.size(&s), 5);
    assert_eq!(
        (0..5).map(|i| t0.get(&s, i).unwrap()).collect::<Vec<_>>(),
        [0, 0, 9, 9, 9]
    );
}

// ---- limiter says no ----

#[test]
fn memory_limiter_refusal_is_limiter_denied_without_failure_hook() {
    let p = pool();
    let (mut s, m) = store_with_memory(&p, 1, None);
    s.data_mut().allow_memory = false;
    let err = m.grow(&mut s, 4).unwrap_err();
    assert!(
        matches!(err, Error::LimiterDenied { resource: Resource::Memory, desired } if desired == 5 * PAGE)
    );
    assert_eq!(
        s.data().calls,
        [Call::MemoryGrowing(PAGE, 5 * PAGE, Some(SLOT))]
    );
    assert_eq!(m.size(&s), 1);
    assert_eq!(p.metrics().limiter_denials, 1);
}

#[test]
fn table_limiter_refusal_is_limiter_denied_without_failure_hook() {
    let p = pool();
    let (mut s, t) = store_with_table(&p, 1, None);
    s.data_mut().allow_table = false;
    let err = t.grow(&mut s, 4, 0).unwrap_err();
    assert!(matches!(
        err,
        Error::LimiterDenied {
            resource: Resource::Table,
            desired: 5
        }
    ));
    assert_eq!(s.data().calls, [Call::TableGrowing(1, 5, Some(100))]);
    assert_eq!(t.size(&s), 1);
}

// ---- limiter says yes, but it cannot be done ----

#[test]
fn grow_past_slot_capacity_calls_failure_hook_once() {
    let p = pool();
    let (mut s, m) = store_with_memory(&p, 1, None);
    let err = m.grow(&mut s, 16).unwrap_err();
    assert!(matches!(
        err,
        Error::MaximumExceeded { resource: Resource::Memory, desired, maximum }
            if desired == 17 * PAGE && maximum == SLOT
    ));
    let calls = &s.data().calls;
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0], Call::MemoryGrowing(PAGE, 17 * PAGE, Some(SLOT)));
    assert_eq!(
        calls[1],
        Call::MemoryGrowFailed(Outcome::MaximumExceeded(Resource::Memory, 17 * PAGE, SLOT))
    );
    assert_eq!(m.size(&s), 1);
    // Growing exactly to the maximum is fine.
    assert_eq!(m.grow(&mut s, 15).unwrap(), 1);
    assert_eq!(m.data_size(&s), SLOT);
}

#[test]
fn grow_past_declared_maximum_calls_failure_hook_once() {
    let p = pool();
    let (mut s, m) = store_with_memory(&p, 1, Some(2));
    let err = m.grow(&mut s, 2).unwrap_err();
    assert!(
        matches!(err, Error::MaximumExceeded { desired, maximum, .. } if desired == 3 * PAGE && maximum == 2 * PAGE)
    );
    assert_eq!(
        s.data()
            .calls
            .iter()
            .filter(|c| matches!(c, Call::MemoryGrowFailed(_)))
            .count(),
        1
    );
}

#[test]
fn overflowing_grow_reports_saturated_page_aligned_desired() {
    let p = pool();
    let (mut s, m) = store_with_memory(&p, 1, None);
    let err = m.grow(&mut s, u64::MAX).unwrap_err();
    let saturated = usize::MAX & !(PAGE - 1);
    assert!(matches!(err, Error::MaximumExceeded { desired, .. } if desired == saturated));
    assert_eq!(
        s.data().calls[0],
        Call::MemoryGrowing(PAGE, saturated, Some(SLOT))
    );
}

#[test]
fn table_grow_past_maximum_calls_failure_hook_once() {
    let p = pool();
    let (mut s, t) = store_with_table(&p, 1, Some(10));
    let err = t.grow(&mut s, 10, 0).unwrap_err();
    assert!(matches!(
        err,
        Error::MaximumExceeded {
            resource: Resource::Table,
            desired: 11,
            maximum: 10
        }
    ));
    assert_eq!(s.data().calls.len(), 2);
    assert_eq!(
        s.data().calls[1],
        Call::TableGrowFailed(Outcome::MaximumExceeded(Resource::Table, 11, 10))
    );
    assert_eq!(t.size(&s), 1);
}

// ---- StoreLimits ----

#[test]
fn store_limits_allow_reaching_a_limit_and_refuse_past_it() {
    let p = pool();
    let mut s = Store::new(
        &p,
        StoreLimitsBuilder::new()
            .memory_size(3 * PAGE)
            .table_elements(8)
            .build(),
    );
    s.limiter(|l| l);
    let i = s
        .instantiate(&one_memory(1, None).table(TableType::new(2, None)))
        .unwrap();
    let (m, t) = (i.memory(&s, 0).unwrap(), i.table(&s, 0).unwrap());
    assert_eq!(m.grow(&mut s, 2).unwrap(), 1);
    assert!(
        matches!(m.grow(&mut s, 1), Err(Error::LimiterDenied { desired, .. }) if desired == 4 * PAGE)
    );
    assert_eq!(t.grow(&mut s, 6, 0).unwrap(), 2);
    assert!(matches!(
        t.grow(&mut s, 1, 0),
        Err(Error::LimiterDenied { desired: 9, .. })
    ));
}
