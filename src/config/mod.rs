//! [`PoolingConfig`]: how big the pool is and how it resets slots.

use crate::sys;
use crate::{Error, Result};

/// How a pool makes the bytes past each memory's size fault.
///
/// Both give the same guarantee: every access past a memory's size, up to
/// the end of its guard, faults. They differ in cost: `mprotect` changes a
/// mapping, under the process's mmap lock taken for writing, and removing
/// access interrupts every other core running the process for a TLB
/// shootdown, once per growing request. Guard markers are page-table
/// entries set and cleared under the lock taken for reading, without new
/// mappings; a slot's read-write part only widens (one `mprotect`) when a
/// tenant grows past where any tenant of that slot has been, and released
/// slots' markers are installed in batches (see
/// [`PoolingConfig::decommit_batch_size`]).
///
/// One case favours `mprotect`: a pool whose `memory_keep_resident`
/// covers the pages tenants grow into. `PROT_NONE` keeps those pages
/// resident between tenants (a reset rewrites only the written ones),
/// while installing a marker discards a page, so the next tenant faults it
/// in again: requests that each grow a page within the keep-resident size
/// are faster on `Mprotect`; without keep-resident, markers win. The
/// measured figures are in `benches/README.md` ("Ratios", and "Wasmtime").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemoryProtection {
    /// Guard markers where the kernel has them, else `mprotect`. The
    /// guarded layout puts markers over mapped images too, so it needs them
    /// on private file mappings (Linux 6.15 and later); stacks need them on
    /// anonymous mappings only (6.13 and later).
    #[default]
    Auto,
    /// Guard markers (`MADV_GUARD_INSTALL`); a kernel without them (for
    /// the guarded layout, on private file mappings: Linux 6.15+; for the
    /// dense layout and stacks, on anonymous ones: 6.13+) makes
    /// [`PoolingInstanceAllocator::new`](crate::PoolingInstanceAllocator::new)
    /// or [`StackPool::new`](crate::StackPool::new) fail with
    /// `InvalidConfig`.
    GuardMarkers,
    /// `mprotect`, as Wasmtime's pooling allocator does.
    Mprotect,
    /// For engines that check every access against the memory's current
    /// size themselves: interpreters, and Wasmtime with
    /// `Config::signals_based_traps(false)` (which
    /// [`PooledMemoryCreator::install`](crate::wasmtime::PooledMemoryCreator::install)
    /// sets for such a pool). A slot is read-write up to its capacity from
    /// its first use, so growing and shrinking change no protection and
    /// flush no TLB; a release writes back the pages the tenant wrote below
    /// `memory_keep_resident` in place and discards only those it wrote
    /// past it. The guards between slots stay and fault as in every mode:
    /// an access past a memory's size but inside its slot does not fault,
    /// it reads that slot's own reset bytes (zeroes or the image), never
    /// another tenant's. Needs no kernel feature. Linear memories only: a
    /// `StackPool` refuses it.
    BoundsChecked,
}

impl MemoryProtection {
    /// Whether guard markers are used: `Auto` picks them where the kernel
    /// has them (`available`); whether a forced choice works is checked by
    /// `validate`.
    pub(crate) fn markers(self, available: bool) -> bool {
        match self {
            MemoryProtection::Auto => available,
            MemoryProtection::GuardMarkers => true,
            MemoryProtection::Mprotect | MemoryProtection::BoundsChecked => false,
        }
    }

    /// The name used in metrics: `guard_markers`, `mprotect`,
    /// `bounds_checked` (or `auto`).
    pub fn name(self) -> &'static str {
        match self {
            MemoryProtection::Auto => "auto",
            MemoryProtection::GuardMarkers => "guard_markers",
            MemoryProtection::Mprotect => "mprotect",
            MemoryProtection::BoundsChecked => "bounds_checked",
        }
    }
}

/// Where a pool's memory slots live.
///
/// | | `Guarded` | `Dense` |
/// |---|---|---|
/// | slab | `PROT_NONE`, made read-write as tenants grow | read-write, every unreachable byte guard-marked |
/// | kernel mappings | up to 3 per live memory (image, read-write, `PROT_NONE`): `vm.max_map_count` (65,530) caps a process near 21,000 live tenants | 2 for the whole pool, whatever the tenants |
/// | images | mapped copy-on-write (no copy, any size) | copied in (cost grows with the image) |
/// | slot + guard | up to 4 GiB + any guard | at most 64 MiB: marking costs 8 bytes of page table per 4 KiB page (a used slot of 1 MiB + 64 KiB guard: about 2 KiB) |
/// | kernel | any | guard markers (Linux 6.13+) |
///
/// The guarantee is the same: an access past a memory's size, up to the
/// end of its guard (and into its leading guard), faults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemoryLayout {
    /// One `PROT_NONE` reservation, `guard | slot | guard | ...`.
    #[default]
    Guarded,
    /// One read-write reservation with the same arithmetic, protected
    /// only by guard markers, for density past the kernel's mapping limit.
    Dense,
}

