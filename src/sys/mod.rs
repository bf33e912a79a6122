//! Every syscall the crate makes, and the only `unsafe` that touches the
//! address space.
//!
//! Each wrapper does one thing, returns `io::Result`, and goes through
//! [`check`], the seam where tests (with the `fault-injection` feature)
//! count calls and make the n-th one fail. Without the feature the seam
//! compiles to nothing.

use std::ffi::c_void;
use std::io;
use std::os::fd::AsFd;
use std::sync::OnceLock;

use rustix::mm::{Advice, MapFlags, MprotectFlags, ProtFlags};

/// A small number for the calling thread (threads are numbered as they
/// first ask): what spreads threads over shards, counter stripes and
/// pagemap files. A thread-local without a destructor, so it answers
/// during thread exit too.
pub fn thread_number() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static ID: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ID.with(|id| *id)
}

/// How many forks separate this process from the first one that asked:
/// 0 in it, and one more in each child of a fork (a `pthread_atfork`
/// handler counts). What a process keeps per process (an open file, a
/// thread of its own) is kept with its generation and made again, or done
/// without, where the generation differs.
pub fn fork_generation() -> u64 {
    use std::sync::Once;
    use std::sync::atomic::{AtomicU64, Ordering};
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    static AT_FORK: Once = Once::new();
    extern "C" fn in_child() {
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only touches an atomic; it runs
        // in the child after a fork, where that is async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
    GENERATION.load(Ordering::Relaxed)
}

/// The host page size in bytes.
pub fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(rustix::param::page_size)
}

/// The kinds of call the fault seam knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    /// `mmap` (reservations, image mappings, remaps).
    Mmap,
    /// `mprotect`.
    Mprotect,
    /// `madvise`.
    Madvise,
    /// `munmap` (counted, never failed: it only runs in `Drop`).
    Munmap,
    /// `memfd_create` and the sealing/sizing calls on the memfd.
    Memfd,
    /// `madvise(MADV_GUARD_INSTALL)` or `madvise(MADV_GUARD_REMOVE)`.
    Guard,
    /// `process_madvise` on this process.
    ProcessMadvise,
    /// The `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap`.
    PagemapScan,
    /// Starting a thread of the crate's own (the admission timer, a pool's
    /// background revoker): only
    /// [`fault::refuse`] fails it, never [`fault::fail_nth`].
    Thread,
}

#[cfg(feature = "fault-injection")]
pub mod fault;
mod kernel;
mod mapping;
mod pagemap;
mod slab;
#[cfg(test)]
mod tests;

pub use kernel::{Features, RangeAdvice, guard_install, guard_remove, madvise_ranges};
pub use mapping::{Mmap, SealedImage, SlotPtr};
pub use pagemap::{WrittenPages, written_pages};
pub use slab::{Claim, Slab};

/// What the kernel supports: probed once per process, or, in tests, what
/// [`fault::force_features`] says an older kernel would report.
pub fn features() -> Features {
    #[cfg(feature = "fault-injection")]
    if let Some(forced) = fault::forced_features() {
        return forced;
    }
    kernel::probed()
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// Starts a thread named `name` running `f` (dropping the handle detaches
/// it); the error if the process cannot start one (a thread limit, no
/// memory).
pub fn spawn_thread(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    check(Syscall::Thread)?;
    std::thread::Builder::new().name(name.into()).spawn(f)
}

#[inline(always)]
fn check(_op: Syscall) -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    fault::check(_op)?;
    Ok(())
}

/// Makes `[ptr, ptr + len)` readable and writable. Adding access sends no
/// TLB shootdown.
///
/// # Safety
/// The range lies inside a mapping owned by the caller's slot.
///
/// # References
/// mprotect(2)
pub unsafe fn protect_read_write(ptr: SlotPtr, len: usize) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    check(Syscall::Mprotect)?;
    // SAFETY: the caller owns the range; widening access invalidates no
    // reference.
    unsafe {
        rustix::mm::mprotect(
            ptr.as_ptr().cast::<c_void>(),
            len,
            MprotectFlags::READ | MprotectFlags::WRITE,
        )?
    };
    Ok(())
}

/// Makes `[ptr, ptr + len)` inaccessible (`PROT_NONE`): every access faults.
///
/// # Safety
/// The range lies inside a mapping the caller owns, and no live Rust
/// reference points into it.
///
/// # References
/// mprotect(2)
pub unsafe fn protect_none(ptr: SlotPtr, len: usize) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    check(Syscall::Mprotect)?;
    // SAFETY: the caller owns the range and holds no reference into it.
    unsafe { rustix::mm::mprotect(ptr.as_ptr().cast::<c_void>(), len, MprotectFlags::empty())? };
    Ok(())
}

/// Throws away the pages of `[ptr, ptr + len)` (`MADV_DONTNEED`): anonymous
/// pages read as zero afterwards, pages of a private file mapping read as
/// the file again. The range stays mapped.
///
/// # Safety
/// The range lies inside a private mapping the caller owns, and no live
/// Rust reference points into it.
///
/// # References
/// madvise(2)
pub unsafe fn decommit(ptr: SlotPtr, len: usize) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    check(Syscall::Madvise)?;
    // SAFETY: the caller owns the range and holds no reference into it.
    unsafe { rustix::mm::madvise(ptr.as_ptr().cast::<c_void>(), len, Advice::LinuxDontNeed)? };
    Ok(())
}

