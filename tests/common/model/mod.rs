//! A model of the pool, checked step by step against the real thing
//! (used by `tests/model.rs`): a few layouts, the operations on them, and
//! a [`World`] holding both the pool with its stores and a plain model of
//! what they must hold.

mod step;
mod world;

pub use world::World;

use super::config::{self, MIB, Resets};
use instance_pool::*;

/// Pages in a memory slot (1 MiB).
pub const SLOT_PAGES: u64 = config::SLOT_PAGES;
pub const SLOT: usize = MIB;
pub const TOTAL: u32 = 4;
pub const TABLE_ELEMENTS: u32 = 1024;
pub const MEMORIES_PER_INSTANCE: usize = 2;
pub const TABLES_PER_INSTANCE: usize = 2;
const PAGE: usize = WASM_PAGE_SIZE;

// ---- layouts ----

pub struct MemSpec {
    pub min: u64,
    pub max: Option<u64>,
    pub image: Option<usize>,
}

pub struct TableSpec {
    pub min: u32,
    pub max: Option<u32>,
}

pub struct LayoutSpec {
    pub mems: &'static [MemSpec],
    pub tables: &'static [TableSpec],
}

pub const fn mem(min: u64, max: Option<u64>, image: Option<usize>) -> MemSpec {
    MemSpec { min, max, image }
}

pub const fn table(min: u32, max: Option<u32>) -> TableSpec {
    TableSpec { min, max }
}

pub const LAYOUTS: &[LayoutSpec] = &[
    LayoutSpec {
        mems: &[],
        tables: &[],
    },
    LayoutSpec {
        mems: &[mem(1, Some(4), None)],
        tables: &[table(2, Some(10))],
    },
    LayoutSpec {
        mems: &[mem(2, None, Some(0))],
        tables: &[table(0, None)],
    },
    LayoutSpec {
        mems: &[mem(0, Some(16), None), mem(1, Some(20), Some(2))],
        tables: &[],
    },
    LayoutSpec {
        mems: &[mem(3, Some(8), Some(0))],
        tables: &[table(1, Some(1)), table(5, None)],
    },
    LayoutSpec {
        mems: &[mem(1, None, Some(1))],
        tables: &[],
    },
    LayoutSpec {
        mems: &[mem(4, Some(4), None)],
        tables: &[table(TABLE_ELEMENTS, None)],
    },
    LayoutSpec {
        mems: &[mem(SLOT_PAGES, None, Some(3))],
        tables: &[table(0, Some(2000))],
    },
    LayoutSpec {
        mems: &[mem(0, Some(0), None)],
        tables: &[table(0, Some(0))],
    },
    LayoutSpec {
        mems: &[mem(1, Some(3), Some(2)), mem(2, None, Some(0))],
        tables: &[table(3, None), table(0, Some(TABLE_ELEMENTS))],
    },
    // Unsupported by this pool: too many memories, a minimum past the
    // slot, a table minimum past the slot, too many tables.
    LayoutSpec {
        mems: &[mem(0, None, None), mem(0, None, None), mem(0, None, None)],
        tables: &[],
    },
    LayoutSpec {
        mems: &[mem(SLOT_PAGES + 1, None, None)],
        tables: &[],
    },
    LayoutSpec {
        mems: &[],
        tables: &[table(TABLE_ELEMENTS + 1, None)],
    },
    LayoutSpec {
        mems: &[],
        tables: &[table(0, None), table(0, None), table(0, None)],
    },
];

pub fn image_bytes() -> Vec<Vec<u8>> {
    vec![
        (0..5000u32).map(|i| (i % 253) as u8 + 1).collect(),
        (0..PAGE as u32).map(|i| (i % 7) as u8 + 0x40).collect(),
        vec![0xC3; 100],
        Vec::new(),
    ]
}

pub fn unsupported(spec: &LayoutSpec) -> bool {
    spec.mems.len() > MEMORIES_PER_INSTANCE
        || spec.tables.len() > TABLES_PER_INSTANCE
        || spec.mems.iter().any(|m| m.min > SLOT_PAGES)
        || spec.tables.iter().any(|t| t.min > TABLE_ELEMENTS)
}

// ---- operations ----

#[derive(Clone, Debug)]
pub enum Op {
    NewStore {
        caps: Option<(usize, usize, usize)>,
    },
    Instantiate {
        store: usize,
        layout: usize,
        /// The limiter refuses its n-th call (0-based) in this step.
        deny_at: Option<usize>,
    },
    GrowMemory {
        store: usize,
        mem: usize,
        delta: u64,
        deny: bool,
    },
    GrowTable {
        store: usize,
        table: usize,
        delta: u32,
        init: usize,
        deny: bool,
    },
    Write {
        store: usize,
        mem: usize,
        offset: usize,
        len: usize,
        byte: u8,
    },
    SetTable {
        store: usize,
        table: usize,
        index: u32,
        value: usize,
    },
    DropStore {
        store: usize,
    },
    /// `Store::reset`: every instance back to its just-instantiated state.
    Reset {
        store: usize,
    },
}

/// The pool's reset knobs, chosen per case.
#[derive(Clone, Debug)]
pub struct Knobs {
    pub resets: Resets,
    pub max_unused_warm: u32,
    pub guard_before: bool,
}

/// The pool: [`config::small_two_per_instance`] with 1024-element tables
/// and `knobs`.
pub fn make_pool(k: &Knobs) -> PoolingInstanceAllocator {
    let mut c = config::small_two_per_instance(TABLE_ELEMENTS);
    c.guard_before_memory(k.guard_before)
        .max_unused_warm_slots(k.max_unused_warm);
    k.resets.apply(&mut c);
    config::pool(&c)
}

/// Runs `ops` from a fresh world, checking after every step, then drops
/// every store and checks the pool is whole.
pub fn run(knobs: &Knobs, ops: &[Op]) {
    let mut world = World::new(knobs);
    world.check();
    for op in ops {
        world.step(op);
    }
    world.finish();
}
