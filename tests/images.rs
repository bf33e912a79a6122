//! Copy-on-write images, warm slots and image affinity, counted through the
//! `sys` seam (syscall counts are per thread).

use instance_pool::*;
use std::sync::Arc;

const PAGE: usize = WASM_PAGE_SIZE;

fn pool_of_one(keep_resident: usize) -> PoolingInstanceAllocator {
    let mut c = PoolingConfig::default();
    c.total_instances(1)
        .total_memories(1)
        .total_tables(1)
        .max_memory_size(32 << 20)
        .memory_guard_size(64 << 10)
        .memory_keep_resident(keep_resident);
    PoolingInstanceAllocator::new(&c).unwrap()
}

fn image_layout(image: &Arc<MemoryImage>, min_pages: u64) -> InstanceLayout {
    InstanceLayout::new().memory_with_image(MemoryType::new(min_pages, None), image.clone())
}

/// Instantiates, checks the memory holds exactly `image` then zeroes, then
/// scribbles over all of it (grown by one page).
fn check_then_scribble(pool: &PoolingInstanceAllocator, layout: &InstanceLayout, image: &[u8]) {
    let mut s = Store::new(pool, ());
    let m = s.instantiate(layout).unwrap().memory(&s, 0).unwrap();
    let d = m.data(&s);
    assert_eq!(&d[..image.len()], image, "image bytes");
    assert!(
        d[image.len()..].iter().all(|&b| b == 0),
        "zeroes after the image"
    );
    m.grow(&mut s, 1).unwrap();
    m.data_mut(&mut s).fill(0xEE);
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

#[test]
fn reused_slot_with_same_image_reads_original_image_after_overwrite() {
    for keep in [0, 4096, 2 * PAGE, 32 << 20] {
        let p = pool_of_one(keep);
        let bytes = pattern(3 * PAGE + 123, 1);
        let image = MemoryImage::new(&bytes).unwrap();
        assert!(image.is_mapped());
        let layout = image_layout(&image, 4);
        for _ in 0..3 {
            check_then_scribble(&p, &layout, &bytes);
        }
        let m = p.metrics();
        assert_eq!(
            (m.images_mapped, m.images_reused),
            (1, 2),
            "keep_resident {keep}"
        );
    }
}

#[test]
fn reused_slot_with_another_image_reads_that_image() {
    for keep in [0, 2 * PAGE] {
        let p = pool_of_one(keep);
        let (a, b) = (pattern(5000, 2), pattern(PAGE + 7, 3));
        let (ia, ib) = (MemoryImage::new(&a).unwrap(), MemoryImage::new(&b).unwrap());
        check_then_scribble(&p, &image_layout(&ia, 2), &a);
        check_then_scribble(&p, &image_layout(&ib, 2), &b);
        check_then_scribble(&p, &image_layout(&ia, 1), &a);
        assert_eq!(p.metrics().images_mapped, 3);
    }
}

#[test]
fn reused_slot_without_image_reads_zeroes() {
    for keep in [0, 2 * PAGE] {
        let p = pool_of_one(keep);
        let a = pattern(2 * PAGE, 4);
        check_then_scribble(&p, &image_layout(&MemoryImage::new(&a).unwrap(), 2), &a);
        check_then_scribble(
            &p,
            &InstanceLayout::new().memory(MemoryType::new(3, None)),
            &[],
        );
    }
}

#[test]
fn one_byte_and_sixteen_mib_plus_one_images_round_trip() {
    let p = pool_of_one(0);
    for len in [1, (16 << 20) + 1] {
        let bytes = pattern(len, 5);
        let image = MemoryImage::new(&bytes).unwrap();
        assert_eq!(image.len(), len);
        let pages = len.div_ceil(PAGE) as u64;
        check_then_scribble(&p, &image_layout(&image, pages), &bytes);
        check_then_scribble(&p, &image_layout(&image, pages), &bytes);
    }
}

#[test]
fn instantiating_an_image_costs_one_mmap_whatever_its_size() {
    for len in [4096, 16 << 20] {
        let p = pool_of_one(0);
        let image = MemoryImage::new(&pattern(len, 6)).unwrap();
        let layout = image_layout(&image, (len / PAGE).max(1) as u64);
        fault::reset();
        let s = {
            let mut s = Store::new(&p, ());
            s.instantiate(&layout).unwrap();
            s
        };
        let c = fault::counts();
        assert_eq!(c.mmap, 1, "{len}: {c:?}");
        assert!(c.mprotect <= 1, "{len}: {c:?}");
        drop(s);
    }
}

#[test]
fn warm_slot_with_same_image_needs_no_mmap() {
    let p = pool_of_one(0);
    let image = MemoryImage::new(&pattern(100, 7)).unwrap();
    let layout = image_layout(&image, 1);
    drop({
        let mut s = Store::new(&p, ());
        s.instantiate(&layout).unwrap();
        s
    });
    fault::reset();
    let mut s = Store::new(&p, ());
    s.instantiate(&layout).unwrap();
    assert_eq!(fault::counts().mmap, 0);
}

#[test]
fn tenant_within_keep_resident_is_recycled_without_madvise_or_mprotect() {
    let p = pool_of_one(1 << 20);
    let image = MemoryImage::new(&pattern(4096, 8)).unwrap();
    let layout = image_layout(&image, 1).table(TableType::new(10, None));
    // First tenant maps the image; from then on the slot is warm.
    drop({
        let mut s = Store::new(&p, ());
        s.instantiate(&layout).unwrap();
        s
    });
    for round in 0..5 {
        fault::reset();
        let mut s = Store::new(&p, ());
        let i = s.instantiate(&layout).unwrap();
        let m = i.memory(&s, 0).unwrap();
        assert_eq!(&m.data(&s)[..4096], &pattern(4096, 8)[..], "round {round}");
        assert!(m.data(&s)[4096..].iter().all(|&b| b == 0), "round {round}");
        // Dirty two host pages, inside keep_resident.
        m.data_mut(&mut s)[10] = 1;
        m.data_mut(&mut s)[5000] = 2;
        i.table(&s, 0).unwrap().set(&mut s, 3, 9).unwrap();
        drop(s);
        let c = fault::counts();
        assert_eq!(
            (c.madvise, c.mprotect, c.mmap, c.munmap),
            (0, 0, 0, 0),
            "round {round}: {c:?}"
        );
    }
}

#[test]
fn growth_past_keep_resident_is_reset_with_one_madvise_and_one_mprotect() {
    let p = pool_of_one(PAGE);
    let layout = InstanceLayout::new().memory(MemoryType::new(1, None));
    let mut s = Store::new(&p, ());
    let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
    m.grow(&mut s, 3).unwrap();
    m.data_mut(&mut s).fill(3);
    fault::reset();
    drop(s);
    let c = fault::counts();
    assert_eq!((c.madvise, c.mprotect), (1, 1), "{c:?}");
    // The next tenant's minimum is covered by what stayed accessible.
    fault::reset();
    let mut s = Store::new(&p, ());
    let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
    assert_eq!(fault::counts().mprotect, 0);
    assert!(m.data(&s).iter().all(|&b| b == 0));
}

#[test]
fn memfd_failure_falls_back_to_copying_and_metrics_say_so() {
    fault::reset();
    fault::fail_nth(1);
    let bytes = pattern(10_000, 9);
    let image = MemoryImage::new(&bytes).unwrap();
    assert!(!fault::pending());
    assert!(!image.is_mapped());
    let p = pool_of_one(0);
    for _ in 0..2 {
        check_then_scribble(&p, &image_layout(&image, 1), &bytes);
    }
    let m = p.metrics();
    assert_eq!((m.images_copied, m.images_mapped), (2, 0));
}

#[test]
fn keep_resident_bytes_are_reported_for_idle_slots() {
    let p = pool_of_one(2 * PAGE);
    let mut s = Store::new(&p, ());
    s.instantiate(&InstanceLayout::new().memory(MemoryType::new(3, None)))
        .unwrap();
    drop(s);
    assert_eq!(p.metrics().unused_resident_bytes, 2 * PAGE as u64);
    let mut s = Store::new(&p, ());
    s.instantiate(&InstanceLayout::new().memory(MemoryType::new(1, None)))
        .unwrap();
    assert_eq!(p.metrics().unused_resident_bytes, 0);
}
