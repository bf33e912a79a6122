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
//! - **`allocation_strategy(OnDemand)`**: Wasmtime asks a `MemoryCreator`
//!   only with its on-demand strategy; its own pooling allocator never
//!   calls one. The instance records and tables stay Wasmtime's (on-demand,
//!   from the heap); memories and stacks come from the pools.
//! - **`memory_reservation(max_memory_size)`, `memory_guard_size(guard)`**:
//!   Wasmtime passes these to every `new_memory` as
//!   `reserved_size_in_bytes` and `guard_size_in_bytes`, and compiles code
//!   that skips bounds checks up to their sum. The creator refuses (a
//!   `new_memory` error, so the instantiation fails with its message) a
//!   request the slot cannot honour: a reservation above the slot, or a
//!   reservation and guard reaching past the slot's own trailing guard. It
//!   never hands out less.
//! - **`memory_may_move(false)`, `memory_reservation_for_growth(0)`**: pooled
//!   memories never move; growth past the reservation fails (`memory.grow`
//!   returns -1), as with Wasmtime's pooling allocator.
//! - **`memory_init_cow(false)`**: Wasmtime's copy-on-write data
//!   initialisation needs memories it mapped itself; with a custom creator
//!   and copy-on-write on, Wasmtime 48 panics (`unreachable!`) at the first
//!   instantiation of a module with data segments. So data segments get in
//!   the classic way: Wasmtime copies each segment into the fresh (zeroed)
//!   memory at instantiation. That costs a `memcpy` of the segments and a
//!   page fault per page they touch, each instantiation; the pool's own
//!   memfd images cannot help, because `new_memory` is not told the module.
//!   Measured against Wasmtime's own pool, which maps the image (one run of
//!   `benches/wasmtime`, 1 MiB memories): an instantiation with 4 KiB of
//!   data takes 2.72x as long, with 64 KiB 3.11x, with 512 KiB 56.17x (180
//!   against 3.2 µs); the copy-on-write side pays its page faults later,
//!   when the data is read. Modules with more than a few KiB of data are better
//!   served by Wasmtime's pooling allocator; request handlers with a few
//!   hundred bytes of data pay little (the serve example's request is
//!   0.88x-0.98x of Wasmtime's pool over three runs).
//!
//! Only instances' memories come from the pool. Host memories made with
//! `wasmtime::Memory::new` or `SharedMemory::new` do not: Wasmtime 48 makes
//! them with its default allocator, outside the pool's limits and metrics.
//! With Wasmtime's `gc` feature on (its default features include it), GC
//! heaps are asked of this creator too, with the `gc_heap_reservation` and
//! `gc_heap_guard_size` settings, which `install` leaves alone: each GC
//! heap then takes a slot, or is refused like any request the slots cannot
//! honour. The errors of
//! `new_memory` are strings in Wasmtime's trait, so a refusal (including
//! the pool's exhaustion) reaches the embedder as a message naming the
//! limit and value, not as a typed [`Error`](crate::Error).
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

mod memory;
mod stack;

pub use memory::{PooledLinearMemory, PooledMemoryCreator};
pub use stack::{PooledStackCreator, PooledStackMemory};
