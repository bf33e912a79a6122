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
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// A slot handed out: its index, and the state it was released with
/// (`S::default()` for a cold slot).
#[derive(Debug)]
pub(crate) struct Taken<S> {
    pub index: u32,
    pub state: S,
}

pub(crate) struct SlotIndex<S> {
    shards: Box<[CachePadded<Mutex<Shard<S>>>]>,
    free: CachePadded<AtomicU32>,
    unused_warm: AtomicU32,
    max_unused_warm: u32,
    clock: AtomicU64,
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
}

struct Warm<S> {
    index: u32,
    affinity: Option<u64>,
    state: S,
}

impl<S> Shard<S> {
    fn take_affine(&mut self, affinity: u64) -> Option<(u32, S)> {
        let stamps = self.by_affinity.get_mut(&affinity)?;
        let stamp = stamps.pop_last()?;
        if stamps.is_empty() {
            self.by_affinity.remove(&affinity);
        }
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
            if stamps.is_empty() {
                self.by_affinity.remove(&affinity);
            }
        }
        Some((warm.index, warm.state))
    }

    fn take_cold(&mut self) -> Option<u32> {
        self.given_back.pop().or_else(|| self.cold.next())
    }
}

fn home_shard(shards: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static ID: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ID.with(|id| *id % shards)
}

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
                }))
            })
            .collect();
        SlotIndex {
            shards,
            free: CachePadded::new(AtomicU32::new(capacity)),
            unused_warm: AtomicU32::new(0),
            max_unused_warm,
            clock: AtomicU64::new(0),
        }
    }

    /// Slots free now (not held, not queued for revocation).
    pub fn free(&self) -> u32 {
        self.free.load(Ordering::Relaxed)
    }

    /// Takes a free slot, preferring one released with `affinity` (`None`:
    /// no affinity, matches nothing); `None` when every slot is taken.
    pub fn acquire(&self, affinity: Option<u64>) -> Option<Taken<S>> {
        self.free
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
                    self.unused_warm.fetch_sub(1, Ordering::Relaxed);
                    return Some(Taken { index, state });
                }
            }
        }
        loop {
            for i in 0..n {
                let mut shard = self.shards[(home + i) % n].lock();
                let prefer_cold = self.unused_warm.load(Ordering::Relaxed) < self.max_unused_warm;
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
                    self.unused_warm.fetch_sub(1, Ordering::Relaxed);
                }
                return Some(Taken { index, state });
            }
            std::hint::spin_loop();
        }
    }

    /// Returns a slot, warm, remembering its `affinity` and `state`.
    pub fn release(&self, index: u32, affinity: Option<u64>, state: S) {
        let stamp = self.clock.fetch_add(1, Ordering::Relaxed);
        {
            let mut shard = self.shards[home_shard(self.shards.len())].lock();
            shard.warm.insert(
                stamp,
                Warm {
                    index,
                    affinity,
                    state,
                },
            );
            if let Some(affinity) = affinity {
                shard.by_affinity.entry(affinity).or_default().insert(stamp);
            }
        }
        self.unused_warm.fetch_add(1, Ordering::Relaxed);
        self.free.fetch_add(1, Ordering::Release);
    }

    /// Returns a cold slot that was taken but never used: it is cold
    /// again, and the warm count is as before it was taken.
    pub fn give_back_cold(&self, index: u32) {
        self.shards[home_shard(self.shards.len())]
            .lock()
            .given_back
            .push(index);
        self.free.fetch_add(1, Ordering::Release);
    }

    /// Idle slots that were used before.
    pub fn unused_warm(&self) -> u32 {
        self.unused_warm.load(Ordering::Relaxed)
    }
}

