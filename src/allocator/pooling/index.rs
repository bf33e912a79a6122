//! [`SlotIndex`]: which slots are free, and which free slot to hand out.
//!
//! Free slots live in shards (one per core by default), each behind its own
//! lock on its own cache line. A thread takes from and returns to its home
//! shard, and steals from the others only when its own is empty, so two
//! threads do not contend on one lock in the steady state.
//!
//! Exhaustion is exact: a single atomic `free` count is decremented *before*
//! a thread looks for a slot and incremented only *after* a slot is back in
//! a shard. A thread that got a count is owed a slot, which is in some shard
//! already; one that finds the count at zero knows every slot was taken at
//! that instant. With capacity N, exactly N acquisitions succeed.
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
use std::sync::atomic::{AtomicU32, Ordering};

/// A slot handed out: its index, and the state it was released with
/// (`S::default()` for a cold slot).
#[derive(Debug)]
pub(crate) struct Taken<S> {
    pub index: u32,
    pub state: S,
}

pub(crate) struct SlotIndex<S> {
    shards: Box<[CachePadded<Mutex<Shard<S>>>]>,
    /// The counts every acquisition and release writes, on one cache line
    /// of their own: a line two cores write bounces once per operation,
    /// not once per count.
    counts: CachePadded<Counts>,
    max_unused_warm: u32,
}

struct Counts {
    free: AtomicU32,
    unused_warm: AtomicU32,
    /// Held by tenants: kept by the pool that uses the index (see
    /// [`SlotIndex::in_use`]), here for its cache line.
    in_use: AtomicU32,
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

impl<S: Default> SlotIndex<S> {
    /// `capacity` cold slots spread over `shards` shards in contiguous
    /// blocks (neighbouring slots tend to be released together, which lets
    /// the decommit queue merge their resets).
    pub fn new(capacity: u32, shards: usize, max_unused_warm: u32) -> Self {
        let shards = shards.clamp(1, capacity.max(1) as usize);
        let per = (capacity as usize).div_ceil(shards);
        let shards = (0..shards)
            .map(|s| {
                let lo = (s * per).min(capacity as usize) as u32;
                let hi = ((s + 1) * per).min(capacity as usize) as u32;
                CachePadded::new(Mutex::new(Shard {
                    cold: lo..hi,
                    given_back: Vec::new(),
                    warm: BTreeMap::new(),
                    by_affinity: HashMap::new(),
                    clock: 0,
                }))
            })
            .collect();
        SlotIndex {
            shards,
            counts: CachePadded::new(Counts {
                free: AtomicU32::new(capacity),
                unused_warm: AtomicU32::new(0),
                in_use: AtomicU32::new(0),
            }),
            max_unused_warm,
        }
    }

    /// Slots free now (not held, not queued for revocation).
    pub fn free(&self) -> u32 {
        self.counts.free.load(Ordering::Relaxed)
    }

    /// Takes a free slot, preferring one released with `affinity` (`None`:
    /// no affinity, matches nothing); `None` when every slot is taken.
    pub fn acquire(&self, affinity: Option<u64>) -> Option<Taken<S>> {
        self.counts
            .free
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| n.checked_sub(1))
            .ok()?;
        // We are owed a slot: it is in some shard already. Another owed
        // thread may take the one we saw, so go round until we find one.
        let n = self.shards.len();
        let home = home_shard(n);
        // A warm slot with the same image wins over anything in the home
        // shard, wherever it is: it needs no remapping.
        if let Some(affinity) = affinity {
            for i in 0..n {
                let taken = self.shards[(home + i) % n].lock().take_affine(affinity);
                if let Some((index, state)) = taken {
                    self.counts.unused_warm.fetch_sub(1, Ordering::Relaxed);
                    return Some(Taken { index, state });
                }
            }
        }
        loop {
            for i in 0..n {
                let mut shard = self.shards[(home + i) % n].lock();
                let prefer_cold =
                    self.counts.unused_warm.load(Ordering::Relaxed) < self.max_unused_warm;
                let affine = affinity.and_then(|a| shard.take_affine(a));
                let (index, state, warm) = if let Some((idx, st)) = affine {
                    (idx, st, true)
                } else if prefer_cold {
                    match shard.take_cold() {
                        Some(idx) => (idx, S::default(), false),
                        None => match shard.take_lru() {
                            Some((idx, st)) => (idx, st, true),
                            None => continue,
                        },
                    }
                } else {
                    match shard.take_lru() {
                        Some((idx, st)) => (idx, st, true),
                        None => match shard.take_cold() {
                            Some(idx) => (idx, S::default(), false),
                            None => continue,
                        },
                    }
                };
                if warm {
                    self.counts.unused_warm.fetch_sub(1, Ordering::Relaxed);
                }
                return Some(Taken { index, state });
            }
            std::hint::spin_loop();
        }
    }

    /// Returns a slot, warm, remembering its `affinity` and `state`.
    pub fn release(&self, index: u32, affinity: Option<u64>, state: S) {
        {
            let mut shard = self.shards[home_shard(self.shards.len())].lock();
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
        }
        self.counts.unused_warm.fetch_add(1, Ordering::Relaxed);
        self.counts.free.fetch_add(1, Ordering::Release);
    }

    /// Returns a cold slot that was taken but never used: it is cold
    /// again, and the warm count is as before it was taken.
    pub fn give_back_cold(&self, index: u32) {
        self.shards[home_shard(self.shards.len())]
            .lock()
            .given_back
            .push(index);
        self.counts.free.fetch_add(1, Ordering::Release);
    }

    /// The pool's count of slots held by tenants, beside the free count
    /// that every acquisition and release writes too.
    pub fn in_use(&self) -> &AtomicU32 {
        &self.counts.in_use
    }

    /// Idle slots that were used before.
    pub fn unused_warm(&self) -> u32 {
        self.counts.unused_warm.load(Ordering::Relaxed)
    }
}

/// Shards to use: one per core.
pub(crate) fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
