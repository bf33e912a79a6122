//! [`Memory`]: a handle to a linear memory inside a [`Store`].

use crate::layout::MemoryPlan;
use crate::store::Store;
use crate::sys::{self, Mmap, SlotPtr};
use crate::{MemoryImage, Resource, Result, WASM_PAGE_SIZE};
use std::io;
use std::sync::Arc;

/// A linear memory of an instance: a plain index into its store, `Copy`.
///
/// Using it with another store panics. Sizes are in pages of
/// [`WASM_PAGE_SIZE`] bytes unless a method says bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Memory {
    pub(crate) store: u64,
    pub(crate) index: u32,
}

/// A store's record of one memory.
#[derive(Debug)]
pub(crate) struct MemoryEntry {
    /// Where byte 0 is; never moves.
    pub base: SlotPtr,
    /// The memory's size in bytes (a multiple of the wasm page).
    pub size: usize,
    /// Bytes from `base` the memory can reach without moving.
    pub capacity: usize,
    /// `PROT_NONE` bytes after `capacity`.
    pub guard: usize,
    /// The maximum passed to the limiter, in bytes.
    pub maximum: usize,
    /// `[0, accessible)` is read-write; equal to `size` once prepared.
    pub accessible: usize,
    /// What instantiation made of it (minimum and image), for `reset`.
    pub plan: MemoryPlan,
    pub owner: MemoryOwner,
}

#[derive(Debug)]
pub(crate) enum MemoryOwner {
    /// A slot of a pool, with the image mapped in it.
    Pool {
        index: u32,
        image: Option<Arc<MemoryImage>>,
        needs_scrub: bool,
    },
    /// The memory's own reservation.
    OnDemand(#[allow(dead_code, reason = "owns the reservation until dropped")] Mmap),
}

impl MemoryEntry {
    /// Sets `[0, accessible)` to `[0, size)` and the size to `size`: adding
    /// access is one `mprotect` without a TLB shootdown, removing it one with.
    pub fn resize(&mut self, size: usize) -> io::Result<()> {
        use std::cmp::Ordering::*;
        debug_assert!(size <= self.capacity);
        match self.accessible.cmp(&size) {
            // SAFETY: `[accessible, size)` lies inside this memory's own slot
            // or reservation (size <= capacity).
            Less => unsafe {
                sys::protect_read_write(self.base.add(self.accessible), size - self.accessible)?
            },
            // SAFETY: as above; no reference reaches past `size`, since
            // shrinking happens only before a tenant sees the memory.
            Greater => unsafe { sys::protect_none(self.base.add(size), self.accessible - size)? },
            Equal => {}
        }
        self.accessible = size;
        self.size = size;
        Ok(())
    }

    /// Back to what instantiation left, in place: `[0, minimum)` holds the
    /// image then zeroes, and only that much is accessible. The first
    /// `keep_resident` bytes are restored with writes and stay resident;
    /// the rest is discarded with `madvise` (which brings a mapped image's
    /// pages back).
    pub fn reset(&mut self, keep_resident: usize) -> io::Result<()> {
        let mapped = self.plan.image.clone().filter(|i| i.is_mapped());
        let keep = keep_resident.min(self.accessible);
        // SAFETY: `[0, accessible)` is read-write and ours; the `&mut self`
        // of the store's entry means no slice into it is alive.
        unsafe { restore_contents(self.base, 0, keep, mapped.as_deref()) };
        if self.accessible > keep {
            // SAFETY: as above.
            let discarded = unsafe { sys::decommit(self.base.add(keep), self.accessible - keep) };
            if discarded.is_err() {
                // SAFETY: as above; writing needs no syscall.
                unsafe { restore_contents(self.base, keep, self.accessible, mapped.as_deref()) };
            }
        }
        self.resize(self.plan.ty.min_bytes())?;
        if let Some(img) = self.plan.image.as_ref().filter(|i| !i.is_mapped()) {
            // SAFETY: `[0, minimum)` is read-write and the image fits in it.
            unsafe {
                std::ptr::copy_nonoverlapping(img.bytes().as_ptr(), self.base.as_ptr(), img.len())
            };
        }
        Ok(())
    }
}

/// Puts back what a fresh slot holds in `[from, to)`: the image's bytes
/// where it covers, zeroes after. No syscall; writes only.
///
/// # Safety
/// `[base + from, base + to)` is read-write and no reference points into it.
pub(crate) unsafe fn restore_contents(
    base: SlotPtr,
    from: usize,
    to: usize,
    image: Option<&MemoryImage>,
) {
    if from >= to {
        return;
    }
    let src = image.map_or(&[][..], |i| i.bytes());
    let copy_end = src.len().clamp(from, to);
    // SAFETY: the caller gives us `[from, to)` of writable, unreferenced
    // memory; `src` is a separate mapping.
    unsafe {
        if copy_end > from {
            std::ptr::copy_nonoverlapping(
                src[from..].as_ptr(),
                base.as_ptr().add(from),
                copy_end - from,
            );
        }
        std::ptr::write_bytes(base.as_ptr().add(copy_end), 0, to - copy_end);
    }
}

impl Memory {
    /// The size in pages.
    pub fn size<T>(&self, store: &Store<T>) -> u64 {
        (store.memory(*self).size / WASM_PAGE_SIZE) as u64
    }

