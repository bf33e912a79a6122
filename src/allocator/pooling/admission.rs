//! [`Admission`]: instantiations waiting for a slot when the pool is full,
//! served in arrival order, but not behind a waiter that cannot go on.
//!
//! A waiter takes a ticket and joins the queue. It may try ("its turn")
//! when no other try is running (tries go one at a time; one still running
//! past its deadline, not being polled, say, no longer counts), it has not
//! failed at the current release `epoch`, and it may pass every waiter
//! ahead. A waiter may be passed once its deadline is over (it only makes
//! its last try, whatever its place), or, while overtaken fewer than
//! [`MAX_OVERTAKEN`] times, if its try failed at this epoch (it cannot use
//! what is free: a head needing 2 memories when 1 is free) or if it was
//! woken [`GRACE`] ago and not polled since (its executor is not polling
//! it). So the head goes first, and only a head that failed now or does
//! not answer is passed. It is overtaken each time one that passed it
//! leaves after a try that did not fail with the pool exhausted; after
//! `MAX_OVERTAKEN` it loses no more slots to later waiters: they wait for it
//! again (until its deadline). Outside that bound: each waiter's last try
//! at its deadline, and instantiations that do not wait.
//!
//! Nothing polls: a waiter sleeps on its `Waker` (a parked thread for the
//! blocking call), woken when its turn may have come or by the deadline
//! [`timer`]. No wakeup is lost:
//! - Slots: a waiter is counted before its first try, and a release looks
//!   at that count only after its slots are free (a `SeqCst` fence on both
//!   sides); a try reads the epoch (under the lock) before it looks for
//!   slots, so either it sees the released slots or its failure is recorded
//!   at an old epoch, which leaves it its turn.
//! - A failed try gives back what it took without a release; that matters
//!   only to a try beside it, granted while it ran past its deadline, so a
//!   try during which another was granted moves the epoch on when it ends.
//! - Turns: they change only under the lock, and every change that can give
//!   one (the epoch moving on, a failure, a try ending, a waiter leaving or
//!   polled) runs [`State::schedule`] in the same critical section. It wakes
//!   the first waiter whose turn it is (who then holds the rest up for
//!   `GRACE` unless polled) and, for the first held up only by time (a grace
//!   or a deadline to pass), registers a recheck with the timer at that
//!   instant. A waiter registers its waker in the critical section in which
//!   it found it is not its turn.
//!
//! No waker but the queue's own recheck is woken, cloned or dropped while a
//! lock is held (a waker is user code; an inline executor polls the woken
//! future in `wake`): they are taken out under the lock and used after it.
//! The timer does the same, and never holds its lock calling out, so the
//! queue's lock may be held taking the timer's (never the other way).

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// How often later waiters may be served ahead of a waiter they passed.
pub(crate) const MAX_OVERTAKEN: u32 = 4;

/// How long a woken waiter has to be polled before those behind may pass
/// it. Long enough for a busy thread to be scheduled; a waiter that is
/// polled in time keeps its place.
pub(crate) const GRACE: Duration = Duration::from_millis(100);

#[derive(Default)]
pub(crate) struct Admission {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    waiters: AtomicUsize,
    wait_nanos: AtomicU64,
}

#[derive(Default)]
struct State {
    next_ticket: u64,
    epoch: u64,
    queue: VecDeque<Entry>,
    /// Tries granted so far, to tell whether another began during ours.
    granted: u64,
    /// The recheck registered with the timer, and when it fires.
    recheck: Option<(Instant, timer::Key)>,
}

#[derive(Default)]
struct Entry {
    ticket: u64,
    /// The waker of a waiting [`Turn`]; taken to wake it.
    waker: Option<Waker>,
    /// The epoch of its last failed try.
    tried_at: Option<u64>,
    /// When it was woken, if it has not been polled since.
    woken_at: Option<Instant>,
    /// Its deadline, once it has waited.
    deadline: Option<Instant>,
    /// How often waiters that passed it were served.
    overtaken: u32,
    /// Its turn was granted and its try is not over.
    trying: bool,
}

/// A place in the queue; leaving it (drop) may give the next their turn.
pub(crate) struct Ticket<'a> {
    admission: &'a Admission,
    ticket: u64,
    since: Instant,
    /// The grant count when our try (not over yet) was granted.
    granted: Option<u64>,
    /// That try passed waiters ahead of us.
    overtaking: bool,
}

