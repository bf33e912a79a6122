//! Guard pages, observed: each case writes one byte through
//! `Memory::data_ptr` in a child process (see `common::guard`), and the
//! parent checks how the child ended: killed by `SIGSEGV`/`SIGBUS` for a
//! byte a tenant must not reach, a clean exit for its in-bounds neighbour.
//! (The end after a grow the OS failed is in `faults_grow.rs`.)

mod common;
use common::config::{GUARD, MIB};
use common::guard::{Expect, addr, after_failed_grow, config, run, tenant};

use instance_pool::*;

const PAGE: usize = WASM_PAGE_SIZE;

// ---- the guard before the base ----

fn before_base(offset: isize) -> *mut u8 {
    // Slot 1, so the byte before it is slot 0's trailing guard; and slot 0
    // for the leading guard.
    let pool = PoolingInstanceAllocator::new(&config(2)).unwrap();
    let (first, _) = tenant(&pool, 1, None);
    let (store, m) = tenant(&pool, 1, None);
    std::mem::forget(first);
    std::mem::forget(pool);
    addr(store, m, offset)
}

#[test]
fn write_to_byte_before_base_faults() {
    run("write_to_byte_before_base_faults", Expect::Fault, || {
        before_base(-1)
    });
}

#[test]
fn write_to_base_does_not_fault() {
    run("write_to_base_does_not_fault", Expect::NoFault, || {
        before_base(0)
    });
}

fn before_first_slot(offset: isize) -> *mut u8 {
    let pool = PoolingInstanceAllocator::new(&config(1)).unwrap();
    let (store, m) = tenant(&pool, 1, None);
    std::mem::forget(pool);
    addr(store, m, offset)
}

#[test]
fn write_to_byte_before_first_slot_faults() {
    run(
        "write_to_byte_before_first_slot_faults",
        Expect::Fault,
        || before_first_slot(-1),
    );
}

#[test]
fn write_to_first_guard_byte_before_first_slot_faults() {
    run(
        "write_to_first_guard_byte_before_first_slot_faults",
        Expect::Fault,
        || before_first_slot(-(GUARD as isize)),
    );
}

// ---- the accessible end ----

fn at_end(image: bool, delta: isize) -> *mut u8 {
    let pool = PoolingInstanceAllocator::new(&config(1)).unwrap();
    let bytes = vec![9u8; 5000];
    let (store, m) = tenant(&pool, 2, image.then_some(bytes.as_slice()));
    let size = m.data_size(&store);
    assert_eq!(size, 2 * PAGE);
    std::mem::forget(pool);
    addr(store, m, size as isize + delta)
}

#[test]
fn write_at_data_size_faults() {
    run("write_at_data_size_faults", Expect::Fault, || {
        at_end(false, 0)
    });
}

#[test]
fn write_at_data_size_minus_one_does_not_fault() {
    run(
        "write_at_data_size_minus_one_does_not_fault",
        Expect::NoFault,
        || at_end(false, -1),
    );
}

#[test]
fn write_at_data_size_with_image_faults() {
    run(
        "write_at_data_size_with_image_faults",
        Expect::Fault,
        || at_end(true, 0),
    );
}

#[test]
fn write_at_data_size_minus_one_with_image_does_not_fault() {
    run(
        "write_at_data_size_minus_one_with_image_does_not_fault",
        Expect::NoFault,
        || at_end(true, -1),
    );
}

// ---- after a grow ----

fn after_grow(delta: isize) -> *mut u8 {
    let pool = PoolingInstanceAllocator::new(&config(1)).unwrap();
    let (mut store, m) = tenant(&pool, 1, None);
    let base = m.data_ptr(&store);
    assert_eq!(m.grow(&mut store, 3).unwrap(), 1);
    assert_eq!(m.data_ptr(&store), base, "a pooled memory moved");
    let size = m.data_size(&store);
    assert_eq!(size, 4 * PAGE);
    std::mem::forget(pool);
    addr(store, m, size as isize + delta)
}

