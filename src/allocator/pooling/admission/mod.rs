//! [`Admission`]: instantiations waiting for slots when the pool is full,
//! served in arrival order, but not behind a waiter that cannot go on
//! ([`policy`] says who goes when; [`timer`] wakes deadlines).
//!
//! [`Admission::run`] owns the whole protocol: an attempt is the synchronous
//! taking of an instance's slots (no limiter call, no await), so a waiter
//! holds its place only until it has its slots. An attempt when nobody
//! waits does not queue at all.
//!
//! Nothing polls: a waiter sleeps on its `Waker` (a parked thread for the
//! blocking call), woken when its turn may have come or by the deadline
//! timer. No wakeup is lost:
//! - Slots: a waiter is counted before its first try, and a release looks
//!   at that count only after its slots are free (a `SeqCst` fence on both
//!   sides); a try reads the epoch (under the lock) before it looks for
//!   slots, so either it sees the released slots or its failure is recorded
//!   at an old epoch, which leaves it its turn.
//! - A queued try that fails gives back what it took without a release
//!   ([`Attempt::Queued`]); that matters only to a try beside it, granted
//!   while it ran past its deadline, so a try during which another was
//!   granted moves the epoch on when it ends.
//! - Turns: they change only under the lock, and every change that can give
//!   one (the epoch moving on, a failure, a try ending, a waiter leaving or
//!   polled) runs [`Policy::schedule`] in the same critical section. It
//!   wakes the first waiters whose turn it is (who then hold the rest up for
//!   `GRACE` unless polled) and, if time alone can give the next one its
//!   turn, registers a recheck with the timer at that instant. A waiter
//!   registers its waker in the critical section in which it found it is
//!   not its turn.
//!
//! No waker but the queue's own recheck is woken, cloned or dropped while a
//! lock is held (a waker is user code; an inline executor polls the woken
//! future in `wake`): they are taken out under the lock and used after it.
//! The timer does the same, and never holds its lock calling out, so the
//! queue's lock may be held taking the timer's (never the other way).

mod policy;
mod timer;

use crate::{Error, Result};
use parking_lot::Mutex;
use policy::Policy;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// How an attempt runs, which decides how it gives back what it took when
/// it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Outside the queue: giving back is a release (it wakes waiters).
    Alone,
    /// The queue's granted try: giving back wakes nobody (only the queue's
    /// own bookkeeping, see the module doc), or the trier would wake itself.
    Queued,
}

#[derive(Default)]
pub(crate) struct Admission {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<Locked>,
    waiters: AtomicUsize,
    wait_nanos: AtomicU64,
}

#[derive(Default)]
struct Locked {
    policy: Policy<Waker>,
    /// The recheck registered with the timer, and when it fires.
    recheck: Option<(Instant, timer::Key)>,
}

/// A place in the queue; leaving it (drop) may give the next their turn.
struct Ticket<'a> {
    admission: &'a Admission,
    ticket: u64,
    since: Instant,
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
    /// Runs `change` under the lock, then [`Policy::schedule`]; wakes after
    /// unlocking. `change`'s result is dropped after unlocking too.
    fn update<R>(self: &Arc<Self>, change: impl FnOnce(&mut Locked, Instant) -> R) -> R {
        let now = Instant::now();
        let mut st = self.state.lock();
        let r = change(&mut st, now);
        let (wake, until) = st.policy.schedule(now);
        if let Some(t) = until {
            st.recheck_by(t, now, self);
        }
        drop(st);
        wake.into_iter().for_each(Waker::wake);
        r
    }
}

impl Locked {
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
        // Without a timer thread no recheck comes: turns then move on only
        // as slots are released and waiters come and go.
        self.recheck = timer::wake_at(t, waker).map(|key| (t, key));
    }
}