/// The timer's call back into the queue: a grace or a deadline passed.
struct Recheck {
    shared: Weak<Shared>,
    at: Instant,
}

impl Wake for Recheck {
    fn wake(self: Arc<Self>) {
        if let Some(shared) = self.shared.upgrade() {
            shared.update(|st, _| {
                if st.recheck.is_some_and(|(at, _)| at == self.at) {
                    st.recheck = None;
                }
            });
        }
    }
}

impl Shared {
    /// Runs `change` under the lock, then [`State::schedule`]; wakes after
    /// unlocking. `change`'s result is dropped after unlocking too.
    fn update<R>(self: &Arc<Self>, change: impl FnOnce(&mut State, Instant) -> R) -> R {
        let now = Instant::now();
        let mut st = self.state.lock();
        let r = change(&mut st, now);
        let wake = st.schedule(now, self);
        drop(st);
        wake.into_iter().for_each(Waker::wake);
        r
    }
}

impl State {
    fn position(&self, ticket: u64) -> usize {
        self.queue
            .iter()
            .position(|e| e.ticket == ticket)
            .expect("ticket is queued")
    }

    /// `Ok` if `e` may be passed now, else from when it may be by time
    /// alone (`None`: only an event can change it).
    fn pass(&self, e: &Entry, now: Instant) -> Result<(), Option<Instant>> {
        let grace = if e.overtaken < MAX_OVERTAKEN {
            if e.tried_at == Some(self.epoch) {
                return Ok(());
            }
            e.woken_at.map(|t| t + GRACE)
        } else {
            None
        };
        match grace.into_iter().chain(e.deadline).min() {
            Some(t) if t <= now => Ok(()),
            later => Err(later),
        }
    }

    /// `Err` (with until when) while a try runs whose deadline is not over:
    /// tries go one at a time.
    fn busy(&self, now: Instant) -> Result<(), Instant> {
        let running = self.queue.iter().filter(|e| e.trying);
        let until = running.filter_map(|e| e.deadline).filter(|&d| d > now);
        until.max().map_or(Ok(()), Err)
    }

    /// Whether it is the turn of the waiter at `i`.
    fn may_try(&self, i: usize, now: Instant) -> bool {
        self.queue[i].tried_at != Some(self.epoch)
            && self.busy(now).is_ok()
            && self.queue.range(..i).all(|e| self.pass(e, now).is_ok())
    }

    /// Takes the waker of the first waiting waiter whose turn it is (for
    /// the caller to wake after unlocking); for the first one held up only
    /// until some instant, makes sure the timer rechecks by then.
    fn schedule(&mut self, now: Instant, shared: &Arc<Shared>) -> Vec<Waker> {
        let mut wake = Vec::new();
        // Until when the try running and the waiters looked at so far hold
        // up the next one.
        let mut until: Option<Instant> = self.busy(now).err();
        for i in 0..self.queue.len() {
            let e = &self.queue[i];
            if e.waker.is_some() && e.tried_at != Some(self.epoch) {
                if let Some(t) = until {
                    self.recheck_by(t, now, shared);
                    break;
                }
                let e = &mut self.queue[i];
                wake.extend(e.waker.take());
                e.woken_at = Some(now);
            }
            match self.pass(&self.queue[i], now) {
                Ok(()) => {}
                Err(Some(t)) => until = Some(until.map_or(t, |u| u.max(t))),
                Err(None) => break,
            }
        }
        wake
    }

    /// Registered, cancelled and dropped under the lock: no user code runs
    /// (only our own waker), and the timer never holds its lock calling out.
    fn recheck_by(&mut self, t: Instant, now: Instant, shared: &Arc<Shared>) {
        if let Some((at, key)) = self.recheck {
            if at <= t && at > now && key.is_live() {
                return; // That one reschedules in time.
            }
            timer::cancel(key);
        }
        let shared = Arc::downgrade(shared);
        let waker = Waker::from(Arc::new(Recheck { shared, at: t }));
        self.recheck = Some((t, timer::wake_at(t, waker)));
    }
}

