//! Slot choice (cold before warm, affinity), batched reset, and exact
//! capacity under sharding.

mod common;

use instance_pool::*;
use proptest::prelude::*;
use std::sync::{Arc, Barrier};

const PAGE: usize = WASM_PAGE_SIZE;

fn config(slots: u32) -> PoolingConfig {
    let mut c = PoolingConfig::default();
    c.total_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .max_memory_size(1 << 20)
        .memory_guard_size(64 << 10)
        .table_elements(64);
    c
}

fn layout() -> InstanceLayout {
    InstanceLayout::new()
        .memory(MemoryType::new(1, None))
        .table(TableType::new(4, None))
}

/// Fills the pool, checks every slot is clean, dirties it, and releases all.
fn fill(pool: &PoolingInstanceAllocator, slots: u32) {
    let mut stores = Vec::new();
    for _ in 0..slots {
        let mut s = Store::new(pool, ());
        let i = s.instantiate(&layout()).unwrap();
        let m = i.memory(&s, 0).unwrap();
        assert!(m.data(&s).iter().all(|&b| b == 0));
        assert_eq!(m.size(&s), 1);
        m.grow(&mut s, 2).unwrap();
        m.data_mut(&mut s).fill(0x5A);
        stores.push(s);
    }
    let mut s = Store::new(pool, ());
    assert!(matches!(
        s.instantiate(&layout()),
        Err(Error::PoolExhausted { .. })
    ));
    drop(stores);
}

#[test]
fn filling_the_pool_three_times_works_at_batch_sizes_1_5_99() {
    for batch in [1, 5, 99] {
        for keep in [0, PAGE] {
            let mut c = config(12);
            c.decommit_batch_size(batch).memory_keep_resident(keep);
            let p = PoolingInstanceAllocator::new(&c).unwrap();
            for _ in 0..3 {
                fill(&p, 12);
                let m = p.metrics();
                assert_eq!(
                    (m.instances_in_use, m.memories_in_use, m.tables_in_use),
                    (0, 0, 0)
                );
                assert!(
                    m.decommit_queue_len < batch.max(1),
                    "batch {batch}: queue {}",
                    m.decommit_queue_len
                );
            }
        }
    }
}

#[test]
fn a_batch_of_neighbouring_slots_is_reset_with_one_madvise_and_one_mprotect() {
    let mut c = config(4);
    c.decommit_batch_size(4);
    let p = PoolingInstanceAllocator::new(&c).unwrap();
    let stores: Vec<_> = (0..4)
        .map(|_| {
            let mut s = Store::new(&p, ());
            let m = s.instantiate(&layout()).unwrap().memory(&s, 0).unwrap();
            m.data_mut(&mut s).fill(1);
            s
        })
        .collect();
    fault::reset();
    drop(stores);
    let c = fault::counts();
    assert_eq!((c.madvise, c.mprotect), (1, 1), "{c:?}");
    assert_eq!(p.metrics().decommit_queue_len, 0);
}

#[test]
fn queued_slots_are_not_in_use_and_are_flushed_when_the_pool_runs_dry() {
    let mut c = config(2);
    c.decommit_batch_size(10);
    let p = PoolingInstanceAllocator::new(&c).unwrap();
    fill(&p, 2);
    let m = p.metrics();
    assert_eq!((m.memories_in_use, m.decommit_queue_len), (0, 2));
    // Both slots are queued; acquiring flushes them.
    fill(&p, 2);
}

#[test]
fn cold_slots_are_preferred_until_max_unused_warm_slots() {
    let mut c = config(4);
    c.max_unused_warm_slots(2);
    let p = PoolingInstanceAllocator::new(&c).unwrap();
    let base = |s: &Store<()>, i: Instance| i.memory(s, 0).unwrap().data_ptr(s) as usize;
    let run = |img: Option<Arc<MemoryImage>>| {
        let mut s = Store::new(&p, ());
        let l = match img {
            Some(img) => InstanceLayout::new().memory_with_image(MemoryType::new(1, None), img),
            None => layout(),
        };
        let i = s.instantiate(&l).unwrap();
        base(&s, i)
    };
    let a = run(None);
    // One warm slot idle (< 2): a different image takes a cold slot.
    let b = run(Some(MemoryImage::new(b"b").unwrap()));
    assert_ne!(a, b);
    assert_eq!(p.metrics().unused_warm_memories, 2);
    // Two warm idle (= the cap): the least recently used warm slot (a) is reused.
    let c2 = run(Some(MemoryImage::new(b"c").unwrap()));
    assert_eq!(c2, a);
}

