//! Test-only seam (feature `fault-injection`): per-thread syscall counts
//! and failure injection. Counts and failures are per thread so tests
//! running side by side do not see each other.

pub use super::Features;
use super::Syscall;
use std::cell::Cell;
use std::io;

/// How many calls of each kind this thread has made since [`reset`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallCounts {
    /// `mmap` calls.
    pub mmap: u64,
    /// `mprotect` calls.
    pub mprotect: u64,
    /// `madvise` calls.
    pub madvise: u64,
    /// `munmap` calls.
    pub munmap: u64,
    /// memfd calls.
    pub memfd: u64,
    /// `madvise(MADV_GUARD_INSTALL / MADV_GUARD_REMOVE)` calls.
    pub guard: u64,
    /// `process_madvise` calls (each may cover many ranges).
    pub process_madvise: u64,
    /// `PAGEMAP_SCAN` ioctls.
    pub pagemap_scan: u64,
    /// Threads of the crate's own started (not [`fallible`](Self::fallible)).
    pub thread: u64,
}

impl SyscallCounts {
    /// Calls that can fail (everything but `munmap`).
    pub fn fallible(&self) -> u64 {
        self.mmap
            + self.mprotect
            + self.madvise
            + self.memfd
            + self.guard
            + self.process_madvise
            + self.pagemap_scan
    }
}

thread_local! {
    static COUNTS: Cell<SyscallCounts> = const { Cell::new(SyscallCounts {
        mmap: 0, mprotect: 0, madvise: 0, munmap: 0, memfd: 0,
        guard: 0, process_madvise: 0, pagemap_scan: 0, thread: 0,
    }) };
    static REFUSED: Cell<Option<Syscall>> = const { Cell::new(None) };
    static FORCED: Cell<Option<Features>> = const { Cell::new(None) };
    static FAIL_IN: Cell<u64> = const { Cell::new(0) };
    static FAIL_MORE: Cell<u64> = const { Cell::new(0) };
}

/// This thread's counts.
pub fn counts() -> SyscallCounts {
    COUNTS.with(|c| c.get())
}

/// Zero this thread's counts and cancel any pending failure.
pub fn reset() {
    COUNTS.with(|c| c.set(SyscallCounts::default()));
    REFUSED.with(|r| r.set(None));
    FORCED.with(|f| f.set(None));
    FAIL_IN.with(|f| f.set(0));
    FAIL_MORE.with(|f| f.set(0));
}

/// Make the `n`-th fallible call from now on (1-based) on this thread
/// fail with `ENOMEM`; `0` cancels.
pub fn fail_nth(n: u64) {
    FAIL_IN.with(|f| f.set(n));
    FAIL_MORE.with(|f| f.set(0));
}

/// Make `times` fallible calls in a row fail, starting with the `n`-th
/// from now on (1-based) on this thread.
pub fn fail_nth_times(n: u64, times: u64) {
    FAIL_IN.with(|f| f.set(n));
    FAIL_MORE.with(|f| f.set(times.saturating_sub(1)));
}

/// Make every call of kind `op` on this thread fail with `EPERM`, as a
/// seccomp filter refusing it would, until [`reset`]. Refused calls are
/// counted but do not count towards [`fail_nth`].
pub fn refuse(op: Syscall) {
    REFUSED.with(|r| r.set(Some(op)));
}

/// Make this thread see `features` as what the kernel supports (as an
/// older kernel would report), until [`reset`]; `None` goes back to the
/// probed truth. Pools made on this thread then take the fallbacks.
pub fn force_features(features: Option<Features>) {
    FORCED.with(|f| f.set(features));
}

pub(super) fn forced_features() -> Option<Features> {
    FORCED.with(|f| f.get())
}

/// Whether the failure set by [`fail_nth`] has not happened yet.
pub fn pending() -> bool {
    FAIL_IN.with(|f| f.get() != 0)
}

pub(super) fn check(op: Syscall) -> io::Result<()> {
    COUNTS.with(|c| {
        let mut v = c.get();
        match op {
            Syscall::Mmap => v.mmap += 1,
            Syscall::Mprotect => v.mprotect += 1,
            Syscall::Madvise => v.madvise += 1,
            Syscall::Munmap => v.munmap += 1,
            Syscall::Memfd => v.memfd += 1,
            Syscall::Guard => v.guard += 1,
            Syscall::ProcessMadvise => v.process_madvise += 1,
            Syscall::PagemapScan => v.pagemap_scan += 1,
            Syscall::Thread => v.thread += 1,
        }
        c.set(v);
    });
    if REFUSED.with(|r| r.get()) == Some(op) {
        return Err(io::Error::from_raw_os_error(
            rustix::io::Errno::PERM.raw_os_error(),
        ));
    }
    if op == Syscall::Munmap || op == Syscall::Thread {
        return Ok(());
    }
    FAIL_IN.with(|f| match f.get() {
        0 => Ok(()),
        1 => {
            let more = FAIL_MORE.with(|m| m.replace(m.get().saturating_sub(1)));
            f.set(if more > 0 { 1 } else { 0 });
            Err(io::Error::from_raw_os_error(
                rustix::io::Errno::NOMEM.raw_os_error(),
            ))
        }
        n => {
            f.set(n - 1);
            Ok(())
        }
    })
}
