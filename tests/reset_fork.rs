//! Dirty-page resets after `fork`: `PAGEMAP_SCAN` reads the pages of the
//! process that opened `/proc/self/pagemap`, so a child forked after the
//! parent scanned must scan through its own file, or it would find nothing
//! written and hand the next tenant the last one's bytes.
//!
//! Its own test binary, with one test: at the fork, the only other threads
//! are the test harness's.

use instance_pool::*;
use std::time::{Duration, Instant};

/// How long the child may take before it counts as hung (a liveness bound).
const WATCHDOG: Duration = Duration::from_secs(30);

/// A tenant writes all over the image's pages and past them; the slot's
/// next tenant must read the image, then zeroes. A reset within
/// keep-resident goes through the dirty-page scan.
fn reset_restores_the_image() -> bool {
    let mut c = PoolingConfig::default();
    c.total_instances(1)
        .total_memories(1)
        .total_tables(1)
        .max_memory_size(1 << 20)
        .memory_guard_size(64 << 10)
        .memory_keep_resident(256 << 10)
        .dirty_page_scan(true);
    let p = PoolingInstanceAllocator::new(&c).unwrap();
    let image = MemoryImage::new(&[9u8; 70_000]).unwrap();
    let layout = InstanceLayout::new().memory_with_image(MemoryType::new(4, None), image);
    let mut s = Store::new(&p, ());
    let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
    m.data_mut(&mut s).fill(0xee);
    drop(s);
    let mut s = Store::new(&p, ());
    let m = s.instantiate(&layout).unwrap().memory(&s, 0).unwrap();
    let data = m.data(&s);
    data[..70_000].iter().all(|&b| b == 9) && data[70_000..].iter().all(|&b| b == 0)
}

#[test]
fn a_child_forked_after_a_scan_resets_its_own_slots() {
    // The parent scans first: its pagemap file is open.
    assert!(reset_restores_the_image());
    // SAFETY: libc's fork, in a process whose other threads (the harness's)
    // hold no lock this child needs: the child builds its own pool, resets
    // a slot and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match std::panic::catch_unwind(reset_restores_the_image) {
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
            panic!("the child hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child's next tenant did not read the image then zeroes (status {status:#x}; exit 2: wrong bytes, 3: a panic)"
    );
}
