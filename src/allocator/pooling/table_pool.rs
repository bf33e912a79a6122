//! [`TablePool`]: one read-write reservation of `total_tables` slots of
//! `table_elements` pointer-sized elements each. A slot of a host page or
//! more is rounded up to whole pages, so it can be released on its own; a
//! smaller one to a cache line, so that many small tables share a page
//! (a 10-element table costs 128 bytes, not 4 KiB, of a dense host's RSS).
//!
//! ```text
//!  ┌──────────────────┬──────────────────┬─────┬──────────────────┐
//!  │ Table 0          │ Table 1          │ ... │ Table N-1        │
//!  └──────────────────┴──────────────────┴─────┴──────────────────┘
//!  ◄─ stride = round_up(table_elements * 8, page, or 64 below a page) ─►
//! ```
//!
//! Elements are only reached through bounds-checked calls, so tables need
//! no guard pages. A released table's used elements are zeroed
//! ([`TableSlot::clear`]): with `memset` up to `table_keep_resident` bytes
//! (at least the first host page: a small table is never worth a syscall),
//! with `madvise` beyond.

use super::index::SlotIndex;
use super::metrics::Counters;
use crate::config::PoolingConfig;
use crate::slot::TableSlot;
use crate::sys::{self, Slab};
use crate::{Error, Resource, Result, TableType};

const ELEM: usize = std::mem::size_of::<usize>();

/// What a free table slot holds: the bytes its last reset kept resident.
#[derive(Debug, Default)]
pub(crate) struct TableSlotState {
    resident: usize,
}

pub(crate) struct TablePool {
    slab: Slab,
    elements: u32,
    keep_resident: usize,
    total: u32,
    index: SlotIndex<TableSlotState>,
}

impl TablePool {
    pub fn new(config: &PoolingConfig, shards: usize) -> Result<TablePool> {
        let page = sys::page_size();
        let (count, elements) = (config.total_tables, config.table_elements);
        let describe =
            || format!("{count} table slots: total_tables ({count}) x table_elements ({elements})");
        let stride = (elements as usize)
            .checked_mul(ELEM)
            .and_then(|b| b.checked_next_multiple_of(if b < page { 64 } else { page }))
            .ok_or_else(|| {
                Error::InvalidConfig(format!("reservation overflows for {}", describe()))
            })?;
        let slab = super::reserve_slab(count, 0, stride, 0, true, describe)?;
        Ok(TablePool {
            slab,
            elements: config.table_elements,
            keep_resident: config.table_keep_resident,
            total: config.total_tables,
            index: SlotIndex::new(config.total_tables, shards, config.max_unused_warm_slots),
        })
    }

    /// Bytes a reset zeroes in place and keeps resident.
    pub fn keep_resident(&self) -> usize {
        self.keep_resident
    }

    /// Elements a slot holds.
    pub fn elements(&self) -> u32 {
        self.elements
    }

    /// Takes a free slot (zeroed) for a table of `ty`, of size 0; returns
    /// it and the maximum the limiter sees.
    pub fn acquire(&self, ty: &TableType, counters: &Counters) -> Result<(TableSlot, u32)> {
        let taken = self.index.acquire(None).map_err(|_| {
            counters.exhausted(Resource::Table);
            Error::PoolExhausted {
                resource: Resource::Table,
                limit: self.total,
            }
        })?;
        counters.acquired(Resource::Table);
        counters.resident_sub(taken.state.resident);
        // Zero past any size: every release clears the used part.
        let slot = TableSlot::in_slab(self.slab.claim(taken.index), self.elements);
        Ok((slot, ty.maximum.unwrap_or(u32::MAX).min(self.elements)))
    }

    /// Zeroes the used part and returns the slot.
    pub fn release(&self, mut slot: TableSlot, counters: &Counters) {
        let resident = slot.clear(self.keep_resident);
        counters.resident_add(resident);
        let claim = slot.into_claim().expect("a pool's table");
        let index = claim.index();
        self.slab.unclaim(claim);
        self.index.release(index, None, TableSlotState { resident });
    }

    pub fn in_use(&self) -> u32 {
        self.index.in_use()
    }

    pub fn unused_warm(&self) -> u32 {
        self.index.unused_warm()
    }
}
