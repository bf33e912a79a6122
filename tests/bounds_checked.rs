//! `MemoryProtection::BoundsChecked`, the mode for engines that check every
//! access against the size themselves: growth and release change no
//! protection (counted through the fault seam), a release discards only
//! what its tenant wrote past `memory_keep_resident`, the next tenant sees
//! nothing of the last one's bytes, and the guards between slots still
//! fault (in a child process, see `common::guard`). The failure walks, the
//! model and the Wasmtime JIT tests run on this mode too (`ALL_SHAPES`).

mod common;
use common::config::{self, CHECKED_SHAPES, GUARD, MIB, Shape};
use common::guard::{Expect, addr, run_on, tenant};
use common::pattern;

use instance_pool::*;

const PAGE: usize = WASM_PAGE_SIZE;
const SLOT_PAGES: u64 = (MIB / PAGE) as u64;

fn pool(shape: Shape, keep: usize) -> PoolingInstanceAllocator {
    let mut c = config::small(2);
    shape.apply(&mut c).memory_keep_resident(keep);
    config::pool(&c)
}

/// A tenant of `layout` that grows to `pages` and writes `0xA5` at each of
/// `at`, then drops its store.
fn scribble(pool: &PoolingInstanceAllocator, layout: &InstanceLayout, pages: u64, at: &[usize]) {
    let mut s = Store::new(pool, ());
    let m = s.instantiate(layout).unwrap().memory(&s, 0).unwrap();
    let size = m.size(&s);
    m.grow(&mut s, pages - size).unwrap();
    for &a in at {
        m.data_mut(&mut s)[a] = 0xA5;
    }
}

// ---- syscalls ----

#[test]
fn growth_and_a_release_within_keep_resident_change_no_protection() {
    for shape in CHECKED_SHAPES {
        let p = pool(shape, MIB);
        let image = MemoryImage::new(&pattern(5000, 3)).unwrap();
        let layout = InstanceLayout::new().memory_with_image(MemoryType::new(1, None), image);
        // The first tenant opens the slot (and, dense, marks its guards).
        scribble(&p, &layout, 2, &[0]);
        for round in 0..4 {
            fault::reset();
            // Every page of the slot, grown page by page, written.
            let mut s = Store::new(&p, ());
            let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
            for _ in 1..SLOT_PAGES {
                m.grow(&mut s, 1).unwrap();
            }
            for page in 0..SLOT_PAGES as usize {
                m.data_mut(&mut s)[page * PAGE + 7] = 1;
            }
            drop(s);
            let c = fault::counts();
            let ctx = format!("{shape:?} round {round}: {c:?}");
            assert_eq!(
                (c.mprotect, c.guard, c.mmap, c.munmap),
                (0, 0, 0, 0),
                "{ctx}"
            );
            assert_eq!(
                (c.madvise, c.process_madvise),
                (0, 0),
                "{ctx}: nothing discarded"
            );
            assert!(c.pagemap_scan <= 1, "{ctx}");
        }
        assert_eq!(p.metrics().memories_in_use, 0);
    }
}

#[test]
fn pages_written_past_keep_resident_are_discarded_and_nothing_is_protected() {
    for shape in CHECKED_SHAPES {
        let p = pool(shape, 64 << 10);
        let layout = InstanceLayout::new().memory(MemoryType::new(1, None));
        scribble(&p, &layout, 2, &[0]);
        fault::reset();
        // Written: one page inside keep-resident, two far past it.
        scribble(&p, &layout, SLOT_PAGES, &[100, 5 * PAGE, MIB - 1]);
        let c = fault::counts();
        let ctx = format!("{shape:?}: {c:?}");
        assert_eq!((c.mprotect, c.guard, c.mmap), (0, 0, 0), "{ctx}");
        assert_eq!(c.madvise + c.process_madvise, 2, "{ctx}: one discard a run");
        // The next tenant reads zeroes everywhere, and so does the slot's
        // resident part: 64 KiB kept.
        let mut s = Store::new(&p, ());
        let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
        m.grow(&mut s, SLOT_PAGES - 1).unwrap();
        assert!(m.data(&s).iter().all(|&b| b == 0), "{ctx}");
        drop(s);
        assert_eq!(p.metrics().unused_resident_bytes, 64 << 10, "{ctx}");
    }
}

#[test]
fn a_slot_is_opened_once_whatever_its_tenants_grow_to() {
    for shape in CHECKED_SHAPES {
        let p = pool(shape, 0);
        let layout = InstanceLayout::new().memory(MemoryType::new(1, None));
        fault::reset();
        scribble(&p, &layout, 3, &[]);
        let c = fault::counts();
        if shape.layout == MemoryLayout::Dense {
            // Its two guards marked; its body, in a read-write slab, left.
            assert_eq!((c.guard, c.mprotect), (2, 0), "{shape:?}: {c:?}");
        } else {
            assert_eq!((c.guard, c.mprotect), (0, 1), "{shape:?}: {c:?}");
        }
        fault::reset();
        scribble(&p, &layout, SLOT_PAGES, &[]);
        let c = fault::counts();
        assert_eq!((c.guard, c.mprotect, c.mmap), (0, 0, 0), "{shape:?}: {c:?}");
    }
}

