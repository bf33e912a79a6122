//! Owned mappings ([`Mmap`]), addresses in them ([`SlotPtr`]), and the
//! sealed file behind a memory image ([`SealedImage`]).

use super::{Syscall, check, sealed_memfd};
use rustix::mm::{MapFlags, ProtFlags};
use std::io;
use std::os::fd::AsFd;
use std::ptr::NonNull;

/// A pointer into a mapping owned by the pool or by a store.
///
/// It is only an address; whoever holds the slot it points into decides
/// who may touch the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotPtr(NonNull<u8>);

// SAFETY: a `SlotPtr` is a plain address into a mapping that outlives every
// handle to it (the pool's slab, or a store's own reservation). Access to the
// bytes is governed by slot ownership (one store holds a slot at a time) and
// by Rust borrows of that store, not by the thread the address is on.
unsafe impl Send for SlotPtr {}
// SAFETY: as above; sharing the address shares no access by itself.
unsafe impl Sync for SlotPtr {}

impl SlotPtr {
    /// A non-null address aligned for any element type a slot holds, for
    /// mappings of length 0 (never dereferenced).
    fn dangling() -> SlotPtr {
        SlotPtr(NonNull::<u64>::dangling().cast())
    }

    /// The address.
    pub fn as_ptr(self) -> *mut u8 {
        self.0.as_ptr()
    }

    /// The address `offset` bytes before.
    ///
    /// # Safety
    /// `offset` stays within the mapping this pointer points into.
    pub unsafe fn sub(self, offset: usize) -> SlotPtr {
        // SAFETY: the caller keeps the result inside the same mapping, so it
        // cannot wrap or become null.
        SlotPtr(unsafe { NonNull::new_unchecked(self.0.as_ptr().sub(offset)) })
    }

    /// The address `offset` bytes further on.
    ///
    /// # Safety
    /// `offset` stays within the mapping this pointer points into.
    pub unsafe fn add(self, offset: usize) -> SlotPtr {
        // SAFETY: the caller keeps the result inside the same mapping, so it
        // cannot wrap or become null.
        SlotPtr(unsafe { NonNull::new_unchecked(self.0.as_ptr().add(offset)) })
    }
}

/// An owned mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mmap {
    ptr: SlotPtr,
    pub(super) len: usize,
}

impl Mmap {
    /// Reserves `len` bytes of address space: `PROT_NONE`, `MAP_NORESERVE`,
    /// so it costs neither memory nor commit charge until made accessible.
    ///
    /// # References
    /// mmap(2)
    pub fn reserve(len: usize) -> io::Result<Mmap> {
        Self::anonymous(len, ProtFlags::empty())
    }

    /// Maps `len` bytes read-write, `MAP_NORESERVE`: pages are allocated
    /// (zeroed) on first touch.
    pub fn read_write(len: usize) -> io::Result<Mmap> {
        Self::anonymous(len, ProtFlags::READ | ProtFlags::WRITE)
    }

    /// A mapping of no bytes: no syscall, a pointer aligned for anything.
    fn empty() -> Mmap {
        Mmap {
            ptr: SlotPtr::dangling(),
            len: 0,
        }
    }

    fn anonymous(len: usize, prot: ProtFlags) -> io::Result<Mmap> {
        if len == 0 {
            return Ok(Mmap::empty());
        }
        check(Syscall::Mmap)?;
        // SAFETY: a fresh mapping at an address the kernel chooses cannot
        // alias any existing Rust object.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                prot,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )?
        };
        Ok(Mmap {
            ptr: SlotPtr(NonNull::new(ptr.cast()).expect("mmap returned null")),
            len,
        })
    }

    /// Maps the first `len` bytes of `fd` read-only and shared: a view of
    /// a memory image's contents that costs no copy.
    pub fn file_read_only(fd: impl AsFd, len: usize) -> io::Result<Mmap> {
        if len == 0 {
            return Ok(Mmap::empty());
        }
        check(Syscall::Mmap)?;
        // SAFETY: a fresh mapping at a kernel-chosen address aliases nothing;
        // the file is sealed against writes, so the view never changes.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        Ok(Mmap {
            ptr: SlotPtr(NonNull::new(ptr.cast()).expect("mmap returned null")),
            len,
        })
    }

    /// The start of the mapping.
    pub fn ptr(&self) -> SlotPtr {
        self.ptr
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        let _ = check(Syscall::Munmap);
        // SAFETY: this `Mmap` owns the range and every handle into it
        // (slots, stores, image views) is gone or keeps the owner alive.
        let r = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
        debug_assert!(r.is_ok(), "munmap failed: {r:?}");
    }
}

/// A memory image's backing file: a memfd sealed against writes, growth and
/// shrinking, and a read-only view of it. Its bytes never change, so reading
/// them needs no promise from the caller.
#[derive(Debug)]
pub struct SealedImage {
    file: memfd::Memfd,
    view: Mmap,
}

impl SealedImage {
    /// `bytes` at offset `at` of a new sealed memfd of `len` bytes, zeroes
    /// elsewhere (`at + bytes.len() <= len`).
    ///
    /// # References
    /// memfd_create(2), fcntl(2) `F_ADD_SEALS`, mmap(2)
    pub fn new(at: usize, bytes: &[u8], len: usize) -> io::Result<SealedImage> {
        let file = sealed_memfd(at, bytes, len)?;
        let view = Mmap::file_read_only(file.as_file(), len)?;
        Ok(SealedImage { file, view })
    }

    /// The file's bytes, padding included.
    pub fn bytes(&self) -> &[u8] {
        if self.view.len == 0 {
            return &[];
        }
        // SAFETY: the view is a read-only mapping of a file sealed against
        // writes and shrinking: readable over its whole length and never
        // written while it lives.
        unsafe { std::slice::from_raw_parts(self.view.ptr.as_ptr(), self.view.len) }
    }

    /// The file's length in bytes.
    pub fn len(&self) -> usize {
        self.view.len
    }

    /// The file, to map.
    pub fn file(&self) -> impl AsFd + '_ {
        self.file.as_file()
    }
}