impl MemoryLayout {
    /// The name used in metrics: `guarded` or `dense`.
    pub fn name(self) -> &'static str {
        match self {
            MemoryLayout::Guarded => "guarded",
            MemoryLayout::Dense => "dense",
        }
    }
}

/// The largest slot plus guard the dense layout takes: a used slot's
/// markers cost up to 1/512 of it in page tables (128 KiB here).
pub const DENSE_MAX_STRIDE: usize = 64 << 20;

/// Four GiB: the most a 32-bit linear memory can address.
pub(crate) const FOUR_GIB: usize = 1 << 32;

/// How a [`PoolingInstanceAllocator`](crate::PoolingInstanceAllocator) is
/// laid out. Defaults follow Wasmtime's `PoolingAllocationConfig`.
///
/// | setter | default | meaning |
/// |---|---|---|
/// | `total_instances` | 1000 | instances live at once, pool-wide |
/// | `total_memories` | 1000 | linear-memory slots |
/// | `total_tables` | 1000 | table slots |
/// | `max_memories_per_instance` | 1 | memories one instance may have |
/// | `max_tables_per_instance` | 1 | tables one instance may have |
/// | `max_memory_size` | 4 GiB | bytes a memory slot can reach (its capacity) |
/// | `memory_guard_size` | 32 MiB | `PROT_NONE` bytes after each slot |
/// | `guard_before_memory` | true | a guard before the first slot too, so every slot has one on each side |
/// | `table_elements` | 20,000 | elements per table slot |
/// | `memory_keep_resident` | 0 | bytes of a released memory reset with `memset` and kept resident |
/// | `table_keep_resident` | 0 | the same for tables (the first host page is always zeroed in place) |
/// | `max_unused_warm_slots` | 100 | idle previously-used slots kept before cold slots stop being preferred |
/// | `decommit_batch_size` | 64 | released memories revoked together in one batch, fewer as the pool fills (and at 32 MiB to discard) |
/// | `background_revocation` | false | revoke batches on a thread of the pool's own instead of in the releasing thread |
/// | `admission_timeout` | 0 | how long `instantiate_async` waits for a slot |
/// | `memory_protection` | `Auto` | guard markers where the kernel has them, else `mprotect`; `BoundsChecked` for engines that check bounds themselves |
/// | `memory_layout` | `Guarded` | `Dense`: one read-write slab protected by guard markers, a constant number of kernel mappings |
/// | `dirty_page_scan` | true | resets write back only the pages a tenant wrote, where the kernel can tell (`PAGEMAP_SCAN`) |
///
/// Byte sizes (`max_memory_size`, `memory_guard_size`, both keep-resident
/// sizes) must be multiples of the host page. Keep-resident sizes larger
/// than a slot are clamped to the slot.
#[derive(Clone, Debug)]
pub struct PoolingConfig {
    pub(crate) total_instances: u32,
    pub(crate) total_memories: u32,
    pub(crate) total_tables: u32,
    pub(crate) max_memories_per_instance: u32,
    pub(crate) max_tables_per_instance: u32,
    pub(crate) max_memory_size: usize,
    pub(crate) memory_guard_size: usize,
    pub(crate) guard_before_memory: bool,
    pub(crate) table_elements: u32,
    pub(crate) memory_keep_resident: usize,
    pub(crate) table_keep_resident: usize,
    pub(crate) max_unused_warm_slots: u32,
    pub(crate) decommit_batch_size: usize,
    pub(crate) background_revocation: bool,
    pub(crate) admission_timeout: std::time::Duration,
    pub(crate) memory_protection: MemoryProtection,
    pub(crate) dirty_page_scan: bool,
    pub(crate) memory_layout: MemoryLayout,
}

impl Default for PoolingConfig {
    fn default() -> Self {
        PoolingConfig {
            total_instances: 1000,
            total_memories: 1000,
            total_tables: 1000,
            max_memories_per_instance: 1,
            max_tables_per_instance: 1,
            max_memory_size: FOUR_GIB,
            memory_guard_size: 32 << 20,
            guard_before_memory: true,
            table_elements: 20_000,
            memory_keep_resident: 0,
            table_keep_resident: 0,
            max_unused_warm_slots: 100,
            decommit_batch_size: 64,
            background_revocation: false,
            admission_timeout: std::time::Duration::ZERO,
            memory_protection: MemoryProtection::Auto,
            dirty_page_scan: true,
            memory_layout: MemoryLayout::Guarded,
        }
    }
}

