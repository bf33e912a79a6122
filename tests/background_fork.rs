//! `background_revocation` after `fork`: the child has no revoker thread,
//! so its batches are revoked inline; it never hangs waiting for one, it
//! loses no slot but those on their way back at the fork, and its tenants
//! still see nothing of earlier ones.
//!
//! Its own test binary, with one test: at the fork, the only other threads
//! are the test harness's and the pool's revoker.

use instance_pool::*;
use std::thread;
use std::time::{Duration, Instant};

/// How long the child may take before it counts as hung (a liveness bound).
const WATCHDOG: Duration = Duration::from_secs(30);
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
    // SAFETY: libc's fork; the child touches only the pool, whose revoker
    // thread it does not use (nor its locks), and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // Slots on their way back at the fork (at most that batch) stay
        // the parent's; every other slot serves, round after round.
        let code =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cycle_all(&p, 200))) {
                Ok(Some(n)) if n >= SLOTS as usize - 2 => 0,
                Ok(Some(_)) => 4,
                Ok(None) => 2,
                Err(_) => 3,
            };
        // SAFETY: ends the child at once, without the harness's or the
        // parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let deadline = Instant::now() + WATCHDOG;
    let mut status = 0;
    loop {
        // SAFETY: polls our own child; `status` is a valid place to write.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "waitpid failed");
        if Instant::now() > deadline {
            // SAFETY: our own child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the child hung: it waited for the parent's revoker");
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
    // The parent's pool still works.
    assert!(cycle(&p, 50));
}
