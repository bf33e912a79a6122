//! The same request written by hand with `rustix::mm`: the syscall floor
//! the allocators are measured against.

use rustix::mm::{self, Advice, MapFlags, MprotectFlags, ProtFlags};
use std::ptr;

const PAGE: usize = instance_pool::WASM_PAGE_SIZE;
/// 160 pages plus a 32 MiB guard, like the on-demand allocator's
/// reservation without the leading guard.
const RESERVATION: usize = 160 * PAGE + (32 << 20);
const RW: MprotectFlags = MprotectFlags::READ.union(MprotectFlags::WRITE);

fn reserve() -> *mut u8 {
    // SAFETY: a fresh mapping at a kernel-chosen address aliases nothing.
    let p = unsafe {
        mm::mmap_anonymous(
            ptr::null_mut(),
            RESERVATION,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE,
        )
    };
    p.expect("mmap").cast()
}

/// mmap a reservation, mprotect the first page, copy the image in,
/// mprotect the grown page, write, munmap. The table is a heap vector.
pub fn cycle_mmap(image: &[u8]) {
    let base = reserve();
    // SAFETY: `base` is our own reservation of RESERVATION bytes; every
    // range below is inside it and made read-write before it is
    // touched; nothing references it after the munmap.
    unsafe {
        mm::mprotect(base.cast(), PAGE, RW).expect("mprotect");
        ptr::copy_nonoverlapping(image.as_ptr(), base, image.len());
        mm::mprotect(base.add(PAGE).cast(), PAGE, RW).expect("mprotect");
        base.add(70_000).write_volatile(1);
        let mut table = vec![0usize; 10];
        table[3] = 42;
        std::hint::black_box(&table);
        mm::munmap(base.cast(), RESERVATION).expect("munmap");
    }
}

/// One reused slot: `[0, 1 page)` stays read-write and holds the
/// image between tenants; a request mprotects the grown page, writes,
/// and the reset memsets the first page back to the image and zeroes,
/// `madvise(DONTNEED)`s the grown page and makes it `PROT_NONE` again.
pub struct Slot {
    base: *mut u8,
    image: Vec<u8>,
    table: [usize; 100],
}

impl Slot {
    pub fn new(image: &[u8]) -> Slot {
        let base = reserve();
        // SAFETY: the first page of our own reservation; nothing else
        // references it.
        unsafe {
            mm::mprotect(base.cast(), PAGE, RW).expect("mprotect");
            ptr::copy_nonoverlapping(image.as_ptr(), base, image.len());
        }
        Slot {
            base,
            image: image.to_vec(),
            table: [0; 100],
        }
    }

    pub fn cycle(&mut self) {
        let grown = self.base.wrapping_add(PAGE);
        // SAFETY: `[0, 2 pages)` of our own reservation; the grown page
        // is read-write before it is written and no reference to it
        // outlives the madvise/mprotect that take it back.
        unsafe {
            mm::mprotect(grown.cast(), PAGE, RW).expect("mprotect");
            self.base.add(70_000).write_volatile(1);
            self.table[3] = 42;
            std::hint::black_box(&self.table);
            // Reset: memset what stays resident, discard the rest.
            ptr::copy_nonoverlapping(self.image.as_ptr(), self.base, self.image.len());
            ptr::write_bytes(self.base.add(self.image.len()), 0, PAGE - self.image.len());
            self.table[..10].fill(0);
            mm::madvise(grown.cast(), PAGE, Advice::LinuxDontNeed).expect("madvise");
            mm::mprotect(grown.cast(), PAGE, MprotectFlags::empty()).expect("mprotect");
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // SAFETY: our own reservation; nothing references it any more.
        unsafe { mm::munmap(self.base.cast(), RESERVATION).expect("munmap") };
    }
}

/// `MADV_GUARD_INSTALL` / `MADV_GUARD_REMOVE` (Linux 6.13+).
const MADV_GUARD_INSTALL: libc::c_int = 102;
const MADV_GUARD_REMOVE: libc::c_int = 103;
/// `process_madvise` on this process.
const SYS_PROCESS_MADVISE: libc::c_long = 440;
const PIDFD_SELF: libc::c_int = -10001;

/// The guard-marker design written by hand: `slots` reused slots whose
/// first two pages are read-write; the grown page carries a marker
/// between requests. A request removes the marker, writes, restores the
/// first page's written bytes (the image byte range is untouched, as a
/// dirty-page reset would find), and the grown page is revoked: with one
/// `MADV_GUARD_INSTALL` per request when `slots` is 1, else every `slots`
/// requests with one `process_madvise(DONTNEED)` and one
/// `process_madvise(GUARD_INSTALL)` over all of them.
pub struct MarkedSlots {
    bases: Vec<*mut u8>,
    next: usize,
    table: [usize; 100],
}

impl MarkedSlots {
    pub fn new(slots: usize) -> MarkedSlots {
        let bases = (0..slots)
            .map(|_| {
                let base = reserve();
                // SAFETY: our own reservation; the first two pages are made
                // read-write, the second then marked.
                unsafe {
                    mm::mprotect(base.cast(), 2 * PAGE, RW).expect("mprotect");
                    assert_eq!(
                        libc::madvise(base.add(PAGE).cast(), PAGE, MADV_GUARD_INSTALL),
                        0
                    );
                }
                base
            })
            .collect();
        MarkedSlots {
            bases,
            next: 0,
            table: [0; 100],
        }
    }