    /// The size in bytes.
    pub fn data_size<T>(&self, store: &Store<T>) -> usize {
        store.memory(*self).size
    }

    /// Grows by `delta_pages`, returning the old size in pages.
    ///
    /// Growing by 0 returns the size without asking the limiter. Otherwise
    /// the limiter is asked `memory_growing(current, desired, maximum)` in
    /// bytes; see [`ResourceLimiter`](crate::ResourceLimiter) for the rest.
    pub fn grow<T>(&self, store: &mut Store<T>, delta_pages: u64) -> Result<u64> {
        crate::store::block_on(self.grow_inner(store, delta_pages))
    }

    /// [`grow`](Self::grow), asking an async limiter without blocking.
    pub async fn grow_async<T>(&self, store: &mut Store<T>, delta_pages: u64) -> Result<u64> {
        self.grow_inner(store, delta_pages).await
    }

    async fn grow_inner<T>(self, store: &mut Store<T>, delta_pages: u64) -> Result<u64> {
        let (mut limiter, inner, backend) = store.parts(self.store);
        let entry = &mut inner.memories[self.index as usize];
        let pages = (entry.size / WASM_PAGE_SIZE) as u64;
        if delta_pages == 0 {
            return Ok(pages);
        }
        // Saturate to the largest page-aligned size when the sum overflows:
        // the limiter still sees a real request, and the maximum refuses it.
        let exact = pages
            .checked_add(delta_pages)
            .and_then(|p| p.checked_mul(WASM_PAGE_SIZE as u64))
            .and_then(|b| usize::try_from(b).ok());
        let desired = exact.unwrap_or(usize::MAX & !(WASM_PAGE_SIZE - 1));
        let (current, maximum) = (entry.size, entry.maximum);
        crate::store::grow_protocol(
            &mut limiter,
            backend,
            Resource::Memory,
            current,
            desired,
            Some(maximum),
            exact.is_none(),
            || entry.resize(desired),
        )
        .await?;
        Ok(pages)
    }

    /// The memory's bytes.
    pub fn data<'a, T>(&self, store: &'a Store<T>) -> &'a [u8] {
        let e = store.memory(*self);
        // SAFETY: `[base, base + size)` is read-write and belongs to this
        // store's memory; it only changes through `&mut Store`, which the
        // shared borrow excludes.
        unsafe { std::slice::from_raw_parts(e.base.as_ptr(), e.size) }
    }

    /// The memory's bytes, writable.
    pub fn data_mut<'a, T>(&self, store: &'a mut Store<T>) -> &'a mut [u8] {
        let e = store.memory(*self);
        // SAFETY: as in `data`; the exclusive borrow of the store makes this
        // the only reference.
        unsafe { std::slice::from_raw_parts_mut(e.base.as_ptr(), e.size) }
    }

    /// Byte 0 of the memory. It never moves while the store lives; bytes
    /// past [`data_size`](Self::data_size) fault.
    pub fn data_ptr<T>(&self, store: &Store<T>) -> *mut u8 {
        store.memory(*self).base.as_ptr()
    }

    /// Bytes from the base the memory can reach without moving (a pool
    /// slot's capacity), guards excluded. Pooled memories never move.
    pub fn reserved_size<T>(&self, store: &Store<T>) -> usize {
        store.memory(*self).capacity
    }

    /// Bytes after [`reserved_size`](Self::reserved_size) that always fault.
    pub fn guard_size<T>(&self, store: &Store<T>) -> usize {
        store.memory(*self).guard
    }
}
