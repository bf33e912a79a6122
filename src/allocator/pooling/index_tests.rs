//! The slot index against a model of its choice rules.

use super::*;
use proptest::prelude::*;

#[test]
fn cold_slots_come_out_lowest_first_then_exhaust() {
    let idx = SlotIndex::<()>::new(3, 1, 10);
    let got: Vec<u32> = (0..3).map(|_| idx.acquire(None).unwrap().index).collect();
    assert_eq!(got, [0, 1, 2]);
    let empty = idx.acquire(None).expect_err("all taken");
    assert_eq!(empty.in_use, 3);
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
                    let got = idx.acquire(a).ok().map(|t| (t.index, t.state));
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
            prop_assert_eq!(idx.in_use() as usize, held.len());
        }
    }
}

/// Every release of a new image adds an affinity; emptied sets are kept
/// for reuse but dropped once they outnumber the warm slots, so a pool
/// that sees many images does not grow without bound.
#[test]
fn emptied_affinity_sets_do_not_pile_up() {
    let index = SlotIndex::<()>::new(4, 1, 100);
    for image in 0..10_000u64 {
        let t = index.acquire(Some(image)).unwrap();
        index.release(t.index, Some(image), ());
    }
    let shard = index.cells[0].shard.lock();
    assert!(
        shard.by_affinity.len() <= 64 + 2 * shard.warm.len() + 1,
        "{} affinities for {} warm slots",
        shard.by_affinity.len(),
        shard.warm.len()
    );
    // What is kept still finds its slot.
    drop(shard);
    assert!(index.acquire(Some(9_999)).is_ok());
}

/// Slots taken on one thread and released on another move between
/// shards; an acquisition still finds every free slot, wherever it went,
/// and reports the pool empty (with every slot held) only when it is.
#[test]
fn exhaustion_is_exact_across_shards() {
    let idx = std::sync::Arc::new(SlotIndex::<()>::new(8, 4, 2));
    let taken: Vec<u32> = (0..8).map(|_| idx.acquire(None).unwrap().index).collect();
    assert_eq!(idx.acquire(Some(1)).unwrap_err().in_use, 8);
    // Given back on other threads: into their home shards.
    std::thread::scope(|s| {
        for i in taken {
            let idx = idx.clone();
            s.spawn(move || idx.release(i, Some(u64::from(i % 2)), ()));
        }
    });
    assert_eq!((idx.free(), idx.in_use()), (8, 0));
    for _ in 0..8 {
        idx.acquire(None).expect("a free slot in some shard");
    }
    assert_eq!(idx.acquire(None).unwrap_err().in_use, 8);
    // On its way back: neither free nor held.
    idx.unhold();
    assert_eq!(idx.acquire(None).unwrap_err().in_use, 7);
}
