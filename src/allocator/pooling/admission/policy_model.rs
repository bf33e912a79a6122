//! A model of waiters and a pool of interchangeable slots driven through
//! the [`Policy`] by proptest: arrivals needing 1 to 3 slots with their own
//! deadlines, releases, time passing, executors that stop and resume
//! polling. After every step the model runs to quiescence (every woken
//! waiter that is being polled is polled, its try made) and checks:
//! - no waiter is passed more than [`MAX_OVERTAKEN`] times before its
//!   deadline;
//! - no waiter that is polled is still queued past its deadline;
//! - a waiter that fits in the free slots waits only behind one that
//!   fairness protects (overtaken enough, before its deadline) or one that
//!   was woken and still has its grace.

use super::*;
use proptest::prelude::*;

/// One step of time.
const TICK: Duration = Duration::from_millis(25);

#[derive(Clone, Debug)]
enum Step {
    Arrive { need: u32, patience: u32 },
    Release,
    Tick(u32),
    Stall(usize),
    Resume(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1..=3u32, 1..=40u32).prop_map(|(need, patience)| Step::Arrive { need, patience }),
        3 => Just(Step::Release),
        2 => (1..=8u32).prop_map(Step::Tick),
        1 => (0..8usize).prop_map(Step::Stall),
        1 => (0..8usize).prop_map(Step::Resume),
    ]
}

struct Waiter {
    ticket: u64,
    need: u32,
    deadline: Instant,
    /// Its executor does not poll it.
    stalled: bool,
    /// Woken while stalled: polled when resumed.
    pending: bool,
    /// Times served ahead of it before its deadline.
    passed: u32,
}

struct Model {
    policy: Policy<u64>,
    now: Instant,
    free: u32,
    /// Slot counts of served instantiations, released first in, first out.
    holders: VecDeque<u32>,
    queued: Vec<Waiter>,
}

impl Model {
    fn new(slots: u32) -> Self {
        Model {
            policy: Policy::default(),
            now: Instant::now(),
            free: slots,
            holders: VecDeque::new(),
            queued: Vec::new(),
        }
    }

    fn index(&self, ticket: u64) -> usize {
        self.queued.iter().position(|w| w.ticket == ticket).unwrap()
    }

    /// A poll of `ticket`'s turn and, if granted, its try.
    fn poll(&mut self, ticket: u64) {
        let i = self.index(ticket);
        let (need, deadline) = (self.queued[i].need, self.queued[i].deadline);
        let (turn, _) = self.policy.poll(ticket, deadline, self.now, ticket);
        match turn {
            Poll::Wait => {}
            Poll::Try | Poll::Expired if self.free >= need => {
                if turn == Poll::Try {
                    for w in &mut self.queued[..i] {
                        if w.deadline > self.now {
                            w.passed += 1;
                            assert!(w.passed <= MAX_OVERTAKEN, "passed too often");
                        }
                    }
                }
                self.free -= need;
                self.holders.push_back(need);
                self.queued.remove(i);
                self.policy.leave(ticket);
            }
            Poll::Try => {
                // The try fails; `Admission::run` then waits for its turn
                // again.
                let epoch = self.policy.epoch;
                self.policy.failed(ticket, epoch);
                self.poll(ticket);
            }
            Poll::Expired => {
                self.queued.remove(i);
                self.policy.leave(ticket);
            }
        }
    }

    /// Wakes whom the policy says, polls those being polled, until nobody
    /// is woken; deadline timers fire for waiters being polled.
    fn settle(&mut self) {
        loop {
            let expired: Vec<u64> = self
                .queued
                .iter()
                .filter(|w| !w.stalled && w.deadline <= self.now)
                .map(|w| w.ticket)
                .collect();
            for t in &expired {
                self.poll(*t);
            }
            let (woken, _) = self.policy.schedule(self.now);
            if woken.is_empty() && expired.is_empty() {
                return;
            }
            for t in woken {
                let i = self.index(t);
                if self.queued[i].stalled {
                    self.queued[i].pending = true;
                } else {
                    self.poll(t);
                }
            }
        }
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Arrive { need, patience } => {
                let ticket = self.policy.enqueue();
                self.queued.push(Waiter {
                    ticket,
                    need,
                    deadline: self.now + TICK * patience,
                    stalled: false,
                    pending: false,
                    passed: 0,
                });
                self.poll(ticket);
            }
            Step::Release => {
                if let Some(n) = self.holders.pop_front() {
                    self.free += n;
                    self.policy.epoch += 1;
                }
            }
            Step::Tick(n) => self.now += TICK * n,
            Step::Stall(i) => {
                if let Some(w) = self.queued.get_mut(i) {
                    w.stalled = true;
                }
            }
            Step::Resume(i) => {
                if let Some(w) = self.queued.get_mut(i) {
                    w.stalled = false;
                    let (ticket, pending) = (w.ticket, std::mem::take(&mut w.pending));
                    if pending || w.deadline <= self.now {
                        self.poll(ticket);
                    }
                }
            }
        }
        self.settle();
        self.check();
    }

    fn check(&self) {
        for (i, w) in self.queued.iter().enumerate() {
            let e = self.policy.entry(w.ticket);
            if !w.stalled {
                assert!(w.deadline > self.now, "a polled waiter past its deadline");
            }
            if w.need > self.free || w.stalled {
                continue;
            }
            let held_up = self.queued[..i].iter().any(|a| {
                let a = self.policy.entry(a.ticket);
                let protected = a.overtaken >= MAX_OVERTAKEN && a.deadline > Some(self.now);
                let in_grace = a.woken_at.is_some_and(|t| t + GRACE > self.now);
                protected || in_grace
            });
            assert!(
                held_up,
                "ticket {} fits ({} free) but waits behind nobody who may hold it up (entry {e:?})",
                w.ticket, self.free
            );
        }
        assert_eq!(self.policy.len(), self.queued.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn waiters_are_served_fairly_within_bounds(
        slots in 1..=4u32,
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let mut m = Model::new(slots);
        for s in &steps {
            m.apply(s);
        }
    }
}
