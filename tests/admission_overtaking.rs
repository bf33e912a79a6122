//! Overtaking a head that cannot use the free slots, or is not polled
//! (issue 12, item 7): fairness, but no waiter that fits starves behind one
//! that does not.
//!
//! Durations here are deadlines and watchdogs, never timing assertions:
//! every wait that should end is given far more time than it needs.

mod admission_support;
use admission_support::*;

use instance_pool::*;
use std::future::Future;
use std::task::{Context, Poll, Waker};

#[test]
fn a_head_that_needs_more_than_is_free_does_not_hold_up_one_that_fits() {
    // Three instances, two memories: both memories held.
    let p = pool(3, 2, 2);
    let first = hold(&p, &memories(1));
    let second = hold(&p, &memories(1));
    let big = waiter(&p, memories(2), HOUR);
    wait_for(|| p.metrics().waiters == 1);
    let small = waiter(&p, memories(1), HOUR);
    wait_for(|| p.metrics().waiters == 2);
    // One memory free: the head cannot use it, the later waiter can.
    drop(first);
    let small = small
        .recv_timeout(WATCHDOG)
        .expect("the waiter that fits was held up behind the head")
        .unwrap();
    assert_eq!(p.metrics().waiters, 1, "served while the head still waits");
    // Two memories free: now the head is served.
    drop(small);
    drop(second);
    let _big = big
        .recv_timeout(WATCHDOG)
        .expect("the head was never served")
        .unwrap();
    let m = p.metrics();
    assert_eq!((m.waiters, m.memories_in_use), (0, 2));
}

#[test]
fn a_head_that_is_never_polled_again_does_not_hold_up_the_next() {
    let p = pool(1, 1, 1);
    let holder = hold(&p, &memories(1));
    let layout = memories(1);
    let mut head_store = Store::new(&p, ());
    let mut head = Box::pin(head_store.instantiate_async_timeout(&layout, HOUR));
    let mut cx = Context::from_waker(Waker::noop());
    // Polled once: it tries, finds the pool full and joins the queue.
    assert!(head.as_mut().poll(&mut cx).is_pending());
    assert_eq!(p.metrics().waiters, 1);
    let next = waiter(&p, memories(1), HOUR);
    wait_for(|| p.metrics().waiters == 2);
    // The release wakes the head, which is never polled: the next waiter
    // gets the slot while the head is still queued.
    drop(holder);
    let next = next
        .recv_timeout(WATCHDOG)
        .expect("the next waiter was held up by a head that is not polled")
        .unwrap();
    assert_eq!(p.metrics().waiters, 1, "the head is still waiting");
    // Polled at last, the head is served from the slot freed after.
    drop(next);
    assert!(matches!(head.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
    drop(head);
    assert_eq!(p.metrics().waiters, 0);
}
