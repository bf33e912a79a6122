//! A case run in a forked child: the fork, the child's exit code, and a
//! watchdog in the parent (a liveness bound, not a timing). The fork tests
//! are binaries of one test each, so that at the fork the only other
//! threads are the harness's and the pool's own.

use std::time::{Duration, Instant};

/// How long a child may take before it counts as hung.
const WATCHDOG: Duration = Duration::from_secs(30);

/// Forks: the child runs `case`, whose return is its exit code (3 if it
/// panics), and leaves with `_exit`. The parent returns the child's wait
/// status, or `None` if it hung (it is then killed).
pub fn in_child(case: impl FnOnce() -> i32) -> Option<i32> {
    // SAFETY: libc's fork, in a test binary whose other threads (the
    // harness's, a pool's) hold no lock the child's case needs: each case
    // says why; the child leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(case)).unwrap_or(3);
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
            return Some(status);
        }
        assert_eq!(r, 0, "waitpid failed");
        if Instant::now() > deadline {
            // SAFETY: our own child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a wait status is a clean exit with `code`.
pub fn exited(status: i32, code: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == code
}
