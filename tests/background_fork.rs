//! `background_revocation` after `fork`: the child has no revoker thread,
//! so its batches are revoked inline; it never hangs waiting for one, it
//! loses no slot but those on their way back at the fork, and its tenants
//! still see nothing of earlier ones.
//!
//! Its own test binary, with one test: at the fork, the only other threads
//! are the test harness's and the pool's revoker.

mod common;
use common::fork;

use instance_pool::*;

const SLOTS: u32 = 4;

fn cycle(p: &PoolingInstanceAllocator, rounds: usize) -> bool {
    cycle_all(p, rounds) == Some(SLOTS as usize)
}

/// `rounds` times: as many tenants as the pool serves, each checking its
/// memory is zero and dirtying it, then all dropped. The number served,
/// if it was the same every round and nobody saw a stray byte.
fn cycle_all(p: &PoolingInstanceAllocator, rounds: usize) -> Option<usize> {
    let layout = InstanceLayout::new().memory(MemoryType::new(2, None));
    let mut served = None;
    for _ in 0..rounds {
        let mut held = Vec::new();
        loop {
            let mut s = Store::new(p, ());
            match s.instantiate(&layout) {
                Ok(i) => {
                    let m = i.memory(&s, 0).unwrap();
                    if m.data(&s).iter().any(|&b| b != 0) {
                        return None;
                    }
                    m.data_mut(&mut s).fill(9);
                    held.push(s);
                }
                Err(Error::PoolExhausted { .. }) => break,
                Err(_) => return None,
            }
        }
        if *served.get_or_insert(held.len()) != held.len() {
            return None;
        }
    }
    served
}

#[test]
fn a_forked_child_revokes_inline_and_never_waits_for_the_parents_thread() {
    let mut c = PoolingConfig::default();
    c.total_instances(SLOTS)
        .total_memories(SLOTS)
        .total_tables(SLOTS)
        .max_memory_size(1 << 20)
        .memory_guard_size(64 << 10)
        .decommit_batch_size(2)
        .background_revocation(true);
    let p = PoolingInstanceAllocator::new(&c).unwrap();
    assert!(p.metrics().background_revocation);
    assert!(cycle(&p, 50));
    p.flush_decommits();
    // One batch (two slots) on its way to the parent's thread, perhaps in
    // flight, as the child is made.
    let layout = InstanceLayout::new().memory(MemoryType::new(2, None));
    drop(
        (0..2)
            .map(|_| {
                let mut s = Store::new(&p, ());
                s.instantiate(&layout).unwrap();
                s
            })
            .collect::<Vec<_>>(),
    );
    // The child touches only the pool, whose revoker thread it does not use (nor
    // its locks). Slots on their way back at the fork (at most that batch)
    // stay the parent's; every other slot serves, round after round.
    let status = fork::in_child(|| match cycle_all(&p, 200) {
        Some(n) if n >= SLOTS as usize - 2 => 0,
        Some(_) => 4,
        None => 2,
    })
    .expect("the child hung: it waited for the parent's revoker");
    assert!(
        fork::exited(status, 0),
        "the child lost slots or saw a stray byte (status {status:#x}; exit 2: a stray byte or a changing count, 4: more than the batch lost, 3: a panic)"
    );
    // The parent's pool still works.
    assert!(cycle(&p, 50));
}
