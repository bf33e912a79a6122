//! The fallbacks an older kernel gets, forced on this one through the
//! fault seam (`fault::force_features`): each missing feature is detected
//! at pool creation, refused where it is required, and replaced by a path
//! of the same semantics where it is not.

mod common;
use common::config;
use instance_pool::fault::Features;
use instance_pool::*;

const ALL: Features = Features {
    guard_markers: true,
    anon_guard_markers: true,
    process_madvise: true,
    pagemap_scan: true,
};

/// Runs `f` with the kernel seen as having only `features`.
fn on_kernel(features: Features, f: impl FnOnce()) {
    fault::reset();
    fault::force_features(Some(features));
    f();
    fault::reset();
}

fn assert_refused(c: &PoolingConfig, needle: &str) {
    match PoolingInstanceAllocator::new(c) {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains(needle), "{msg}"),
        other => panic!("expected InvalidConfig naming {needle}, got {other:?}"),
    }
}

fn assert_stacks_refused(c: &StackPoolConfig, needle: &str) {
    match StackPool::new(c) {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains(needle), "{msg}"),
        other => panic!("expected InvalidConfig naming {needle}, got {other:?}"),
    }
}

fn stacks_config() -> StackPoolConfig {
    let mut c = StackPoolConfig::default();
    c.total_stacks(2).stack_size(64 << 10);
    c
}

/// A tenant that grows, writes everywhere and leaves; the next one must
/// find a fresh memory with the image.
fn cycle_twice(pool: &PoolingInstanceAllocator) {
    let image = MemoryImage::new(b"old kernel").unwrap();
    let layout = InstanceLayout::new().memory_with_image(MemoryType::new(1, None), image);
    for _ in 0..2 {
        let mut s = Store::new(pool, ());
        let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
        assert_eq!(&m.data(&s)[..10], b"old kernel");
        assert!(m.data(&s)[10..].iter().all(|&b| b == 0));
        m.grow(&mut s, 2).unwrap();
        assert!(m.data(&s)[10..].iter().all(|&b| b == 0));
        m.data_mut(&mut s).fill(0x77);
    }
}

#[test]
fn without_guard_markers_auto_takes_mprotect_and_markers_are_refused() {
    // Before Linux 6.13.
    let no_markers = Features {
        guard_markers: false,
        anon_guard_markers: false,
        ..ALL
    };
    on_kernel(no_markers, || {
        let pool = config::pool(&config::small(2));
        assert_eq!(pool.metrics().memory_protection, MemoryProtection::Mprotect);
        cycle_twice(&pool);
        let mut c = config::small(2);
        c.memory_protection(MemoryProtection::GuardMarkers);
        assert_refused(&c, "MADV_GUARD_INSTALL, Linux 6.15+");
        let mut c = config::small(2);
        c.memory_layout(MemoryLayout::Dense);
        assert_refused(&c, "MADV_GUARD_INSTALL, Linux 6.13+");
        let mut c = stacks_config();
        let stacks = StackPool::new(&c).unwrap();
        assert!(!stacks.metrics().guard_markers);
        drop(stacks.allocate().unwrap());
        c.stack_protection(MemoryProtection::GuardMarkers);
        assert_stacks_refused(&c, "MADV_GUARD_INSTALL, Linux 6.13+");
    });
}

/// Linux 6.13 and 6.14 mark anonymous memory but not private file
/// mappings (issue 20, item 7): what needs only the former works, the
/// guarded layout's markers (which lie over mapped images) do not.
#[test]
fn with_anonymous_guard_markers_only_dense_pools_and_marker_stacks_work() {
    let anonymous_only = Features {
        guard_markers: false,
        anon_guard_markers: true,
        ..ALL
    };
    on_kernel(anonymous_only, || {
        for protection in [MemoryProtection::Auto, MemoryProtection::GuardMarkers] {
            let mut c = config::small(2);
            c.memory_layout(MemoryLayout::Dense)
                .memory_protection(protection);
            let pool = config::pool(&c);
            let m = pool.metrics();
            assert_eq!(m.memory_layout, MemoryLayout::Dense, "{protection:?}");
            assert_eq!(m.memory_protection, MemoryProtection::GuardMarkers);
            cycle_twice(&pool);

            let mut c = stacks_config();
            c.stack_protection(protection);
            let stacks = StackPool::new(&c).unwrap();
            assert!(stacks.metrics().guard_markers, "{protection:?}");
            drop(stacks.allocate().unwrap());
        }
        // The guarded layout: Auto falls back to mprotect, markers are
        // refused naming the kernel that has them.
        let pool = config::pool(&config::small(2));
        assert_eq!(pool.metrics().memory_protection, MemoryProtection::Mprotect);
        cycle_twice(&pool);
        let mut c = config::small(2);
        c.memory_protection(MemoryProtection::GuardMarkers);
        assert_refused(&c, "MADV_GUARD_INSTALL, Linux 6.15+");
    });
}

#[test]
fn without_process_madvise_a_batch_is_one_madvise_per_range() {
    let no_batching = Features {
        process_madvise: false,
        ..ALL
    };
    on_kernel(no_batching, || {
        let mut c = config::small(4);
        c.decommit_batch_size(4);
        let pool = config::pool(&c);
        assert!(!pool.metrics().batched_revocation);
        let stores = common::stores_with(&pool, 4, |s, m| {
            m.grow(s, 1).unwrap();
            m.data_mut(s).fill(1);
        });
        let before = fault::counts();
        drop(stores);
        let c = fault::counts();
        assert_eq!(c.process_madvise, before.process_madvise);
        assert_eq!((c.madvise - before.madvise, c.guard - before.guard), (4, 4));
        cycle_twice(&pool);
    });
}

#[test]
fn without_pagemap_scan_resets_write_back_everything_kept() {
    let no_scan = Features {
        pagemap_scan: false,
        ..ALL
    };
    on_kernel(no_scan, || {
        for shape in config::SHAPES {
            let mut c = config::small(1);
            shape.apply(&mut c);
            c.memory_keep_resident(256 << 10);
            let pool = config::pool(&c);
            assert!(!pool.metrics().dirty_page_scan, "{shape:?}");
            let before = fault::counts().pagemap_scan;
            cycle_twice(&pool);
            assert_eq!(fault::counts().pagemap_scan, before, "{shape:?}");
        }
    });
}
