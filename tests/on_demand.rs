//! The on-demand allocator: no slots, so a memory's maximum is its
//! declared one or 4 GiB and a table's is its declared one or none.

mod common;
use common::limiter::{Call, Outcome, store, store_with_table};

use instance_pool::*;

const PAGE: usize = WASM_PAGE_SIZE;

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
            Call::MemoryGrowing(0, PAGE, Some(3 * PAGE)),
            Call::MemoryGrowing(0, 0, Some(1 << 32)),
            Call::TableGrowing(0, 1, Some(9)),
            Call::TableGrowing(0, 0, None),
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

#[test]
fn unbounded_table_growing_past_u32_is_maximum_exceeded_with_saturated_desired() {
    let a = OnDemandInstanceAllocator::default();
    let (mut s, t) = store_with_table(&a, 2, None);
    let err = t.grow(&mut s, u32::MAX, 0).unwrap_err();
    let max = u32::MAX as usize;
    assert!(
        matches!(err, Error::MaximumExceeded { resource: Resource::Table, desired, maximum } if desired == max && maximum == max)
    );
    assert_eq!(s.data().calls[0], Call::TableGrowing(2, u32::MAX, None));
    assert_eq!(
        s.data().calls[1],
        Call::TableGrowFailed(Outcome::MaximumExceeded(Resource::Table, max, max))
    );
    assert_eq!(t.size(&s), 2);
}
