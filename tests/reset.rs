//! `Store::reset`: instances back to their just-instantiated state in place,
//! and the metrics' Prometheus rendering.

use instance_pool::*;

const PAGE: usize = WASM_PAGE_SIZE;

#[derive(Default)]
struct Counting {
    calls: usize,
}

impl ResourceLimiter for Counting {
    fn memory_growing(&mut self, _: usize, _: usize, _: Option<usize>) -> bool {
        self.calls += 1;
        true
    }
    fn table_growing(&mut self, _: u32, _: u32, _: Option<u32>) -> bool {
        self.calls += 1;
        true
    }
}

fn check_reset(allocator: &impl InstanceAllocator, keep: &str) {
    let bytes: Vec<u8> = (0..PAGE + 300).map(|i| (i % 251) as u8 + 1).collect();
    let image = MemoryImage::new(&bytes).unwrap();
    let layout = InstanceLayout::new()
        .memory_with_image(MemoryType::new(2, None), image)
        .memory(MemoryType::new(1, None))
        .table(TableType::new(4, None));
    let mut s = Store::new(allocator, Counting::default());
    s.limiter(|c| c);
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
        let calls = s.data().calls;
        s.reset().unwrap();
        assert_eq!(
            s.data().calls,
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
    let mut c = PoolingConfig::default();
    c.total_instances(2)
        .total_memories(4)
        .total_tables(2)
        .max_memories_per_instance(2)
        .max_memory_size(1 << 20)
        .memory_keep_resident(keep);
    PoolingInstanceAllocator::new(&c).unwrap()
}

#[test]
fn reset_restores_image_and_zeroes_and_keeps_the_slots() {
    check_reset(&pool(0), "keep 0");
    check_reset(&pool(3 * PAGE), "keep 3 pages");
    check_reset(&pool(1 << 20), "keep all");
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
fn reset_of_a_memory_that_stayed_within_keep_resident_makes_no_syscall() {
    let p = pool(1 << 20);
    let mut s = Store::new(&p, ());
    let m = s
        .instantiate(&InstanceLayout::new().memory(MemoryType::new(1, None)))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    m.data_mut(&mut s)[100] = 1;
    fault::reset();
    s.reset().unwrap();
    assert_eq!(fault::counts().fallible(), 0);
    assert_eq!(m.data(&s)[100], 0);
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
