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
            timer_waker: None,
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
    /// The waker the deadline timer will wake; registered again when the
    /// executor polls with another one.
    timer_waker: Option<Waker>,
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
            .timer_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            this.timer_waker = Some(cx.waker().clone());
            timer::wake_at(this.deadline, cx.waker().clone());
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
/// each registered waker at its instant (std only, no runtime).
mod timer {
    use parking_lot::{Condvar, Mutex};
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    use std::sync::OnceLock;
    use std::task::Waker;
    use std::time::Instant;

    struct Due(Instant, Waker);
    impl PartialEq for Due {
        fn eq(&self, o: &Self) -> bool {
            self.0 == o.0
        }
    }
    impl Eq for Due {}
    impl PartialOrd for Due {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Due {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            self.0.cmp(&o.0)
        }
    }

    struct Timer {
        heap: Mutex<BinaryHeap<Reverse<Due>>>,
        cv: Condvar,
    }

    fn timer() -> &'static Timer {
        static TIMER: OnceLock<&'static Timer> = OnceLock::new();
        TIMER.get_or_init(|| {
            let t: &'static Timer = Box::leak(Box::new(Timer {
                heap: Mutex::default(),
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
        let mut heap = t.heap.lock();
        loop {
            let now = Instant::now();
            while heap.peek().is_some_and(|Reverse(d)| d.0 <= now) {
                let Reverse(Due(_, w)) = heap.pop().expect("peeked");
                w.wake();
            }
            match heap.peek() {
                Some(Reverse(d)) => {
                    let at = d.0;
                    t.cv.wait_until(&mut heap, at);
                }
                None => t.cv.wait(&mut heap),
            }
        }
    }

    pub fn wake_at(at: Instant, waker: Waker) {
        let t = timer();
        t.heap.lock().push(Reverse(Due(at, waker)));
        t.cv.notify_one();
    }
}
