//! [`Admission`]: instantiations waiting for a slot when the pool is full,
//! served first come, first served.
//!
//! A waiter takes a ticket and joins the queue. Only the head of the queue
//! tries to instantiate; when it finds the pool exhausted it sleeps until a
//! store releases slots (the release `epoch` moves on) or its deadline
//! passes. When the head leaves (served, timed out, or failed otherwise) the
//! next one is woken and tries at once. Nothing polls: a waiter sleeps on
//! its `Waker` (a parked thread for the blocking call) and is woken by a
//! release, by the head leaving, or by the deadline [`timer`].
//!
//! No wakeup is lost: a waiter is counted before its first try, and a
//! release looks at that count only after its slots are free (with a
//! `SeqCst` fence on both sides), so either the try sees the slot or the
//! release moves the epoch on and wakes the head.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

#[derive(Default)]
pub(crate) struct Admission {
    state: Mutex<State>,
    waiters: AtomicUsize,
    wait_nanos: AtomicU64,
}

#[derive(Default)]
struct State {
    next_ticket: u64,
    epoch: u64,
    queue: VecDeque<Entry>,
}

struct Entry {
    ticket: u64,
    waker: Option<Waker>,
}

/// A place in the queue; leaving it (drop) wakes the next waiter.
pub(crate) struct Ticket<'a> {
    admission: &'a Admission,
    ticket: u64,
    since: Instant,
    /// The release epoch of our last failed try, if we tried since we
    /// became head.
    tried_at: Option<u64>,
}

impl Admission {
    /// Joins the queue.
    pub fn enqueue(&self) -> Ticket<'_> {
        let mut st = self.state.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push_back(Entry {
            ticket,
            waker: None,
        });
        self.waiters.fetch_add(1, Ordering::SeqCst);
        Ticket {
            admission: self,
            ticket,
            since: Instant::now(),
            tried_at: None,
        }
    }

    /// Slots were released: the head (if any) should try again.
    pub fn released(&self) {
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut st = self.state.lock();
        st.epoch += 1;
        if let Some(w) = st.queue.front_mut().and_then(|e| e.waker.take()) {
            w.wake();
        }
    }

    pub fn waiters(&self) -> usize {
        self.waiters.load(Ordering::Relaxed)
    }

    pub fn wait_time(&self) -> Duration {
        Duration::from_nanos(self.wait_nanos.load(Ordering::Relaxed))
    }
}

impl Ticket<'_> {
    /// Waits until it is our turn to try: we are the head and either have
    /// not tried yet or slots were released since. `false` at the deadline.
    pub fn turn(&mut self, deadline: Instant) -> impl Future<Output = bool> + '_ {
        Turn {
            ticket: self,
            deadline,
            timer: None,
        }
    }

    /// Our try found the pool exhausted at `epoch` (read before the try).
    pub fn failed_at(&mut self, epoch: u64) {
        self.tried_at = Some(epoch);
    }

    /// The release epoch now; read it before a try.
    pub fn epoch(&self) -> u64 {
        fence(Ordering::SeqCst);
        self.admission.state.lock().epoch
    }
}

struct Turn<'t, 'a> {
    ticket: &'t mut Ticket<'a>,
    deadline: Instant,
    /// The deadline timer's registration and the waker it will wake;
    /// registered again when the executor polls with another waker.
    timer: Option<(timer::Key, Waker)>,
}

impl Drop for Turn<'_, '_> {
    fn drop(&mut self) {
        if let Some((key, _)) = self.timer.take() {
            timer::cancel(key);
        }
    }
}

