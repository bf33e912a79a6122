//! [`StackPool`]: fiber stacks for hosts that run tenants on their own
//! stacks (async hosts, Wasmtime's `StackCreator`), from one reservation.
//!
//! ```text
//!  ┌───────┬──────────────┬───────┬──────────────┬─────┬───────┬──────────────┐
//!  │ Guard │   Stack 0    │ Guard │   Stack 1    │ ... │ Guard │  Stack N-1   │
//!  └───────┴──────────────┴───────┴──────────────┴─────┴───────┴──────────────┘
//!  ◄guard─►◄─stack_size──►
//!  ◄────── stride ───────►      bottom(i) = reservation + i * stride + guard
//! ```
//!
//! Stacks grow down, so each has its guard *below* it: an overflow faults.
//! Where the kernel has guard markers the reservation is read-write and a
//! stack's guard is marked when the stack is first used (the mapping count
//! stays constant); elsewhere the reservation is `PROT_NONE` and a stack is
//! made read-write with `mprotect` at its first use. A released stack is
//! zeroed ([`StackSlot::reset`]) before anyone gets it again.
//!
//! A released stack is handed out again before a never-used one, the
//! least recently released first, as Wasmtime's stack pool does: only as
//! many stacks are ever made usable, and keep bytes resident, as were in
//! use at once.

use super::index::{SlotIndex, Taken, default_shards};
use crate::config::StackPoolConfig;
use crate::slot::StackSlot;
use crate::sys::{self, Slab};
use crate::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// A pool of fiber stacks. Clones share the pool; a [`PooledStack`] keeps
/// it alive and goes back to it, zeroed, when dropped.
#[derive(Clone)]
pub struct StackPool {
    inner: Arc<Stacks>,
}

struct Stacks {
    config: StackPoolConfig,
    slab: Slab,
    /// Guards are guard markers in a read-write slab (else `PROT_NONE`).
    markers: bool,
    index: SlotIndex<StackState>,
    acquisitions: AtomicU64,
    exhausted: AtomicU64,
    resident: AtomicI64,
}

/// What a free stack keeps.
#[derive(Debug, Default)]
struct StackState {
    /// Made usable already (its guard marked, or its stack read-write).
    ready: bool,
    /// Bytes its last reset kept resident.
    resident: usize,
}

/// A snapshot of a [`StackPool`]'s counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StackPoolMetrics {
    /// Stacks held by users.
    pub stacks_in_use: u32,
    /// Idle stacks that were used before.
    pub unused_warm_stacks: u32,
    /// Bytes resets kept resident in idle stacks.
    pub unused_resident_bytes: u64,
    /// Stacks handed out since the pool was made.
    pub stack_acquisitions: u64,
    /// Acquisitions refused because every stack was taken.
    pub stacks_exhausted: u64,
    /// Whether guards are guard markers (else `PROT_NONE` mappings).
    pub guard_markers: bool,
}

/// A stack of a [`StackPool`]: usable from [`top`](Self::top) down to
/// [`bottom`](Self::bottom); the bytes below `bottom` fault. Returned to the
/// pool, zeroed, when dropped.
pub struct PooledStack {
    pool: Arc<Stacks>,
    slot: Option<StackSlot>,
}

impl std::fmt::Debug for PooledStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledStack")
            .field("bottom", &self.bottom())
            .field("size", &self.size())
            .finish()
    }
}

impl StackPool {
    /// Validates `config` and reserves the stacks.
    ///
    /// [`Error::InvalidConfig`], naming the field and value, for sizes that
    /// are not multiples of the host page, a stack size or guard of 0, a
    /// keep-resident size above the stack size, and a reservation that
    /// overflows or that `mmap` refuses. Nothing is done per stack until
    /// it is first used.
    pub fn new(config: &StackPoolConfig) -> Result<StackPool> {
        config.validate()?;
        // Stacks are anonymous memory: markers over files are not needed.
        let markers = config
            .stack_protection
            .markers(sys::features().anon_guard_markers);
        let (count, size, guard) = (
            config.total_stacks,
            config.stack_size,
            config.stack_guard_size,
        );
        // Each slot is `guard | stack`: the guard below the stack it guards.
        let slab = super::reserve_slab(count, 0, guard.saturating_add(size), 0, markers, || {
            format!(
                "{count} stacks: total_stacks ({count}) x (stack_size ({size}) + stack_guard_size ({guard}))"
            )
        })?;
        if guard.checked_add(size).is_none() {
            return Err(Error::InvalidConfig(format!(
                "reservation overflows for stack_size ({size}) + stack_guard_size ({guard})"
            )));
        }
        Ok(StackPool {
            inner: Arc::new(Stacks {
                config: config.clone(),
                slab,
                markers,
                // No warm stack is kept idle for a cold one's sake.
                index: SlotIndex::new(config.total_stacks, default_shards(), 0),
                acquisitions: AtomicU64::new(0),
                exhausted: AtomicU64::new(0),
                resident: AtomicI64::new(0),
            }),
        })
    }

