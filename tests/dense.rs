//! The dense layout: one read-write slab protected by guard markers, so the
//! process's kernel mappings do not grow with tenants (issue 11). The
//! contract, fault walks, model and guard cases run on it too (through
//! `common::config::SHAPES`); this file holds what is its own.

mod common;
use instance_pool::*;

const PAGE: usize = WASM_PAGE_SIZE;

fn dense(slots: u32) -> PoolingConfig {
    let mut c = PoolingConfig::default();
    c.total_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .max_memory_size(2 * PAGE)
        .memory_guard_size(PAGE)
        .table_elements(16)
        .memory_layout(MemoryLayout::Dense);
    c
}

fn tenant_layout(image: &std::sync::Arc<MemoryImage>) -> InstanceLayout {
    InstanceLayout::new()
        .memory_with_image(MemoryType::new(1, Some(2)), image.clone())
        .table(TableType::new(10, None))
}

#[test]
fn a_dense_pool_reports_its_layout_and_copies_images() {
    let pool = PoolingInstanceAllocator::new(&dense(4)).unwrap();
    let m = pool.metrics();
    assert_eq!(m.memory_layout, MemoryLayout::Dense);
    assert_eq!(m.memory_protection, MemoryProtection::GuardMarkers);
    let image = MemoryImage::new(b"dense image").unwrap();
    let mut s = Store::new(&pool, ());
    let mem = s
        .instantiate(&tenant_layout(&image))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    assert_eq!(&mem.data(&s)[..11], b"dense image");
    assert_eq!(pool.metrics().images_copied, 1);
    assert!(format!("{}", pool.metrics()).contains("layout=\"dense\""));
}

#[test]
fn the_dense_layout_refuses_what_it_cannot_protect() {
    type Case = (&'static str, fn(&mut PoolingConfig));
    let cases: [Case; 3] = [
        ("memory_guard_size", |c| {
            c.memory_guard_size(0);
        }),
        ("max_memory_size + memory_guard_size", |c| {
            c.max_memory_size(64 << 20);
        }),
        ("memory_protection", |c| {
            c.memory_protection(MemoryProtection::Mprotect);
        }),
    ];
    for (field, set) in cases {
        let mut c = dense(4);
        set(&mut c);
        match PoolingInstanceAllocator::new(&c) {
            Err(Error::InvalidConfig(msg)) => assert!(msg.contains(field), "{field}: {msg}"),
            other => panic!("{field}: expected InvalidConfig, got {other:?}"),
        }
    }
}

#[test]
fn the_guarded_layouts_mapping_limit_error_suggests_the_dense_one() {
    let Ok(max) = std::fs::read_to_string("/proc/sys/vm/max_map_count") else {
        return;
    };
    let max: u32 = max.trim().parse().unwrap();
    let mut c = dense(max);
    c.memory_layout(MemoryLayout::Guarded);
    match PoolingInstanceAllocator::new(&c) {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains("MemoryLayout::Dense"), "{msg}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    // The same number of slots, dense: fine.
    c.memory_layout(MemoryLayout::Dense);
    PoolingInstanceAllocator::new(&c).unwrap();
}

#[test]
fn a_hundred_thousand_live_tenants_share_a_constant_number_of_mappings() {
    const TENANTS: u32 = 100_000;
    let before = kernel_mappings().unwrap();
    let pool = PoolingInstanceAllocator::new(&dense(TENANTS)).unwrap();
    let image = MemoryImage::new(&[0xA5; 4096]).unwrap();
    let layout = tenant_layout(&image);
    let mut stores = Vec::with_capacity(TENANTS as usize);
    for n in 0..TENANTS {
        let mut s = Store::new(&pool, n);
        let i = s.instantiate(&layout).unwrap();
        if n % 1000 == 0 {
            // A sample writes its own mark, past the image too.
            let m = i.memory(&s, 0).unwrap();
            m.data_mut(&mut s)[..4].copy_from_slice(&n.to_le_bytes());
            m.data_mut(&mut s)[PAGE - 1] = n as u8;
            i.table(&s, 0).unwrap().set(&mut s, 9, n as usize).unwrap();
        }
        stores.push((s, i));
    }
    assert_eq!(pool.metrics().memories_in_use, TENANTS);
    let after = kernel_mappings().unwrap();
    assert!(
        after <= before + 8,
        "{TENANTS} live tenants took {} kernel mappings",
        after - before
    );
    for (s, i) in stores.iter().step_by(1000) {
        let n = *s.data();
        let m = i.memory(s, 0).unwrap();
        assert_eq!(&m.data(s)[..4], &n.to_le_bytes(), "tenant {n}");
        assert!(m.data(s)[4..4096].iter().all(|&b| b == 0xA5), "tenant {n}");
        assert!(
            m.data(s)[4096..PAGE - 1].iter().all(|&b| b == 0),
            "tenant {n}"
        );
        assert_eq!(m.data(s)[PAGE - 1], n as u8, "tenant {n}");
        assert_eq!(i.table(s, 0).unwrap().get(s, 9), Some(n as usize));
    }
    // The unsampled ones next to a sample saw none of its bytes.
    for (s, i) in stores.iter().skip(1).step_by(1000) {
        let m = i.memory(s, 0).unwrap();
        assert!(m.data(s)[..4096].iter().all(|&b| b == 0xA5));
        assert!(m.data(s)[4096..].iter().all(|&b| b == 0));
    }
    drop(stores);
    assert_eq!(pool.metrics().memories_in_use, 0);
    // Every slot comes back clean: the sampled ones' next tenants.
    let mut s = Store::new(&pool, 0);
    for _ in 0..3 {
        let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
        assert!(m.data(&s)[..4096].iter().all(|&b| b == 0xA5));
        assert!(m.data(&s)[4096..].iter().all(|&b| b == 0));
    }
}
