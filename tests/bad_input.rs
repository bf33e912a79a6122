//! Bad input never panics and never leaks: every invalid `PoolingConfig`
//! field is refused with `Error::InvalidConfig` naming the field and the
//! value, every layout the pool cannot serve is `Error::Unsupported` before
//! anything is taken, and absurd grows and table indices come back as typed
//! errors.

mod common;
use common::config::{self, MIB};
use common::limiter::{Call, Outcome, Recorder, store};

use instance_pool::*;

const GIB: usize = 1 << 30;

/// A small pool every layout test starts from: 4 of everything, 1 MiB
/// slots, 64 KiB guards, 32-element tables, one memory and one table per
/// instance.
fn small_config() -> PoolingConfig {
    let mut c = config::small(4);
    c.table_elements(32);
    c
}

fn invalid_config_message(config: &PoolingConfig) -> String {
    match PoolingInstanceAllocator::new(config) {
        Err(Error::InvalidConfig(msg)) => msg,
        Err(e) => panic!("expected InvalidConfig, got {e:?}"),
        Ok(_) => panic!("expected InvalidConfig, got a pool for {config:?}"),
    }
}

/// Asserts the message names every one of `words` (field names, values).
fn assert_names(msg: &str, words: &[&str]) {
    for w in words {
        assert!(msg.contains(w), "message {msg:?} does not name {w:?}");
    }
}

#[test]
fn small_config_is_valid() {
    PoolingInstanceAllocator::new(&small_config()).unwrap();
}

#[test]
fn zero_total_instances_is_invalid_config() {
    let mut c = small_config();
    c.total_instances(0);
    assert_names(&invalid_config_message(&c), &["total_instances", "0"]);
}

#[test]
fn max_memory_size_not_page_multiple_is_invalid_config() {
    let mut c = small_config();
    c.max_memory_size(MIB + 1);
    assert_names(
        &invalid_config_message(&c),
        &["max_memory_size", &(MIB + 1).to_string()],
    );
}

#[test]
fn memory_guard_size_not_page_multiple_is_invalid_config() {
    let mut c = small_config();
    c.memory_guard_size(4097);
    assert_names(&invalid_config_message(&c), &["memory_guard_size", "4097"]);
}

#[test]
fn memory_keep_resident_not_page_multiple_is_invalid_config() {
    let mut c = small_config();
    c.memory_keep_resident(100);
    assert_names(
        &invalid_config_message(&c),
        &["memory_keep_resident", "100"],
    );
}

#[test]
fn table_keep_resident_not_page_multiple_is_invalid_config() {
    let mut c = small_config();
    c.table_keep_resident(12_345);
    assert_names(
        &invalid_config_message(&c),
        &["table_keep_resident", "12345"],
    );
}

#[test]
fn max_memory_size_above_4_gib_is_invalid_config() {
    let mut c = small_config();
    let size = 4 * GIB + 65536;
    c.max_memory_size(size);
    assert_names(
        &invalid_config_message(&c),
        &["max_memory_size", &size.to_string()],
    );
}

#[test]
fn max_memory_size_of_exactly_4_gib_is_valid() {
    let mut c = small_config();
    c.max_memory_size(4 * GIB);
    PoolingInstanceAllocator::new(&c).unwrap();
}

#[test]
fn more_memories_per_instance_than_total_is_invalid_config() {
    let mut c = small_config();
    c.max_memories_per_instance(5);
    assert_names(
        &invalid_config_message(&c),
        &["max_memories_per_instance", "5", "total_memories", "4"],
    );
}

#[test]
fn more_tables_per_instance_than_total_is_invalid_config() {
    let mut c = small_config();
    c.max_tables_per_instance(7);
    assert_names(
        &invalid_config_message(&c),
        &["max_tables_per_instance", "7", "total_tables", "4"],
    );
}

#[test]
fn zero_decommit_batch_size_is_invalid_config() {
    let mut c = small_config();
    c.decommit_batch_size(0);
    assert_names(&invalid_config_message(&c), &["decommit_batch_size", "0"]);
}

#[test]
fn memory_reservation_overflowing_usize_is_invalid_config() {
    let page = host_page_size();
    let guard = (usize::MAX / 2) / page * page;
    let mut c = small_config();
    c.memory_guard_size(guard);
    let msg = invalid_config_message(&c);
    assert_names(
        &msg,
        &[
            "overflow",
            "total_memories",
            "memory_guard_size",
            &guard.to_string(),
        ],
    );
}

