//! Wasmtime on the crate's pools (feature `wasmtime`): a
//! [`wasmtime::MemoryCreator`] whose linear memories are memory slots of a
//! [`PoolingInstanceAllocator`](crate::PoolingInstanceAllocator), and a
//! [`wasmtime::StackCreator`] whose fiber stacks come from a
//! [`StackPool`](crate::StackPool).
//!
//! ```no_run
//! use instance_pool::wasmtime::{PooledMemoryCreator, PooledStackCreator};
//! use instance_pool::{PoolingConfig, PoolingInstanceAllocator, StackPool, StackPoolConfig};
//!
//! let pool = PoolingInstanceAllocator::new(
//!     PoolingConfig::default().total_memories(1000).max_memory_size(64 << 20),
//! )?;
//! let stacks = StackPool::new(StackPoolConfig::default().total_stacks(1000))?;
//! let mut config = wasmtime::Config::new();
//! PooledMemoryCreator::new(&pool).install(&mut config);
//! PooledStackCreator::new(&stacks).install(&mut config);
//! let engine = wasmtime::Engine::new(&config)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What [`PooledMemoryCreator::install`] sets in Wasmtime, and why
//!
//! Call `install` last, after every other memory setting: a later
//! `memory_*` or `gc_heap_*` call undoes what it set.
//!
//! - **`allocation_strategy(OnDemand)`**: Wasmtime asks a `MemoryCreator`
//!   only with its on-demand strategy; its own pooling allocator never
//!   calls one. The instance records and tables stay Wasmtime's (on-demand,
//!   from the heap); memories and stacks come from the pools.
//! - **`memory_reservation(max_memory_size)`, `memory_guard_size(guard)`**:
//!   Wasmtime passes these to every `new_memory` as
//!   `reserved_size_in_bytes` and `guard_size_in_bytes`, and compiles code
//!   that skips bounds checks up to their sum. The creator takes exactly
//!   these (a slot and its trailing guard) and refuses any other
//!   reservation or guard (a `new_memory` error, so the instantiation fails
//!   with its message naming the setting): a larger one the slot cannot
//!   honour, a smaller one would only waste the rest of the slot and cap
//!   growth below `max_memory_size` without a word. A pool of smaller
//!   memories is a pool with a smaller `max_memory_size`.
//! - **`memory_may_move(false)`, `memory_reservation_for_growth(0)`**: pooled
//!   memories never move; growth past the reservation fails (`memory.grow`
//!   returns -1), as with Wasmtime's pooling allocator.
//! - **The same four for GC heaps** (`gc_heap_reservation`,
//!   `gc_heap_guard_size`, `gc_heap_reservation_for_growth`,
//!   `gc_heap_may_move`): with Wasmtime's `gc` feature (in its default
//!   features) a store's GC heap is asked of this creator too. Wasmtime
//!   copies the `memory_*` values to GC heaps only while no `gc_heap_*`
//!   setting is made; one such call (`gc_heap_may_move(false)`, say) would
//!   send GC heaps back to Wasmtime's 4 GiB reservation. `install` sets them
//!   explicitly, so each GC heap takes a slot like a linear memory.
//!   `new_memory` is not told which of the two it makes (a GC heap is a
//!   32-bit memory of `gc_heap_initial_size` bytes and no maximum, like many
//!   linear memories), so a refusal names both settings.
//! - **`memory_init_cow(false)`**: Wasmtime's copy-on-write data
//!   initialisation needs memories it mapped itself; with a custom creator
//!   and copy-on-write on, Wasmtime 48 panics (`unreachable!`) at the first
//!   instantiation of a module with data segments. A plain
//!   `wasmtime::Module` therefore gets its data the classic way: Wasmtime
//!   copies each segment into the fresh (zeroed) memory at every
//!   instantiation, a `memcpy` and a page fault per page touched (with 512
//!   KiB of data, tens of times Wasmtime's own pool). A [`PooledModule`]
//!   does not: see [Module images](#module-images).
//!
//! Only instances' memories (and GC heaps) come from the pool. Host memories
//! made with `wasmtime::Memory::new` or `SharedMemory::new` do not: Wasmtime
//! 48 makes them with its default allocator, outside the pool's limits and
//! metrics. The errors of `new_memory` are strings in Wasmtime's trait, so a
//! refusal reaches the embedder as a message naming the setting and value,
//! not as a typed [`Error`](crate::Error) (the pool's exhaustion is typed
//! for instantiations through a [`PooledModule`], which take their slots
//! before Wasmtime runs); [`PoolMetrics`](crate::PoolMetrics) counts them
//! (`creator_refusals`), and the growths that fail in a slot
//! (`creator_failed_grows`).
//!
//! # Module images
//!
//! `new_memory` is not told which module a memory is for, so the module
//! type [`PooledModule`] brings its own instantiation path:
//!
//! ```no_run
//! # use instance_pool::wasmtime::{PooledMemoryCreator, PooledModule};
//! # use instance_pool::{PoolingConfig, PoolingInstanceAllocator};
//! # let pool = PoolingInstanceAllocator::new(&PoolingConfig::default())?;
//! # let mut config = wasmtime::Config::new();
//! # PooledMemoryCreator::new(&pool).install(&mut config);
//! # let engine = wasmtime::Engine::new(&config)?;
//! # let wasm: Vec<u8> = Vec::new();
//! let module = PooledModule::new(&pool, &engine, &wasm, wasmtime::Module::from_binary)?;
//! let mut store = wasmtime::Store::new(&engine, ());
//! let instance = module.instantiate(&mut store, &[])?;
//! # Ok::<(), wasmtime::Error>(())
//! ```
//!
//! - **Baking.** [`PooledModule::new`] reads the module's data segments
//!   (with `wasmparser`) and writes every active one, in order (a later
//!   segment overwrites an earlier one), into its memory's
//!   [`MemoryImage`](crate::MemoryImage): a sealed memfd, one per memory
//!   of the module, shared by all its instances. Wasmtime compiles the same
//!   module with those segments made empty passive ones (re-encoded with
//!   `wasm-encoder`), so segment indices, `memory.init` and `data.drop`
//!   behave exactly as on the dropped active segments, and Wasmtime copies
//!   nothing at instantiation.
//! - **What qualifies.** A module is baked whole or not at all: every
//!   active segment needs a constant offset (`i32.const`, `i64.const`) into
//!   a memory the module defines, unshared, of 64 KiB pages, in bounds of
//!   its minimum; the images may not hold more than 16 MiB unless the data
//!   fills half of them (Wasmtime's own rule); and the module must not need
//!   Wasmtime's GC heap (whose request `new_memory` could not tell from a
//!   memory's). Anything else (a `global.get` offset, an imported memory, a
//!   segment out of bounds) is compiled unchanged and instantiated with
//!   exactly Wasmtime's result, a trap part-way included;
//!   [`PooledModule::fallback_reason`] says why.
//! - **Slots first.** Each instantiate call takes a slot for each memory
//!   the module defines (preferring warm slots that hold the same image,
//!   so a repeat instantiation maps nothing; `images_reused` counts it),
//!   then runs Wasmtime with them as its thread's current reservation (the
//!   async calls set it around every poll of Wasmtime's future).
//!   `new_memory` takes the next slot from there, with its image; a memory
//!   made outside such a call gets a zeroed slot, as before. Slots
//!   Wasmtime did not take (it failed before making the memory) go back to
//!   the pool at once, waking waiters.
//! - **Waiting.** [`PooledModule::instantiate_async`] waits for the slots
//!   in the pool's admission queue, first come first served, up to the
//!   pool's `admission_timeout` (or a timeout of its own); at the deadline
//!   it fails with [`Error::PoolExhausted`](crate::Error::PoolExhausted)
//!   inside the `wasmtime::Error` (`downcast_ref` finds it). The slots are
//!   taken before Wasmtime runs, so its limiter is asked only once the
//!   wait is over. A GC heap's slot is not waited for.
//! - **Embedder images.** [`PooledModule::with_image`] starts a memory
//!   from an image of the embedder's own instead of the module's data (its
//!   size checked against the memory's minimum); [`snapshot`] makes one
//!   from a live instance's memory.
//! - **Costs.** An instantiation maps nothing when a warm slot holds the
//!   module's image, and its release discards only the pages the tenant
//!   wrote (the rest of the minimum stays mapped and accessible, as in
//!   Wasmtime's own pool with `pagemap_scan`), so a module's data costs
//!   about what it costs on Wasmtime's pooling allocator. A plain
//!   `wasmtime::Module` on the same pool has its data copied in at every
//!   instantiation. Building the images writes only the data's non-zero
//!   pages into the memfd, from the lowest segment offset (zero pages stay
//!   holes), so a cold start (`PooledModule::new` and the first
//!   instantiation) costs about what Wasmtime's first instantiation,
//!   which builds its own image, costs. Where a tenant read its data, a
//!   release costs a few percent more than on Wasmtime's pool (2-3% of
//!   an instantiation with 64 KiB read): its `PAGEMAP_SCAN` also finds
//!   written pages that were swapped out, which Wasmtime's skips, so that
//!   no tenant's swapped-out bytes reach the next. `benches/README.md`
//!   ("Wasmtime") has the measured ratios.
//!
//! # Settings made after `install` that the creator cannot see
//!
//! - **`allocation_strategy(Pooling(..))`**: Wasmtime's own pooling
//!   allocator then makes every memory, GC heap and stack; neither creator
//!   is ever called, so nothing here can refuse or report it. The symptom
//!   is a pool whose `memory_acquisitions` stay at 0 while instances run.
//! - **`memory_init_cow(true)`**: not passed to `new_memory`; Wasmtime 48
//!   panics (`unreachable!`) at the first instantiation of a module with
//!   data segments (see above).
//! - **`memory_may_move(true)`** (or `gc_heap_may_move(true)`): harmless.
//!   Wasmtime then lets a growth past the reservation reach the slot, which
//!   refuses it (`memory.grow` returns -1; counted in
//!   `creator_failed_grows`); memories still never move.
//! - **`memory_reservation_for_growth`**, **`guard_before_linear_memory`**:
//!   used only by Wasmtime's own memories; no effect here.
//!
//! Growth: Wasmtime checks its own `ResourceLimiter` (for example
//! `wasmtime::StoreLimits`) and the memory's maximum before it calls
//! `grow_to`; the slot then grows the way [`Memory::grow`](crate::Memory::grow)
//! grows it after the crate's limiter (guard markers removed, or an
//! `mprotect`). When Wasmtime drops a memory its slot goes back to the pool,
//! reset like any slot (zeroed up to `memory_keep_resident`, the rest
//! discarded), so no tenant sees another's bytes.
//!
//! # Stacks
//!
//! [`PooledStackCreator::install`] sets `with_host_stack` and
//! `async_stack_size` to the pool's `stack_size` (Wasmtime requires it to
//! be at least `max_wasm_stack`, 512 KiB by default). Wasmtime asks a
//! `StackCreator` only with the on-demand strategy, as for memories: under
//! its pooling strategy the creator is silently unused. Every pooled stack is
//! zeroed on release, so Wasmtime's `async_stack_zeroing` is honoured
//! whatever its value. A request for a larger stack than the pool's is
//! refused with a message. Wasmtime keeps a store's fiber stack until the
//! store drops (one per store, reused by its calls), so a pool needs as
//! many stacks as live stores that make async calls. An exhausted pool is
//! [`Error::StacksExhausted`](crate::Error::StacksExhausted) inside the
//! `wasmtime::Error` (`downcast_ref` finds it).
//!
//! # Unsafe code
//!
//! The two Wasmtime traits are `unsafe` to implement: their promises (the
//! memory is ours, page aligned, followed by a guard that faults) are the
//! slot layer's invariants, so the `unsafe impl`s here rest on it and this
//! module has no `unsafe` block of its own.

mod bake;
mod context;
mod memory;
mod module;
mod stack;

pub use memory::{PooledLinearMemory, PooledMemoryCreator};
pub use module::{PooledModule, snapshot};
pub use stack::{PooledStackCreator, PooledStackMemory};
