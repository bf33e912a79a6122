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
