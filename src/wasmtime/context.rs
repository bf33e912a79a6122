//! How `new_memory` learns the slot and image of the memory it makes: an
//! instantiation through [`PooledModule`](super::PooledModule) takes its
//! memories' slots first (a [`Reservation`]) and holds it as the current
//! one of its thread while Wasmtime runs ([`Reservation::enter`]); the
//! creator takes each slot from there, in the order Wasmtime asks.

use super::bake::Shape;
use crate::allocator::{Attempt, Pool};
use crate::layout::MemoryPlan;
use crate::slot::MemorySlot;
use crate::{MemoryType, Result, WASM_PAGE_SIZE};
use parking_lot::Mutex;
use std::cell::Cell;
use std::sync::Arc;

thread_local! {
    /// The reservation of the instantiation running on this thread. Touched
    /// only with `try_with`: a memory made from a thread-local's destructor
    /// at thread exit finds none, and gets a zeroed slot.
    static CURRENT: Cell<Option<Arc<Reservation>>> = const { Cell::new(None) };
}

/// One memory an instantiation will make: the plan to take its slot with,
/// and, for a memory with an image, the exact shape that may take it.
#[derive(Clone, Debug)]
pub(super) struct Want {
    pub plan: MemoryPlan,
    /// `Some` when the plan has an image: only a request of exactly this
    /// shape gets it. An imageless slot serves any request.
    pub shape: Option<Shape>,
}

/// The slots an instantiation took before Wasmtime runs, handed out in
/// order; what Wasmtime does not take goes back to the pool (with a wake of
/// the waiters) when the reservation finishes or drops.
pub(super) struct Reservation {
    pool: Arc<Pool>,
    state: Mutex<State>,
}

struct State {
    entries: Vec<Entry>,
    next: usize,
}

struct Entry {
    /// `None` once taken.
    slot: Option<MemorySlot>,
    want: Want,
}

impl Reservation {
    /// One attempt at taking a slot for each of `wants`; on failure the
    /// slots taken go back as `attempt` says.
    pub fn take(pool: &Arc<Pool>, wants: &[Want], attempt: Attempt) -> Result<Reservation> {
        let mut entries = Vec::with_capacity(wants.len());
        for want in wants {
            match pool.acquire_memory(&want.plan) {
                Ok((slot, _)) => entries.push(Entry {
                    slot: Some(slot),
                    want: want.clone(),
                }),
                Err(e) => {
                    let taken = entries.into_iter().filter_map(Entry::into_slot);
                    pool.release(taken, std::iter::empty(), 0, attempt);
                    return Err(e);
                }
            }
        }
        Ok(Reservation {
            pool: pool.clone(),
            state: Mutex::new(State { entries, next: 0 }),
        })
    }

    /// Makes this the thread's current reservation until the guard drops
    /// (the previous one, if any, is current again then).
    pub fn enter(self: &Arc<Self>) -> Entered {
        let previous = CURRENT.try_with(|c| c.replace(Some(self.clone())));
        Entered(previous.ok())
    }

    /// Gives back every slot Wasmtime did not take. `Err` with the index
    /// (among defined memories) of one that had an image: its memory, if
    /// Wasmtime made it, did not come from this reservation.
    pub fn finish(&self) -> std::result::Result<(), usize> {
        let mut state = self.state.lock();
        let missed = state
            .entries
            .iter()
            .position(|e| e.slot.is_some() && e.want.shape.is_some());
        let left: Vec<_> = state
            .entries
            .drain(..)
            .filter_map(Entry::into_slot)
            .collect();
        drop(state);
        if !left.is_empty() {
            let none = std::iter::empty();
            self.pool.release(left.into_iter(), none, 0, Attempt::Alone);
        }
        missed.map_or(Ok(()), Err)
    }

    /// The next slot, for a memory of `shape` and `minimum` bytes made from
    /// `pool`: `None` if this reservation is another pool's, has no slot
    /// left, or its next slot holds an image for another shape.
    fn next_for(&self, pool: &Arc<Pool>, shape: Shape, minimum: usize) -> Option<Taken> {
        if !Arc::ptr_eq(&self.pool, pool) {
            return None;
        }
        let mut state = self.state.lock();
        let next = state.next;
        let entry = state.entries.get_mut(next)?;
        if entry.want.shape.is_some_and(|s| s != shape) {
            return None;
        }
        let slot = entry.slot.take()?;
        let mut plan = entry.want.plan.clone();
        plan.ty = MemoryType::new((minimum / WASM_PAGE_SIZE) as u64, None);
        state.next += 1;
        Some((slot, plan))
    }
}

impl Entry {
    fn into_slot(self) -> Option<(MemorySlot, MemoryPlan)> {
        Some((self.slot?, self.want.plan))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Cancelled or unwound before `finish`: the slots still go back.
        let _ = self.finish();
    }
}

/// A slot taken from the current reservation, with its plan.
pub(super) type Taken = (MemorySlot, MemoryPlan);

/// The next reserved slot of this thread's instantiation for a memory of
/// `shape` and `minimum` bytes from `pool`, if there is one.
pub(super) fn take(pool: &Arc<Pool>, shape: Shape, minimum: usize) -> Option<Taken> {
    CURRENT
        .try_with(|c| {
            let current = c.take();
            let taken = current
                .as_ref()
                .and_then(|r| r.next_for(pool, shape, minimum));
            c.set(current);
            taken
        })
        .ok()
        .flatten()
}

/// While alive, a reservation is its thread's current one.
pub(super) struct Entered(Option<Option<Arc<Reservation>>>);

impl Drop for Entered {
    fn drop(&mut self) {
        if let Some(previous) = self.0.take() {
            // Ours leaves the cell here and drops after it (a reservation's
            // drop may release slots and wake waiters).
            let _ours = CURRENT.try_with(|c| c.replace(previous));
        }
    }
}
