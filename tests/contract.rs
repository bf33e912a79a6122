//! The contract's "Semantics the tests hold", one behaviour per test, with
//! exact expected values (limiter arguments in bytes and elements).

use instance_pool::*;
use std::sync::Arc;

const PAGE: usize = WASM_PAGE_SIZE;
const SLOT: usize = 1 << 20; // 16 pages

fn config() -> PoolingConfig {
    let mut c = PoolingConfig::default();
    c.total_instances(4)
        .total_memories(4)
        .total_tables(4)
        .max_memories_per_instance(2)
        .max_tables_per_instance(2)
        .max_memory_size(SLOT)
        .memory_guard_size(64 << 10)
        .table_elements(100);
    c
}

fn pool() -> PoolingInstanceAllocator {
    PoolingInstanceAllocator::new(&config()).unwrap()
}

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Memory(usize, usize, Option<usize>),
    Table(u32, u32, Option<u32>),
    MemoryFailed(String),
    TableFailed(String),
}

/// A limiter that records every call and answers from its fields.
#[derive(Debug)]
struct Recorder {
    calls: Vec<Call>,
    allow_memory: bool,
    allow_table: bool,
    instances: usize,
    memories: usize,
    tables: usize,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            calls: vec![],
            allow_memory: true,
            allow_table: true,
            instances: 10_000,
            memories: 10_000,
            tables: 10_000,
        }
    }
}

impl ResourceLimiter for Recorder {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> bool {
        self.calls.push(Call::Memory(current, desired, maximum));
        self.allow_memory
    }
    fn table_growing(&mut self, current: u32, desired: u32, maximum: Option<u32>) -> bool {
        self.calls.push(Call::Table(current, desired, maximum));
        self.allow_table
    }
    fn memory_grow_failed(&mut self, error: &Error) {
        self.calls.push(Call::MemoryFailed(format!("{error:?}")));
    }
    fn table_grow_failed(&mut self, error: &Error) {
        self.calls.push(Call::TableFailed(format!("{error:?}")));
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

fn store(allocator: &impl InstanceAllocator) -> Store<Recorder> {
    let mut s = Store::new(allocator, Recorder::default());
    s.limiter(|r| r);
    s
}

fn one_memory(min: u64, max: Option<u64>) -> InstanceLayout {
    InstanceLayout::new().memory(MemoryType::new(min, max))
}

fn one_table(min: u32, max: Option<u32>) -> InstanceLayout {
    InstanceLayout::new().table(TableType::new(min, max))
}

fn in_use(p: &PoolingInstanceAllocator) -> (u32, u32, u32) {
    let m = p.metrics();
    (m.instances_in_use, m.memories_in_use, m.tables_in_use)
}

// ---- grow by zero ----

#[test]
fn memory_grow_by_zero_returns_size_and_skips_limiter() {
    let p = pool();
    let mut s = store(&p);
    let m = s
        .instantiate(&one_memory(3, None))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    s.data_mut().calls.clear();
    assert_eq!(m.grow(&mut s, 0).unwrap(), 3);
    assert_eq!(m.size(&s), 3);
    assert!(s.data().calls.is_empty());
}

#[test]
fn table_grow_by_zero_returns_size_and_skips_limiter() {
    let p = pool();
    let mut s = store(&p);
    let t = s
        .instantiate(&one_table(7, None))
        .unwrap()
        .table(&s, 0)
        .unwrap();
    s.data_mut().calls.clear();
    assert_eq!(t.grow(&mut s, 0, 0).unwrap(), 7);
    assert!(s.data().calls.is_empty());
}

// ---- the limiter's arguments ----

#[test]
fn memory_grow_calls_limiter_in_bytes_with_declared_maximum() {
    let p = pool();
    let mut s = store(&p);
    let m = s
        .instantiate(&one_memory(1, Some(10)))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    s.data_mut().calls.clear();
    assert_eq!(m.grow(&mut s, 2).unwrap(), 1);
    assert_eq!(
        s.data().calls,
        [Call::Memory(PAGE, 3 * PAGE, Some(10 * PAGE))]
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
            Call::Memory(0, 0, Some(SLOT)),
            Call::Memory(0, 0, Some(SLOT))
        ]
    );
    let m = i.memory(&s, 1).unwrap();
    s.data_mut().calls.clear();
    m.grow(&mut s, 1).unwrap();
    assert_eq!(s.data().calls, [Call::Memory(0, PAGE, Some(SLOT))]);
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
        [Call::Table(2, 5, Some(50)), Call::Table(0, 1, Some(100))]
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
    let mut s = store(&p);
    let m = s
        .instantiate(&one_memory(1, None))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    s.data_mut().calls.clear();
    s.data_mut().allow_memory = false;
    let err = m.grow(&mut s, 4).unwrap_err();
    assert!(
        matches!(err, Error::LimiterDenied { resource: Resource::Memory, desired } if desired == 5 * PAGE)
    );
    assert_eq!(s.data().calls, [Call::Memory(PAGE, 5 * PAGE, Some(SLOT))]);
    assert_eq!(m.size(&s), 1);
    assert_eq!(p.metrics().limiter_denials, 1);
}

#[test]
fn table_limiter_refusal_is_limiter_denied_without_failure_hook() {
    let p = pool();
    let mut s = store(&p);
    let t = s
        .instantiate(&one_table(1, None))
        .unwrap()
        .table(&s, 0)
        .unwrap();
    s.data_mut().calls.clear();
    s.data_mut().allow_table = false;
    let err = t.grow(&mut s, 4, 0).unwrap_err();
    assert!(matches!(
        err,
        Error::LimiterDenied {
            resource: Resource::Table,
            desired: 5
        }
    ));
    assert_eq!(s.data().calls, [Call::Table(1, 5, Some(100))]);
    assert_eq!(t.size(&s), 1);
}

// ---- limiter says yes, but it cannot be done ----

#[test]
fn grow_past_slot_capacity_calls_failure_hook_once() {
    let p = pool();
    let mut s = store(&p);
    let m = s
        .instantiate(&one_memory(1, None))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    s.data_mut().calls.clear();
    let err = m.grow(&mut s, 16).unwrap_err();
    assert!(matches!(
        err,
        Error::MaximumExceeded { resource: Resource::Memory, desired, maximum }
            if desired == 17 * PAGE && maximum == SLOT
    ));
    let calls = &s.data().calls;
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0], Call::Memory(PAGE, 17 * PAGE, Some(SLOT)));
    assert!(matches!(&calls[1], Call::MemoryFailed(e) if e.contains("MaximumExceeded")));
    assert_eq!(m.size(&s), 1);
    // Growing exactly to the maximum is fine.
    assert_eq!(m.grow(&mut s, 15).unwrap(), 1);
    assert_eq!(m.data_size(&s), SLOT);
}