#[test]
fn table_reservation_overflowing_usize_is_invalid_config() {
    let mut c = small_config();
    c.total_tables(u32::MAX).table_elements(u32::MAX);
    let msg = invalid_config_message(&c);
    assert_names(
        &msg,
        &[
            "overflow",
            "total_tables",
            &u32::MAX.to_string(),
            "table_elements",
        ],
    );
}

/// Eight slots each followed by a 32 TiB guard: 256 TiB, twice what a
/// 47-bit user address space holds, so `mmap` must refuse the reservation
/// (few slots, so the mapping-count check does not get there first).
#[test]
fn reservation_larger_than_address_space_is_invalid_config() {
    let mut c = small_config();
    c.total_memories(8)
        .max_memory_size(4 * GIB)
        .memory_guard_size(32 << 40);
    let msg = invalid_config_message(&c);
    assert_names(&msg, &["reserve", "8", &(32usize << 40).to_string()]);
    assert!(
        !msg.contains("max_map_count"),
        "an address-space failure blamed on mappings: {msg}"
    );
}

/// 100,000 slots of 4 GiB (plus guards) is about 400 TiB, and would need
/// 300,000 kernel mappings: both limits are broken. The pool checks the
/// mapping count first, so that is what the message must say.
#[test]
fn hundred_thousand_4_gib_slots_is_invalid_config_naming_max_map_count() {
    let mut c = small_config();
    c.total_memories(100_000).max_memory_size(4 * GIB);
    let msg = invalid_config_message(&c);
    assert_names(&msg, &["total_memories", "100000", "vm.max_map_count"]);
}

/// Small slots (a reservation of a few GiB that fits easily) but more slots
/// than `vm.max_map_count` allows mappings for: refused naming the limit.
#[test]
fn more_kernel_mappings_than_max_map_count_is_invalid_config() {
    let max = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .expect("vm.max_map_count");
    // One slot per allowed mapping: at least one mapping per slot is
    // needed, so this can never fit.
    let total = u32::try_from(max).unwrap_or(u32::MAX);
    let mut c = small_config();
    c.total_memories(total)
        .max_memory_size(64 << 10)
        .memory_guard_size(0);
    let msg = invalid_config_message(&c);
    assert_names(
        &msg,
        &["total_memories", &total.to_string(), "vm.max_map_count"],
    );
}