#[test]
fn same_image_prefers_its_warm_slot() {
    let p = PoolingInstanceAllocator::new(&config(4)).unwrap();
    let image = MemoryImage::new(b"affine").unwrap();
    let l = InstanceLayout::new().memory_with_image(MemoryType::new(1, None), image);
    let mut first = Store::new(&p, ());
    let i = first.instantiate(&l).unwrap();
    let where_ = i.memory(&first, 0).unwrap().data_ptr(&first) as usize;
    drop(first);
    let mut other = Store::new(&p, ());
    other.instantiate(&layout()).unwrap(); // cold, no image
    let mut again = Store::new(&p, ());
    let i = again.instantiate(&l).unwrap();
    assert_eq!(
        i.memory(&again, 0).unwrap().data_ptr(&again) as usize,
        where_
    );
    assert_eq!(p.metrics().images_reused, 1);
}

proptest! {
    #![proptest_config(common::proptest_config(24))]

    /// With capacity N and T threads racing, exactly N acquisitions succeed
    /// while nothing is released, and all N again after a full release.
    #[test]
    fn capacity_is_exact_under_sharding(capacity in 1u32..24, threads in 1usize..6, batch in 1usize..4) {
        let mut c = config(capacity);
        c.decommit_batch_size(batch);
        let p = PoolingInstanceAllocator::new(&c).unwrap();
        for _round in 0..2 {
            let barrier = Arc::new(Barrier::new(threads));
            let held: Vec<Vec<Store<()>>> = std::thread::scope(|scope| {
                let hs: Vec<_> = (0..threads)
                    .map(|_| {
                        let (p, barrier) = (p.clone(), barrier.clone());
                        scope.spawn(move || {
                            barrier.wait();
                            let mut mine = Vec::new();
                            for _ in 0..capacity {
                                let mut s = Store::new(&p, ());
                                match s.instantiate(&layout()) {
                                    Ok(_) => mine.push(s),
                                    Err(Error::PoolExhausted { limit, .. }) => assert_eq!(limit, capacity),
                                    Err(e) => panic!("{e}"),
                                }
                            }
                            mine
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let total: usize = held.iter().map(Vec::len).sum();
            prop_assert_eq!(total, capacity as usize);
            prop_assert_eq!(p.metrics().memories_in_use, capacity);
            drop(held);
            prop_assert_eq!(p.metrics().memories_in_use, 0);
        }
    }
}

#[test]
fn a_slot_whose_reset_and_remap_both_failed_never_reaches_a_tenant_dirty() {
    for keep in [0, PAGE] {
        let mut c = config(1);
        c.memory_keep_resident(keep);
        let p = PoolingInstanceAllocator::new(&c).unwrap();
        let mut s = Store::new(&p, ());
        let m = s.instantiate(&layout()).unwrap().memory(&s, 0).unwrap();
        m.grow(&mut s, 3).unwrap();
        m.data_mut(&mut s).fill(0xAA);
        // The release's madvise fails, then so does the fallback remap.
        fault::reset();
        fault::fail_nth_times(1, 2);
        drop(s);
        assert!(!fault::pending(), "keep {keep}");
        assert_eq!(p.metrics().memories_in_use, 0);
        // The next tenant's remap of the slot fails too: an OS error, and its
        // rollback must leave the slot alone.
        fault::reset();
        fault::fail_nth(1);
        let mut s = Store::new(&p, ());
        assert!(
            matches!(s.instantiate(&layout()), Err(Error::Os(_))),
            "keep {keep}"
        );
        assert!(!fault::pending());
        drop(s);
        // Then the slot is remapped whole and reads as new.
        fault::reset();
        let mut s = Store::new(&p, ());
        let l = InstanceLayout::new().memory(MemoryType::new(4, None));
        let m = s.instantiate(&l).unwrap().memory(&s, 0).unwrap();
        assert!(
            m.data(&s).iter().all(|&b| b == 0),
            "keep {keep}: dirty bytes reached a tenant"
        );
        assert_eq!(m.size(&s), 4);
    }
}