#[test]
fn grow_past_declared_maximum_calls_failure_hook_once() {
    let p = pool();
    let mut s = store(&p);
    let m = s
        .instantiate(&one_memory(1, Some(2)))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    s.data_mut().calls.clear();
    let err = m.grow(&mut s, 2).unwrap_err();
    assert!(
        matches!(err, Error::MaximumExceeded { desired, maximum, .. } if desired == 3 * PAGE && maximum == 2 * PAGE)
    );
    assert_eq!(
        s.data()
            .calls
            .iter()
            .filter(|c| matches!(c, Call::MemoryFailed(_)))
            .count(),
        1
    );
}

#[test]
fn overflowing_grow_reports_saturated_page_aligned_desired() {
    let p = pool();
    let mut s = store(&p);
    let m = s
        .instantiate(&one_memory(1, None))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    s.data_mut().calls.clear();
    let err = m.grow(&mut s, u64::MAX).unwrap_err();
    let saturated = usize::MAX & !(PAGE - 1);
    assert!(matches!(err, Error::MaximumExceeded { desired, .. } if desired == saturated));
    assert_eq!(s.data().calls[0], Call::Memory(PAGE, saturated, Some(SLOT)));
}

#[test]
fn table_grow_past_maximum_calls_failure_hook_once() {
    let p = pool();
    let mut s = store(&p);
    let t = s
        .instantiate(&one_table(1, Some(10)))
        .unwrap()
        .table(&s, 0)
        .unwrap();
    s.data_mut().calls.clear();
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
    assert!(matches!(&s.data().calls[1], Call::TableFailed(e) if e.contains("MaximumExceeded")));
    assert_eq!(t.size(&s), 1);
}

