//! What this kernel offers beyond `mmap`/`mprotect`/`madvise`, found at run
//! time, and the calls that use it:
//!
//! - guard markers (`MADV_GUARD_INSTALL`/`REMOVE`, Linux 6.13 on anonymous
//!   mappings; over private file mappings since 6.15, probed apart):
//!   page-table entries that fault like `PROT_NONE`, set and cleared under
//!   the mmap lock taken for *reading*, and never splitting a mapping;
//! - `process_madvise` on the own process (any advice for itself since
//!   6.13): many ranges in one call, and since 6.16 one TLB flush for a
//!   whole `MADV_DONTNEED` batch;
//! - the `PAGEMAP_SCAN` ioctl (6.7): which pages of a range were written.
//!
//! rustix has none of the three, so these go through `libc`. Each probe is
//! run once per process on a scratch mapping of its own, outside the fault
//! seam; a call refused at run time (a seccomp filter installed later says
//! `EPERM` or `ENOSYS`) falls back to a loop of plain `madvise`.

use super::pagemap::scan;
use super::{SlotPtr, Syscall, check, last_error};
use std::ffi::{c_int, c_long, c_void};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

/// `include/uapi/asm-generic/mman-common.h`.
const MADV_GUARD_INSTALL: c_int = 102;
const MADV_GUARD_REMOVE: c_int = 103;
/// `include/uapi/linux/pidfd.h`: the calling process.
const PIDFD_SELF_THREAD_GROUP: c_int = -10001;
/// `arch/x86/entry/syscalls/syscall_64.tbl` (the same on every
/// architecture since the syscall table was unified).
const SYS_PROCESS_MADVISE: c_long = 440;
/// The most ranges one `process_madvise` takes (`UIO_MAXIOV`).
const MAX_RANGES: usize = 1024;

/// What the kernel supports, probed once per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// `MADV_GUARD_INSTALL`/`REMOVE` on anonymous and private file
    /// mappings (Linux 6.15+): what markers over mapped images need.
    pub guard_markers: bool,
    /// `MADV_GUARD_INSTALL`/`REMOVE` on anonymous mappings (Linux 6.13+):
    /// all the dense layout and stack guards need.
    pub anon_guard_markers: bool,
    /// `process_madvise` on this process with any advice.
    pub process_madvise: bool,
    /// The `PAGEMAP_SCAN` ioctl.
    pub pagemap_scan: bool,
}

/// The kernel's features (probed at the first call).
pub fn probed() -> Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    *FEATURES.get_or_init(probe)
}

fn probe() -> Features {
    let page = super::page_size();
    let none = Features {
        guard_markers: false,
        anon_guard_markers: false,
        process_madvise: false,
        pagemap_scan: false,
    };
    let Ok(scratch) = super::Mmap::read_write(2 * page) else {
        return none;
    };
    let p = scratch.ptr().as_ptr().cast::<c_void>();
    // SAFETY: our own fresh mapping; nothing references it.
    let anon_guard_markers = unsafe {
        libc::madvise(p, page, MADV_GUARD_INSTALL) == 0
            && libc::madvise(p, page, MADV_GUARD_REMOVE) == 0
    };
    // Images are private file mappings: a kernel may mark anonymous
    // memory only (6.13, 6.14).
    let guard_markers = anon_guard_markers && file_markers_work(page);
    let iov = libc::iovec {
        iov_base: p,
        iov_len: page,
    };
    // SAFETY: one valid iovec over our own scratch mapping.
    let process_madvise = unsafe {
        libc::syscall(
            SYS_PROCESS_MADVISE,
            PIDFD_SELF_THREAD_GROUP,
            &iov,
            1,
            libc::MADV_DONTNEED,
            0,
        ) == page as c_long
    };
    let pagemap_scan = scan(scratch.ptr(), 2 * page, &mut |_, _| {}, false).is_ok();
    Features {
        guard_markers,
        anon_guard_markers,
        process_madvise,
        pagemap_scan,
    }
}

/// Guard markers over a private file mapping (Linux 6.15+).
fn file_markers_work(page: usize) -> bool {
    let Ok(fd) = super::memfd_unchecked(page) else {
        return false;
    };
    // SAFETY: a fresh private mapping of our own memfd at a kernel-chosen
    // address, unmapped below; nothing references it.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            fd.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return false;
        }
        let ok = libc::madvise(p, page, MADV_GUARD_INSTALL) == 0;
        libc::munmap(p, page);
        ok
    }
}