/// Instantiates `layout` on a fresh small pool: it must be `Unsupported`,
/// no limiter call made, and the pool's metrics untouched (nothing taken,
/// counted or denied). The same layout on the on-demand allocator must be
/// `Unsupported` too when `on_demand_too` (a type error, not a pool limit).
fn assert_unsupported(layout: &InstanceLayout, on_demand_too: bool) {
    let pool = PoolingInstanceAllocator::new(&small_config()).unwrap();
    let fresh = pool.metrics();
    let mut store = store(&pool);
    match store.instantiate(layout) {
        Err(Error::Unsupported(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert_eq!(pool.metrics(), fresh);
    assert!(store.data().calls.is_empty());
    // The store is still usable and the pool whole.
    let ok = store
        .instantiate(&InstanceLayout::new().memory(MemoryType::new(1, None)))
        .unwrap();
    assert_eq!(ok.memory(&store, 0).unwrap().size(&store), 1);
    drop(store);
    assert_eq!(pool.metrics().memories_in_use, 0);
    assert_eq!(pool.metrics().instances_in_use, 0);

    if on_demand_too {
        let mut store = common::limiter::store(&OnDemandInstanceAllocator::default());
        assert!(matches!(
            store.instantiate(layout),
            Err(Error::Unsupported(_))
        ));
        assert!(store.data().calls.is_empty());
    }
}

#[test]
fn more_memories_than_max_memories_per_instance_is_unsupported() {
    let layout = InstanceLayout::new()
        .memory(MemoryType::new(1, None))
        .memory(MemoryType::new(1, None));
    assert_unsupported(&layout, false);
}

#[test]
fn more_tables_than_max_tables_per_instance_is_unsupported() {
    let layout = InstanceLayout::new()
        .table(TableType::new(1, None))
        .table(TableType::new(1, None));
    assert_unsupported(&layout, false);
}

#[test]
fn memory_minimum_above_slot_size_is_unsupported() {
    // 17 pages > the 16 pages of a 1 MiB slot.
    assert_unsupported(
        &InstanceLayout::new().memory(MemoryType::new(17, None)),
        false,
    );
}

#[test]
fn memory_minimum_of_exactly_slot_size_is_supported() {
    let pool = PoolingInstanceAllocator::new(&small_config()).unwrap();
    let mut store = Store::new(&pool, ());
    let i = store
        .instantiate(&InstanceLayout::new().memory(MemoryType::new(16, None)))
        .unwrap();
    let m = i.memory(&store, 0).unwrap();
    assert_eq!(m.data_size(&store), MIB);
    assert!(m.data(&store).iter().all(|&b| b == 0));
}

#[test]
fn table_minimum_above_table_elements_is_unsupported() {
    assert_unsupported(
        &InstanceLayout::new().table(TableType::new(33, None)),
        false,
    );
}

#[test]
fn image_larger_than_minimum_is_unsupported() {
    let image = MemoryImage::new(&vec![1u8; 65537]).unwrap();
    assert_unsupported(
        &InstanceLayout::new().memory_with_image(MemoryType::new(1, None), image.clone()),
        true,
    );
    // An image into a memory of 0 pages.
    let small = MemoryImage::new(b"x").unwrap();
    assert_unsupported(
        &InstanceLayout::new().memory_with_image(MemoryType::new(0, Some(1)), small),
        true,
    );
}

#[test]
fn memory_maximum_above_65536_pages_is_unsupported() {
    assert_unsupported(
        &InstanceLayout::new().memory(MemoryType::new(1, Some(65537))),
        true,
    );
    assert_unsupported(
        &InstanceLayout::new().memory(MemoryType::new(0, Some(u64::MAX))),
        true,
    );
}

#[test]
fn memory_minimum_above_maximum_is_unsupported() {
    assert_unsupported(
        &InstanceLayout::new().memory(MemoryType::new(3, Some(2))),
        true,
    );
    // Also when the minimum alone is absurd (no overflow, no panic).
    assert_unsupported(
        &InstanceLayout::new().memory(MemoryType::new(u64::MAX, None)),
        true,
    );
}

#[test]
fn table_minimum_above_maximum_is_unsupported() {
    assert_unsupported(
        &InstanceLayout::new().table(TableType::new(5, Some(4))),
        true,
    );
}

/// An unsupported memory after a supported one: still nothing is taken.
#[test]
fn unsupported_second_memory_takes_nothing() {
    let mut c = small_config();
    c.max_memories_per_instance(2);
    let pool = PoolingInstanceAllocator::new(&c).unwrap();
    let fresh = pool.metrics();
    let mut store = Store::new(&pool, ());
    let layout = InstanceLayout::new()
        .memory(MemoryType::new(1, None))
        .memory(MemoryType::new(2, Some(1)));
    assert!(matches!(
        store.instantiate(&layout),
        Err(Error::Unsupported(_))
    ));
    assert_eq!(pool.metrics(), fresh);
}

fn one_memory_one_table(pool: &PoolingInstanceAllocator) -> (Store<Recorder>, Memory, Table) {
    let mut store = store(pool);
    let i = store
        .instantiate(
            &InstanceLayout::new()
                .memory(MemoryType::new(1, None))
                .table(TableType::new(2, None)),
        )
        .unwrap();
    let m = i.memory(&store, 0).unwrap();
    let t = i.table(&store, 0).unwrap();
    store.data_mut().calls.clear();
    (store, m, t)
}

#[test]
fn absurd_memory_grow_is_maximum_exceeded_with_saturated_desired() {
    let pool = PoolingInstanceAllocator::new(&small_config()).unwrap();
    let (mut store, m, _) = one_memory_one_table(&pool);
    let saturated = usize::MAX & !(WASM_PAGE_SIZE - 1);
    match m.grow(&mut store, u64::MAX) {
        Err(Error::MaximumExceeded {
            resource: Resource::Memory,
            desired,
            maximum,
        }) => {
            assert_eq!(desired, saturated);
            assert_eq!(maximum, MIB);
        }
        other => panic!("expected MaximumExceeded, got {other:?}"),
    }
    let calls = &store.data().calls;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls[0],
        Call::MemoryGrowing(WASM_PAGE_SIZE, saturated, Some(MIB))
    );
    assert_eq!(
        calls[1],
        Call::MemoryGrowFailed(Outcome::MaximumExceeded(Resource::Memory, saturated, MIB))
    );
    assert_eq!(m.size(&store), 1);
    // One page past the slot is refused the same way.
    assert!(matches!(
        m.grow(&mut store, 16),
        Err(Error::MaximumExceeded { desired, .. }) if desired == MIB + 65536
    ));
    assert_eq!(m.grow(&mut store, 15).unwrap(), 1);
    assert_eq!(m.data_size(&store), MIB);
}

#[test]
fn absurd_table_grow_is_maximum_exceeded() {
    let pool = PoolingInstanceAllocator::new(&small_config()).unwrap();
    let (mut store, _, t) = one_memory_one_table(&pool);
    match t.grow(&mut store, u32::MAX, 7) {
        Err(Error::MaximumExceeded {
            resource: Resource::Table,
            desired,
            maximum: 32,
        }) => assert_eq!(desired, u32::MAX as usize),
        other => panic!("expected MaximumExceeded, got {other:?}"),
    }
    assert_eq!(t.size(&store), 2);
    assert!(matches!(
        t.grow(&mut store, 31, 7),
        Err(Error::MaximumExceeded {
            desired: 33,
            maximum: 32,
            ..
        })
    ));
    assert_eq!(t.grow(&mut store, 30, 7).unwrap(), 2);
    assert_eq!(t.get(&store, 31), Some(7));
    assert_eq!(t.get(&store, 1), Some(0));
}

#[test]
fn table_access_past_size_is_typed() {
    let pool = PoolingInstanceAllocator::new(&small_config()).unwrap();
    let (mut store, _, t) = one_memory_one_table(&pool);
    for idx in [2, 3, 31, 32, u32::MAX] {
        assert_eq!(t.get(&store, idx), None);
        match t.set(&mut store, idx, 1) {
            Err(Error::OutOfBounds { index, size: 2 }) => assert_eq!(index, idx),
            other => panic!("expected OutOfBounds, got {other:?}"),
        }
    }
    t.set(&mut store, 1, 9).unwrap();
    assert_eq!(t.get(&store, 1), Some(9));
}

#[test]
fn store_caps_of_zero_are_store_limit_and_take_nothing() {
    let pool = PoolingInstanceAllocator::new(&small_config()).unwrap();
    let fresh = pool.metrics();
    for (limits, resource) in [
        (StoreLimitsBuilder::new().instances(0), Resource::Instance),
        (StoreLimitsBuilder::new().memories(0), Resource::Memory),
        (StoreLimitsBuilder::new().tables(0), Resource::Table),
    ] {
        let mut store = Store::new(&pool, limits.build());
        store.limiter(|l| l);
        let layout = InstanceLayout::new()
            .memory(MemoryType::new(1, None))
            .table(TableType::new(1, None));
        match store.instantiate(&layout) {
            Err(Error::StoreLimit {
                resource: r,
                limit: 0,
            }) => assert_eq!(r, resource),
            other => panic!("expected StoreLimit, got {other:?}"),
        }
        assert_eq!(pool.metrics(), fresh);
    }
}

/// A table slot of `u32::MAX` elements holding a table of `u32::MAX - 1`:
/// growing by 2 overflows `u32`. No OS call is involved, so the answer must
/// not be `Error::Os`; the size the limiter saw (saturated to `u32::MAX`)
/// cannot be reached, which is `MaximumExceeded`.
#[test]
fn table_grow_overflowing_u32_is_maximum_exceeded_not_os() {
    let mut c = small_config();
    c.total_tables(1).table_elements(u32::MAX);
    let pool = PoolingInstanceAllocator::new(&c).unwrap();
    let mut store = store(&pool);
    let i = store
        .instantiate(&InstanceLayout::new().table(TableType::new(u32::MAX - 1, None)))
        .unwrap();
    let t = i.table(&store, 0).unwrap();
    store.data_mut().calls.clear();
    match t.grow(&mut store, 2, 0) {
        Err(Error::MaximumExceeded {
            resource: Resource::Table,
            desired,
            ..
        }) => assert_eq!(desired, u32::MAX as usize),
        other => panic!("expected MaximumExceeded, got {other:?}"),
    }
    assert_eq!(t.size(&store), u32::MAX - 1);
    let calls = &store.data().calls;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        matches!(
            calls[1],
            Call::TableGrowFailed(Outcome::MaximumExceeded(..))
        ),
        "{calls:?}"
    );
}