impl Future for Turn<'_, '_> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = &mut *self;
        let mut st = this.ticket.admission.state.lock();
        let is_head = st
            .queue
            .front()
            .is_some_and(|e| e.ticket == this.ticket.ticket);
        if is_head && this.ticket.tried_at.is_none_or(|e| e != st.epoch) {
            return Poll::Ready(true);
        }
        if Instant::now() >= this.deadline {
            return Poll::Ready(false);
        }
        let me = st
            .queue
            .iter_mut()
            .find(|e| e.ticket == this.ticket.ticket)
            .expect("ticket is queued");
        me.waker = Some(cx.waker().clone());
        drop(st);
        if !this
            .timer
            .as_ref()
            .is_some_and(|(_, w)| w.will_wake(cx.waker()))
        {
            if let Some((old, _)) = this.timer.take() {
                timer::cancel(old);
            }
            let key = timer::wake_at(this.deadline, cx.waker().clone());
            this.timer = Some((key, cx.waker().clone()));
        }
        Poll::Pending
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let a = self.admission;
        let mut st = a.state.lock();
        let was_head = st.queue.front().is_some_and(|e| e.ticket == self.ticket);
        st.queue.retain(|e| e.ticket != self.ticket);
        a.waiters.fetch_sub(1, Ordering::SeqCst);
        a.wait_nanos
            .fetch_add(self.since.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if was_head && let Some(w) = st.queue.front_mut().and_then(|e| e.waker.take()) {
            w.wake();
        }
    }
}

/// A process-wide deadline timer: one thread, started on first use, wakes
/// each registered waker at its instant (std only, no runtime). A waiter
/// that is served first cancels its entry, so entries never outlive waits.
mod timer {
    use parking_lot::{Condvar, Mutex};
    use std::collections::BTreeMap;
    use std::sync::OnceLock;
    use std::task::Waker;
    use std::time::Instant;

    /// Identifies one registration, to cancel it.
    pub type Key = (Instant, u64);

    #[derive(Default)]
    struct Due {
        next_id: u64,
        wakers: BTreeMap<Key, Waker>,
    }

    struct Timer {
        due: Mutex<Due>,
        cv: Condvar,
    }

    fn timer() -> &'static Timer {
        static TIMER: OnceLock<&'static Timer> = OnceLock::new();
        TIMER.get_or_init(|| {
            let t: &'static Timer = Box::leak(Box::new(Timer {
                due: Mutex::default(),
                cv: Condvar::new(),
            }));
            std::thread::Builder::new()
                .name("instance-pool-timer".into())
                .spawn(move || run(t))
                .expect("cannot start the admission timer thread");
            t
        })
    }

    fn run(t: &'static Timer) {
        let mut due = t.due.lock();
        loop {
            let now = Instant::now();
            while let Some(entry) = due.wakers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                entry.remove().wake();
            }
            match due.wakers.keys().next() {
                Some(&(at, _)) => {
                    t.cv.wait_until(&mut due, at);
                }
                None => t.cv.wait(&mut due),
            }
        }
    }

    /// Wakes `waker` at `at` unless cancelled first.
    pub fn wake_at(at: Instant, waker: Waker) -> Key {
        let t = timer();
        let mut due = t.due.lock();
        let key = (at, due.next_id);
        due.next_id += 1;
        due.wakers.insert(key, waker);
        t.cv.notify_one();
        key
    }

    /// Drops a registration that is no longer needed.
    pub fn cancel(key: Key) {
        timer().due.lock().wakers.remove(&key);
    }

    /// Registrations pending now.
    #[cfg(test)]
    pub fn pending() -> usize {
        timer().due.lock().wakers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_served_waiter_leaves_no_timer_behind_and_a_due_one_is_woken() {
        let a = Admission::default();
        let mut first = a.enqueue();
        let mut second = a.enqueue();
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let far = Instant::now() + Duration::from_secs(3600);
        {
            let mut turn = std::pin::pin!(second.turn(far));
            assert!(turn.as_mut().poll(&mut cx).is_pending());
            assert_eq!(timer::pending(), 1);
        }
        // The Turn is gone, and its registration with it (only this test
        // uses the timer in this binary).
        assert_eq!(timer::pending(), 0);
        let mut turn = std::pin::pin!(first.turn(far));
        assert!(
            matches!(turn.as_mut().poll(&mut cx), Poll::Ready(true)),
            "the head may try at once"
        );
        let soon = Instant::now() + Duration::from_millis(10);
        let mut late = std::pin::pin!(second.turn(soon));
        assert!(late.as_mut().poll(&mut cx).is_pending());
        while !flag.0.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            matches!(late.as_mut().poll(&mut cx), Poll::Ready(false)),
            "deadline passed"
        );
    }
}