#[test]
fn os_failure_during_grow_is_os_error_and_calls_failure_hook_once() {
    let p = pool();
    let mut s = store(&p);
    let m = s
        .instantiate(&one_memory(1, None))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    s.data_mut().calls.clear();
    fault::reset();
    fault::fail_nth(1);
    let err = m.grow(&mut s, 1).unwrap_err();
    assert!(!fault::pending());
    assert!(matches!(err, Error::Os(_)));
    let calls = &s.data().calls;
    assert_eq!(calls.len(), 2);
    assert!(matches!(&calls[1], Call::MemoryFailed(e) if e.contains("Os")));
    assert_eq!(m.size(&s), 1);
    // The memory still grows afterwards.
    assert_eq!(m.grow(&mut s, 1).unwrap(), 1);
    m.data_mut(&mut s)[2 * PAGE - 1] = 1;
}

// ---- instantiation ----

#[test]
fn instantiation_asks_limiter_for_every_minimum_even_zero() {
    let p = pool();
    let mut s = store(&p);
    let layout = InstanceLayout::new()
        .memory(MemoryType::new(0, Some(4)))
        .memory(MemoryType::new(2, None))
        .table(TableType::new(0, None))
        .table(TableType::new(5, Some(20)));
    s.instantiate(&layout).unwrap();
    assert_eq!(
        s.data().calls,
        [
            Call::Memory(0, 0, Some(4 * PAGE)),
            Call::Memory(0, 2 * PAGE, Some(SLOT)),
            Call::Table(0, 0, Some(100)),
            Call::Table(0, 5, Some(20)),
        ]
    );
}

#[test]
fn instantiation_refused_by_limiter_releases_everything() {
    let p = pool();
    let mut s = store(&p);
    s.data_mut().allow_table = false;
    let layout = InstanceLayout::new()
        .memory(MemoryType::new(1, None))
        .table(TableType::new(3, None));
    let err = s.instantiate(&layout).unwrap_err();
    assert!(matches!(
        err,
        Error::LimiterDenied {
            resource: Resource::Table,
            desired: 3
        }
    ));
    assert_eq!(in_use(&p), (0, 0, 0));
    // The store's counts did not move either: its caps still allow 4.
    s.data_mut().allow_table = true;
    s.data_mut().instances = 1;
    s.instantiate(&layout).unwrap();
    assert_eq!(in_use(&p), (1, 1, 1));
}

#[test]
fn new_memory_has_its_minimum_accessible_and_zeroed() {
    let p = pool();
    let mut s = store(&p);
    let m = s
        .instantiate(&one_memory(3, None))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    assert_eq!(m.size(&s), 3);
    assert_eq!(m.data(&s).len(), 3 * PAGE);
    assert!(m.data(&s).iter().all(|&b| b == 0));
    assert_eq!(m.reserved_size(&s), SLOT);
    assert_eq!(m.guard_size(&s), 64 << 10);
}

// ---- per-store caps ----

#[test]
fn instances_cap_reached_is_fine_one_past_is_store_limit() {
    let p = pool();
    let mut s = store(&p);
    s.data_mut().instances = 2;
    let empty = InstanceLayout::new();
    s.instantiate(&empty).unwrap();
    s.instantiate(&empty).unwrap();
    let err = s.instantiate(&empty).unwrap_err();
    assert!(matches!(
        err,
        Error::StoreLimit {
            resource: Resource::Instance,
            limit: 2
        }
    ));
    assert_eq!(in_use(&p), (2, 0, 0));
}

#[test]
fn memories_cap_reached_is_fine_one_past_is_store_limit() {
    let p = pool();
    let mut s = store(&p);
    s.data_mut().memories = 3;
    s.instantiate(
        &InstanceLayout::new()
            .memory(MemoryType::new(0, None))
            .memory(MemoryType::new(0, None)),
    )
    .unwrap();
    s.instantiate(&one_memory(0, None)).unwrap();
    let err = s.instantiate(&one_memory(0, None)).unwrap_err();
    assert!(matches!(
        err,
        Error::StoreLimit {
            resource: Resource::Memory,
            limit: 3
        }
    ));
    assert_eq!(in_use(&p), (2, 3, 0));
}

