//! Dirty-page resets after `fork`: `PAGEMAP_SCAN` reads the pages of the
//! process that opened `/proc/self/pagemap`, so a child forked after the
//! parent scanned must scan through its own file, or it would find nothing
//! written and hand the next tenant the last one's bytes.
//!
//! Its own test binary, with one test: at the fork, the only other threads
//! are the test harness's.

mod common;
use common::fork;

use instance_pool::*;

/// A tenant writes all over the image's pages and past them; the slot's
/// next tenant must read the image, then zeroes. A reset within
/// keep-resident goes through the dirty-page scan.
fn reset_restores_the_image() -> bool {
    let mut c = PoolingConfig::default();
    c.total_instances(1)
        .total_memories(1)
        .total_tables(1)
        .max_memory_size(1 << 20)
        .memory_guard_size(64 << 10)
        .memory_keep_resident(256 << 10)
        .dirty_page_scan(true);
    let p = PoolingInstanceAllocator::new(&c).unwrap();
    let image = MemoryImage::new(&[9u8; 70_000]).unwrap();
    let layout = InstanceLayout::new().memory_with_image(MemoryType::new(4, None), image);
    let mut s = Store::new(&p, ());
    let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
    m.data_mut(&mut s).fill(0xee);
    drop(s);
    let mut s = Store::new(&p, ());
    let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
    let data = m.data(&s);
    data[..70_000].iter().all(|&b| b == 9) && data[70_000..].iter().all(|&b| b == 0)
}

#[test]
fn a_child_forked_after_a_scan_resets_its_own_slots() {
    // The parent scans first: its pagemap file is open.
    assert!(reset_restores_the_image());
    // The child builds its own pool, resets a slot (the harness's threads hold no lock it
    // needs).
    let status =
        fork::in_child(|| if reset_restores_the_image() { 0 } else { 2 }).expect("the child hung");
    assert!(
        fork::exited(status, 0),
        "the child's next tenant did not read the image then zeroes (status {status:#x}; exit 2: wrong bytes, 3: a panic)"
    );
}
