//! Wakers that poll the woken future inline, on the thread that wakes it
//! (issue 12, item 2): neither a release nor the deadline timer may wake
//! while holding a lock.
//!
//! Durations here are deadlines and watchdogs, never timing assertions:
//! each scenario that could deadlock runs where a watchdog can fail it.

mod admission_support;
use admission_support::*;

use instance_pool::*;
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Wake, Waker};
use std::thread;
use std::time::Duration;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A task whose waker polls it at once, on the thread that wakes it, as
/// inline executors do. A wake during its own poll (the task's mutex is
/// taken) sets `again`, and the poller that holds the mutex polls again.
struct Inline {
    fut: Mutex<Option<BoxFuture>>,
    again: AtomicBool,
}

impl Inline {
    fn spawn(fut: impl Future<Output = ()> + Send + 'static) -> Arc<Self> {
        let task = Arc::new(Inline {
            fut: Mutex::new(Some(Box::pin(fut))),
            again: AtomicBool::new(false),
        });
        task.run();
        task
    }

    fn run(self: &Arc<Self>) {
        self.again.store(true, Ordering::SeqCst);
        loop {
            let Some(mut slot) = self.fut.try_lock() else {
                return;
            };
            while self.again.swap(false, Ordering::SeqCst) {
                let Some(fut) = slot.as_mut() else { break };
                let waker = Waker::from(self.clone());
                if fut
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_ready()
                {
                    *slot = None;
                }
            }
            drop(slot);
            // A wake that came between the last poll and the unlock.
            if !self.again.load(Ordering::SeqCst) {
                return;
            }
        }
    }
}

impl Wake for Inline {
    fn wake(self: Arc<Self>) {
        self.run();
    }
}

/// An async waiter on an inline task, reporting `(n, outcome)` on `tx`.
fn inline_waiter(
    p: &PoolingInstanceAllocator,
    n: usize,
    timeout: Duration,
    tx: mpsc::Sender<(usize, Result<()>)>,
) -> Arc<Inline> {
    let p = p.clone();
    Inline::spawn(async move {
        let mut s = Store::new(&p, ());
        let r = s
            .instantiate_async_timeout(&memories(1), timeout)
            .await
            .map(|_| ());
        let _ = tx.send((n, r));
    })
}

#[test]
fn a_release_may_poll_the_woken_waiters_inline() {
    let p = pool(1, 1, 1);
    let holder = hold(&p, &memories(1));
    let (tx, rx) = mpsc::channel();
    // The release, both waits and both inline polls happen on this thread;
    // if a wake ran under the admission lock, it would hang here.
    let scenario = {
        let p = p.clone();
        thread::spawn(move || {
            let first = inline_waiter(&p, 0, HOUR, tx.clone());
            let second = inline_waiter(&p, 1, HOUR, tx);
            assert_eq!(p.metrics().waiters, 2);
            // Serves the first inline; it leaves (waking the second, which
            // tries and waits again) and its store's release serves the
            // second, all inside this drop.
            drop(holder);
            drop((first, second));
        })
    };
    for n in 0..2 {
        let (who, r) = rx
            .recv_timeout(WATCHDOG)
            .expect("a waiter was never served: a wake ran under a lock");
        assert_eq!(who, n, "served in arrival order");
        r.unwrap();
    }
    scenario.join().unwrap();
    let m = p.metrics();
    assert_eq!((m.waiters, m.instances_in_use), (0, 0));
}

#[test]
fn a_deadline_may_poll_the_waiter_inline_on_the_timer_thread() {
    let p = pool(1, 1, 1);
    let _holder = hold(&p, &memories(1));
    // The deadline wakes the task on the timer thread, which polls it
    // there: the waiter gives up, and its Turn cancels its deadline.
    let (tx, rx) = mpsc::channel();
    let task = inline_waiter(&p, 0, Duration::from_millis(20), tx);
    let (_, r) = rx
        .recv_timeout(WATCHDOG)
        .expect("the deadline never fired: the timer woke under its lock");
    assert!(matches!(r, Err(Error::PoolExhausted { .. })), "{r:?}");
    drop(task);
    // And the timer still serves every later deadline in the process.
    let (tx, rx) = mpsc::channel();
    {
        let p = p.clone();
        thread::spawn(move || {
            let mut s = Store::new(&p, ());
            let _ = tx.send(
                s.instantiate_timeout(&memories(1), Duration::from_millis(20))
                    .map(|_| ()),
            );
        });
    }
    let r = rx
        .recv_timeout(WATCHDOG)
        .expect("no deadline fires after the timer thread woke a task inline");
    assert!(matches!(r, Err(Error::PoolExhausted { .. })), "{r:?}");
    assert_eq!(p.metrics().waiters, 0);
}
