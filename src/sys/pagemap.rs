//! `PAGEMAP_SCAN` (Linux 6.7): which pages of a range a tenant wrote, so
//! that a reset writes back only those.

use super::{SlotPtr, Syscall, check, last_error};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `include/uapi/linux/fs.h`: page categories of `PAGEMAP_SCAN`.
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
const PAGE_IS_PFNZERO: u64 = 1 << 5;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 =
    (3 << 30) | ((std::mem::size_of::<PmScanArg>() as u64) << 16) | ((b'f' as u64) << 8) | 16;

/// The pages of `[ptr, ptr + len)` a tenant wrote: anonymous pages that are
/// present or swapped out and not the shared zero page. Pages of a private
/// file mapping that were only read (still the file's) are not written;
/// a page written and then swapped out is. `out(offset, len)` gets each
/// run, offsets from `ptr`, in order.
///
/// # References
/// Documentation/admin-guide/mm/pagemap.rst, `PAGEMAP_SCAN`
pub fn written_pages(ptr: SlotPtr, len: usize, out: &mut WrittenPages) -> io::Result<()> {
    out.runs.clear();
    if len == 0 {
        return Ok(());
    }
    check(Syscall::PagemapScan)?;
    let runs = &mut out.runs;
    scan(ptr, len, &mut |off, n| runs.push((off, n)), true)
}

/// A reusable buffer of written runs `(offset, len)`.
#[derive(Debug, Default)]
pub struct WrittenPages {
    /// The runs found by the last [`written_pages`].
    pub runs: Vec<(usize, usize)>,
}

/// `/proc/self/pagemap`, opened once per process and stripe, without a
/// lock or a syscall on the way (every reset asks for it). Threads use
/// one of a few files by their number ([`super::thread_number`]): each
/// `ioctl` takes a reference on its file, and one file shared by every
/// core makes that count a cache line they all write. A forked child must
/// not scan through its parent's files, which describe the parent's
/// pages: [`super::fork_generation`] moves on in the child, which then
/// opens its own (the parent's stay open, leaked, as do each generation's:
/// at most [`STRIPES`] files a process).
fn pagemap() -> io::Result<&'static File> {
    use crossbeam_utils::atomic::AtomicCell;

    struct Opened {
        generation: u64,
        file: File,
    }
    static FILES: [AtomicCell<Option<&'static Opened>>; STRIPES] =
        [const { AtomicCell::new(None) }; STRIPES];
    let stripe = &FILES[super::thread_number() % STRIPES];
    let generation = super::fork_generation();
    if let Some(opened) = stripe.load()
        && opened.generation == generation
    {
        return Ok(&opened.file);
    }
    let file = File::open("/proc/self/pagemap")?;
    let opened: &'static Opened = Box::leak(Box::new(Opened { generation, file }));
    // A thread racing us publishes its own: both are this process's file,
    // so either serves (the other stays open, leaked, once).
    stripe.store(Some(opened));
    Ok(&opened.file)
}

/// Pagemap files a process opens (one per stripe of threads).
const STRIPES: usize = 8;

pub(super) fn scan(
    ptr: SlotPtr,
    len: usize,
    out: &mut dyn FnMut(usize, usize),
    written_only: bool,
) -> io::Result<()> {
    let file = pagemap()?;
    let base = ptr.as_ptr() as u64;
    let end = base + len as u64;
    let mut regions = [PageRegion::default(); 32];
    let mut start = base;
    while start < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            // Written: (present or swapped) and neither file nor zero page.
            // Swapped pages need the "any of" test, one more per page-table
            // entry: about 8% of a 1 MiB scan with a page table (C, this
            // machine). Wasmtime's scan requires `PRESENT` instead and so
            // skips written pages that were swapped out; a reset here must
            // find them, or the next tenant reads them back in.
            category_inverted: PAGE_IS_FILE | PAGE_IS_PFNZERO,
            category_mask: if written_only {
                PAGE_IS_FILE | PAGE_IS_PFNZERO
            } else {
                0
            },
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            ..PmScanArg::default()
        };
        // SAFETY: `arg` and `regions` are valid for the kernel to read and
        // write for the call; the scanned range is only read.
        let n = unsafe { libc::ioctl(file.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) };
        if n < 0 {
            return Err(last_error());
        }
        for r in &regions[..n as usize] {
            out((r.start - base) as usize, (r.end - r.start) as usize);
        }
        if arg.walk_end <= start {
            return Err(io::Error::other("PAGEMAP_SCAN made no progress"));
        }
        start = arg.walk_end;
    }
    Ok(())
}
