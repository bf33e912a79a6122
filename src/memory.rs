//! [`Memory`]: a handle to a linear memory inside a [`Store`].

use crate::store::{Instance, Store, block_on};
use crate::{Result, WASM_PAGE_SIZE};

/// A linear memory of an instance: a plain index into its store, `Copy`.
///
/// Using it with another store panics. Sizes are in pages of
/// [`WASM_PAGE_SIZE`] bytes unless a method says bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Memory {
    store: u64,
    index: u32,
}

impl Instance {
    /// The instance's `idx`-th memory, if it has one.
    pub fn memory<T>(&self, store: &Store<T>, idx: usize) -> Option<Memory> {
        let index = store.instance_memory(*self, idx)?;
        Some(Memory {
            store: self.store,
            index,
        })
    }
}

impl Memory {
    /// The size in pages.
    pub fn size<T>(&self, store: &Store<T>) -> u64 {
        (self.data_size(store) / WASM_PAGE_SIZE) as u64
    }

    /// The size in bytes.
    pub fn data_size<T>(&self, store: &Store<T>) -> usize {
        store.memory(self.store, self.index).slot.size()
    }

    /// Grows by `delta_pages`, returning the old size in pages.
    ///
    /// Growing by 0 returns the size without asking the limiter. Otherwise
    /// the limiter is asked `memory_growing(current, desired, maximum)` in
    /// bytes; see [`ResourceLimiter`](crate::ResourceLimiter) for the rest.
    pub fn grow<T>(&self, store: &mut Store<T>, delta_pages: u64) -> Result<u64> {
        block_on(store.grow_memory(self.store, self.index, delta_pages))
    }

    /// [`grow`](Self::grow), asking an async limiter without blocking.
    pub async fn grow_async<T>(&self, store: &mut Store<T>, delta_pages: u64) -> Result<u64> {
        store.grow_memory(self.store, self.index, delta_pages).await
    }

    /// The memory's bytes.
    pub fn data<'a, T>(&self, store: &'a Store<T>) -> &'a [u8] {
        store.memory(self.store, self.index).slot.bytes()
    }

    /// The memory's bytes, writable.
    pub fn data_mut<'a, T>(&self, store: &'a mut Store<T>) -> &'a mut [u8] {
        store.memory_mut(self.store, self.index).slot.bytes_mut()
    }

    /// Byte 0 of the memory. It never moves while the store lives; bytes
    /// from [`data_size`](Self::data_size) up to
    /// [`reserved_size`](Self::reserved_size) `+`
    /// [`guard_size`](Self::guard_size) fault. Past that lies the next
    /// slot: with a pool's `memory_guard_size(0)` the byte at
    /// `reserved_size` is the neighbouring tenant's byte 0, so only an
    /// engine that bounds-checks every access may use a guard of 0.
    pub fn data_ptr<T>(&self, store: &Store<T>) -> *mut u8 {
        store.memory(self.store, self.index).slot.base().as_ptr()
    }

    /// Bytes from the base the memory can reach without moving (a pool
    /// slot's capacity), guards excluded. Pooled memories never move.
    pub fn reserved_size<T>(&self, store: &Store<T>) -> usize {
        store.memory(self.store, self.index).slot.capacity()
    }

    /// Bytes after [`reserved_size`](Self::reserved_size) that always fault.
    pub fn guard_size<T>(&self, store: &Store<T>) -> usize {
        store.memory(self.store, self.index).slot.guard()
    }
}
