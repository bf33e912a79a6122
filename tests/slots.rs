//! Slot choice (cold before warm, affinity), batched reset, reused slots
//! reading zeroes, and exact capacity under sharding. (What a reset costs
//! in syscalls is in `syscalls.rs`; failed resets in `faults_release.rs`.)

mod common;
use common::config::{self, MIB as SLOT};
use common::limiter::store;
use common::one_memory;

use instance_pool::*;
use proptest::prelude::*;
use std::sync::{Arc, Barrier};

const PAGE: usize = WASM_PAGE_SIZE;

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
            let mut c = config::small(12);
            c.decommit_batch_size(batch).memory_keep_resident(keep);
            let p = config::pool(&c);
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
fn queued_slots_are_not_in_use_and_are_flushed_when_the_pool_runs_dry() {
    let mut c = config::small(30);
    c.decommit_batch_size(10);
    let p = config::pool(&c);
    // Released while the pool has slack: queued, not revoked yet.
    let two: Vec<_> = (0..2).map(|_| hold(&p)).collect();
    drop(two);
    let m = p.metrics();
    assert_eq!((m.memories_in_use, m.decommit_queue_len), (0, 2));
    // Every slot, the queued ones included: acquiring flushes them, and
    // exhaustion comes only with all 30 held.
    fill(&p, 30);
}

#[test]
fn near_capacity_a_release_revokes_at_once_whatever_the_batch_size() {
    let mut c = config::small(4);
    c.decommit_batch_size(10);
    let p = config::pool(&c);
    let held: Vec<_> = (0..3).map(|_| hold(&p)).collect();
    // One slot free: too little slack to queue behind.
    drop(hold(&p));
    assert_eq!(p.metrics().decommit_queue_len, 0);
    drop(held);
}

#[test]
fn a_batch_holding_32_mib_to_discard_is_revoked_however_few_its_slots() {
    let mut c = config::small(32);
    c.max_memory_size(64 * SLOT).decommit_batch_size(64);
    let p = config::pool(&c);
    // A tenant that grew by `pages` and wrote every byte it reached.
    let release = |pages: u64| {
        let mut s = Store::new(&p, ());
        let i = s.instantiate(&layout()).unwrap();
        let m = i.memory(&s, 0).unwrap();
        m.grow(&mut s, pages).unwrap();
        m.data_mut(&mut s).fill(0x5A);
        drop(s);
        p.metrics().decommit_queue_len
    };
    // Small releases queue (the pool has slack for a batch of 8 here).
    assert_eq!(release(2), 1);
    assert_eq!(release(2), 2);
    // 20 MiB held: still under the bound, queued.
    assert_eq!(release(320), 3);
    // Another 20 MiB: the shard's batch holds over 32 MiB, revoked now,
    // with 3 slots of a batch of up to 64.
    assert_eq!(release(320), 0);
    assert_eq!(p.metrics().memories_in_use, 0);
    // The revoked slots are fresh for the next tenant.
    let mut s = Store::new(&p, ());
    let i = s.instantiate(&layout()).unwrap();
    let mem = i.memory(&s, 0).unwrap();
    assert_eq!(mem.size(&s), 1);
    assert!(mem.data(&s).iter().all(|&b| b == 0));
}

/// A store holding one instance whose memory grew past its minimum (so its
/// release has something to revoke).
fn hold(p: &PoolingInstanceAllocator) -> Store<()> {
    let mut s = Store::new(p, ());
    let i = s.instantiate(&layout()).unwrap();
    i.memory(&s, 0).unwrap().grow(&mut s, 2).unwrap();
    s
}

#[test]
fn cold_slots_are_preferred_until_max_unused_warm_slots() {
    let mut c = config::small(4);
    c.max_unused_warm_slots(2);
    let p = config::pool(&c);
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

/// Memories without an image and tables have no affinity (issue 20, item
/// 6): below `max_unused_warm_slots` idle warm slots they get a cold slot,
/// at the cap the least recently released warm one.
#[test]
fn image_less_memories_take_cold_slots_until_max_unused_warm_slots() {
    let mut c = config::small(4);
    c.max_unused_warm_slots(2);
    let p = config::pool(&c);
    let run = || {
        let mut s = Store::new(&p, ());
        let i = s.instantiate(&one_memory(1, None)).unwrap();
        i.memory(&s, 0).unwrap().data_ptr(&s) as usize
    };
    let a = run();
    // One warm slot idle (< 2): a cold one, not the slot just released.
    let b = run();
    assert_ne!(a, b);
    assert_eq!(p.metrics().unused_warm_memories, 2);
    // Two warm idle (= the cap): the least recently released, a.
    assert_eq!(run(), a);
}

#[test]
fn tables_take_cold_slots_until_max_unused_warm_slots() {
    let mut c = config::small(4);
    c.max_unused_warm_slots(2);
    let p = config::pool(&c);
    let tables = InstanceLayout::new().table(TableType::new(4, None));
    drop({
        let mut s = Store::new(&p, ());
        s.instantiate(&tables).unwrap();
        s
    });
    // One warm idle (< 2): the next table is cold, the warm one stays idle.
    let mut s = Store::new(&p, ());
    s.instantiate(&tables).unwrap();
    assert_eq!(p.metrics().unused_warm_tables, 1);
    drop(s);
    // Two warm idle (= the cap): a warm one is reused.
    let mut s = Store::new(&p, ());
    s.instantiate(&tables).unwrap();
    let m = p.metrics();
    assert_eq!((m.tables_in_use, m.unused_warm_tables), (1, 1));
}

#[test]
fn same_image_prefers_its_warm_slot() {
    let p = config::pool(&config::small(4));
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

// ---- reuse ----

/// Three tenants in turn on a pool of one slot: each finds its memory and
/// table zeroed over their whole size, then grows and dirties them.
fn dirty_then_reuse(c: &PoolingConfig) {
    let p = config::pool(c);
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
    dirty_then_reuse(&config::small(1));
}

#[test]
fn reused_slot_reads_zeroes_with_keep_resident() {
    let mut c = config::small(1);
    c.memory_keep_resident(3 * PAGE).table_keep_resident(4096);
    dirty_then_reuse(&c);
    c.memory_keep_resident(SLOT).table_keep_resident(1 << 20);
    dirty_then_reuse(&c);
}

#[test]
fn reused_slot_reads_zeroes_with_batched_decommit() {
    let mut c = config::small(1);
    c.decommit_batch_size(3);
    dirty_then_reuse(&c);
}

// ---- capacity ----

proptest! {
    #![proptest_config(common::proptest_config(24))]

    /// With capacity N and T threads racing, exactly N acquisitions succeed
    /// while nothing is released, and all N again after a full release.
    #[test]
    fn capacity_is_exact_under_sharding(capacity in 1u32..24, threads in 1usize..6, batch in 1usize..4) {
        let mut c = config::small(capacity);
        c.decommit_batch_size(batch);
        let p = config::pool(&c);
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