#[test]
fn write_at_new_end_after_grow_faults() {
    run("write_at_new_end_after_grow_faults", Expect::Fault, || {
        after_grow(0)
    });
}

#[test]
fn write_before_new_end_after_grow_does_not_fault() {
    run(
        "write_before_new_end_after_grow_does_not_fault",
        Expect::NoFault,
        || after_grow(-1),
    );
}

// ---- the end of the slot's reservation ----

/// A memory grown to `pages` (16 is the whole 1 MiB slot); the address is
/// `base + reserved_size + delta`.
fn reservation_end(pages: u64, delta: isize) -> *mut u8 {
    let pool = PoolingInstanceAllocator::new(&config(2)).unwrap();
    // Slot 0, so the guard after it is followed by slot 1 (taken too, and
    // fully grown, to show the guard holds even between two live slots).
    let (mut store, m) = tenant(&pool, 1, None);
    let (mut next, n) = tenant(&pool, 1, None);
    n.grow(&mut next, 15).unwrap();
    let gap = (n.data_ptr(&next) as usize).abs_diff(m.data_ptr(&store) as usize);
    assert!(gap >= MIB + GUARD, "slots too close: {gap}");
    std::mem::forget(next);
    m.grow(&mut store, pages - 1).unwrap();
    let reserved = m.reserved_size(&store);
    std::mem::forget(pool);
    addr(store, m, reserved as isize + delta)
}

#[test]
fn write_to_last_reserved_byte_when_not_fully_grown_faults() {
    run(
        "write_to_last_reserved_byte_when_not_fully_grown_faults",
        Expect::Fault,
        || reservation_end(15, -1),
    );
}

#[test]
fn write_to_last_reserved_byte_when_fully_grown_does_not_fault() {
    run(
        "write_to_last_reserved_byte_when_fully_grown_does_not_fault",
        Expect::NoFault,
        || reservation_end(16, -1),
    );
}

#[test]
fn write_to_first_guard_byte_after_reservation_faults() {
    run(
        "write_to_first_guard_byte_after_reservation_faults",
        Expect::Fault,
        || reservation_end(16, 0),
    );
}

#[test]
fn write_to_last_guard_byte_after_reservation_faults() {
    run(
        "write_to_last_guard_byte_after_reservation_faults",
        Expect::Fault,
        || reservation_end(16, GUARD as isize - 1),
    );
}

// ---- a trailing guard no neighbour shares ----

/// A memory grown to its whole slot, whose guard after it no other tenant
/// ever touched: with `last`, the highest slot of a pool whose every slot is
/// taken (no slot after it); else the only tenant a pool of 8 ever had
/// (the slot after it was never used). In the dense layout a slot's first
/// use marks its own guards, so only this slot's marking protects the byte.
/// The address is `base + reserved_size + offset`.
fn past_a_lone_slot(last: bool, offset: isize) -> *mut u8 {
    let slots = 8;
    let pool = PoolingInstanceAllocator::new(&config(slots)).unwrap();
    let taken = if last { slots } else { 1 };
    let mut tenants: Vec<_> = (0..taken).map(|_| tenant(&pool, 1, None)).collect();
    tenants.sort_by_key(|(s, m)| m.data_ptr(s) as usize);
    let (mut store, m) = tenants.pop().unwrap();
    if let Some((s, below)) = tenants.last() {
        let gap = m.data_ptr(&store) as usize - below.data_ptr(s) as usize;
        assert_eq!(gap, MIB + GUARD, "not the slot after the others");
    }
    std::mem::forget(tenants);
    m.grow(&mut store, 15).unwrap();
    let reserved = m.reserved_size(&store);
    assert_eq!(m.data_size(&store), reserved);
    std::mem::forget(pool);
    addr(store, m, reserved as isize + offset)
}

#[test]
fn write_past_the_last_slot_of_a_pool_faults() {
    run(
        "write_past_the_last_slot_of_a_pool_faults",
        Expect::Fault,
        || past_a_lone_slot(true, 0),
    );
}

