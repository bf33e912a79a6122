//! Making the n-th syscall on this thread fail (feature `fault-injection`).

use instance_pool::fault;

/// Safety net for the failure walks: no operation in the tests makes
/// anywhere near this many syscalls.
pub const MAX_STEPS: u64 = 100;

/// Arms the failure of the `n`-th syscall from now, runs `op`, disarms;
/// returns `op`'s result and whether the failure was reached.
pub fn with_nth_failing<R>(n: u64, op: impl FnOnce() -> R) -> (R, bool) {
    fault::reset();
    fault::fail_nth(n);
    let r = op();
    let reached = !fault::pending();
    fault::fail_nth(0);
    (r, reached)
}

/// Runs `op` with its first syscall failing; it must make one.
pub fn with_first_failing<R>(op: impl FnOnce() -> R) -> R {
    let (r, reached) = with_nth_failing(1, op);
    assert!(reached, "the operation made no syscall");
    r
}
