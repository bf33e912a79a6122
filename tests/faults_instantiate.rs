//! Every failure point of an instantiation, walked: the n-th syscall is
//! made to fail (`fault::fail_nth(n)`) for n = 1, 2, ... until the
//! instantiation completes without reaching it. Each failure must come back
//! as `Error::Os` (with the limiter's failure hook called once), leave the
//! pool's counts as they were, and leave every slot usable and clean: the
//! pool still serves its full capacity, each slot reading zeroes or its
//! image. Also: instantiations failed for every other reason, and an image
//! whose memfd cannot be made.

mod common;
use common::config::{self, MIB, Resets};
use common::fault::{MAX_STEPS, with_first_failing, with_nth_failing};
use common::limiter::{Call, Outcome, store};
use common::tenants::{
    BEFORES, Before, MIN_PAGES, PAGE, assert_fresh, assert_full_capacity, dirty, images, layout,
    pool, prepare, setups,
};
use common::{assert_nothing_in_use, images as image_pool, in_use, pattern};

use instance_pool::*;

/// Walks every failure point of one instantiation; returns how many there
/// were.
fn walk_instantiate(setup: Resets, before: Before, image: bool) -> u64 {
    let ctx = format!("{setup:?} {before:?} image={image}");
    for n in 1..=MAX_STEPS {
        let pool = pool(setup);
        let images = images();
        prepare(&pool, &images, before, image);
        let in_use_before = in_use(&pool);
        let l = layout(image.then_some(&images.main));
        let mut store = store(&pool);
        let (result, reached) = with_nth_failing(n, || store.instantiate(&l));
        match result {
            Ok(inst) => {
                assert_fresh(&store, inst, image.then_some(images.main_bytes.as_slice()));
                if reached {
                    // Only a flush of queued resets (a release) may swallow
                    // a failure: its slot is scrubbed instead.
                    assert_eq!(
                        before,
                        Before::AllQueued,
                        "{ctx}: syscall {n} failed but instantiate succeeded"
                    );
                }
            }
            Err(Error::Os(_)) => {
                assert!(reached, "{ctx}: Os error without an injected failure");
                let min = MIN_PAGES as usize * PAGE;
                assert_eq!(
                    store.data().calls,
                    [
                        Call::MemoryGrowing(0, min, Some(MIB)),
                        Call::MemoryGrowFailed(Outcome::Os)
                    ],
                    "{ctx}: failure {n}"
                );
                assert_eq!(
                    in_use(&pool),
                    in_use_before,
                    "{ctx}: failure {n} changed the counts"
                );
            }
            Err(e) => panic!("{ctx}: failure {n} gave {e:?}, not Error::Os"),
        }
        drop(store);
        assert_nothing_in_use(&pool);
        assert_full_capacity(&pool, &images);
        if !reached {
            return n - 1;
        }
    }
    panic!("{ctx}: instantiate never completed");
}

fn walk_instantiate_all(image: bool) {
    for setup in setups() {
        for before in BEFORES {
            if before == Before::AllQueued && setup.batch == 1 {
                continue;
            }
            let points = walk_instantiate(setup, before, image);
            if before == Before::Cold {
                assert!(points >= 1, "{setup:?}: a cold instantiate makes syscalls");
            }
        }
    }
}

#[test]
fn instantiate_failures_without_image_are_os_errors_and_leak_nothing() {
    walk_instantiate_all(false);
}

#[test]
fn instantiate_failures_with_image_are_os_errors_and_leak_nothing() {
    walk_instantiate_all(true);
}

