//! `Store::reset`: instances back to their just-instantiated state in place,
//! and the metrics' Prometheus rendering. (That a reset within
//! keep-resident makes no syscall is in `syscalls.rs`.)

mod common;
use common::config::{self, MIB};
use common::limiter;

use instance_pool::*;

const PAGE: usize = WASM_PAGE_SIZE;

fn check_reset(allocator: &impl InstanceAllocator, keep: &str) {
    let bytes: Vec<u8> = (0..PAGE + 300).map(|i| (i % 251) as u8 + 1).collect();
    let image = MemoryImage::new(&bytes).unwrap();
    let layout = InstanceLayout::new()
        .memory_with_image(MemoryType::new(2, None), image)
        .memory(MemoryType::new(1, None))
        .table(TableType::new(4, None));
    let mut s = limiter::store(allocator);
    let i = s.instantiate(&layout).unwrap();
    let (m0, m1, t) = (
        i.memory(&s, 0).unwrap(),
        i.memory(&s, 1).unwrap(),
        i.table(&s, 0).unwrap(),
    );
    let ptrs = (m0.data_ptr(&s), m1.data_ptr(&s));
    for round in 0..3 {
        m0.grow(&mut s, 3).unwrap();
        m0.data_mut(&mut s).fill(0xCC);
        m1.data_mut(&mut s).fill(0xDD);
        t.grow(&mut s, 20, 5).unwrap();
        t.set(&mut s, 0, 77).unwrap();
        let calls = s.data().calls.len();
        s.reset().unwrap();
        assert_eq!(
            s.data().calls.len(),
            calls,
            "{keep} round {round}: reset asked the limiter"
        );
        assert_eq!(
            (m0.size(&s), m1.size(&s), t.size(&s)),
            (2, 1, 4),
            "{keep} round {round}"
        );
        let d = m0.data(&s);
        assert_eq!(&d[..bytes.len()], &bytes[..], "{keep} round {round}: image");
        assert!(
            d[bytes.len()..].iter().all(|&b| b == 0),
            "{keep} round {round}"
        );
        assert!(m1.data(&s).iter().all(|&b| b == 0), "{keep} round {round}");
        assert!(
            (0..4).all(|i| t.get(&s, i) == Some(0)),
            "{keep} round {round}"
        );
        assert_eq!(
            (m0.data_ptr(&s), m1.data_ptr(&s)),
            ptrs,
            "{keep}: the same slots"
        );
    }
}

fn pool(keep: usize) -> PoolingInstanceAllocator {
    let mut c = config::small_two_per_instance(100);
    c.memory_keep_resident(keep);
    config::pool(&c)
}

#[test]
fn reset_restores_image_and_zeroes_and_keeps_the_slots() {
    check_reset(&pool(0), "keep 0");
    check_reset(&pool(3 * PAGE), "keep 3 pages");
    check_reset(&pool(MIB), "keep all");
    check_reset(&OnDemandInstanceAllocator::default(), "on demand");
}

#[test]
fn reset_keeps_counts_and_metrics() {
    let p = pool(0);
    let mut s = Store::new(&p, ());
    s.instantiate(&InstanceLayout::new().memory(MemoryType::new(1, None)))
        .unwrap();
    let before = p.metrics();
    s.reset().unwrap();
    let after = p.metrics();
    assert_eq!(
        (
            after.instances_in_use,
            after.memories_in_use,
            after.memory_acquisitions
        ),
        (
            before.instances_in_use,
            before.memories_in_use,
            before.memory_acquisitions
        )
    );
}

#[test]
fn metrics_render_in_prometheus_exposition_format() {
    let p = pool(0);
    let mut s = Store::new(&p, ());
    s.instantiate(&InstanceLayout::new().memory(MemoryType::new(1, None)))
        .unwrap();
    let text = p.metrics().to_string();
    assert!(text.contains("# TYPE instance_pool_in_use gauge\n"));
    assert!(text.contains("instance_pool_in_use{resource=\"memory\"} 1\n"));
    assert!(text.contains("instance_pool_acquisitions_total{resource=\"instance\"} 1\n"));
    assert!(text.contains("instance_pool_waiters 0\n"));
    // Every sample line is `name{labels} value` with a numeric value, and
    // every family has HELP and TYPE.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("instance_pool_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
    let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
    assert_eq!(helps, types);
    assert!(helps >= 10);
}
