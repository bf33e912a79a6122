//! Every failure point of releasing slots and of `Store::reset`, walked
//! (see `faults_instantiate.rs`). Failures while releasing never surface
//! (drop cannot fail) but must not let a tenant's bytes through; a failed
//! reset is `Error::Os` or absorbed, and leaves the memory correct.

mod common;
use common::config::{self, MIB, Resets};
use common::fault::{MAX_STEPS, with_nth_failing};
use common::limiter::store;
use common::tenants::{
    PAGE, TOTAL, assert_fresh, assert_full_capacity, dirty, images, layout, pool, setups,
};
use common::{assert_nothing_in_use, in_use};

use instance_pool::*;

/// Walks every failure point of releasing `stores` tenants (each dirtying
/// its whole slot and table) and flushing the resets. A failure must not
/// surface, and must not let any dirty byte reach the next tenants.
fn walk_release(setup: Resets, image: bool, stores: u32) -> u64 {
    let ctx = format!("{setup:?} image={image} stores={stores}");
    for n in 1..=MAX_STEPS {
        let pool = pool(setup);
        let images = images();
        let live: Vec<_> = (0..stores)
            .map(|_| {
                let mut store = store(&pool);
                let inst = store
                    .instantiate(&layout(image.then_some(&images.main)))
                    .unwrap();
                dirty(&mut store, inst);
                store
            })
            .collect();
        let ((), reached) = with_nth_failing(n, || {
            drop(live);
            pool.flush_decommits();
        });
        assert_nothing_in_use(&pool);
        assert_eq!(pool.metrics().decommit_queue_len, 0, "{ctx}");
        assert_full_capacity(&pool, &images);
        if !reached {
            return n - 1;
        }
    }
    panic!("{ctx}: release never completed");
}

#[test]
fn release_failures_never_surface_and_never_leak_bytes() {
    for setup in setups() {
        for image in [false, true] {
            for stores in [1, TOTAL] {
                let points = walk_release(setup, image, stores);
                // A whole dirty 1 MiB slot beyond keep_resident must be
                // discarded with a syscall.
                if setup.keep_resident < MIB {
                    assert!(points >= 1, "{setup:?}: release makes syscalls");
                }
            }
        }
    }
}

/// Walks every failure point of `Store::reset` on a tenant that grew and
/// dirtied its whole slot and table. A failure is absorbed (and the reset
/// complete) or is `Error::Os` and leaves
/// the memory correct (its image then zeroes, over whatever size it still
/// has); resetting again then succeeds, and the pool stays whole.
fn walk_reset(setup: Resets, image: bool) -> u64 {
    let ctx = format!("{setup:?} image={image}");
    for n in 1..=MAX_STEPS {
        let pool = pool(setup);
        let images = images();
        let img = image.then_some(images.main_bytes.as_slice());
        let mut store = store(&pool);
        let inst = store
            .instantiate(&layout(image.then_some(&images.main)))
            .unwrap();
        dirty(&mut store, inst);
        let (result, reached) = with_nth_failing(n, || store.reset());
        match result {
            // A failed `madvise` may be made up for with writes: then the
            // reset succeeds, and must still be complete (checked below).
            Ok(()) => {}
            Err(Error::Os(_)) => {
                assert!(reached, "{ctx}");
                let m = inst.memory(&store, 0).unwrap();
                let data = m.data(&store);
                let expected = img.unwrap_or(&[]);
                assert!(data[..expected.len()] == *expected, "{ctx}: image lost");
                assert!(
                    data[expected.len()..].iter().all(|&b| b == 0),
                    "{ctx}: failure {n} left the old bytes"
                );
                store.reset().unwrap();
            }
            Err(e) => panic!("{ctx}: failure {n} gave {e:?}, not Error::Os"),
        }
        assert_fresh(&store, inst, img);
        assert_eq!(in_use(&pool), (1, 1, 1));
        dirty(&mut store, inst);
        drop(store);
        assert_nothing_in_use(&pool);
        assert_full_capacity(&pool, &images);
        if !reached {
            return n - 1;
        }
    }
    panic!("{ctx}: reset never completed");
}

#[test]
fn reset_failures_are_os_errors_and_never_leak_bytes() {
    for setup in setups() {
        for image in [false, true] {
            let points = walk_reset(setup, image);
            if setup.keep_resident < MIB {
                assert!(points >= 1, "{setup:?}: reset makes syscalls");
            }
        }
    }
}

// ---- a slot whose reset failed ----

#[test]
fn a_slot_whose_reset_and_remap_both_failed_never_reaches_a_tenant_dirty() {
    let layout = InstanceLayout::new()
        .memory(MemoryType::new(1, None))
        .table(TableType::new(4, None));
    for keep in [0, PAGE] {
        let mut c = config::small(1);
        c.memory_keep_resident(keep);
        let p = config::pool(&c);
        let mut s = Store::new(&p, ());
        let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
        m.grow(&mut s, 3).unwrap();
        m.data_mut(&mut s).fill(0xAA);
        // The release's madvise fails, then so does the fallback remap.
        fault::reset();
        fault::fail_nth_times(1, 2);
        drop(s);
        assert!(!fault::pending(), "keep {keep}");
        assert_eq!(p.metrics().memories_in_use, 0);
        // The next tenant's remap of the slot fails too: an OS error, and its
        // rollback must leave the slot alone.
        fault::reset();
        fault::fail_nth(1);
        let mut s = Store::new(&p, ());
        assert!(
            matches!(s.instantiate(&layout), Err(Error::Os(_))),
            "keep {keep}"
        );
        assert!(!fault::pending());
        drop(s);
        // Then the slot is remapped whole and reads as new.
        fault::reset();
        let mut s = Store::new(&p, ());
        let l = InstanceLayout::new().memory(MemoryType::new(4, None));
        let m = s.instantiate(&l).unwrap().memory(&s, 0).unwrap();
        assert!(
            m.data(&s).iter().all(|&b| b == 0),
            "keep {keep}: dirty bytes reached a tenant"
        );
        assert_eq!(m.size(&s), 4);
    }
}
