//! Copy-on-write images, warm slots and image affinity: a reused slot
//! reads its new tenant's image (or zeroes), whatever the last one wrote.
//! (What they cost in syscalls is in `syscalls.rs`; an image whose memfd
//! fails in `faults_instantiate.rs`.)

mod common;
use common::images::{check_then_scribble, image_layout, pool_of_one};
use common::pattern;

use instance_pool::*;

const PAGE: usize = WASM_PAGE_SIZE;

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

/// Zero pages of an image are holes of its memfd (not written at build):
/// they read as zero in every tenant, whatever the last one wrote there.
#[test]
fn an_image_with_zero_pages_at_the_start_and_inside_reads_back_exactly_its_bytes() {
    let host = 4096;
    let mut bytes = pattern(2 * PAGE + 5 * host + 17, 5);
    bytes[..PAGE + host].fill(0); // a stack's worth of zeroes first
    bytes[PAGE + 3 * host..PAGE + 5 * host].fill(0); // and two pages inside
    for keep in [0, 4096, 2 * PAGE, 32 << 20] {
        let p = pool_of_one(keep);
        let image = MemoryImage::new(&bytes).unwrap();
        assert!(image.is_mapped());
        let layout = image_layout(&image, 3);
        for _ in 0..3 {
            check_then_scribble(&p, &layout, &bytes);
        }
        assert_eq!(p.metrics().images_reused, 2, "keep_resident {keep}");
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