/// Maps the first `len` bytes of `fd` copy-on-write (`MAP_PRIVATE |
/// MAP_FIXED`, read-write) over `[ptr, ptr + len)`, replacing what was there.
///
/// # Safety
/// The range lies inside a reservation the caller owns, and no live Rust
/// reference points into it.
///
/// # References
/// mmap(2)
pub unsafe fn map_file_private_fixed(ptr: SlotPtr, len: usize, fd: impl AsFd) -> io::Result<()> {
    check(Syscall::Mmap)?;
    // SAFETY: MAP_FIXED replaces only the caller's own range, which nothing
    // references.
    unsafe {
        rustix::mm::mmap(
            ptr.as_ptr().cast(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE | MapFlags::FIXED,
            fd,
            0,
        )?
    };
    Ok(())
}

/// Replaces `[ptr, ptr + len)` with fresh anonymous `PROT_NONE`,
/// `MAP_NORESERVE` memory: drops an image mapping and all its pages.
///
/// # Safety
/// The range lies inside a reservation the caller owns, and no live Rust
/// reference points into it.
///
/// # References
/// mmap(2)
pub unsafe fn map_anonymous_none_fixed(ptr: SlotPtr, len: usize) -> io::Result<()> {
    // SAFETY: the caller's promise.
    unsafe { map_anonymous_fixed(ptr, len, ProtFlags::empty()) }
}

/// Replaces `[ptr, ptr + len)` with fresh anonymous read-write,
/// `MAP_NORESERVE` memory: drops its pages and guard markers. Next to a
/// mapping of the same kind the kernel merges the two.
///
/// # Safety
/// As [`map_anonymous_none_fixed`].
///
/// # References
/// mmap(2)
pub unsafe fn map_anonymous_rw_fixed(ptr: SlotPtr, len: usize) -> io::Result<()> {
    // SAFETY: the caller's promise.
    unsafe { map_anonymous_fixed(ptr, len, ProtFlags::READ | ProtFlags::WRITE) }
}

/// # Safety
/// As [`map_anonymous_none_fixed`].
unsafe fn map_anonymous_fixed(ptr: SlotPtr, len: usize, prot: ProtFlags) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    check(Syscall::Mmap)?;
    // SAFETY: MAP_FIXED replaces only the caller's own range, which nothing
    // references.
    unsafe {
        rustix::mm::mmap_anonymous(
            ptr.as_ptr().cast(),
            len,
            prot,
            MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::NORESERVE,
        )?
    };
    Ok(())
}

/// Creates a sealed memfd of `len` bytes holding `bytes` at offset `at`,
/// zeroes elsewhere: the backing file of a copy-on-write memory image. Sealed against writes,
/// growth and shrinking, so every mapping of it sees the same bytes forever.
///
/// Only the host pages of `bytes` that are not all zero are written (one
/// `pwrite` a run of them); the others stay holes of the file, which read
/// as zero and hold no memory until a mapping faults them in: leading
/// zeroes (data placed after a stack) and zero pages inside the data cost
/// a scan, not a page and a copy each.
///
/// # References
/// memfd_create(2), fcntl(2) `F_ADD_SEALS`, pwrite(2)
pub fn sealed_memfd(at: usize, bytes: &[u8], len: usize) -> io::Result<memfd::Memfd> {
    use memfd::FileSeal;
    use std::os::unix::fs::FileExt;

    let to_io = memfd_error;
    check(Syscall::Memfd)?;
    let fd = memfd_unchecked(len)?;
    let file = fd.as_file();
    for run in nonzero_runs(bytes, page_size()) {
        file.write_all_at(&bytes[run.clone()], (at + run.start) as u64)?;
    }
    fd.add_seals(&[
        FileSeal::SealGrow,
        FileSeal::SealShrink,
        FileSeal::SealWrite,
        FileSeal::SealSeal,
    ])
    .map_err(to_io)?;
    Ok(fd)
}

/// The runs of whole `page`-byte pages of `bytes` (the last one may be
/// short) that are not all zero, adjacent pages merged, in order.
fn nonzero_runs(bytes: &[u8], page: usize) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, chunk) in bytes.chunks(page).enumerate() {
        if is_zero(chunk) {
            continue;
        }
        let (start, end) = (i * page, i * page + chunk.len());
        match runs.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => runs.push(start..end),
        }
    }
    runs
}

/// Whether every byte is zero: the first 64 (where data usually shows),
/// then the rest in one OR the compiler vectorises.
fn is_zero(bytes: &[u8]) -> bool {
    let or = |b: &[u8]| b.iter().fold(0, |acc, &x| acc | x);
    let (head, rest) = bytes.split_at(bytes.len().min(64));
    or(head) == 0 && or(rest) == 0
}

/// A sealable memfd of `len` zero bytes, outside the fault seam (for the
/// feature probes).
fn memfd_unchecked(len: usize) -> io::Result<memfd::Memfd> {
    let fd = memfd::MemfdOptions::new()
        .allow_sealing(true)
        .create("instance-pool-image")
        .map_err(memfd_error)?;
    fd.as_file().set_len(len as u64)?;
    Ok(fd)
}

fn memfd_error(e: memfd::Error) -> io::Error {
    match e {
        memfd::Error::Create(e) | memfd::Error::AddSeals(e) | memfd::Error::GetSeals(e) => e,
    }
}

/// The number of lines in `/proc/self/maps`: the kernel mappings (VMAs)
/// this process uses now.
pub fn mapping_count() -> io::Result<usize> {
    Ok(std::fs::read_to_string("/proc/self/maps")?.lines().count())
}

/// `vm.max_map_count`: the most mappings a process may have.
pub fn max_map_count() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}
