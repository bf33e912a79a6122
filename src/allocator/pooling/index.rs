//! [`SlotIndex`]: which slots are free, and which free slot to hand out.
//!
//! Free slots live in shards (one per core by default), each behind its own
//! lock on its own cache line. A thread takes from and returns to its home
//! shard, and steals from the others only when its own is empty, so two
//! threads do not contend on one lock in the steady state.
//!
//! Every count lives with its shard: the free and warm counts (mirrors of
//! the shard's lists, written under its lock) and the held count (in use by
//! the pool's user). A thread that takes from and returns to its home shard
//! writes only that shard's cache line, so two cores share no line in the
//! steady state (a count that every acquisition wrote, pool-wide, was most
//! of what kept two threads from twice the work).
//!
//! Exhaustion is exact: an acquisition that finds no slot in any shard looks
//! again holding every shard's lock at once, a snapshot in which no slot
//! comes or goes. Only then is the pool empty, and the held counts of that
//! snapshot say how many slots are on their way back (neither held nor
//! free: see [`SlotIndex::unhold`]).
//!
//! The choice follows Wasmtime's module-affine allocator:
//! 1. a warm (previously used) slot with the same affinity (image), the most
//!    recently released first, so it needs no remapping: from the home
//!    shard first, then from the others, before anything else;
//! 2. else, within a shard (the home shard first), while fewer than `max_unused_warm` warm slots are idle, a cold
//!    (never used) slot, then the least recently used warm slot;
//! 3. else the least recently used warm slot (its contents are replaced),
//!    then a cold one.
//!
//! `None` is no affinity (a memory without a mapped image, a table, a
//! stack): such a slot is never matched by rule 1, so cold slots are
//! preferred for it until `max_unused_warm` warm ones are idle, as for a
//! new image.

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

/// A slot handed out: its index, and the state it was released with
/// (`S::default()` for a cold slot).
#[derive(Debug)]
pub(crate) struct Taken<S> {
    pub index: u32,
    pub state: S,
}

pub(crate) struct SlotIndex<S> {
    cells: Box<[CachePadded<Cell<S>>]>,
    max_unused_warm: u32,
}

/// No slot was free: every shard's lock was held when none was found.
#[derive(Debug)]
pub(crate) struct Empty {
    /// Slots held at that instant (the rest were on their way back).
    pub in_use: u32,
}

/// A shard and its counts, on cache lines of their own.
struct Cell<S> {
    shard: Mutex<Shard<S>>,
    /// The shard's free slots and warm ones: mirrors of its lists, written
    /// under its lock, read without it (metrics, the warm cap, slack).
    free: AtomicU32,
    warm: AtomicU32,
    /// Held slots counted here: incremented by acquisitions of threads at
    /// home here (under the lock of the shard they took from), decremented
    /// by releases of threads at home here. One shard's count may go below
    /// zero; the sum over shards is the number held.
    in_use: AtomicI64,
}

struct Shard<S> {
    /// Never-used slots, lowest index first: a range, so a pool of any
    /// size costs nothing per slot until a slot is used.
    cold: std::ops::Range<u32>,
    /// Slots handed out but given back unused: cold again, taken first.
    given_back: Vec<u32>,
    /// Released slots by release time, oldest first.
    warm: BTreeMap<u64, Warm<S>>,
    /// Release times of the warm slots, by affinity.
    by_affinity: HashMap<u64, BTreeSet<u64>>,
    /// The next release time: a shard's own clock (warm slots are only
    /// ordered within their shard), so releases share no counter.
    clock: u64,
}

struct Warm<S> {
    index: u32,
    affinity: Option<u64>,
    state: S,
}

impl<S> Shard<S> {
    fn take_affine(&mut self, affinity: u64) -> Option<(u32, S)> {
        // An emptied set stays (see `remember`): a slot released with the
        // same image refills it without allocating.
        let stamp = self.by_affinity.get_mut(&affinity)?.pop_last()?;
        let warm = self
            .warm
            .remove(&stamp)
            .expect("affinity index out of sync");
        Some((warm.index, warm.state))
    }

