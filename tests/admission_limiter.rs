//! A limiter that takes its time holds up nobody else (issue 20, items 2
//! and 3): an instantiation waits in the admission queue only until it has
//! its slots; asking its limiter comes after, outside the queue, and is not
//! counted as waiting.
//!
//! Durations here are deadlines and watchdogs, never timing assertions.

mod admission_support;
use admission_support::*;

use instance_pool::*;
use std::future::Future;
use std::sync::mpsc;
use std::task::{Context, Waker};
use std::thread;
use std::time::Duration;

/// An async limiter whose first memory answer never comes.
struct Pending;

impl ResourceLimiterAsync for Pending {
    fn memory_growing<'a>(&'a mut self, _: usize, _: usize, _: Option<usize>) -> LimiterFuture<'a> {
        Box::pin(std::future::pending())
    }
    fn table_growing<'a>(&'a mut self, _: u32, _: u32, _: Option<u32>) -> LimiterFuture<'a> {
        Box::pin(async { true })
    }
}

/// A sync limiter that blocks its thread until told to answer.
struct Blocking {
    entered: mpsc::Sender<()>,
    answer: mpsc::Receiver<bool>,
}

impl ResourceLimiter for Blocking {
    fn memory_growing(&mut self, _: usize, _: usize, _: Option<usize>) -> bool {
        let _ = self.entered.send(());
        self.answer.recv().unwrap_or(false)
    }
    fn table_growing(&mut self, _: u32, _: u32, _: Option<u32>) -> bool {
        true
    }
}

#[test]
fn a_pending_async_limiter_holds_up_no_other_waiting_instantiation() {
    let p = pool(4, 4, 1);
    let layout = memories(1);
    let mut a = Store::new(&p, Pending);
    a.limiter_async(|l| l);
    let mut a_inst = Box::pin(a.instantiate_async_timeout(&layout, HOUR));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(a_inst.as_mut().poll(&mut cx).is_pending());
    // A holds its slots and waits on its limiter: it is not waiting for the
    // pool, and three slots are free.
    assert_eq!(p.metrics().memories_in_use, 1);
    let b = waiter(&p, layout.clone(), HOUR);
    let b = b
        .recv_timeout(WATCHDOG)
        .expect("a waiting instantiation was held up by another's limiter")
        .unwrap();
    let m = p.metrics();
    assert_eq!((m.instances_in_use, m.memories_in_use), (2, 2));
    assert_eq!(m.waiters, 0, "an instantiation with its slots is no waiter");
    drop((b, a_inst));
    let m = p.metrics();
    assert_eq!(
        (m.instances_in_use, m.memories_in_use, m.waiters),
        (0, 0, 0)
    );
}

#[test]
fn a_blocking_sync_limiter_holds_up_no_other_waiting_instantiation() {
    let p = pool(4, 4, 1);
    let (entered_tx, entered) = mpsc::channel();
    let (answer, answer_rx) = mpsc::channel();
    let p2 = p.clone();
    let a = thread::spawn(move || {
        let mut s = Store::new(
            &p2,
            Blocking {
                entered: entered_tx,
                answer: answer_rx,
            },
        );
        s.limiter(|l| l);
        s.instantiate_timeout(&memories(1), HOUR).map(|_| ())
    });
    entered
        .recv_timeout(WATCHDOG)
        .expect("A reached its limiter");
    let waited_before = p.metrics().wait_time;
    let b = waiter(&p, memories(1), HOUR)
        .recv_timeout(WATCHDOG)
        .expect("a waiting instantiation was held up by another's limiter")
        .unwrap();
    assert_eq!(p.metrics().waiters, 0, "A holds its slots: no waiter");
    // B never waited (the pool had room), and A's limiter time is no wait.
    thread::sleep(Duration::from_millis(20));
    assert_eq!(p.metrics().wait_time, waited_before);
    answer.send(true).unwrap();
    a.join().unwrap().unwrap();
    drop(b);
    assert_eq!(p.metrics().memories_in_use, 0);
}

#[test]
fn the_wait_ends_when_the_slots_are_taken_not_when_the_limiter_answers() {
    // One slot, held: A must wait for it, then waits on its limiter.
    let p = pool(1, 1, 1);
    let holder = hold(&p, &memories(1));
    let mut a = Store::new(&p, Pending);
    a.limiter_async(|l| l);
    let layout = memories(1);
    let mut a_inst = Box::pin(a.instantiate_async_timeout(&layout, HOUR));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(a_inst.as_mut().poll(&mut cx).is_pending());
    assert_eq!(p.metrics().waiters, 1, "waiting for the slot");
    drop(holder);
    // Polled again: A takes the slot and reaches its limiter.
    assert!(a_inst.as_mut().poll(&mut cx).is_pending());
    let m = p.metrics();
    assert_eq!((m.memories_in_use, m.waiters), (1, 0));
    let waited = m.wait_time;
    thread::sleep(Duration::from_millis(20));
    assert_eq!(p.metrics().wait_time, waited, "limiter time is no wait");
    drop(a_inst);
    let m = p.metrics();
    assert_eq!(m.wait_time, waited, "its limiter time was never counted");
    assert_eq!(m.memories_in_use, 0);
}