    pub fn cycle(&mut self) {
        let base = self.bases[self.next];
        // SAFETY: pages of our own reservations; the grown page's marker is
        // removed before it is written and installed after.
        unsafe {
            assert_eq!(
                libc::madvise(base.add(PAGE).cast(), PAGE, MADV_GUARD_REMOVE),
                0
            );
            base.add(70_000).write_volatile(1);
            self.table[3] = 42;
            std::hint::black_box(&self.table);
            self.table[..10].fill(0);
        }
        self.next += 1;
        if self.next < self.bases.len() {
            return;
        }
        self.next = 0;
        let iov: Vec<libc::iovec> = self
            .bases
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.wrapping_add(PAGE).cast(),
                iov_len: PAGE,
            })
            .collect();
        // SAFETY: the iovecs name the grown pages of our own slots.
        unsafe {
            if iov.len() == 1 {
                assert_eq!(libc::madvise(iov[0].iov_base, PAGE, MADV_GUARD_INSTALL), 0);
                return;
            }
            for advice in [libc::MADV_DONTNEED, MADV_GUARD_INSTALL] {
                let n = libc::syscall(
                    SYS_PROCESS_MADVISE,
                    PIDFD_SELF,
                    iov.as_ptr(),
                    iov.len(),
                    advice,
                    0,
                );
                assert_eq!(n as usize, iov.len() * PAGE);
            }
        }
    }
}

impl Drop for MarkedSlots {
    fn drop(&mut self) {
        for &base in &self.bases {
            // SAFETY: our own reservation; nothing references it any more.
            unsafe { mm::munmap(base.cast(), RESERVATION).expect("munmap") };
        }
    }
}

/// `include/uapi/linux/fs.h`: `struct page_region`, `struct pm_scan_arg`,
/// `PAGEMAP_SCAN` and the page categories a written page is told by. The
/// crate has the same (`sys::pagemap`, private); a floor makes its own
/// syscalls and uses none of the crate's code, so it keeps its own copy.
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
const PAGEMAP_SCAN: u64 =
    (3 << 30) | ((std::mem::size_of::<PmScanArg>() as u64) << 16) | ((b'f' as u64) << 8) | 16;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
const PAGE_IS_PFNZERO: u64 = 1 << 5;

/// The bounds-checked design written by hand (the floor of
/// `pool_bounds_checked`): one reused slot read-write over its first two
/// pages for good, nothing ever protected or discarded. A request writes
/// in the second page, and the reset asks `PAGEMAP_SCAN` (one call, its own
/// `/proc/self/pagemap`) which pages of the two were written and zeroes
/// those. No image: the best case (the crate leaves an image page nobody
/// wrote alone too).
pub struct ScannedSlot {
    base: *mut u8,
    pagemap: std::fs::File,
    table: [usize; 100],
}

impl ScannedSlot {
    pub fn new() -> ScannedSlot {
        let base = reserve();
        // SAFETY: the first two pages of our own reservation.
        unsafe { mm::mprotect(base.cast(), 2 * PAGE, RW).expect("mprotect") };
        ScannedSlot {
            base,
            pagemap: std::fs::File::open("/proc/self/pagemap").expect("pagemap"),
            table: [0; 100],
        }
    }

    pub fn cycle(&mut self) {
        use std::os::fd::AsRawFd;
        let mut regions = [PageRegion::default(); 32];
        // SAFETY: the first two pages of our own reservation are read-write
        // for good; the scan only reads them, and the kernel writes only
        // `arg` and `regions`, ours for the call.
        unsafe {
            self.base.add(70_000).write_volatile(1);
            self.table[3] = 42;
            std::hint::black_box(&self.table);
            self.table[..10].fill(0);
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                start: self.base as u64,
                end: self.base as u64 + 2 * PAGE as u64,
                vec: regions.as_mut_ptr() as u64,
                vec_len: regions.len() as u64,
                category_inverted: PAGE_IS_FILE | PAGE_IS_PFNZERO,
                category_mask: PAGE_IS_FILE | PAGE_IS_PFNZERO,
                category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                ..PmScanArg::default()
            };
            let n = libc::ioctl(self.pagemap.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg);
            assert!(n >= 0, "PAGEMAP_SCAN");
            for r in &regions[..n as usize] {
                ptr::write_bytes(r.start as *mut u8, 0, (r.end - r.start) as usize);
            }
        }
    }
}

impl Drop for ScannedSlot {
    fn drop(&mut self) {
        // SAFETY: our own reservation; nothing references it any more.
        unsafe { mm::munmap(self.base.cast(), RESERVATION).expect("munmap") };
    }
}