#[test]
fn tables_cap_reached_is_fine_one_past_is_store_limit() {
    let p = pool();
    let mut s = store(&p);
    s.data_mut().tables = 1;
    s.instantiate(&one_table(0, None)).unwrap();
    let err = s.instantiate(&one_table(0, None)).unwrap_err();
    assert!(matches!(
        err,
        Error::StoreLimit {
            resource: Resource::Table,
            limit: 1
        }
    ));
    assert_eq!(in_use(&p), (1, 0, 1));
}

#[test]
fn caps_are_reread_at_each_instantiation() {
    let p = pool();
    let mut s = store(&p);
    s.data_mut().instances = 1;
    s.instantiate(&InstanceLayout::new()).unwrap();
    assert!(matches!(
        s.instantiate(&InstanceLayout::new()),
        Err(Error::StoreLimit { limit: 1, .. })
    ));
    s.data_mut().instances = 2;
    s.instantiate(&InstanceLayout::new()).unwrap();
}

#[test]
fn store_without_limiter_has_caps_of_ten_thousand() {
    let p = OnDemandInstanceAllocator::default();
    let mut s = Store::new(&p, ());
    for _ in 0..10_000 {
        s.instantiate(&InstanceLayout::new()).unwrap();
    }
    assert!(matches!(
        s.instantiate(&InstanceLayout::new()),
        Err(Error::StoreLimit {
            resource: Resource::Instance,
            limit: 10_000
        })
    ));
}

// ---- pool exhaustion and precedence ----

#[test]
fn exhausted_pool_is_pool_exhausted_and_takes_nothing() {
    let mut c = config();
    c.total_instances(3)
        .total_memories(2)
        .total_tables(1)
        .max_memories_per_instance(1)
        .max_tables_per_instance(1);
    let p = PoolingInstanceAllocator::new(&c).unwrap();
    let mut s = store(&p);
    s.instantiate(&one_memory(1, None).table(TableType::new(1, None)))
        .unwrap();
    let err = s.instantiate(&one_table(1, None)).unwrap_err();
    assert!(matches!(
        err,
        Error::PoolExhausted {
            resource: Resource::Table,
            limit: 1
        }
    ));
    s.instantiate(&one_memory(1, None)).unwrap();
    let err = s.instantiate(&one_memory(1, None)).unwrap_err();
    assert!(matches!(
        err,
        Error::PoolExhausted {
            resource: Resource::Memory,
            limit: 2
        }
    ));
    s.instantiate(&InstanceLayout::new()).unwrap();
    let err = s.instantiate(&InstanceLayout::new()).unwrap_err();
    assert!(matches!(
        err,
        Error::PoolExhausted {
            resource: Resource::Instance,
            limit: 3
        }
    ));
    assert_eq!(in_use(&p), (3, 2, 1));
    let m = p.metrics();
    assert_eq!(
        (
            m.instances_exhausted,
            m.memories_exhausted,
            m.tables_exhausted
        ),
        (1, 1, 1)
    );
    drop(s);
    assert_eq!(in_use(&p), (0, 0, 0));
}

#[test]
fn unsupported_comes_before_store_limit() {
    let p = pool();
    let mut s = store(&p);
    s.data_mut().instances = 0;
    let three = InstanceLayout::new()
        .memory(MemoryType::new(0, None))
        .memory(MemoryType::new(0, None))
        .memory(MemoryType::new(0, None));
    assert!(matches!(s.instantiate(&three), Err(Error::Unsupported(_))));
    assert!(matches!(
        s.instantiate(&InstanceLayout::new()),
        Err(Error::StoreLimit { .. })
    ));
}

