//! The contract for instantiating, one behaviour per test: the limiter is
//! asked for every minimum, the store's caps (reaching one is fine, one
//! past is `StoreLimit`), pool exhaustion, and which error comes first.
//! (Instantiations the OS fails are in `faults_instantiate.rs`.)

mod common;
use common::config::{self, MIB as SLOT};
use common::limiter::{Call, store};
use common::{in_use, one_memory, one_table};

use instance_pool::*;

const PAGE: usize = WASM_PAGE_SIZE;

fn pool() -> PoolingInstanceAllocator {
    config::pool(&config::small_two_per_instance(100))
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
            Call::MemoryGrowing(0, 0, Some(4 * PAGE)),
            Call::MemoryGrowing(0, 2 * PAGE, Some(SLOT)),
            Call::TableGrowing(0, 0, Some(100)),
            Call::TableGrowing(0, 5, Some(20)),
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

// ---- pool exhaustion and precedence ----

#[test]
fn exhausted_pool_is_pool_exhausted_and_takes_nothing() {
    let mut c = config::small_two_per_instance(100);
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
    let mut c = config::small_two_per_instance(100);
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
    let mut c = config::small_two_per_instance(100);
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