/// Makes every page of `[ptr, ptr + len)` fault on access, like
/// `PROT_NONE`, with page-table markers; pages there are discarded first.
/// Takes the mmap lock for reading; splits no mapping.
///
/// # Safety
/// The range lies inside a private mapping the caller owns, and no live
/// Rust reference points into it.
///
/// # References
/// madvise(2) `MADV_GUARD_INSTALL`
pub unsafe fn guard_install(ptr: SlotPtr, len: usize) -> io::Result<()> {
    // SAFETY: the caller's promise.
    unsafe { guard(ptr, len, MADV_GUARD_INSTALL) }
}

/// Removes the guard markers of `[ptr, ptr + len)`: the pages read as zero
/// (or as the file) again.
///
/// # Safety
/// The range lies inside a private mapping the caller owns.
///
/// # References
/// madvise(2) `MADV_GUARD_REMOVE`
pub unsafe fn guard_remove(ptr: SlotPtr, len: usize) -> io::Result<()> {
    // SAFETY: the caller's promise; removing markers invalidates nothing.
    unsafe { guard(ptr, len, MADV_GUARD_REMOVE) }
}

/// # Safety
/// As [`guard_install`].
unsafe fn guard(ptr: SlotPtr, len: usize, advice: c_int) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    check(Syscall::Guard)?;
    // SAFETY: the caller owns the range and holds no reference into it.
    match unsafe { libc::madvise(ptr.as_ptr().cast(), len, advice) } {
        0 => Ok(()),
        _ => Err(last_error()),
    }
}

/// What [`madvise_ranges`] does to each range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAdvice {
    /// `MADV_DONTNEED`: discard the pages (anonymous ones read as zero,
    /// private file ones as the file).
    DontNeed,
    /// `MADV_GUARD_INSTALL`.
    GuardInstall,
}

/// Applies `advice` to every range, with one `process_madvise` per 1024
/// ranges (for two or more) where the kernel takes it on this process (one TLB flush for a
/// whole `MADV_DONTNEED` batch), else with one `madvise` each.
///
/// # Safety
/// Every range lies inside a private mapping the caller owns, and no live
/// Rust reference points into any of them.
///
/// # References
/// process_madvise(2), madvise(2)
pub unsafe fn madvise_ranges(
    ranges: &[(SlotPtr, usize)],
    advice: RangeAdvice,
    use_process_madvise: bool,
) -> io::Result<()> {
    let raw = match advice {
        RangeAdvice::DontNeed => libc::MADV_DONTNEED,
        RangeAdvice::GuardInstall => MADV_GUARD_INSTALL,
    };
    for chunk in ranges.chunks(MAX_RANGES) {
        // One range is one plain madvise either way.
        // SAFETY: the caller's promise, for each chunk.
        let done =
            use_process_madvise && chunk.len() > 1 && unsafe { process_madvise(chunk, raw)? };
        if !done {
            for &(ptr, len) in chunk {
                // SAFETY: the caller's promise.
                unsafe {
                    match advice {
                        RangeAdvice::DontNeed => super::decommit(ptr, len)?,
                        RangeAdvice::GuardInstall => guard_install(ptr, len)?,
                    }
                }
            }
        }
    }
    Ok(())
}

/// One `process_madvise` over `chunk`: `Ok(true)` if it covered every
/// range, `Ok(false)` if the caller must fall back to `madvise` (the call
/// is refused, or stopped part-way: both advices may be repeated).
///
/// # Safety
/// As [`madvise_ranges`].
unsafe fn process_madvise(chunk: &[(SlotPtr, usize)], advice: c_int) -> io::Result<bool> {
    let iov: Vec<libc::iovec> = chunk
        .iter()
        .filter(|&&(_, len)| len > 0)
        .map(|&(ptr, len)| libc::iovec {
            iov_base: ptr.as_ptr().cast(),
            iov_len: len,
        })
        .collect();
    if iov.is_empty() {
        return Ok(true);
    }
    let total: usize = iov.iter().map(|v| v.iov_len).sum();
    let refused = |e: &io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::EPERM | libc::ENOSYS | libc::EINVAL | libc::EBADF)
        )
    };
    match check(Syscall::ProcessMadvise) {
        Err(e) if refused(&e) => return Ok(false),
        r => r?,
    }
    // SAFETY: `iov` describes ranges the caller owns and nothing
    // references; the kernel only reads the array.
    let n = unsafe {
        libc::syscall(
            SYS_PROCESS_MADVISE,
            PIDFD_SELF_THREAD_GROUP,
            iov.as_ptr(),
            iov.len(),
            advice,
            0,
        )
    };
    if n < 0 {
        let e = last_error();
        return if refused(&e) { Ok(false) } else { Err(e) };
    }
    Ok(n as usize == total)
}