/// A setter for each field (`&mut self -> &mut Self`, as Wasmtime's
/// config), and a `get_` getter returning what was set.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident / $get:ident: $ty:ty;)*) => {$(
        $(#[$doc])*
        pub fn $name(&mut self, value: $ty) -> &mut Self {
            self.$name = value;
            self
        }

        #[doc = concat!("The `", stringify!($name), "` set (see [`", stringify!($name), "`](Self::", stringify!($name), ")).")]
        pub fn $get(&self) -> $ty {
            self.$name
        }
    )*};
}

// After the macro: `stack` uses it.
mod stack;
pub use stack::StackPoolConfig;

impl PoolingConfig {
    setters! {
        /// Instances live at once across the pool (at least 1).
        total_instances / get_total_instances: u32;
        /// Linear-memory slots in the pool.
        total_memories / get_total_memories: u32;
        /// Table slots in the pool.
        total_tables / get_total_tables: u32;
        /// The most memories one instance may have.
        max_memories_per_instance / get_max_memories_per_instance: u32;
        /// The most tables one instance may have.
        max_tables_per_instance / get_max_tables_per_instance: u32;
        /// Bytes a memory slot can make accessible: its capacity. A memory
        /// never moves, so this is also the most it can grow to. At most
        /// 4 GiB, a multiple of the host page.
        max_memory_size / get_max_memory_size: usize;
        /// `PROT_NONE` bytes after each memory slot (a multiple of the host
        /// page). A slot's trailing guard is the next slot's leading guard.
        /// 0 is allowed, for engines that bounds-check every access: then
        /// the byte after a full slot is the next slot's first byte.
        memory_guard_size / get_memory_guard_size: usize;
        /// Whether the first slot has a guard before it too, so that every
        /// slot has one on each side.
        guard_before_memory / get_guard_before_memory: bool;
        /// Elements (pointer-sized) per table slot.
        table_elements / get_table_elements: u32;
        /// Bytes at the start of a released memory that are reset with
        /// `memset` (or restored from its image) and stay resident, instead
        /// of being released with `madvise`. A multiple of the host page.
        memory_keep_resident / get_memory_keep_resident: usize;
        /// The same as `memory_keep_resident`, for tables.
        table_keep_resident / get_table_keep_resident: usize;
        /// How many idle, previously used slots may exist before the pool
        /// stops preferring never-used (cold) slots and reuses the least
        /// recently used warm one instead.
        max_unused_warm_slots / get_max_unused_warm_slots: u32;
        /// The most released memories revoked together. With guard markers
        /// a batch of any slots is two `process_madvise` calls (one TLB
        /// flush, where the kernel has it); with `mprotect` the `madvise`
        /// and `mprotect` calls of contiguous slots are merged. At least 1.
        ///
        /// Batches adapt to the pool's slack: a release waits for company
        /// only while at least twice as many slots are free as are queued,
        /// so a pool near capacity revokes at every release, as with a
        /// batch of 1, and an acquisition rarely has to revoke a batch
        /// itself (it does when it finds only queued slots). Up to
        /// `batch - 1` released slots a core keep their pages until their
        /// batch is revoked, and no more than 32 MiB of them to discard (a
        /// batch that reaches that is revoked however few slots it has).
        ///
        /// The default is 64 (Wasmtime's is 1, which this restores): with
        /// room in the pool a release costs about what an instantiation
        /// does, a full pool pays what a batch of 1 would, and two cores
        /// share few TLB flushes: on 2 vCPUs two threads made 1.40x to
        /// 1.59x one thread's requests with batches of 64, 1.10x to 1.27x
        /// with 16 (`cycle_threads`, three runs; `benches/README.md`).
        decommit_batch_size / get_decommit_batch_size: usize;
        /// Whether full batches (see `decommit_batch_size`) are revoked on
        /// a thread the pool starts for it, instead of by the release that
        /// filled them: that release then returns at once, and its TLB
        /// flush runs beside the request path. Off by default (Wasmtime
        /// has no such thread): on a machine with few cores the thread
        /// competes with the requests it would speed up
        /// (`benches/README.md` has the measured trade-off). An
        /// acquisition that finds no free slot still revokes what is
        /// queued itself, and waits for batches in flight rather than
        /// failing. If the thread cannot be started, or in a process forked
        /// from the one that started it, batches are revoked inline as
        /// without this setting (slots of a batch in flight at the fork
        /// stay the parent's: the child counts them as in use).
        background_revocation / get_background_revocation: bool;
        /// How long [`Store::instantiate_async`](crate::Store::instantiate_async)
        /// waits for a slot when the pool is exhausted (first come, first
        /// served) before failing with `PoolExhausted`. Zero (the default)
        /// fails at once, as Wasmtime does. Deadlines are kept by one
        /// thread of the crate's in the process, started at the first
        /// wait: where the process cannot start it (a thread limit), a
        /// wait ends at once, as at its deadline, and a later one tries
        /// again.
        admission_timeout / get_admission_timeout: std::time::Duration;
        /// How bytes past each memory's size are made to fault: guard
        /// markers or `mprotect` ([`MemoryProtection`]). With guard markers,
        /// `memory_keep_resident` keeps at most a released memory's minimum
        /// resident (markers cannot keep a page resident while it faults).
        memory_protection / get_memory_protection: MemoryProtection;
        /// Whether a reset asks the kernel which pages a tenant wrote
        /// (`PAGEMAP_SCAN`, Linux 6.7+; pages swapped out count as
        /// written) and writes back only those, within
        /// `memory_keep_resident`. Image pages nobody wrote then stay the
        /// image file's shared pages. Without it (or on an older kernel) the
        /// image's part is discarded with `madvise` and the rest zeroed.
        /// Ranges of 64 KiB or less without an image are always zeroed
        /// whole: cheaper than asking.
        dirty_page_scan / get_dirty_page_scan: bool;
        /// Where memory slots live: [`MemoryLayout::Guarded`] (the default)
        /// or [`MemoryLayout::Dense`], whose kernel mappings do not grow
        /// with the number of slots or tenants (see the table there for the
        /// trade-off). Dense needs guard markers, a `memory_guard_size` of
        /// at least one host page, and slot + guard of at most
        /// [`DENSE_MAX_STRIDE`]; it copies images in.
        memory_layout / get_memory_layout: MemoryLayout;
    }

