//! What instantiating, releasing and resetting cost in syscalls, counted
//! through the fault seam (`fault::counts`; counts are per thread): one
//! `mmap` per image mapped, none for a warm slot with the same image, none
//! at all within keep-resident; with `mprotect`, one `madvise` and one
//! `mprotect` per reset batch of neighbouring slots; with guard markers no
//! `mprotect` below a slot's high water, and two `process_madvise` per
//! batch of any slots.

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

/// A pool of one slot of 32 MiB with `keep` bytes kept resident, on
/// `protection`.
fn pool_of_one_on(keep: usize, protection: MemoryProtection) -> PoolingInstanceAllocator {
    let mut c = config::small(1);
    c.max_memory_size(32 << 20)
        .memory_keep_resident(keep)
        .memory_protection(protection);
    config::pool(&c)
}

#[test]
fn with_mprotect_growth_past_keep_resident_is_reset_with_one_madvise_and_one_mprotect() {
    let p = pool_of_one_on(PAGE, MemoryProtection::Mprotect);
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
fn with_guard_markers_a_grow_below_the_high_water_makes_no_mprotect() {
    let p = pool_of_one_on(MIB, MemoryProtection::GuardMarkers);
    assert_eq!(
        p.metrics().memory_protection,
        MemoryProtection::GuardMarkers
    );
    let layout = InstanceLayout::new().memory(MemoryType::new(1, None));
    // The first tenant takes the slot to 4 pages: one mprotect, once.
    let mut s = Store::new(&p, ());
    let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
    m.grow(&mut s, 3).unwrap();
    m.data_mut(&mut s).fill(3);
    fault::reset();
    drop(s);
    // Release: one marker install over the 3 grown pages (it discards them
    // as it marks), no mprotect, no madvise.
    let c = fault::counts();
    assert_eq!((c.guard, c.mprotect, c.madvise), (1, 0, 0), "{c:?}");
    for round in 0..3 {
        fault::reset();
        let mut s = Store::new(&p, ());
        let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
        assert_eq!(
            fault::counts().fallible(),
            0,
            "round {round}: the minimum stayed open"
        );
        m.grow(&mut s, 3).unwrap();
        let c = fault::counts();
        assert_eq!((c.guard, c.mprotect), (1, 0), "round {round}: {c:?}");
        assert!(m.data(&s).iter().all(|&b| b == 0), "round {round}");
        m.data_mut(&mut s).fill(4);
        // Past the high water: the read-write part widens, once.
        fault::reset();
        m.grow(&mut s, 1).unwrap();
        assert_eq!(
            fault::counts().mprotect,
            u64::from(round == 0),
            "round {round}"
        );
    }
}

#[test]
fn a_batch_of_neighbouring_slots_is_revoked_with_one_call_per_step() {
    for protection in config::PROTECTIONS {
        let mut c = config::small(SLACK);
        c.decommit_batch_size(4).memory_protection(protection);
        let p = config::pool(&c);
        let stores: Vec<_> = (0..4)
            .map(|_| {
                let mut s = Store::new(&p, ());
                let l = one_memory(1, None).table(TableType::new(4, None));
                let m = s.instantiate(&l).unwrap().memory(&s, 0).unwrap();
                // Grown past the minimum: a page to discard and mark.
                m.grow(&mut s, 1).unwrap();
                m.data_mut(&mut s).fill(1);
                s
            })
            .collect();
        fault::reset();
        drop(stores);
        let c = fault::counts();
        let expected = match protection {
            // One process_madvise to discard (the written minimum and the
            // grown page), one mprotect a grown page: each slot's minimum
            // stays open, so no two grown pages are neighbours.
            MemoryProtection::Mprotect => (0, 4, 0, 1),
            // One process_madvise to discard, one to mark (the grown page).
            _ => (0, 0, 0, 2),
        };
        assert_eq!(
            (c.madvise, c.mprotect, c.guard, c.process_madvise),
            expected,
            "{protection:?}: {c:?}"
        );
        assert_eq!(p.metrics().decommit_queue_len, 0);
    }
}

/// Slots of the pools whose batches are counted: room enough that a batch
/// fills before the pool runs low (near capacity a release revokes at
/// once, see `tests/slots.rs`).
const SLACK: u32 = 64;

/// `n` stores, each with a one-page memory grown by a page and written
/// all over.
fn grown_stores(p: &PoolingInstanceAllocator, n: usize) -> Vec<Store<()>> {
    common::stores_with(p, n, |s, m| {
        m.grow(s, 1).unwrap();
        m.data_mut(s).fill(1);
    })
}

/// `n` stores, each with a one-page memory checked to read as zeroes.
fn fresh_stores(p: &PoolingInstanceAllocator, n: usize) -> Vec<Store<()>> {
    common::stores_with(p, n, |s, m| assert!(m.data(s).iter().all(|&b| b == 0)))
}

#[test]
fn with_guard_markers_slots_that_are_not_neighbours_share_a_batch() {
    let mut c = config::small(SLACK);
    c.decommit_batch_size(4)
        .memory_protection(MemoryProtection::GuardMarkers);
    let p = config::pool(&c);
    let mut stores: Vec<_> = grown_stores(&p, 8);
    // Every other slot: no two released neighbours.
    let odd: Vec<_> = (0..4).map(|i| stores.remove(i)).collect();
    fault::reset();
    drop(odd);
    let c = fault::counts();
    assert_eq!((c.process_madvise, c.madvise, c.guard), (2, 0, 0), "{c:?}");
    // Each comes back zeroed.
    let again: Vec<_> = fresh_stores(&p, 4);
    drop((again, stores));
}

#[test]
fn a_refused_process_madvise_falls_back_to_madvise() {
    let mut c = config::small(SLACK);
    c.decommit_batch_size(4)
        .memory_protection(MemoryProtection::GuardMarkers);
    let p = config::pool(&c);
    let stores: Vec<_> = grown_stores(&p, 4);
    fault::reset();
    // As a seccomp filter installed after the pool was made would.
    fault::refuse(Syscall::ProcessMadvise);
    drop(stores);
    let c = fault::counts();
    assert_eq!((c.process_madvise, c.madvise, c.guard), (2, 4, 4), "{c:?}");
    fault::reset();
    let stores: Vec<_> = fresh_stores(&p, 4);
    assert_eq!(p.metrics().memories_in_use, 4);
    drop(stores);
}

/// `batched_revocation` (and the `revocation` label) says what releases
/// do: only guard-marker batches of more than one slot use
/// `process_madvise`; an `mprotect` pool never does.
#[test]
fn the_revocation_metric_says_whether_releases_use_process_madvise() {
    for shape in config::SHAPES {
        for batch in [1, 4] {
            let mut c = config::small(SLACK);
            shape.apply(&mut c).decommit_batch_size(batch);
            let p = config::pool(&c);
            let m = p.metrics();
            let stores = grown_stores(&p, 4);
            fault::reset();
            drop(stores);
            let used = fault::counts().process_madvise > 0;
            let what = format!("{shape:?}, batch {batch}");
            assert_eq!(m.batched_revocation, used, "{what}");
            let label = if used { "process_madvise" } else { "madvise" };
            let label = format!("revocation=\"{label}\"");
            assert!(m.to_string().contains(&label), "{what}: {m}");
        }
    }
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

#[test]
fn with_guard_markers_a_large_image_minimum_is_discarded_never_marked() {
    // Marking costs a page-table entry per page: a 16 MiB minimum marked
    // and unmarked on every cycle would cost more than the mapping saved.
    let p = pool_of_one_on(0, MemoryProtection::GuardMarkers);
    let image = MemoryImage::new(&pattern(16 << 20, 3)).unwrap();
    let layout = image_layout(&image, 256);
    drop({
        let mut s = Store::new(&p, ());
        s.instantiate(&layout).unwrap();
        s
    });
    for round in 0..3 {
        fault::reset();
        let mut s = Store::new(&p, ());
        let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
        assert_eq!(
            fault::counts().fallible(),
            0,
            "round {round}: warm, same image"
        );
        m.data_mut(&mut s)[5 << 20] ^= 1;
        fault::reset();
        drop(s);
        let c = fault::counts();
        assert_eq!(
            (c.madvise, c.guard, c.mprotect),
            (1, 0, 0),
            "round {round}: {c:?}"
        );
    }
    let mut s = Store::new(&p, ());
    let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
    assert_eq!(m.data(&s), &pattern(16 << 20, 3)[..]);
}