#[test]
fn store_limit_comes_before_pool_exhausted() {
    let mut c = config();
    c.total_memories(2);
    let p = PoolingInstanceAllocator::new(&c).unwrap();
    let mut a = store(&p);
    a.instantiate(&one_memory(0, None).memory(MemoryType::new(0, None)))
        .unwrap();
    let mut b = store(&p);
    b.data_mut().memories = 0;
    assert!(matches!(
        b.instantiate(&one_memory(0, None)),
        Err(Error::StoreLimit {
            resource: Resource::Memory,
            ..
        })
    ));
    b.data_mut().memories = 1;
    assert!(matches!(
        b.instantiate(&one_memory(0, None)),
        Err(Error::PoolExhausted { .. })
    ));
}

#[test]
fn pool_exhausted_comes_before_limiter_denied() {
    let mut c = config();
    c.total_tables(1).max_tables_per_instance(1);
    let p = PoolingInstanceAllocator::new(&c).unwrap();
    let mut a = store(&p);
    a.instantiate(&one_table(0, None)).unwrap();
    let mut b = store(&p);
    b.data_mut().allow_memory = false;
    let err = b
        .instantiate(&one_memory(1, None).table(TableType::new(0, None)))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::PoolExhausted {
            resource: Resource::Table,
            ..
        }
    ));
    assert!(
        b.data().calls.is_empty(),
        "the limiter is not asked before slots are taken"
    );
}

#[test]
fn unsupported_layouts_take_nothing() {
    let p = pool();
    let mut s = store(&p);
    let cases = [
        InstanceLayout::new()
            .table(TableType::new(0, None))
            .table(TableType::new(0, None))
            .table(TableType::new(0, None)),
        one_memory(17, None),        // minimum past the 16-page slot
        one_table(101, None),        // past table_elements
        one_memory(0, Some(65_537)), // not a 32-bit memory
        one_memory(3, Some(2)),      // minimum past maximum
        one_table(3, Some(2)),
        InstanceLayout::new().memory_with_image(
            MemoryType::new(1, None),
            MemoryImage::new(&[1; PAGE + 1]).unwrap(),
        ),
    ];
    for layout in &cases {
        let err = s.instantiate(layout).unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{layout:?}: {err:?}");
    }
    assert_eq!(in_use(&p), (0, 0, 0));
    assert!(s.data().calls.is_empty());
}

#[test]
fn failed_instantiations_never_leak_and_the_full_pool_stays_usable() {
    let p = pool();
    let image = MemoryImage::new(b"image").unwrap();
    let layout = InstanceLayout::new()
        .memory_with_image(MemoryType::new(1, None), image.clone())
        .memory(MemoryType::new(2, None))
        .table(TableType::new(4, None));
    for round in 0..200 {
        let mut s = store(&p);
        match round % 4 {
            0 => s.data_mut().allow_memory = false,
            1 => s.data_mut().allow_table = false,
            2 => s.data_mut().memories = 1,
            _ => {
                // The first syscall: every instantiation here makes at
                // least one (keep_resident is 0, so access was removed).
                fault::reset();
                fault::fail_nth(1);
            }
        }
        assert!(s.instantiate(&layout).is_err(), "round {round}");
        fault::reset();
        assert_eq!(in_use(&p), (0, 0, 0), "round {round}");
    }
    // Every slot is still there: two memories per instance, four memories.
    let stores: Vec<_> = (0..2)
        .map(|_| {
            let mut s = store(&p);
            let i = s.instantiate(&layout).unwrap();
            let m = i.memory(&s, 0).unwrap();
            assert_eq!(&m.data(&s)[..5], b"image");
            s
        })
        .collect();
    assert_eq!(in_use(&p), (2, 4, 2));
    drop(stores);
    assert_eq!(in_use(&p), (0, 0, 0));
}

// ---- reuse ----

fn dirty_then_reuse(c: &PoolingConfig) {
    let p = PoolingInstanceAllocator::new(c).unwrap();
    for round in 0..3 {
        let mut s = store(&p);
        let i = s
            .instantiate(&one_memory(2, None).table(TableType::new(10, None)))
            .unwrap();
        let (m, t) = (i.memory(&s, 0).unwrap(), i.table(&s, 0).unwrap());
        assert_eq!(
            m.data_size(&s),
            2 * PAGE,
            "round {round}: a reused slot has the new minimum"
        );
        assert!(
            m.data(&s).iter().all(|&b| b == 0),
            "round {round}: memory not zero"
        );
        assert!(
            (0..10).all(|i| t.get(&s, i) == Some(0)),
            "round {round}: table not zero"
        );
        m.grow(&mut s, 6).unwrap();
        m.data_mut(&mut s).fill(0xAB);
        t.grow(&mut s, 50, 7).unwrap();
        for i in 0..10 {
            t.set(&mut s, i, 0xdead).unwrap();
        }
    }
}