impl Admission {
    /// Joins the queue.
    pub fn enqueue(&self) -> Ticket<'_> {
        let mut st = self.shared.state.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push_back(Entry {
            ticket,
            ..Entry::default()
        });
        self.shared.waiters.fetch_add(1, Ordering::SeqCst);
        Ticket {
            admission: self,
            ticket,
            since: Instant::now(),
            granted: None,
            overtaking: false,
        }
    }

    /// Slots were released: a new epoch, in which every waiter may try.
    pub fn released(&self) {
        fence(Ordering::SeqCst);
        if self.shared.waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.shared.update(|st, _| st.epoch += 1);
    }

    pub fn waiters(&self) -> usize {
        self.shared.waiters.load(Ordering::Relaxed)
    }

    pub fn wait_time(&self) -> Duration {
        Duration::from_nanos(self.shared.wait_nanos.load(Ordering::Relaxed))
    }
}

impl Ticket<'_> {
    /// Waits until it is our turn to try (see the module doc). `false` at
    /// the deadline.
    pub fn turn(&mut self, deadline: Instant) -> impl Future<Output = bool> + '_ {
        Turn {
            ticket: self,
            deadline,
            timer: None,
        }
    }

    /// Our try found the pool exhausted at `epoch` (read before the try).
    pub fn failed_at(&mut self, epoch: u64) {
        let shared = &self.admission.shared;
        shared.update(|st, _| {
            let i = st.position(self.ticket);
            st.queue[i].tried_at = Some(epoch);
            self.overtaking = false;
            self.end_try(st, i);
        });
    }

    /// The release epoch now; read it before a try.
    pub fn epoch(&self) -> u64 {
        fence(Ordering::SeqCst);
        self.admission.shared.state.lock().epoch
    }

    /// Our granted try (at `i` in the queue) is over. If another was
    /// granted meanwhile (ours ran past its deadline), what we held may have
    /// made that one fail: count our giving back as a release.
    fn end_try(&mut self, st: &mut State, i: usize) {
        if let Some(granted) = self.granted.take() {
            st.queue[i].trying = false;
            if st.granted != granted {
                st.epoch += 1;
            }
        }
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
        let shared = &this.ticket.admission.shared;
        // Cloned here, and the one it replaces dropped, outside the lock;
        // the update also runs `schedule`: our try, or someone ahead, may
        // hold the next up until some instant.
        let mut waker = Some(cx.waker().clone());
        let (ready, _old) = shared.update(|st, now| {
            let i = st.position(this.ticket.ticket);
            st.queue[i].woken_at = None;
            st.queue[i].deadline = Some(this.deadline);
            this.ticket.end_try(st, i);
            let ready = if st.may_try(i, now) {
                st.granted += 1;
                st.queue[i].trying = true;
                this.ticket.granted = Some(st.granted);
                this.ticket.overtaking = i > 0;
                Some(true)
            } else {
                (now >= this.deadline).then_some(false)
            };
            let keep = if ready.is_none() { waker.take() } else { None };
            (ready, std::mem::replace(&mut st.queue[i].waker, keep))
        });
        if let Some(r) = ready {
            return Poll::Ready(r);
        }
        if !this
            .timer
            .as_ref()
            .is_some_and(|(k, w)| k.is_live() && w.will_wake(cx.waker()))
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
        let shared = &self.admission.shared;
        let waited = self.since.elapsed().as_nanos() as u64;
        shared.wait_nanos.fetch_add(waited, Ordering::Relaxed);
        // The entry (its waker) goes after the lock.
        let _gone = shared.update(|st, _| {
            let i = st.position(self.ticket);
            if self.overtaking {
                st.queue.range_mut(..i).for_each(|e| e.overtaken += 1);
            }
            self.end_try(st, i);
            shared.waiters.fetch_sub(1, Ordering::SeqCst);
            st.queue.remove(i)
        });
    }
}

