//! Extreme but legal inputs, found by trying the crate as a hostile host
//! would (issue 12): no undefined behaviour, panic or abort, and the claims
//! in the docs and metrics hold. Run these with debug assertions too
//! (`.ci/run` does, with the `checked` profile).

use instance_pool::*;
use std::time::Duration;

fn small() -> PoolingConfig {
    let mut c = PoolingConfig::default();
    c.total_instances(4)
        .total_memories(4)
        .total_tables(4)
        .max_memory_size(1 << 20)
        .memory_guard_size(64 << 10)
        .table_elements(16)
        .decommit_batch_size(1);
    c
}

fn layout() -> InstanceLayout {
    InstanceLayout::new()
        .memory(MemoryType::new(1, None))
        .table(TableType::new(0, None))
}

/// `new` gives a working pool or `InvalidConfig`; a working one serves an
/// instantiation (or refuses it with a typed error) and takes it back.
fn works_or_is_refused(config: &PoolingConfig, what: &str) {
    match PoolingInstanceAllocator::new(config) {
        Err(Error::InvalidConfig(msg)) => assert!(!msg.is_empty(), "{what}"),
        Err(e) => panic!("{what}: {e:?}"),
        Ok(pool) => {
            let mut store = Store::new(&pool, ());
            match store.instantiate(&layout()) {
                Ok(i) => {
                    let t = i.table(&store, 0).unwrap();
                    assert_eq!(t.get(&store, 0), None, "{what}");
                }
                Err(Error::Unsupported(_)) => {}
                Err(e) => panic!("{what}: {e:?}"),
            }
            drop(store);
            let m = pool.metrics();
            assert_eq!((m.instances_in_use, m.memories_in_use), (0, 0), "{what}");
        }
    }
}

#[test]
fn a_table_slot_of_zero_elements_reads_and_writes_nothing() {
    let mut config = small();
    config.table_elements(0);
    let pool = PoolingInstanceAllocator::new(&config).unwrap();
    let mut store = Store::new(&pool, ());
    let i = store.instantiate(&layout()).unwrap();
    let t = i.table(&store, 0).unwrap();
    assert_eq!(t.size(&store), 0);
    assert_eq!(t.get(&store, 0), None);
    assert!(matches!(
        t.set(&mut store, 0, 1),
        Err(Error::OutOfBounds { index: 0, size: 0 })
    ));
    assert!(matches!(
        t.grow(&mut store, 1, 0),
        Err(Error::MaximumExceeded { maximum: 0, .. })
    ));
    assert_eq!(pool.metrics().tables_in_use, 1);
}

#[test]
fn every_setters_extreme_values_give_a_pool_or_invalid_config() {
    let page = host_page_size();
    let sizes = [0, page, usize::MAX & !(page - 1), usize::MAX];
    let counts = [0, 1, u32::MAX];
    for v in counts {
        works_or_is_refused(small().total_instances(v), &format!("total_instances({v})"));
        works_or_is_refused(small().total_memories(v), &format!("total_memories({v})"));
        works_or_is_refused(small().total_tables(v), &format!("total_tables({v})"));
        works_or_is_refused(
            small().max_memories_per_instance(v),
            &format!("max_memories_per_instance({v})"),
        );
        works_or_is_refused(
            small().max_tables_per_instance(v),
            &format!("max_tables_per_instance({v})"),
        );
        works_or_is_refused(small().table_elements(v), &format!("table_elements({v})"));
        works_or_is_refused(
            small().max_unused_warm_slots(v),
            &format!("max_unused_warm_slots({v})"),
        );
    }
    for v in sizes {
        works_or_is_refused(small().max_memory_size(v), &format!("max_memory_size({v})"));
        works_or_is_refused(
            small().memory_guard_size(v),
            &format!("memory_guard_size({v})"),
        );
        works_or_is_refused(
            small().memory_keep_resident(v),
            &format!("memory_keep_resident({v})"),
        );
        works_or_is_refused(
            small().table_keep_resident(v),
            &format!("table_keep_resident({v})"),
        );
    }
    for v in [0, 1, 1 << 40, usize::MAX] {
        works_or_is_refused(
            small().decommit_batch_size(v),
            &format!("decommit_batch_size({v})"),
        );
    }
    for v in [Duration::ZERO, Duration::MAX] {
        works_or_is_refused(
            small().admission_timeout(v),
            &format!("admission_timeout({v:?})"),
        );
    }
}