/// Shards to use: one per core.
pub(crate) fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cold_slots_come_out_lowest_first_then_exhaust() {
        let idx = SlotIndex::<()>::new(3, 1, 10);
        let got: Vec<u32> = (0..3).map(|_| idx.acquire(None).unwrap().index).collect();
        assert_eq!(got, [0, 1, 2]);
        assert!(idx.acquire(None).is_none());
        assert_eq!(idx.free(), 0);
    }

    #[test]
    fn affinity_wins_over_cold() {
        let idx = SlotIndex::<u8>::new(4, 1, 10);
        let a = idx.acquire(Some(7)).unwrap();
        let b = idx.acquire(Some(8)).unwrap();
        idx.release(a.index, Some(7), 70);
        idx.release(b.index, Some(8), 80);
        let again = idx.acquire(Some(7)).unwrap();
        assert_eq!((again.index, again.state), (a.index, 70));
        assert_eq!(idx.unused_warm(), 1);
    }

    #[test]
    fn cold_preferred_until_warm_cap_then_lru_warm() {
        let idx = SlotIndex::<()>::new(4, 1, 1);
        let a = idx.acquire(Some(1)).unwrap().index;
        idx.release(a, Some(1), ());
        // One warm slot idle, cap 1: no longer below the cap, so the LRU
        // warm slot is reused for a different affinity.
        assert_eq!(idx.acquire(Some(2)).unwrap().index, a);
        let idx = SlotIndex::<()>::new(4, 1, 2);
        let a = idx.acquire(Some(1)).unwrap().index;
        idx.release(a, Some(1), ());
        // Below the cap: a cold slot is preferred.
        assert_ne!(idx.acquire(Some(2)).unwrap().index, a);
    }

    #[test]
    fn no_affinity_prefers_cold_below_the_cap_then_the_lru_warm_slot() {
        let idx = SlotIndex::<()>::new(4, 1, 2);
        let a = idx.acquire(None).unwrap().index;
        let b = idx.acquire(None).unwrap().index;
        idx.release(a, None, ());
        // One warm idle (< 2): a cold slot, not the slot just released.
        let c = idx.acquire(None).unwrap().index;
        assert!(c != a && c != b);
        idx.release(b, None, ());
        idx.release(c, None, ());
        // Three warm idle (>= 2): the least recently released, a.
        assert_eq!(idx.acquire(None).unwrap().index, a);
    }

    /// The choice rules of one shard, written plainly.
    #[derive(Debug)]
    struct Model {
        capacity: u32,
        next_cold: u32,
        given_back: Vec<u32>,
        /// Oldest release first.
        warm: Vec<(u32, Option<u64>)>,
        max_warm: u32,
    }

    impl Model {
        fn cold(&mut self) -> Option<u32> {
            self.given_back.pop().or_else(|| {
                (self.next_cold < self.capacity).then(|| {
                    self.next_cold += 1;
                    self.next_cold - 1
                })
            })
        }

        fn lru(&mut self) -> Option<u32> {
            (!self.warm.is_empty()).then(|| self.warm.remove(0).0)
        }

        /// The slot taken, and whether it was warm.
        fn acquire(&mut self, affinity: Option<u64>) -> Option<(u32, bool)> {
            let affine = affinity.and_then(|a| self.warm.iter().rposition(|w| w.1 == Some(a)));
            if let Some(pos) = affine {
                return Some((self.warm.remove(pos).0, true));
            }
            if (self.warm.len() as u32) < self.max_warm {
                let cold = self.cold().map(|i| (i, false));
                cold.or_else(|| self.lru().map(|i| (i, true)))
            } else {
                let warm = self.lru().map(|i| (i, true));
                warm.or_else(|| self.cold().map(|i| (i, false)))
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Acquire(Option<u64>),
        Release(usize, Option<u64>),
        GiveBack(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let affinity = proptest::option::of(1u64..4);
        prop_oneof![
            affinity.clone().prop_map(Op::Acquire),
            (any::<usize>(), affinity).prop_map(|(i, a)| Op::Release(i, a)),
            any::<usize>().prop_map(Op::GiveBack),
        ]
    }

    proptest! {
        /// One shard hands out exactly the slot the rules name, with the
        /// state it was released with, and counts free and warm slots.
        #[test]
        fn one_shard_follows_the_choice_rules(
            capacity in 0u32..8,
            max_warm in 0u32..5,
            ops in proptest::collection::vec(op(), 0..64),
        ) {
            let idx = SlotIndex::<Option<u32>>::new(capacity, 1, max_warm);
            let mut model = Model {
                capacity,
                next_cold: 0,
                given_back: Vec::new(),
                warm: Vec::new(),
                max_warm,
            };
            let mut held = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire(a) => {
                        let got = idx.acquire(a).map(|t| (t.index, t.state));
                        let want = model.acquire(a).map(|(i, warm)| (i, warm.then_some(i)));
                        prop_assert_eq!(got, want);
                        held.extend(got.map(|(i, _)| i));
                    }
                    Op::Release(k, a) if !held.is_empty() => {
                        let i = held.swap_remove(k % held.len());
                        idx.release(i, a, Some(i));
                        model.warm.push((i, a));
                    }
                    Op::GiveBack(k) if !held.is_empty() => {
                        let i = held.swap_remove(k % held.len());
                        idx.give_back_cold(i);
                        model.given_back.push(i);
                    }
                    _ => {}
                }
                prop_assert_eq!(idx.unused_warm(), model.warm.len() as u32);
                prop_assert_eq!(idx.free() as usize, capacity as usize - held.len());
            }
        }
    }
}