/// A failure while instantiating a store's second instance takes nothing
/// from the first.
#[test]
fn instantiate_failure_in_a_store_with_an_instance_keeps_the_first() {
    let images = images();
    for n in 1..=MAX_STEPS {
        let pool = pool(setups()[0]);
        let mut store = store(&pool);
        let first = store.instantiate(&layout(Some(&images.main))).unwrap();
        dirty(&mut store, first);
        let l = layout(Some(&images.other));
        let (result, reached) = with_nth_failing(n, || store.instantiate(&l));
        if result.is_ok() {
            assert!(!reached);
            assert_eq!(in_use(&pool), (2, 2, 2));
            return;
        }
        assert!(matches!(result, Err(Error::Os(_))));
        assert_eq!(in_use(&pool), (1, 1, 1));
        let mem = first.memory(&store, 0).unwrap();
        assert!(mem.data(&store).iter().all(|&b| b == 0xA5));
        drop(store);
        assert_full_capacity(&pool, &images);
    }
    panic!("never completed");
}

/// A failure while releasing a queued batch because an acquisition found
/// the pool empty: the acquisition still succeeds on a clean slot.
#[test]
fn failed_flush_during_acquisition_still_serves_a_clean_slot() {
    let setup = setups()[4];
    let mut reached_any = false;
    for n in 1..=MAX_STEPS {
        let pool = pool(setup);
        let images = images();
        prepare(&pool, &images, Before::AllQueued, false);
        let mut store = store(&pool);
        let l = layout(None);
        let (result, reached) = with_nth_failing(n, || store.instantiate(&l));
        match result {
            Ok(inst) => assert_fresh(&store, inst, None),
            Err(Error::Os(_)) => assert!(reached),
            Err(e) => panic!("{e:?}"),
        }
        reached_any |= reached;
        drop(store);
        assert_full_capacity(&pool, &images);
        if !reached {
            assert!(reached_any);
            return;
        }
    }
    panic!("never completed");
}

#[test]
fn failed_instantiations_never_leak_and_the_full_pool_stays_usable() {
    // On the mprotect path. A released slot stays open to its layout's
    // minimum, so the same layout again may need no syscall; the rounds
    // that fail a syscall ask for more than any slot has open.
    let mut c = config::small_two_per_instance(100);
    c.memory_protection(MemoryProtection::Mprotect);
    let p = config::pool(&c);
    let image = MemoryImage::new(b"image").unwrap();
    let layout = InstanceLayout::new()
        .memory_with_image(MemoryType::new(1, None), image.clone())
        .memory(MemoryType::new(2, None))
        .table(TableType::new(4, None));
    let wider = InstanceLayout::new()
        .memory_with_image(MemoryType::new(3, None), image.clone())
        .memory(MemoryType::new(3, None))
        .table(TableType::new(4, None));
    for round in 0..200 {
        let mut s = store(&p);
        match round % 4 {
            0 => s.data_mut().allow_memory = false,
            1 => s.data_mut().allow_table = false,
            2 => s.data_mut().memories = 1,
            _ => {
                // The first syscall: widening past what any slot has open.
                fault::reset();
                fault::fail_nth(1);
            }
        }
        let l = if round % 4 == 3 { &wider } else { &layout };
        assert!(s.instantiate(l).is_err(), "round {round}");
        fault::reset();
        assert_eq!(in_use(&p), (0, 0, 0), "round {round}");
    }
    // Every slot is still there: two memories per instance, four memories.
    let stores: Vec<_> = (0..2)
        .map(|_| {
            let mut s = store(&p);
            let i = s.instantiate(&layout).unwrap();
            let m = i.memory(&s, 0).unwrap();
            assert_eq!(&m.data(&s)[..5], b"image");
            s
        })
        .collect();
    assert_eq!(in_use(&p), (2, 4, 2));
    drop(stores);
    assert_eq!(in_use(&p), (0, 0, 0));
}

// ---- images ----

#[test]
fn memfd_failure_falls_back_to_copying_and_metrics_say_so() {
    let bytes = pattern(10_000, 9);
    let image = with_first_failing(|| MemoryImage::new(&bytes).unwrap());
    assert!(!image.is_mapped());
    let p = image_pool::pool_of_one(0);
    for _ in 0..2 {
        image_pool::check_then_scribble(&p, &image_pool::image_layout(&image, 1), &bytes);
    }
    let m = p.metrics();
    assert_eq!((m.images_copied, m.images_mapped), (2, 0));
}