#[test]
fn write_to_last_guard_byte_past_the_last_slot_of_a_pool_faults() {
    run(
        "write_to_last_guard_byte_past_the_last_slot_of_a_pool_faults",
        Expect::Fault,
        || past_a_lone_slot(true, GUARD as isize - 1),
    );
}

#[test]
fn write_past_a_slot_whose_neighbour_was_never_used_faults() {
    run(
        "write_past_a_slot_whose_neighbour_was_never_used_faults",
        Expect::Fault,
        || past_a_lone_slot(false, 0),
    );
}

#[test]
fn write_to_last_guard_byte_past_a_slot_whose_neighbour_was_never_used_faults() {
    run(
        "write_to_last_guard_byte_past_a_slot_whose_neighbour_was_never_used_faults",
        Expect::Fault,
        || past_a_lone_slot(false, GUARD as isize - 1),
    );
}

#[test]
fn write_to_last_byte_of_a_lone_fully_grown_slot_does_not_fault() {
    run(
        "write_to_last_byte_of_a_lone_fully_grown_slot_does_not_fault",
        Expect::NoFault,
        || past_a_lone_slot(false, -1),
    );
}

// ---- reuse by a tenant with a smaller minimum ----

/// A pool of one memory: the first tenant grows to the whole slot, writes
/// it and leaves; the second, with a minimum of 2 pages, gets the same slot
/// and must find the rest of it inaccessible again.
fn reuse_smaller(keep_resident: usize, batch: usize, image: bool, delta: isize) -> *mut u8 {
    let mut c = config(1);
    c.memory_keep_resident(keep_resident)
        .decommit_batch_size(batch);
    let pool = PoolingInstanceAllocator::new(&c).unwrap();
    let bytes = vec![3u8; 5000];
    let img = image.then_some(bytes.as_slice());
    let (mut first, m) = tenant(&pool, 8, img);
    m.grow(&mut first, 8).unwrap();
    m.data_mut(&mut first).fill(0xEE);
    let first_base = m.data_ptr(&first);
    drop(first);
    let (store, m) = tenant(&pool, 2, img);
    assert_eq!(m.data_ptr(&store), first_base, "not the same slot");
    let size = m.data_size(&store);
    assert_eq!(size, 2 * PAGE);
    let data = m.data(&store);
    let expected_image = img.unwrap_or(&[]);
    assert_eq!(&data[..expected_image.len()], expected_image);
    assert!(data[expected_image.len()..].iter().all(|&b| b == 0));
    std::mem::forget(pool);
    addr(store, m, size as isize + delta)
}

#[test]
fn write_at_data_size_after_reuse_by_smaller_tenant_faults() {
    run(
        "write_at_data_size_after_reuse_by_smaller_tenant_faults",
        Expect::Fault,
        || reuse_smaller(0, 1, false, 0),
    );
}

#[test]
fn write_before_data_size_after_reuse_by_smaller_tenant_does_not_fault() {
    run(
        "write_before_data_size_after_reuse_by_smaller_tenant_does_not_fault",
        Expect::NoFault,
        || reuse_smaller(0, 1, false, -1),
    );
}

/// With the whole slot kept resident, the reset leaves it read-write: the
/// next, smaller tenant must still get its end protected.
#[test]
fn write_at_data_size_after_reuse_with_keep_resident_faults() {
    run(
        "write_at_data_size_after_reuse_with_keep_resident_faults",
        Expect::Fault,
        || reuse_smaller(MIB, 1, false, 0),
    );
}

#[test]
fn write_before_data_size_after_reuse_with_keep_resident_does_not_fault() {
    run(
        "write_before_data_size_after_reuse_with_keep_resident_does_not_fault",
        Expect::NoFault,
        || reuse_smaller(MIB, 1, false, -1),
    );
}

#[test]
fn write_at_data_size_after_reuse_with_image_and_partial_keep_resident_faults() {
    run(
        "write_at_data_size_after_reuse_with_image_and_partial_keep_resident_faults",
        Expect::Fault,
        || reuse_smaller(4 * PAGE, 1, true, 0),
    );
}

