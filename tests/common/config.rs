//! The pool shapes the tests build, one constructor each; a test adds only
//! the settings it is about.

use instance_pool::{
    MemoryLayout, MemoryProtection, PoolingConfig, PoolingInstanceAllocator, WASM_PAGE_SIZE,
};

/// Both ways of making bytes past a memory's size fault: every walk and
/// the model run on each (this machine's kernel has guard markers).
pub const PROTECTIONS: [MemoryProtection; 2] =
    [MemoryProtection::GuardMarkers, MemoryProtection::Mprotect];

/// Every way a pool lays out and protects its memories: the failure walks,
/// the model and the guard cases run on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub layout: MemoryLayout,
    pub protection: MemoryProtection,
}

pub const SHAPES: [Shape; 3] = [
    Shape {
        layout: MemoryLayout::Guarded,
        protection: MemoryProtection::GuardMarkers,
    },
    Shape {
        layout: MemoryLayout::Guarded,
        protection: MemoryProtection::Mprotect,
    },
    Shape {
        layout: MemoryLayout::Dense,
        protection: MemoryProtection::Auto,
    },
];

/// The opt-in mode for engines that check bounds themselves, on both
/// layouts: past a memory's size nothing faults up to the slot's end, so
/// the guard cases that expect a fault there run on [`SHAPES`] only; every
/// other walk runs on [`ALL_SHAPES`].
pub const CHECKED_SHAPES: [Shape; 2] = [
    Shape {
        layout: MemoryLayout::Guarded,
        protection: MemoryProtection::BoundsChecked,
    },
    Shape {
        layout: MemoryLayout::Dense,
        protection: MemoryProtection::BoundsChecked,
    },
];

/// [`SHAPES`] and [`CHECKED_SHAPES`].
pub const ALL_SHAPES: [Shape; 5] = [
    SHAPES[0],
    SHAPES[1],
    SHAPES[2],
    CHECKED_SHAPES[0],
    CHECKED_SHAPES[1],
];

impl Shape {
    /// Whether accesses past a memory's size fault (all but the
    /// bounds-checked mode).
    pub fn faults_past_size(self) -> bool {
        self.protection != MemoryProtection::BoundsChecked
    }

    /// Sets this shape on `c`.
    pub fn apply(self, c: &mut PoolingConfig) -> &mut PoolingConfig {
        c.memory_layout(self.layout)
            .memory_protection(self.protection)
    }

    /// `layout-protection`, for a child process's environment.
    pub fn name(self) -> String {
        format!("{}-{}", self.layout.name(), self.protection.name())
    }
}

/// One mebibyte: a small pool's memory slot.
pub const MIB: usize = 1 << 20;
/// The memory slot of [`small`] in wasm pages.
pub const SLOT_PAGES: u64 = (MIB / WASM_PAGE_SIZE) as u64;
/// The guard after each memory slot of [`small`].
pub const GUARD: usize = 64 << 10;

/// `slots` instances, memories and tables; memory slots of 1 MiB (16 wasm
/// pages) with 64 KiB guards; one memory and one table per instance;
/// batches of 1, so that a release does its own syscalls (the tests about
/// batching set their own); the rest (tables of 20,000 elements, no
/// keep-resident) default.
pub fn small(slots: u32) -> PoolingConfig {
    let mut c = PoolingConfig::default();
    c.total_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .max_memory_size(MIB)
        .memory_guard_size(GUARD)
        .decommit_batch_size(1);
    c
}

/// [`small`] on the shape named by `INSTANCE_POOL_TEST_SHAPE` (a
/// [`Shape::name`], e.g. `dense-auto`), else the default one: the contract
/// tests use it, and `.ci/run` runs them once per shape.
pub fn contract(slots: u32) -> PoolingConfig {
    let mut c = small(slots);
    if let Ok(wanted) = std::env::var("INSTANCE_POOL_TEST_SHAPE") {
        let shape = ALL_SHAPES.iter().find(|s| s.name() == wanted);
        shape
            .unwrap_or_else(|| panic!("INSTANCE_POOL_TEST_SHAPE={wanted}: no such shape"))
            .apply(&mut c);
    }
    c
}

/// [`contract`]`(4)` with tables of `table_elements`, where an instance
/// may have two memories and two tables.
pub fn small_two_per_instance(table_elements: u32) -> PoolingConfig {
    let mut c = contract(4);
    c.max_memories_per_instance(2)
        .max_tables_per_instance(2)
        .table_elements(table_elements);
    c
}

/// How a pool resets released slots: what the failure walks and the
/// model vary.
#[derive(Clone, Copy, Debug)]
pub struct Resets {
    /// `memory_keep_resident`.
    pub keep_resident: usize,
    /// `table_keep_resident`.
    pub table_keep_resident: usize,
    /// `decommit_batch_size`.
    pub batch: usize,
    /// `memory_layout` and `memory_protection`.
    pub shape: Shape,
}

impl Resets {
    /// Sets these knobs on `c`.
    pub fn apply(self, c: &mut PoolingConfig) -> &mut PoolingConfig {
        c.memory_keep_resident(self.keep_resident)
            .table_keep_resident(self.table_keep_resident)
            .decommit_batch_size(self.batch)
            .memory_layout(self.shape.layout)
            .memory_protection(self.shape.protection)
    }
}

/// A pool for `c`, which must be valid.
pub fn pool(c: &PoolingConfig) -> PoolingInstanceAllocator {
    PoolingInstanceAllocator::new(c).unwrap()
}