#[test]
fn store_reset_discards_only_what_the_tenant_reached() {
    for shape in CHECKED_SHAPES {
        let p = pool(shape, 64 << 10);
        let mut s = Store::new(&p, ());
        let layout = InstanceLayout::new().memory(MemoryType::new(1, None));
        let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
        // A tenancy that reached the whole slot: the reset puts it back.
        m.grow(&mut s, SLOT_PAGES - 1).unwrap();
        m.data_mut(&mut s).fill(0xAB);
        s.reset().unwrap();
        assert_eq!(m.size(&s), 1, "{shape:?}");
        m.grow(&mut s, SLOT_PAGES - 1).unwrap();
        let stray = m.data(&s).iter().position(|&b| b != 0);
        assert_eq!(stray, None, "{shape:?}");
        s.reset().unwrap();
        // One within keep-resident: nothing past it is discarded.
        fault::reset();
        m.data_mut(&mut s)[100] = 1;
        s.reset().unwrap();
        let c = fault::counts();
        let ctx = format!("{shape:?}: {c:?}");
        assert_eq!((c.madvise, c.process_madvise), (0, 0), "{ctx}");
        assert_eq!((c.mprotect, c.guard, c.mmap), (0, 0, 0), "{ctx}");
        assert_eq!(m.data(&s)[100], 0, "{ctx}");
    }
}

// ---- what the next tenant sees ----

#[test]
fn a_tenant_that_wrote_its_whole_slot_leaves_the_next_only_zeroes_or_its_image() {
    for shape in CHECKED_SHAPES {
        for scan in [true, false] {
            for keep in [0, 4096, 64 << 10, MIB] {
                let ctx = format!("{shape:?} scan {scan} keep {keep}");
                let mut c = config::small(1);
                shape
                    .apply(&mut c)
                    .memory_keep_resident(keep)
                    .dirty_page_scan(scan);
                let p = config::pool(&c);
                let bytes = pattern(70_000, 9);
                let image = MemoryImage::new(&bytes).unwrap();
                let ty = MemoryType::new(2, None);
                let with = InstanceLayout::new().memory_with_image(ty, image);
                let without = InstanceLayout::new().memory(ty);
                for (round, layout) in [&with, &without, &with, &with].into_iter().enumerate() {
                    let mut s = Store::new(&p, ());
                    let m = s.instantiate(layout).unwrap().memory(&s, 0).unwrap();
                    m.grow(&mut s, SLOT_PAGES - 2).unwrap();
                    let data = m.data_mut(&mut s);
                    let image_len = if std::ptr::eq(layout, &with) {
                        bytes.len()
                    } else {
                        0
                    };
                    let holds_image = data[..image_len] == bytes[..image_len];
                    assert!(holds_image, "{ctx} round {round}: the image");
                    let stray = data[image_len..].iter().position(|&b| b != 0);
                    assert_eq!(stray, None, "{ctx} round {round}");
                    data.fill(0xEE);
                }
            }
        }
    }
}

// ---- the guards between slots ----

/// The pool of the guard cases, on the bounds-checked shape the parent
/// chose for this child.
fn guard_pool() -> PoolingInstanceAllocator {
    config::pool(&common::guard::config(2))
}

#[test]
fn writes_past_the_size_inside_the_slot_do_not_fault() {
    run_on(
        "writes_past_the_size_inside_the_slot_do_not_fault",
        Expect::NoFault,
        &CHECKED_SHAPES,
        || {
            let p = guard_pool();
            let (s, m) = tenant(&p, 1, None);
            std::mem::forget(p);
            addr(s, m, MIB as isize - 1)
        },
    );
}

#[test]
fn the_byte_after_the_slot_faults() {
    run_on(
        "the_byte_after_the_slot_faults",
        Expect::Fault,
        &CHECKED_SHAPES,
        || {
            let p = guard_pool();
            let (s, m) = tenant(&p, 1, None);
            std::mem::forget(p);
            addr(s, m, MIB as isize)
        },
    );
}

#[test]
fn the_last_guard_byte_after_a_reused_slot_faults() {
    run_on(
        "the_last_guard_byte_after_a_reused_slot_faults",
        Expect::Fault,
        &CHECKED_SHAPES,
        || {
            let p = guard_pool();
            drop(tenant(&p, SLOT_PAGES, None));
            let (s, m) = tenant(&p, 1, None);
            std::mem::forget(p);
            addr(s, m, (MIB + GUARD) as isize - 1)
        },
    );
}

#[test]
fn the_byte_before_the_second_slot_faults() {
    run_on(
        "the_byte_before_the_second_slot_faults",
        Expect::Fault,
        &CHECKED_SHAPES,
        || {
            let p = guard_pool();
            let first = tenant(&p, SLOT_PAGES, None);
            let (s, m) = tenant(&p, 1, None);
            std::mem::forget(first);
            std::mem::forget(p);
            addr(s, m, -1)
        },
    );
}

// ---- configuration ----

#[test]
fn the_mode_is_reported_and_stack_pools_refuse_it() {
    for shape in CHECKED_SHAPES {
        let p = pool(shape, 0);
        let m = p.metrics();
        assert_eq!(m.memory_protection, MemoryProtection::BoundsChecked);
        assert!(m.to_string().contains("bounds_checked"), "{m}");
    }
    let mut s = StackPoolConfig::default();
    s.total_stacks(4)
        .stack_protection(MemoryProtection::BoundsChecked);
    match StackPool::new(&s) {
        Err(Error::InvalidConfig(m)) => {
            assert!(m.contains("stack_protection BoundsChecked"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}