    /// A stack, zeroed: one released before (the least recently released
    /// first), else a never-used one. [`Error::StacksExhausted`] when every
    /// stack is taken, [`Error::Os`] if a never-used stack cannot be made
    /// usable (it stays in the pool, never used, and the metrics are as
    /// before the call).
    pub fn allocate(&self) -> Result<PooledStack> {
        let p = &self.inner;
        let Ok(Taken { index, state }) = p.index.acquire(None) else {
            p.exhausted.fetch_add(1, Relaxed);
            return Err(Error::StacksExhausted {
                limit: p.config.total_stacks,
            });
        };
        let (guard, size) = (p.config.stack_guard_size, p.config.stack_size);
        let mut slot = StackSlot::in_slab(p.slab.claim(index), guard, size);
        if !state.ready
            && let Err(e) = slot.prepare(p.markers)
        {
            p.slab.unclaim(slot.into_claim());
            p.index.give_back_cold(index);
            return Err(Error::Os(e));
        }
        p.resident.fetch_sub(state.resident as i64, Relaxed);
        p.acquisitions.fetch_add(1, Relaxed);
        Ok(PooledStack {
            pool: p.clone(),
            slot: Some(slot),
        })
    }

    /// A snapshot of the pool's counts.
    pub fn metrics(&self) -> StackPoolMetrics {
        let p = &self.inner;
        StackPoolMetrics {
            stacks_in_use: p.index.in_use(),
            unused_warm_stacks: p.index.unused_warm(),
            unused_resident_bytes: p.resident.load(Relaxed).max(0) as u64,
            stack_acquisitions: p.acquisitions.load(Relaxed),
            stacks_exhausted: p.exhausted.load(Relaxed),
            guard_markers: p.markers,
        }
    }

    /// The configuration the pool was made with.
    pub fn config(&self) -> &StackPoolConfig {
        &self.inner.config
    }
}

/// The Prometheus text exposition format, as
/// [`PoolMetrics`](crate::PoolMetrics)'s: one `instance_pool_stack_*` family
/// a field.
impl std::fmt::Display for StackPoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let families: [(&str, &str, &str, u64); 6] = [
            (
                "stacks_in_use",
                "gauge",
                "Stacks held by users.",
                self.stacks_in_use.into(),
            ),
            (
                "stacks_unused_warm",
                "gauge",
                "Idle stacks that were used before.",
                self.unused_warm_stacks.into(),
            ),
            (
                "stacks_unused_resident_bytes",
                "gauge",
                "Bytes resets kept resident in idle stacks.",
                self.unused_resident_bytes,
            ),
            (
                "stack_acquisitions_total",
                "counter",
                "Stacks handed out.",
                self.stack_acquisitions,
            ),
            (
                "stacks_exhausted_total",
                "counter",
                "Acquisitions refused because every stack was taken.",
                self.stacks_exhausted,
            ),
            (
                "stack_guard_markers",
                "gauge",
                "1 if stack guards are guard markers, 0 if PROT_NONE mappings.",
                self.guard_markers.into(),
            ),
        ];
        for (name, kind, help, value) in families {
            super::metrics::family(f, name, kind, help, &value)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for StackPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackPool")
            .field("config", &self.inner.config)
            .field("guard_markers", &self.inner.markers)
            .finish()
    }
}

impl PooledStack {
    fn slot(&self) -> &StackSlot {
        self.slot.as_ref().expect("a stack is held until dropped")
    }

    /// One past the highest usable byte: where the stack pointer starts
    /// (16-byte aligned).
    pub fn top(&self) -> *mut u8 {
        self.slot().top()
    }

    /// The lowest usable byte; the guard is below it.
    pub fn bottom(&self) -> *mut u8 {
        self.slot().bottom()
    }

    /// Usable bytes.
    pub fn size(&self) -> usize {
        self.slot().size()
    }

    /// Bytes below [`bottom`](Self::bottom) that always fault.
    pub fn guard_size(&self) -> usize {
        self.pool.config.stack_guard_size
    }
}

impl Drop for PooledStack {
    fn drop(&mut self) {
        let Some(mut slot) = self.slot.take() else {
            return;
        };
        let p = &self.pool;
        let resident = slot.reset(p.config.stack_keep_resident);
        p.resident.fetch_add(resident as i64, Relaxed);
        let state = StackState {
            ready: true,
            resident,
        };
        let claim = slot.into_claim();
        let index = claim.index();
        p.slab.unclaim(claim);
        p.index.release(index, None, state);
    }
}
