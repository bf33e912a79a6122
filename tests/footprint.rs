//! What an idle pool costs the process: a handful of kernel mappings and
//! no resident memory for its slots, however many slots it has; and all of
//! it goes with the pool's last handle or store.
//!
//! Not timed. The only test in this binary on purpose: kernel mappings and
//! RSS are process-wide, and tests in one binary run on parallel threads.

use instance_pool::{InstanceLayout, MemoryType, PoolingConfig, PoolingInstanceAllocator, Store};

/// `VmRSS` of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

#[test]
fn idle_pool_of_10_000_slots_adds_few_mappings_and_no_resident_slots() {
    let mut config = PoolingConfig::default();
    // 10,000 memory slots of 4 GiB + 32 MiB guard (the defaults): about
    // 40 TiB of reservation, and 10,000 table slots of 20,000 elements.
    config
        .total_instances(10_000)
        .total_memories(10_000)
        .total_tables(10_000);

    let maps_before = instance_pool::kernel_mappings().unwrap();
    let rss_before = rss();
    let pool = PoolingInstanceAllocator::new(&config).unwrap();
    let maps_idle = instance_pool::kernel_mappings().unwrap();
    let rss_idle = rss();

    let added = maps_idle.saturating_sub(maps_before);
    let grew = rss_idle.saturating_sub(rss_before);
    eprintln!("idle pool of 10,000 slots: +{added} kernel mappings, +{grew} bytes RSS");
    assert!(
        added < 16,
        "an idle pool of 10,000 slots added {added} kernel mappings ({maps_before} -> {maps_idle})"
    );
    // The slabs are reserved, not touched: only the pool's bookkeeping
    // (free lists of 10,000 indices) may become resident.
    assert!(
        grew < 4 << 20,
        "an idle pool of 10,000 slots made {grew} bytes resident ({rss_before} -> {rss_idle})"
    );
    let m = pool.metrics();
    assert_eq!(
        (
            m.memories_in_use,
            m.unused_warm_memories,
            m.unused_resident_bytes
        ),
        (0, 0, 0)
    );

    drop(pool);
    let maps_after = instance_pool::kernel_mappings().unwrap();
    assert!(
        maps_after <= maps_before + 2,
        "dropping the pool left mappings behind ({maps_before} -> {maps_after})"
    );

    // A store keeps its pool alive past the last handle, and the pool's
    // mappings go when the store does: what a store holds of the pool (a
    // reference per shard) must not keep it for good.
    let pool = PoolingInstanceAllocator::new(&config).unwrap();
    let mut store = Store::new(&pool, ());
    let layout = InstanceLayout::new().memory(MemoryType::new(1, Some(2)));
    let instance = store.instantiate(&layout).unwrap();
    drop(pool);
    let memory = instance.memory(&store, 0).unwrap();
    memory.grow(&mut store, 1).unwrap();
    memory.data_mut(&mut store)[70_000] = 1;
    let maps_held = instance_pool::kernel_mappings().unwrap();
    assert!(
        maps_held > maps_before,
        "the store's pool is gone ({maps_before} -> {maps_held})"
    );
    drop(store);
    let maps_after = instance_pool::kernel_mappings().unwrap();
    assert!(
        maps_after <= maps_before + 2,
        "the pool outlived its last store ({maps_before} -> {maps_after})"
    );
}
