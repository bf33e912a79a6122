//! [`Table`]: a handle to a table inside a [`Store`].

use crate::store::Store;
use crate::sys::SlotPtr;
use crate::{Error, Resource, Result};
use std::io;

/// A table of an instance: a plain index into its store, `Copy`. Elements
/// are `usize` values (0 is null); sizes are in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Table {
    pub(crate) store: u64,
    pub(crate) index: u32,
}

/// A store's record of one table.
#[derive(Debug)]
pub(crate) struct TableEntry {
    pub size: u32,
    /// The size instantiation gave it, for `reset`.
    pub minimum: u32,
    /// The maximum passed to the limiter (`None`: unbounded).
    pub maximum: Option<u32>,
    pub owner: TableOwner,
}

#[derive(Debug)]
pub(crate) enum TableOwner {
    /// A pool slot: elements past `size` are always zero.
    Pool {
        index: u32,
        base: SlotPtr,
    },
    OnDemand(Vec<usize>),
}

impl TableEntry {
    pub fn elements(&self) -> &[usize] {
        match &self.owner {
            // SAFETY: the slot holds at least `size` elements (size <= the
            // slot's elements), aligned, owned by this store.
            TableOwner::Pool { base, .. } => unsafe {
                std::slice::from_raw_parts(base.as_ptr().cast(), self.size as usize)
            },
            TableOwner::OnDemand(v) => v,
        }
    }

    pub fn elements_mut(&mut self) -> &mut [usize] {
        match &mut self.owner {
            // SAFETY: as in `elements`; `&mut self` makes it exclusive.
            TableOwner::Pool { base, .. } => unsafe {
                std::slice::from_raw_parts_mut(base.as_ptr().cast(), self.size as usize)
            },
            TableOwner::OnDemand(v) => v,
        }
    }

    /// Back to what instantiation left: `minimum` elements, all zero.
    pub fn reset(&mut self, keep_resident: usize) {
        match &mut self.owner {
            TableOwner::Pool { base, .. } => {
                // SAFETY: the slot is this entry's and `&mut self` excludes
                // any slice into it.
                unsafe { crate::allocator::zero_table_elements(*base, self.size, keep_resident) };
            }
            TableOwner::OnDemand(v) => {
                v.truncate(self.minimum as usize);
                v.fill(0);
            }
        }
        self.size = self.minimum;
    }

    /// Grows to `size` elements, the new ones set to `init`.
    pub fn resize(&mut self, size: u32, init: usize) -> io::Result<()> {
        let old = self.size;
        match &mut self.owner {
            TableOwner::Pool { .. } => {
                self.size = size;
                // Pool slots are zero past the size already.
                if init != 0 {
                    self.elements_mut()[old as usize..].fill(init);
                }
            }
            TableOwner::OnDemand(v) => {
                v.try_reserve_exact((size - old) as usize)
                    .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
                v.resize(size as usize, init);
                self.size = size;
            }
        }
        Ok(())
    }
}

impl Table {
    /// The size in elements.
    pub fn size<T>(&self, store: &Store<T>) -> u32 {
        store.table(*self).size
    }

    /// Grows by `delta` elements set to `init`, returning the old size.
    ///
    /// Growing by 0 returns the size without asking the limiter. Otherwise
    /// the limiter is asked `table_growing(current, desired, maximum)`.
    pub fn grow<T>(&self, store: &mut Store<T>, delta: u32, init: usize) -> Result<u32> {
        crate::store::block_on(self.grow_inner(store, delta, init))
    }

    /// [`grow`](Self::grow), asking an async limiter without blocking.
    pub async fn grow_async<T>(
        &self,
        store: &mut Store<T>,
        delta: u32,
        init: usize,
    ) -> Result<u32> {
        self.grow_inner(store, delta, init).await
    }

    async fn grow_inner<T>(self, store: &mut Store<T>, delta: u32, init: usize) -> Result<u32> {
        let (mut limiter, inner, backend) = store.parts(self.store);
        let entry = &mut inner.tables[self.index as usize];
        let current = entry.size;
        if delta == 0 {
            return Ok(current);
        }
        let (desired, overflow) = match current.checked_add(delta) {
            Some(d) => (d, false),
            None => (u32::MAX, true),
        };
        let maximum = entry.maximum.map(|m| m as usize);
        crate::store::grow_protocol(
            &mut limiter,
            backend,
            Resource::Table,
            current as usize,
            desired as usize,
            maximum,
            overflow,
            || entry.resize(desired, init),
        )
        .await?;
        Ok(current)
    }

    /// Element `idx`, or `None` past the size.
    pub fn get<T>(&self, store: &Store<T>, idx: u32) -> Option<usize> {
        store.table(*self).elements().get(idx as usize).copied()
    }

    /// Sets element `idx`; [`Error::OutOfBounds`] past the size.
    pub fn set<T>(&self, store: &mut Store<T>, idx: u32, value: usize) -> Result<()> {
        let entry = store.table_mut(*self);
        let size = entry.size;
        let slot = entry
            .elements_mut()
            .get_mut(idx as usize)
            .ok_or(Error::OutOfBounds { index: idx, size })?;
        *slot = value;
        Ok(())
    }
}