/// A process-wide deadline timer: one thread, started on first use, wakes
/// each registered waker at its instant (std only, no runtime). A waiter
/// that is served first cancels its entry, so entries never outlive waits
/// (but for each pool's one pending recheck, which holds no pool alive).
///
/// After a `fork` the child has no timer thread, and a lock the parent's
/// held at the fork stays locked: a timer belongs to the process that
/// started it, and a child starts its own on first use, leaving the
/// parent's (and its locks and wakers) untouched. Its locks are std's: in
/// parking_lot's process-wide table a child finds the parent's timer thread
/// parked, gone since the fork, and corrupts its queue (SIGSEGV).
mod timer {
    use std::collections::BTreeMap;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicPtr, Ordering};
    use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
    use std::task::Waker;
    use std::time::Instant;

    /// Identifies one registration, to cancel it; `pid` is the timer's.
    #[derive(Clone, Copy)]
    pub struct Key(Instant, u64, u32);

    impl Key {
        /// Registered with this process's timer (not a parent's).
        pub fn is_live(&self) -> bool {
            self.2 == std::process::id()
        }
    }

    #[derive(Default)]
    struct Due {
        next_id: u64,
        wakers: BTreeMap<(Instant, u64), Waker>,
    }

    struct Timer {
        pid: u32,
        due: Mutex<Due>,
        cv: Condvar,
    }

    fn lock(t: &Timer) -> MutexGuard<'_, Due> {
        t.due.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This process's timer, leaked (never freed), or a parent's or null.
    static TIMER: AtomicPtr<Timer> = AtomicPtr::new(std::ptr::null_mut());

    fn timer() -> &'static Timer {
        let pid = std::process::id();
        loop {
            let cur = TIMER.load(Ordering::Acquire);
            // SAFETY: a non-null TIMER points to a leaked Timer, never freed.
            if let Some(t) = unsafe { cur.as_ref() }
                && t.pid == pid
            {
                return t;
            }
            let new = Box::into_raw(Box::new(Timer {
                pid,
                due: Mutex::default(),
                cv: Condvar::new(),
            }));
            if TIMER
                .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // SAFETY: `new` was never published: this is its only use.
                drop(unsafe { Box::from_raw(new) });
                continue;
            }
            // SAFETY: published, and so never freed.
            let t: &'static Timer = unsafe { &*new };
            std::thread::Builder::new()
                .name("instance-pool-timer".into())
                .spawn(move || run(t))
                .expect("cannot start the admission timer thread");
            return t;
        }
    }

    fn run(t: &'static Timer) {
        let mut due = lock(t);
        let mut fire = Vec::new();
        loop {
            let now = Instant::now();
            while let Some(entry) = due.wakers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                fire.push(entry.remove());
            }
            if !fire.is_empty() {
                // Woken unlocked: an inline executor polls here, and the
                // poll registers and cancels. A panicking waker must not
                // end the thread (and every later deadline with it).
                drop(due);
                for w in fire.drain(..) {
                    let _ = catch_unwind(AssertUnwindSafe(|| w.wake()));
                }
                due = lock(t);
                continue;
            }
            due = match due.wakers.keys().next() {
                Some(&(at, _)) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    let woken = t.cv.wait_timeout(due, wait);
                    woken.unwrap_or_else(PoisonError::into_inner).0
                }
                None => t.cv.wait(due).unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// Wakes `waker` at `at` unless cancelled first.
    pub fn wake_at(at: Instant, waker: Waker) -> Key {
        let t = timer();
        let mut due = lock(t);
        let id = due.next_id;
        due.next_id += 1;
        due.wakers.insert((at, id), waker);
        drop(due);
        t.cv.notify_one();
        Key(at, id, t.pid)
    }

    /// Drops a registration that is no longer needed.
    pub fn cancel(key: Key) {
        if !key.is_live() {
            return; // The parent's timer: not ours to touch.
        }
        let removed = lock(timer()).wakers.remove(&(key.0, key.1));
        // The waker goes after the lock (the statement above released it).
        drop(removed);
    }

    /// Registrations pending now.
    #[cfg(test)]
    pub fn pending() -> usize {
        lock(timer()).wakers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn a_failed_head_is_passed_at_most_max_overtaken_times() {
        let a = Admission::default();
        let (_head, _next) = (a.enqueue(), a.enqueue());
        let mut st = a.shared.state.lock();
        let now = Instant::now();
        st.queue[0].deadline = Some(now + Duration::from_secs(3600));
        assert!(st.may_try(0, now) && !st.may_try(1, now), "head first");
        st.queue[0].tried_at = Some(st.epoch);
        assert!(st.may_try(1, now), "a head that failed now is passed");
        st.queue[0].overtaken = MAX_OVERTAKEN;
        assert!(!st.may_try(1, now), "until it was overtaken enough");
        st.queue[0].deadline = Some(now);
        assert!(st.may_try(1, now), "or its deadline is over");
        let e = &mut st.queue[0];
        (e.overtaken, e.tried_at, e.deadline) = (0, None, None);
        e.woken_at = Some(now);
        assert!(!st.may_try(1, now), "a woken head has its grace");
        assert!(st.may_try(1, now + GRACE), "and is passed after it");
        st.epoch += 1;
        st.queue[0].woken_at = None;
        assert!(!st.may_try(1, now + GRACE), "polled since: first again");
    }
}
