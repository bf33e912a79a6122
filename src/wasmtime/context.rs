//! How `new_memory` learns the slot and image of the memory it makes: an
//! instantiation through [`PooledModule`](super::PooledModule) takes its
//! memories' slots first (a [`Reservation`]) and makes it the current
//! one of its thread while Wasmtime runs ([`enter`]); the creator takes
//! each slot from there, in the order Wasmtime asks.
//!
//! The reservation is moved into the thread-local for the call and back
//! out after it, boxed so that a move is a pointer's. Against an `Arc`
//! shared with the thread-local, a `Mutex` and a `Vec` of entries, that
//! took an instantiation and drop of a module image (the `wasmtime_data`
//! module of `benches/wasmtime`, 4 KiB of data) from 2.17 to 2.02 µs of
//! thread CPU time, Wasmtime's pooling allocator taking 2.00 (one run,
//! best of five rounds of 100,000).

use super::bake::Shape;
use crate::allocator::{Attempt, Pool};
use crate::layout::MemoryPlan;
use crate::slot::MemorySlot;
use crate::{MemoryType, Result, WASM_PAGE_SIZE};
use std::cell::Cell;
use std::sync::Arc;

thread_local! {
    /// The reservation of the instantiation running on this thread, moved
    /// in for the call (or the poll) and back out after it. Touched only with
    /// `try_with`: a memory made from a thread-local's destructor at
    /// thread exit finds none, and gets a zeroed slot.
    static CURRENT: Cell<Option<Box<Reservation>>> = const { Cell::new(None) };
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

/// The slots an instantiation took before Wasmtime runs, one for each
/// of `wants`, handed out in order; what Wasmtime does not take goes back
/// to the pool (with a wake of the waiters) when the reservation finishes
/// or drops.
pub(super) struct Reservation {
    pool: Arc<Pool>,
    wants: Arc<[Want]>,
    /// The slot for the first want, then the others' (`None` once taken):
    /// a module of one memory allocates nothing here.
    first: Option<MemorySlot>,
    rest: Vec<Option<MemorySlot>>,
    /// The next want to hand out.
    next: usize,
}

impl Reservation {
    /// One attempt at taking a slot for each of `wants`; on failure the
    /// slots taken go back as `attempt` says.
    pub fn take(
        pool: &Arc<Pool>,
        wants: &Arc<[Want]>,
        attempt: Attempt,
    ) -> Result<Box<Reservation>> {
        let mut r = Box::new(Reservation {
            pool: pool.clone(),
            wants: wants.clone(),
            first: None,
            rest: Vec::new(),
            next: 0,
        });
        for (i, want) in wants.iter().enumerate() {
            match pool.acquire_memory(&want.plan) {
                Ok((slot, _)) if i == 0 => r.first = Some(slot),
                Ok((slot, _)) => r.rest.push(Some(slot)),
                Err(e) => {
                    r.give_back(attempt);
                    return Err(e);
                }
            }
        }
        Ok(r)
    }

    /// Gives back every slot Wasmtime did not take. `Err` with the index
    /// (among defined memories) of one that had an image: its memory, if
    /// Wasmtime made it, did not come from this reservation.
    pub fn finish(&mut self) -> std::result::Result<(), usize> {
        if self.next == self.wants.len() {
            // Wasmtime took every slot (the usual end): nothing to give back.
            return Ok(());
        }
        let slots = std::iter::once(&self.first).chain(&self.rest);
        let missed = slots
            .zip(self.wants.iter())
            .position(|(slot, want)| slot.is_some() && want.shape.is_some());
        self.give_back(Attempt::Alone);
        missed.map_or(Ok(()), Err)
    }

    /// The place of want `i`'s slot.
    fn slot(&mut self, i: usize) -> Option<&mut Option<MemorySlot>> {
        match i {
            0 => Some(&mut self.first),
            _ => self.rest.get_mut(i - 1),
        }
    }

    /// Releases the slots left, as `attempt` says.
    fn give_back(&mut self, attempt: Attempt) {
        if self.next == self.wants.len() {
            // Slots are handed out in order: every one was taken.
            return;
        }
        let Reservation {
            pool,
            wants,
            first,
            rest,
            ..
        } = self;
        let slots = std::iter::once(first.take()).chain(rest.iter_mut().map(Option::take));
        let mut left = slots
            .zip(wants.iter())
            .filter_map(|(slot, want)| Some((slot?, want.plan.ty)))
            .peekable();
        if left.peek().is_some() {
            pool.release(left, std::iter::empty(), 0, attempt);
        }
        // Nothing left to give back.
        self.next = self.wants.len();
    }

    /// The next slot, for a memory of `shape` and `minimum` bytes made from
    /// `pool`: `None` if this reservation is another pool's, has no slot
    /// left, or its next slot holds an image for another shape.
    fn next_for(&mut self, pool: &Arc<Pool>, shape: Shape, minimum: usize) -> Option<Taken> {
        if !Arc::ptr_eq(&self.pool, pool) {
            return None;
        }
        let next = self.next;
        let want = self.wants.get(next)?;
        if want.shape.is_some_and(|s| s != shape) {
            return None;
        }
        let ty = MemoryType::new((minimum / WASM_PAGE_SIZE) as u64, None);
        let image = want.plan.image.clone();
        let slot = self.slot(next)?.take()?;
        self.next += 1;
        Some((slot, MemoryPlan { ty, image }))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Cancelled or unwound before `finish`: the slots still go back.
        self.give_back(Attempt::Alone);
    }
}

/// A slot taken from the current reservation, with its plan.
pub(super) type Taken = (MemorySlot, MemoryPlan);

/// The next reserved slot of this thread's instantiation for a memory of
/// `shape` and `minimum` bytes from `pool`, if there is one.
pub(super) fn take(pool: &Arc<Pool>, shape: Shape, minimum: usize) -> Option<Taken> {
    CURRENT
        .try_with(|c| {
            let mut current = c.take();
            let taken = current
                .as_mut()
                .and_then(|r| r.next_for(pool, shape, minimum));
            c.set(current);
            taken
        })
        .ok()
        .flatten()
}

/// Makes `home`'s reservation its thread's current one until the guard
/// drops, which moves it back into `home` (and the previous current one,
/// if any, back into the thread).
pub(super) fn enter(home: &mut Option<Box<Reservation>>) -> Entered<'_> {
    let mut ours = home.take();
    let previous = CURRENT.try_with(|c| c.replace(ours.take())).ok();
    // The thread is exiting: ours stays home.
    *home = ours;
    Entered { home, previous }
}

/// While alive, a reservation is its thread's current one.
pub(super) struct Entered<'a> {
    home: &'a mut Option<Box<Reservation>>,
    /// `None`: the thread's cell was gone, nothing entered.
    previous: Option<Option<Box<Reservation>>>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take()
            && let Ok(ours) = CURRENT.try_with(|c| c.replace(previous))
        {
            *self.home = ours;
        }
    }
}
