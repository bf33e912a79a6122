//! `PoolingConfig::background_revocation`: full batches are revoked on the
//! pool's own thread. Every released slot comes back, reset; exhaustion is
//! reported only when every slot is held, never while slots are on their
//! way back; `flush_decommits` waits for batches in flight; dropping the
//! pool with batches in flight is clean. (After a fork: `background_fork.rs`.)

mod common;
use common::config::{self, ALL_SHAPES, MIB};

use instance_pool::*;
use std::sync::Arc;

const SLOTS: u32 = 8;

fn pool(shape: config::Shape, batch: usize) -> PoolingInstanceAllocator {
    let mut c = config::small(SLOTS);
    shape
        .apply(&mut c)
        .decommit_batch_size(batch)
        .background_revocation(true);
    config::pool(&c)
}

fn layout() -> InstanceLayout {
    InstanceLayout::new().memory(MemoryType::new(1, None))
}

/// A tenant that checks its whole slot reads zero, then dirties all of it.
fn tenant(p: &PoolingInstanceAllocator, ctx: &str) -> Store<()> {
    let mut s = Store::new(p, ());
    let m = s.instantiate(&layout()).unwrap().memory(&s, 0).unwrap();
    m.grow(&mut s, (MIB / WASM_PAGE_SIZE) as u64 - 1).unwrap();
    let stray = m.data(&s).iter().position(|&b| b != 0);
    assert_eq!(stray, None, "{ctx}: a byte of an earlier tenant");
    m.data_mut(&mut s).fill(0xC3);
    s
}

#[test]
fn the_pool_reports_its_revoker_and_flush_waits_for_batches_in_flight() {
    for shape in ALL_SHAPES {
        let p = pool(shape, 4);
        assert!(p.metrics().background_revocation, "{shape:?}");
        assert!(p.metrics().to_string().contains("revoker=\"background\""));
        for round in 0..20 {
            let held: Vec<_> = (0..SLOTS).map(|_| tenant(&p, "held")).collect();
            drop(held);
            p.flush_decommits();
            let m = p.metrics();
            assert_eq!(m.decommit_queue_len, 0, "{shape:?} round {round}");
            assert_eq!(m.memories_in_use, 0, "{shape:?} round {round}");
            assert_eq!(m.unused_warm_memories, SLOTS, "{shape:?} round {round}");
        }
    }
    let mut c = config::small(SLOTS);
    c.decommit_batch_size(4);
    let inline = config::pool(&c);
    assert!(!inline.metrics().background_revocation);
}

#[test]
fn exhaustion_is_reported_only_when_every_slot_is_held() {
    for shape in ALL_SHAPES {
        let p = pool(shape, 4);
        for round in 0..100 {
            let ctx = format!("{shape:?} round {round}");
            // Every slot, released and taken again at once: the last
            // releases' batches may still be on the thread (a memory slot
            // missing would fail `tenant`).
            let held: Vec<_> = (0..SLOTS).map(|_| tenant(&p, &ctx)).collect();
            drop(held);
            let again: Vec<_> = (0..SLOTS).map(|_| tenant(&p, &ctx)).collect();
            let mut one_more = Store::new(&p, ());
            let err = one_more.instantiate(&layout()).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::PoolExhausted {
                        resource: Resource::Instance,
                        limit: SLOTS
                    }
                ),
                "{ctx}: {err:?}"
            );
            drop(again);
        }
        // Only the planned refusals (of a ninth instance) were counted:
        // never a memory slot while one was on its way back.
        let m = p.metrics();
        assert_eq!(
            (m.instances_exhausted, m.memories_exhausted),
            (100, 0),
            "{shape:?}"
        );
    }
}

#[test]
fn threads_cycling_a_small_pool_never_see_each_others_bytes() {
    for shape in ALL_SHAPES {
        let p = Arc::new(pool(shape, 3));
        std::thread::scope(|s| {
            for t in 0..2 {
                let p = p.clone();
                s.spawn(move || {
                    for i in 0..300 {
                        drop(tenant(&p, &format!("{shape:?} thread {t} cycle {i}")));
                    }
                });
            }
        });
        p.flush_decommits();
        assert_eq!(p.metrics().memories_in_use, 0, "{shape:?}");
        assert_eq!(p.metrics().decommit_queue_len, 0, "{shape:?}");
    }
}

#[test]
fn a_pool_dropped_with_batches_in_flight_is_dropped_cleanly() {
    for shape in ALL_SHAPES {
        for _ in 0..30 {
            let p = pool(shape, 2);
            let held: Vec<_> = (0..SLOTS).map(|_| tenant(&p, "held")).collect();
            // Four batches go to the thread; the pool goes right after.
            drop(held);
            drop(p);
        }
    }
}

/// A pool whose revoker thread cannot be started (a thread limit) is made
/// all the same and revokes inline: it says so, and every slot comes back.
#[cfg(feature = "fault-injection")]
#[test]
fn without_its_thread_the_pool_revokes_inline() {
    fault::refuse(Syscall::Thread);
    let p = pool(ALL_SHAPES[0], 4);
    fault::reset();
    assert!(!p.metrics().background_revocation);
    for _ in 0..5 {
        let held: Vec<_> = (0..SLOTS).map(|_| tenant(&p, "inline")).collect();
        drop(held);
    }
    p.flush_decommits();
    let m = p.metrics();
    assert_eq!((m.memories_in_use, m.unused_warm_memories), (0, SLOTS));
}