/// With batched resets the released slot waits in the queue; the second
/// acquisition flushes it.
#[test]
fn write_at_data_size_after_reuse_with_batched_reset_faults() {
    run(
        "write_at_data_size_after_reuse_with_batched_reset_faults",
        Expect::Fault,
        || reuse_smaller(0, 4, true, 0),
    );
}

#[test]
fn write_at_last_byte_of_old_size_after_reuse_faults() {
    run(
        "write_at_last_byte_of_old_size_after_reuse_faults",
        Expect::Fault,
        || reuse_smaller(MIB, 1, true, (16 - 2) * PAGE as isize - 1),
    );
}

// ---- refused grows leave the end where it was ----

#[test]
fn write_at_data_size_after_denied_grow_faults() {
    run(
        "write_at_data_size_after_denied_grow_faults",
        Expect::Fault,
        || {
            after_failed_grow(0, |store, m| {
                let r = m.grow(store, 1);
                assert!(matches!(r, Err(Error::LimiterDenied { .. })), "{r:?}");
            })
        },
    );
}

#[test]
fn write_at_data_size_after_grow_past_slot_faults() {
    run(
        "write_at_data_size_after_grow_past_slot_faults",
        Expect::Fault,
        || {
            after_failed_grow(0, |store, m| {
                *store.data_mut() = StoreLimits::default();
                let r = m.grow(store, 15);
                assert!(matches!(r, Err(Error::MaximumExceeded { .. })), "{r:?}");
            })
        },
    );
}

// ---- a memory of 0 pages has no accessible byte ----

fn empty_memory(reuse: bool) -> *mut u8 {
    let mut c = config(1);
    c.memory_keep_resident(MIB);
    let pool = PoolingInstanceAllocator::new(&c).unwrap();
    if reuse {
        // The previous tenant leaves the whole slot resident and read-write.
        let (mut first, m) = tenant(&pool, 16, None);
        m.data_mut(&mut first).fill(1);
        drop(first);
    }
    let (store, m) = tenant(&pool, 0, None);
    assert_eq!(m.data_size(&store), 0);
    std::mem::forget(pool);
    addr(store, m, 0)
}

#[test]
fn write_to_base_of_empty_memory_faults() {
    run(
        "write_to_base_of_empty_memory_faults",
        Expect::Fault,
        || empty_memory(false),
    );
}

#[test]
fn write_to_base_of_empty_memory_in_reused_resident_slot_faults() {
    run(
        "write_to_base_of_empty_memory_in_reused_resident_slot_faults",
        Expect::Fault,
        || empty_memory(true),
    );
}

// ---- Store::reset shrinks the accessible part back to the minimum ----

fn after_reset(keep_resident: usize, delta: isize) -> *mut u8 {
    let mut c = config(1);
    c.memory_keep_resident(keep_resident);
    let pool = PoolingInstanceAllocator::new(&c).unwrap();
    let bytes = vec![4u8; 5000];
    let (mut store, m) = tenant(&pool, 2, Some(&bytes));
    m.grow(&mut store, 14).unwrap();
    m.data_mut(&mut store).fill(0xEE);
    store.reset().unwrap();
    let size = m.data_size(&store);
    assert_eq!(size, 2 * PAGE);
    let data = m.data(&store);
    assert_eq!(&data[..bytes.len()], bytes.as_slice());
    assert!(data[bytes.len()..].iter().all(|&b| b == 0));
    std::mem::forget(pool);
    addr(store, m, size as isize + delta)
}

#[test]
fn write_at_data_size_after_reset_faults() {
    run(
        "write_at_data_size_after_reset_faults",
        Expect::Fault,
        || after_reset(0, 0),
    );
}

#[test]
fn write_at_data_size_after_reset_with_keep_resident_faults() {
    run(
        "write_at_data_size_after_reset_with_keep_resident_faults",
        Expect::Fault,
        || after_reset(MIB, 0),
    );
}

#[test]
fn write_before_data_size_after_reset_does_not_fault() {
    run(
        "write_before_data_size_after_reset_does_not_fault",
        Expect::NoFault,
        || after_reset(MIB, -1),
    );
}