/// This process's resident set, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

#[test]
fn many_tiny_table_slots_cost_nothing_per_slot_up_front() {
    let mut config = small();
    config.total_tables(u32::MAX).table_elements(1);
    // 16 TiB of address space and no memory: no free list of 4 billion
    // entries (16 GiB) allocated up front.
    let before = rss();
    if let Ok(pool) = PoolingInstanceAllocator::new(&config) {
        let grown = rss().saturating_sub(before);
        assert!(
            grown < 256 << 20,
            "a pool of u32::MAX tables took {grown} bytes of RSS"
        );
        let mut stores: Vec<_> = (0..3).map(|_| Store::new(&pool, ())).collect();
        for s in &mut stores {
            s.instantiate(&InstanceLayout::new().table(TableType::new(1, None)))
                .unwrap();
        }
        assert_eq!(pool.metrics().tables_in_use, 3);
    }
}

#[test]
fn a_huge_decommit_batch_queues_releases_and_serves_them_when_the_pool_runs_dry() {
    let mut config = small();
    config.decommit_batch_size(usize::MAX);
    let pool = PoolingInstanceAllocator::new(&config).unwrap();
    let grown = InstanceLayout::new().memory(MemoryType::new(2, None));
    for round in 0..3 {
        let mut stores: Vec<_> = (0..4).map(|_| Store::new(&pool, ())).collect();
        for s in &mut stores {
            let i = s.instantiate(&grown).unwrap();
            let m = i.memory(s, 0).unwrap();
            assert!(m.data(s).iter().all(|&b| b == 0), "round {round}");
            m.data_mut(s).fill(0xEE);
        }
    }
    assert_eq!(pool.metrics().memories_in_use, 0);
}

#[test]
fn a_timeout_too_large_for_an_instant_waits_for_ever_instead_of_panicking() {
    let pool = PoolingInstanceAllocator::new(&small()).unwrap();
    for timeout in [Duration::MAX, Duration::from_secs(u64::MAX)] {
        let mut store = Store::new(&pool, ());
        store.instantiate_timeout(&layout(), timeout).unwrap();
    }
    let mut config = small();
    config.admission_timeout(Duration::MAX);
    let pool = PoolingInstanceAllocator::new(&config).unwrap();
    let mut store = Store::new(&pool, ());
    let layout = layout();
    let fut = store.instantiate_async(&layout);
    // A future that finishes on its first poll: no executor needed.
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(matches!(
        fut.as_mut().poll(&mut cx),
        std::task::Poll::Ready(Ok(_))
    ));
}

#[test]
fn an_empty_image_is_neither_mapped_nor_copied() {
    let image = MemoryImage::new(&[]).unwrap();
    assert!(!image.is_mapped());
    let pool = PoolingInstanceAllocator::new(&small()).unwrap();
    let mut store = Store::new(&pool, ());
    let i = store
        .instantiate(&InstanceLayout::new().memory_with_image(MemoryType::new(1, None), image))
        .unwrap();
    let m = i.memory(&store, 0).unwrap();
    assert!(m.data(&store).iter().all(|&b| b == 0));
    let metrics = pool.metrics();
    assert_eq!(
        (
            metrics.images_copied,
            metrics.images_mapped,
            metrics.images_reused
        ),
        (0, 0, 0)
    );
}

#[test]
fn a_warm_slot_with_the_image_is_preferred_from_any_shard() {
    // One thread per instantiation: consecutive new threads start in
    // different shards (on a machine of 2 or more cores), and each must
    // find the slot the previous one left warm with the image.
    let mut config = small();
    config.total_memories(8).total_instances(8).total_tables(8);
    let pool = PoolingInstanceAllocator::new(&config).unwrap();
    let image = MemoryImage::new(b"affine").unwrap();
    let layout = InstanceLayout::new().memory_with_image(MemoryType::new(1, None), image);
    for _ in 0..6 {
        let (pool, layout) = (pool.clone(), layout.clone());
        std::thread::spawn(move || {
            let mut store = Store::new(&pool, ());
            store.instantiate(&layout).unwrap();
        })
        .join()
        .unwrap();
    }
    let m = pool.metrics();
    assert_eq!((m.images_mapped, m.images_reused), (1, 5));
}
