//! What instantiating, releasing and resetting cost in syscalls, counted
//! through the fault seam (`fault::counts`; counts are per thread): one
//! `mmap` per image mapped, none for a warm slot with the same image, none
//! at all within keep-resident, one `madvise` and one `mprotect` per reset
//! batch of neighbouring slots.

mod common;
use common::config::{self, MIB};
use common::images::{image_layout, pool_of_one};
use common::{one_memory, pattern};

use instance_pool::*;

const PAGE: usize = WASM_PAGE_SIZE;

// ---- images and warm slots ----

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

// ---- batched resets ----

#[test]
fn a_batch_of_neighbouring_slots_is_reset_with_one_madvise_and_one_mprotect() {
    let mut c = config::small(4);
    c.decommit_batch_size(4);
    let p = config::pool(&c);
    let stores: Vec<_> = (0..4)
        .map(|_| {
            let mut s = Store::new(&p, ());
            let l = one_memory(1, None).table(TableType::new(4, None));
            let m = s.instantiate(&l).unwrap().memory(&s, 0).unwrap();
            m.data_mut(&mut s).fill(1);
            s
        })
        .collect();
    fault::reset();
    drop(stores);
    let c = fault::counts();
    assert_eq!((c.madvise, c.mprotect), (1, 1), "{c:?}");
    assert_eq!(p.metrics().decommit_queue_len, 0);
}

// ---- Store::reset ----

#[test]
fn reset_of_a_memory_that_stayed_within_keep_resident_makes_no_syscall() {
    let mut c = config::small(1);
    c.memory_keep_resident(MIB);
    let p = config::pool(&c);
    let mut s = Store::new(&p, ());
    let m = s
        .instantiate(&one_memory(1, None))
        .unwrap()
        .memory(&s, 0)
        .unwrap();
    m.data_mut(&mut s)[100] = 1;
    fault::reset();
    s.reset().unwrap();
    assert_eq!(fault::counts().fallible(), 0);
    assert_eq!(m.data(&s)[100], 0);
}