impl Admission {
    /// Runs `attempt` until it does not find the pool exhausted, waiting
    /// for its turn in between, until `deadline`; then one last attempt,
    /// whatever its place. An attempt made while nobody waits does not
    /// queue. `attempt` must only take slots (nothing that waits): a
    /// waiter's place is held while it runs.
    pub async fn run<R>(
        &self,
        deadline: Instant,
        mut attempt: impl FnMut(Attempt) -> Result<R>,
    ) -> Result<R> {
        if self.waiters() == 0 {
            match attempt(Attempt::Alone) {
                Err(Error::PoolExhausted { .. }) if Instant::now() < deadline => {}
                done => return done,
            }
        }
        let mut ticket = self.enqueue();
        loop {
            if !ticket.turn(deadline).await {
                drop(ticket);
                return attempt(Attempt::Alone);
            }
            let epoch = ticket.epoch();
            match attempt(Attempt::Queued) {
                Err(Error::PoolExhausted { .. }) => ticket.failed_at(epoch),
                done => return done,
            }
        }
    }

    /// Joins the queue.
    fn enqueue(&self) -> Ticket<'_> {
        let ticket = self.shared.state.lock().policy.enqueue();
        self.shared.waiters.fetch_add(1, Ordering::SeqCst);
        Ticket {
            admission: self,
            ticket,
            since: Instant::now(),
        }
    }

    /// Slots were released: a new epoch, in which every waiter may try.
    pub fn released(&self) {
        fence(Ordering::SeqCst);
        if self.shared.waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.shared.update(|st, _| st.policy.epoch += 1);
    }

    /// Instantiations waiting for their slots now.
    pub fn waiters(&self) -> usize {
        self.shared.waiters.load(Ordering::Relaxed)
    }

    /// Time spent waiting for slots, in all.
    pub fn wait_time(&self) -> Duration {
        Duration::from_nanos(self.shared.wait_nanos.load(Ordering::Relaxed))
    }
}

impl Ticket<'_> {
    /// Waits until it is our turn to try (see [`policy`]). `false` at the
    /// deadline.
    fn turn(&mut self, deadline: Instant) -> impl Future<Output = bool> + '_ {
        Turn {
            ticket: self,
            deadline,
            timer: None,
        }
    }

    /// Our try found the pool exhausted at `epoch` (read before the try).
    fn failed_at(&mut self, epoch: u64) {
        let ticket = self.ticket;
        self.admission
            .shared
            .update(|st, _| st.policy.failed(ticket, epoch));
    }

    /// The release epoch now; read it before a try.
    fn epoch(&self) -> u64 {
        fence(Ordering::SeqCst);
        self.admission.shared.state.lock().policy.epoch
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let shared = &self.admission.shared;
        let waited = self.since.elapsed().as_nanos() as u64;
        shared.wait_nanos.fetch_add(waited, Ordering::Relaxed);
        // The entry (its waker) goes after the lock.
        let _gone = shared.update(|st, _| {
            shared.waiters.fetch_sub(1, Ordering::SeqCst);
            st.policy.leave(self.ticket)
        });
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
        let (ticket, deadline) = (this.ticket.ticket, this.deadline);
        // Cloned here, and the one it replaces dropped, outside the lock.
        let waker = cx.waker().clone();
        let (turn, _old) = shared.update(|st, now| st.policy.poll(ticket, deadline, now, waker));
        match turn {
            policy::Poll::Try => return Poll::Ready(true),
            policy::Poll::Expired => return Poll::Ready(false),
            policy::Poll::Wait => {}
        }
        if !this
            .timer
            .as_ref()
            .is_some_and(|(k, w)| k.is_live() && w.will_wake(cx.waker()))
        {
            if let Some((old, _)) = this.timer.take() {
                timer::cancel(old);
            }
            // Without a timer thread (the process could not start one)
            // nothing would end this wait at its deadline: it ends now, as
            // at the deadline (one last attempt).
            let Some(key) = timer::wake_at(this.deadline, cx.waker().clone()) else {
                return Poll::Ready(false);
            };
            this.timer = Some((key, cx.waker().clone()));
        }
        Poll::Pending
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
}
