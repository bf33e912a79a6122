//! [`Table`]: a handle to a table inside a [`Store`].

use crate::store::{Instance, Store, block_on};
use crate::{Error, Result};

/// A table of an instance: a plain index into its store, `Copy`. Elements
/// are `usize` values (0 is null); sizes are in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Table {
    store: u64,
    index: u32,
}

impl Instance {
    /// The instance's `idx`-th table, if it has one.
    pub fn table<T>(&self, store: &Store<T>, idx: usize) -> Option<Table> {
        let index = store.instance_table(*self, idx)?;
        Some(Table {
            store: self.store,
            index,
        })
    }
}

impl Table {
    /// The size in elements.
    pub fn size<T>(&self, store: &Store<T>) -> u32 {
        store.table(self.store, self.index).slot.size()
    }

    /// Grows by `delta` elements set to `init`, returning the old size.
    ///
    /// Growing by 0 returns the size without asking the limiter. Otherwise
    /// the limiter is asked `table_growing(current, desired, maximum)`.
    pub fn grow<T>(&self, store: &mut Store<T>, delta: u32, init: usize) -> Result<u32> {
        block_on(store.grow_table(self.store, self.index, delta, init))
    }

    /// [`grow`](Self::grow), asking an async limiter without blocking.
    pub async fn grow_async<T>(
        &self,
        store: &mut Store<T>,
        delta: u32,
        init: usize,
    ) -> Result<u32> {
        store.grow_table(self.store, self.index, delta, init).await
    }

    /// Element `idx`, or `None` past the size.
    pub fn get<T>(&self, store: &Store<T>, idx: u32) -> Option<usize> {
        let slot = &store.table(self.store, self.index).slot;
        slot.elements().get(idx as usize).copied()
    }

    /// Sets element `idx`; [`Error::OutOfBounds`] past the size.
    pub fn set<T>(&self, store: &mut Store<T>, idx: u32, value: usize) -> Result<()> {
        let slot = &mut store.table_mut(self.store, self.index).slot;
        let size = slot.size();
        let element = slot
            .elements_mut()
            .get_mut(idx as usize)
            .ok_or(Error::OutOfBounds { index: idx, size })?;
        *element = value;
        Ok(())
    }
}