#[test]
fn reused_slot_reads_zeroes_over_the_whole_accessible_size() {
    let mut c = config();
    c.total_memories(1)
        .total_tables(1)
        .max_memories_per_instance(1)
        .max_tables_per_instance(1);
    dirty_then_reuse(&c);
}

#[test]
fn reused_slot_reads_zeroes_with_keep_resident() {
    let mut c = config();
    c.total_memories(1)
        .total_tables(1)
        .max_memories_per_instance(1)
        .max_tables_per_instance(1);
    c.memory_keep_resident(3 * PAGE).table_keep_resident(4096);
    dirty_then_reuse(&c);
    c.memory_keep_resident(SLOT).table_keep_resident(1 << 20);
    dirty_then_reuse(&c);
}

#[test]
fn reused_slot_reads_zeroes_with_batched_decommit() {
    let mut c = config();
    c.total_memories(1)
        .total_tables(1)
        .max_memories_per_instance(1)
        .max_tables_per_instance(1);
    c.decommit_batch_size(3);
    dirty_then_reuse(&c);
}

// ---- handles ----

#[test]
fn table_set_and_get_past_size() {
    let p = pool();
    let mut s = store(&p);
    let t = s
        .instantiate(&one_table(2, None))
        .unwrap()
        .table(&s, 0)
        .unwrap();
    t.set(&mut s, 1, 5).unwrap();
    assert_eq!(t.get(&s, 1), Some(5));
    assert_eq!(t.get(&s, 2), None);
    assert!(matches!(
        t.set(&mut s, 2, 1),
        Err(Error::OutOfBounds { index: 2, size: 2 })
    ));
}

#[test]
fn instance_handles_index_memories_and_tables_in_order() {
    let p = pool();
    let mut s = store(&p);
    let a = s.instantiate(&one_memory(1, None)).unwrap();
    let b = s
        .instantiate(&one_memory(2, None).table(TableType::new(3, None)))
        .unwrap();
    assert_eq!(a.memory(&s, 0).unwrap().size(&s), 1);
    assert_eq!(b.memory(&s, 0).unwrap().size(&s), 2);
    assert_eq!(b.memory(&s, 1), None);
    assert_eq!(a.table(&s, 0), None);
    assert_eq!(b.table(&s, 0).unwrap().size(&s), 3);
}

#[test]
#[should_panic(expected = "does not belong")]
fn handle_used_with_another_store_panics() {
    let p = pool();
    let mut a = store(&p);
    let b = store(&p);
    let m = a
        .instantiate(&one_memory(1, None))
        .unwrap()
        .memory(&a, 0)
        .unwrap();
    m.size(&b);
}

#[test]
fn store_keeps_its_allocator_alive() {
    let p = pool();
    let mut s = store(&p);
    drop(p);
    let m = s
        .instantiate(&one_memory(1, None))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    m.data_mut(&mut s)[0] = 1;
    assert_eq!(m.data(&s)[0], 1);
}

#[test]
fn allocator_clones_share_one_pool() {
    let p = pool();
    let q = p.clone();
    let mut s = store(&q);
    s.instantiate(&one_memory(1, None)).unwrap();
    assert_eq!(in_use(&p), (1, 1, 0));
}

// ---- on demand ----

