//! The deadline timer after `fork` (issue 12, item 4): in a child forked
//! after the process-wide timer thread started, a deadline still fires.
//!
//! Its own test binary, with one test: at the fork, the only other threads
//! are the test harness's and the timer's.

use instance_pool::*;
use std::thread;
use std::time::{Duration, Instant};

/// How long the child may take before it counts as hung (a liveness bound).
const WATCHDOG: Duration = Duration::from_secs(30);

fn full_pool() -> (PoolingInstanceAllocator, Store<()>) {
    let mut c = PoolingConfig::default();
    c.total_instances(1)
        .total_memories(1)
        .total_tables(1)
        .max_memory_size(1 << 20)
        .memory_guard_size(64 << 10)
        .table_elements(16);
    let p = PoolingInstanceAllocator::new(&c).unwrap();
    let mut holder = Store::new(&p, ());
    holder
        .instantiate(&InstanceLayout::new().memory(MemoryType::new(1, None)))
        .unwrap();
    (p, holder)
}

/// A wait on a full pool that must end at its deadline.
fn times_out() -> bool {
    let (p, _holder) = full_pool();
    let mut s = Store::new(&p, ());
    let layout = InstanceLayout::new().memory(MemoryType::new(1, None));
    matches!(
        s.instantiate_timeout(&layout, Duration::from_millis(20)),
        Err(Error::PoolExhausted { .. })
    )
}

#[test]
fn a_deadline_fires_in_a_child_forked_after_the_timer_started() {
    // Starts the timer thread in this process.
    assert!(times_out());
    // SAFETY: libc's fork, in a process whose other threads (the harness's,
    // the timer's) hold no lock this child needs: the child only builds its
    // own pool, waits on it and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match std::panic::catch_unwind(times_out) {
            Ok(true) => 0,
            Ok(false) => 2,
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
            panic!("the child's instantiate_timeout never returned: no timer after fork");
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child's wait did not end with PoolExhausted (status {status:#x}; exit 2: another outcome, 3: a panic)"
    );
}