    fn take_lru(&mut self) -> Option<(u32, S)> {
        let (stamp, warm) = self.warm.pop_first()?;
        if let Some(affinity) = warm.affinity {
            let stamps = self
                .by_affinity
                .get_mut(&affinity)
                .expect("affinity index out of sync");
            stamps.remove(&stamp);
        }
        Some((warm.index, warm.state))
    }

    /// Files a warm slot's release time under its affinity. Emptied sets
    /// are kept for the next release of the same image, and dropped once
    /// they outnumber the warm slots (images come and go).
    fn remember(&mut self, stamp: u64, affinity: u64) {
        self.by_affinity.entry(affinity).or_default().insert(stamp);
        if self.by_affinity.len() > 64 + 2 * self.warm.len() {
            self.by_affinity.retain(|_, stamps| !stamps.is_empty());
        }
    }

    fn take_cold(&mut self) -> Option<u32> {
        self.given_back.pop().or_else(|| self.cold.next())
    }
}

fn home_shard(shards: usize) -> usize {
    thread_number() % shards
}

pub(super) use crate::sys::thread_number;

impl<S> Shard<S> {
    /// Takes a slot by the rules of the module doc (after affinity):
    /// `prefer_cold` is asked only where both kinds are there to choose
    /// from. The slot and its state (`None`: cold).
    fn take_by_rules(&mut self, prefer_cold: impl FnOnce() -> bool) -> Option<(u32, Option<S>)> {
        let has_cold = !self.given_back.is_empty() || !self.cold.is_empty();
        if has_cold && (self.warm.is_empty() || prefer_cold()) {
            return self.take_cold().map(|i| (i, None));
        }
        self.take_lru().map(|(i, s)| (i, Some(s)))
    }

    fn free_len(&self) -> usize {
        self.cold.len() + self.given_back.len() + self.warm.len()
    }
}

impl<S> Cell<S> {
    /// Writes the mirrors after a change under `shard`'s lock.
    fn mirror(&self, shard: &Shard<S>) {
        self.free.store(shard.free_len() as u32, Ordering::Relaxed);
        self.warm.store(shard.warm.len() as u32, Ordering::Relaxed);
    }
}

impl<S: Default> SlotIndex<S> {
    /// `capacity` cold slots spread over `shards` shards in contiguous
    /// blocks (neighbouring slots tend to be released together, which lets
    /// the decommit queue merge their resets).
    pub fn new(capacity: u32, shards: usize, max_unused_warm: u32) -> Self {
        let shards = shards.clamp(1, capacity.max(1) as usize);
        let per = (capacity as usize).div_ceil(shards);
        let cells = (0..shards)
            .map(|s| {
                let lo = (s * per).min(capacity as usize) as u32;
                let hi = ((s + 1) * per).min(capacity as usize) as u32;
                CachePadded::new(Cell {
                    shard: Mutex::new(Shard {
                        cold: lo..hi,
                        given_back: Vec::new(),
                        warm: BTreeMap::new(),
                        by_affinity: HashMap::new(),
                        clock: 0,
                    }),
                    free: AtomicU32::new(hi - lo),
                    warm: AtomicU32::new(0),
                    in_use: AtomicI64::new(0),
                })
            })
            .collect();
        SlotIndex {
            cells,
            max_unused_warm,
        }
    }

    /// Slots free now (not held, not on their way back). Exact when
    /// nothing moves; a sum of per-shard counts while slots do.
    pub fn free(&self) -> u32 {
        self.cells
            .iter()
            .map(|c| c.free.load(Ordering::Relaxed))
            .sum()
    }

    /// [`free`](Self::free) estimated from the calling thread's home
    /// shard alone (its count times the shards): no other core's line read.
    pub fn free_estimate(&self) -> u32 {
        let n = self.cells.len();
        let home = self.cells[home_shard(n)].free.load(Ordering::Relaxed);
        home.saturating_mul(n as u32)
    }