#[test]
fn on_demand_maximum_is_declared_or_four_gib() {
    let a = OnDemandInstanceAllocator::default();
    let mut s = store(&a);
    let layout = InstanceLayout::new()
        .memory(MemoryType::new(1, Some(3)))
        .memory(MemoryType::new(0, None))
        .table(TableType::new(1, Some(9)))
        .table(TableType::new(0, None));
    let i = s.instantiate(&layout).unwrap();
    assert_eq!(
        s.data().calls,
        [
            Call::Memory(0, PAGE, Some(3 * PAGE)),
            Call::Memory(0, 0, Some(1 << 32)),
            Call::Table(0, 1, Some(9)),
            Call::Table(0, 0, None),
        ]
    );
    let m = i.memory(&s, 0).unwrap();
    assert!(
        matches!(m.grow(&mut s, 3), Err(Error::MaximumExceeded { maximum, .. }) if maximum == 3 * PAGE)
    );
    assert_eq!(m.grow(&mut s, 2).unwrap(), 1);
    m.data_mut(&mut s)[3 * PAGE - 1] = 1;
    let t = i.table(&s, 1).unwrap();
    assert_eq!(t.grow(&mut s, 1000, 3).unwrap(), 0);
    assert_eq!(t.get(&s, 999), Some(3));
}

#[test]
fn on_demand_memory_with_image_reads_image_then_zeroes() {
    let a = OnDemandInstanceAllocator::default();
    let mut s = store(&a);
    let image = MemoryImage::new(&[9; 5000]).unwrap();
    let m = s
        .instantiate(&InstanceLayout::new().memory_with_image(MemoryType::new(1, None), image))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    let d = m.data(&s);
    assert!(d[..5000].iter().all(|&b| b == 9) && d[5000..].iter().all(|&b| b == 0));
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

#[test]
fn store_limits_caps() {
    let p = pool();
    let limits = StoreLimitsBuilder::new()
        .instances(1)
        .memories(1)
        .tables(1)
        .build();
    assert_eq!(
        (limits.instances(), limits.memories(), limits.tables()),
        (1, 1, 1)
    );
    let d = StoreLimits::default();
    assert_eq!(
        (d.instances(), d.memories(), d.tables()),
        (10_000, 10_000, 10_000)
    );
    let mut s = Store::new(&p, limits);
    s.limiter(|l| l);
    s.instantiate(&one_memory(0, None)).unwrap();
    assert!(matches!(
        s.instantiate(&InstanceLayout::new()),
        Err(Error::StoreLimit {
            resource: Resource::Instance,
            limit: 1
        })
    ));
}

// ---- types ----

#[test]
fn public_types_have_the_promised_traits() {
    fn send_sync<T: Send + Sync>() {}
    fn handle<T: Copy + Send + Sync + 'static>() {}
    fn static_<T: 'static>() {}
    send_sync::<Store<StoreLimits>>();
    static_::<Store<StoreLimits>>();
    handle::<Instance>();
    handle::<Memory>();
    handle::<Table>();
    send_sync::<PoolingInstanceAllocator>();
    send_sync::<Error>();
    let _ = PoolingInstanceAllocator::clone;
    let _: OnDemandInstanceAllocator = Default::default();
    let _: StoreLimits = Default::default();
    let _ = <StoreLimits as Clone>::clone;
    let _ = InstanceLayout::clone;
    let _: Arc<MemoryImage> = MemoryImage::new(b"").unwrap();
    let e: Box<dyn std::error::Error + Send + Sync> = Box::new(Error::Unsupported("x".into()));
    assert_eq!(e.to_string(), "unsupported: x");
}

#[test]
fn exhaustion_message_names_limit_and_kind() {
    let e = Error::PoolExhausted {
        resource: Resource::Memory,
        limit: 7,
    };
    assert_eq!(
        e.to_string(),
        "maximum concurrent limit of 7 for memorys reached".replace("memorys", "memories")
    );
}

#[test]
fn unbounded_table_growing_past_u32_is_maximum_exceeded_with_saturated_desired() {
    let a = OnDemandInstanceAllocator::default();
    let mut s = store(&a);
    let t = s
        .instantiate(&one_table(2, None))
        .unwrap()
        .table(&s, 0)
        .unwrap();
    s.data_mut().calls.clear();
    let err = t.grow(&mut s, u32::MAX, 0).unwrap_err();
    let max = u32::MAX as usize;
    assert!(
        matches!(err, Error::MaximumExceeded { resource: Resource::Table, desired, maximum } if desired == max && maximum == max)
    );
    assert_eq!(s.data().calls[0], Call::Table(2, u32::MAX, None));
    assert!(matches!(&s.data().calls[1], Call::TableFailed(_)));
    assert_eq!(t.size(&s), 2);
}