    /// Checks everything that does not need the OS: the message names the
    /// field and its value.
    pub(crate) fn validate(&self) -> Result<()> {
        let page = sys::page_size();
        let invalid = |msg: String| Err(Error::InvalidConfig(msg));
        if self.total_instances == 0 {
            return invalid("total_instances must be at least 1, got 0".into());
        }
        for (name, value) in [
            ("max_memory_size", self.max_memory_size),
            ("memory_guard_size", self.memory_guard_size),
            ("memory_keep_resident", self.memory_keep_resident),
            ("table_keep_resident", self.table_keep_resident),
        ] {
            if value % page != 0 {
                return invalid(format!(
                    "{name} must be a multiple of the host page size ({page}), got {value}"
                ));
            }
        }
        if self.max_memory_size > FOUR_GIB {
            return invalid(format!(
                "max_memory_size must be at most 4 GiB ({FOUR_GIB}), got {}",
                self.max_memory_size
            ));
        }
        if self.max_memories_per_instance > self.total_memories {
            return invalid(format!(
                "max_memories_per_instance ({}) exceeds total_memories ({})",
                self.max_memories_per_instance, self.total_memories
            ));
        }
        if self.max_tables_per_instance > self.total_tables {
            return invalid(format!(
                "max_tables_per_instance ({}) exceeds total_tables ({})",
                self.max_tables_per_instance, self.total_tables
            ));
        }
        // The dense layout maps no image: its check below asks less.
        if self.memory_protection == MemoryProtection::GuardMarkers
            && self.memory_layout == MemoryLayout::Guarded
            && !sys::features().guard_markers
        {
            return invalid(
                "memory_protection is GuardMarkers, but this kernel has no guard markers on private mappings (MADV_GUARD_INSTALL, Linux 6.15+)"
                    .into(),
            );
        }
        if self.memory_layout == MemoryLayout::Dense {
            if !sys::features().anon_guard_markers {
                return invalid(
                    "memory_layout is Dense, but this kernel has no guard markers (MADV_GUARD_INSTALL, Linux 6.13+)"
                        .into(),
                );
            }
            if self.memory_protection == MemoryProtection::Mprotect {
                return invalid(
                    "memory_layout Dense is protected by guard markers; memory_protection Mprotect cannot apply"
                        .into(),
                );
            }
            if self.memory_guard_size == 0 {
                return invalid(format!(
                    "memory_guard_size must be at least one host page ({page}) in the dense layout, got 0"
                ));
            }
            let stride = self.max_memory_size.saturating_add(self.memory_guard_size);
            if stride > DENSE_MAX_STRIDE {
                return invalid(format!(
                    "max_memory_size + memory_guard_size must be at most {DENSE_MAX_STRIDE} in the dense layout, got {stride}"
                ));
            }
        }
        if self.decommit_batch_size == 0 {
            return invalid("decommit_batch_size must be at least 1, got 0".into());
        }
        Ok(())
    }
}