    /// Takes a free slot, preferring one released with `affinity` (`None`:
    /// no affinity, matches nothing), and counts it held; [`Empty`] when
    /// every slot is taken.
    pub fn acquire(&self, affinity: Option<u64>) -> Result<Taken<S>, Empty> {
        let n = self.cells.len();
        let home = home_shard(n);
        let ring = || (0..n).map(move |i| (home + i) % n);
        // A warm slot with the same image wins over anything in the home
        // shard, wherever it is: it needs no remapping.
        if let Some(affinity) = affinity {
            for s in ring() {
                let cell = &self.cells[s];
                if s != home && cell.warm.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                let mut shard = cell.shard.lock();
                if let Some((index, state)) = shard.take_affine(affinity) {
                    return Ok(self.took(home, cell, &shard, index, Some(state)));
                }
            }
        }
        let prefer_cold = || self.unused_warm() < self.max_unused_warm;
        for s in ring() {
            let cell = &self.cells[s];
            if s != home && cell.free.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut shard = cell.shard.lock();
            let got = match affinity.and_then(|a| shard.take_affine(a)) {
                Some((index, state)) => Some((index, Some(state))),
                None => shard.take_by_rules(prefer_cold),
            };
            if let Some((index, state)) = got {
                return Ok(self.took(home, cell, &shard, index, state));
            }
        }
        // Nothing seen: look again with every lock held (in order, so two
        // such looks cannot deadlock), a snapshot nothing moves in.
        let mut shards: Vec<_> = self.cells.iter().map(|c| c.shard.lock()).collect();
        for (cell, shard) in self.cells.iter().zip(shards.iter_mut()) {
            if let Some((index, state)) = shard.take_by_rules(prefer_cold) {
                return Ok(self.took(home, cell, shard, index, state));
            }
        }
        let in_use = self.held(Ordering::SeqCst);
        drop(shards);
        Err(Empty { in_use })
    }

    /// Counts a slot taken from `cell` (its lock held: `shard`) as held.
    fn took(
        &self,
        home: usize,
        cell: &Cell<S>,
        shard: &Shard<S>,
        index: u32,
        state: Option<S>,
    ) -> Taken<S> {
        cell.mirror(shard);
        self.cells[home].in_use.fetch_add(1, Ordering::SeqCst);
        Taken {
            index,
            state: state.unwrap_or_default(),
        }
    }

    /// Returns a held slot, warm, remembering its `affinity` and `state`.
    pub fn release(&self, index: u32, affinity: Option<u64>, state: S) {
        self.unhold();
        self.put_back(index, affinity, state);
    }

    /// A held slot is no longer held, but not free yet: on its way back
    /// (being reset, or queued for revocation) until [`put_back`](Self::put_back).
    pub fn unhold(&self) {
        let home = home_shard(self.cells.len());
        self.cells[home].in_use.fetch_sub(1, Ordering::SeqCst);
    }

    /// Makes a slot [`unhold`](Self::unhold) gave up free again, warm.
    pub fn put_back(&self, index: u32, affinity: Option<u64>, state: S) {
        let cell = &self.cells[home_shard(self.cells.len())];
        let mut shard = cell.shard.lock();
        let stamp = shard.clock;
        shard.clock += 1;
        shard.warm.insert(
            stamp,
            Warm {
                index,
                affinity,
                state,
            },
        );
        if let Some(affinity) = affinity {
            shard.remember(stamp, affinity);
        }
        cell.mirror(&shard);
    }

    /// Returns a cold slot that was taken but never used: it is cold
    /// again, and the warm count is as before it was taken.
    pub fn give_back_cold(&self, index: u32) {
        self.unhold();
        let cell = &self.cells[home_shard(self.cells.len())];
        let mut shard = cell.shard.lock();
        shard.given_back.push(index);
        cell.mirror(&shard);
    }

    /// Slots held now (exact when nothing moves).
    pub fn in_use(&self) -> u32 {
        self.held(Ordering::Relaxed)
    }

    /// The shards' held counts summed, each read with `order`.
    fn held(&self, order: Ordering) -> u32 {
        let held: i64 = self.cells.iter().map(|c| c.in_use.load(order)).sum();
        held.clamp(0, u32::MAX as i64) as u32
    }

    /// Idle slots that were used before.
    pub fn unused_warm(&self) -> u32 {
        self.cells
            .iter()
            .map(|c| c.warm.load(Ordering::Relaxed))
            .sum()
    }
}

/// Shards to use: one per core.
pub(crate) fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
