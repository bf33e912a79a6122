//! The admission policy, pure: who may try for slots now, who may be
//! passed, whom to wake. No lock, no clock, no waker of its own: the caller
//! passes `now`, and `W` is whatever it wakes a waiter with (a `Waker` in
//! the pool, a number in the model test).
//!
//! A waiter may try ("its turn") when no other try is running (tries go
//! one at a time; a try only takes slots, without awaiting anything, so
//! this holds nobody up for long), it has not failed at the current
//! release `epoch`, and it may pass every waiter ahead. A waiter may be
//! passed once its deadline is over (it only makes its last try, whatever
//! its place), or, while overtaken fewer than [`MAX_OVERTAKEN`] times, if
//! its try failed at this epoch (it cannot use what is free: a head needing
//! 2 memories when 1 is free) or if it was woken [`GRACE`] ago and not
//! polled since (its executor is not polling it). So the head goes first,
//! and only a head that failed now or does not answer is passed. It is
//! overtaken each time one that passed it leaves after a try that did not
//! fail with the pool exhausted; after `MAX_OVERTAKEN` it loses no more
//! slots to later waiters: they wait for it again (until its deadline).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often later waiters may be served ahead of a waiter they passed.
pub(crate) const MAX_OVERTAKEN: u32 = 4;

/// How long a woken waiter has to be polled before those behind may pass
/// it. Long enough for a busy thread to be scheduled; a waiter that is
/// polled in time keeps its place.
pub(crate) const GRACE: Duration = Duration::from_millis(100);

/// The queue and the release epoch.
#[derive(Debug)]
pub(crate) struct Policy<W> {
    next_ticket: u64,
    /// Moves on with every release while anyone waits.
    pub epoch: u64,
    queue: VecDeque<Entry<W>>,
    /// Tries granted so far, to tell whether another began during ours.
    granted: u64,
}

impl<W> Default for Policy<W> {
    fn default() -> Self {
        Policy {
            next_ticket: 0,
            epoch: 0,
            queue: VecDeque::new(),
            granted: 0,
        }
    }
}

/// One waiter.
#[derive(Debug)]
pub(crate) struct Entry<W> {
    ticket: u64,
    /// What wakes it while it waits; taken to wake it.
    waker: Option<W>,
    /// The epoch of its last failed try.
    tried_at: Option<u64>,
    /// When it was woken, if it has not been polled since.
    woken_at: Option<Instant>,
    /// Its deadline, once it has waited.
    deadline: Option<Instant>,
    /// How often waiters that passed it were served.
    pub overtaken: u32,
    /// The grant count when its try (not over yet) was granted.
    granted: Option<u64>,
    /// That try passed waiters ahead of it.
    overtaking: bool,
}

/// What a poll of a waiter's turn decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Poll {
    /// Try now.
    Try,
    /// Not yet: it waits (its waker is kept).
    Wait,
    /// Its deadline is over: one last try, whatever its place.
    Expired,
}

impl<W> Policy<W> {
    /// A new waiter at the back; its ticket.
    pub fn enqueue(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.queue.push_back(Entry {
            ticket,
            waker: None,
            tried_at: None,
            woken_at: None,
            deadline: None,
            overtaken: 0,
            granted: None,
            overtaking: false,
        });
        ticket
    }

    /// Queued waiters.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// The waiter holding `ticket`.
    #[cfg(test)]
    pub fn entry(&self, ticket: u64) -> &Entry<W> {
        &self.queue[self.position(ticket)]
    }

    fn position(&self, ticket: u64) -> usize {
        self.queue
            .iter()
            .position(|e| e.ticket == ticket)
            .expect("ticket is queued")
    }

    /// `Ok` if `e` may be passed now, else from when it may be by time
    /// alone (`None`: only an event can change it).
    fn pass(&self, e: &Entry<W>, now: Instant) -> Result<(), Option<Instant>> {
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
        let running = self.queue.iter().filter(|e| e.granted.is_some());
        let until = running.filter_map(|e| e.deadline).filter(|&d| d > now);
        until.max().map_or(Ok(()), Err)
    }

    /// Whether it is the turn of the waiter at `i`.
    fn may_try(&self, i: usize, now: Instant) -> bool {
        self.queue[i].tried_at != Some(self.epoch)
            && self.busy(now).is_ok()
            && self.queue.range(..i).all(|e| self.pass(e, now).is_ok())
    }

    /// The waiter with `ticket` is polled, with `deadline` and `waker`:
    /// whether it may try now (its try is granted), must wait (`waker` is
    /// kept), or is out of time. Returns the waker it replaces, for the
    /// caller to drop after unlocking.
    pub fn poll(
        &mut self,
        ticket: u64,
        deadline: Instant,
        now: Instant,
        waker: W,
    ) -> (Poll, Option<W>) {
        let i = self.position(ticket);
        self.queue[i].woken_at = None;
        self.queue[i].deadline = Some(deadline);
        self.end_try(i);
        let (poll, keep) = if self.may_try(i, now) {
            self.granted += 1;
            let e = &mut self.queue[i];
            e.granted = Some(self.granted);
            e.overtaking = i > 0;
            (Poll::Try, None)
        } else if now >= deadline {
            (Poll::Expired, None)
        } else {
            (Poll::Wait, Some(waker))
        };
        (poll, std::mem::replace(&mut self.queue[i].waker, keep))
    }

    /// The try of `ticket` found the pool exhausted at `epoch` (read before
    /// the try): it waits for the next release.
    pub fn failed(&mut self, ticket: u64, epoch: u64) {
        let i = self.position(ticket);
        let e = &mut self.queue[i];
        e.tried_at = Some(epoch);
        e.overtaking = false;
        self.end_try(i);
    }

    /// The waiter with `ticket` leaves (served, or given up): those it
    /// passed were overtaken once more. Returns its entry, for the caller
    /// to drop after unlocking.
    pub fn leave(&mut self, ticket: u64) -> Option<Entry<W>> {
        let i = self.position(ticket);
        if self.queue[i].overtaking {
            self.queue.range_mut(..i).for_each(|e| e.overtaken += 1);
        }
        self.end_try(i);
        self.queue.remove(i)
    }

    /// The granted try at `i` is over. If another was granted meanwhile
    /// (ours ran past its deadline), what we held may have made that one
    /// fail: count our giving back as a release.
    fn end_try(&mut self, i: usize) {
        if let Some(granted) = self.queue[i].granted.take()
            && self.granted != granted
        {
            self.epoch += 1;
        }
    }

    /// Takes the waker of each waiting waiter whose turn it is now (for the
    /// caller to wake after unlocking), and the first instant at which time
    /// alone (a grace or a deadline passing) may give someone a turn: the
    /// caller must look again by then.
    pub fn schedule(&mut self, now: Instant) -> (Vec<W>, Option<Instant>) {
        let mut wake = Vec::new();
        // Until when the try running and the waiters looked at so far hold
        // up the next one.
        let mut until: Option<Instant> = self.busy(now).err();
        for i in 0..self.queue.len() {
            let e = &self.queue[i];
            if e.waker.is_some() && e.tried_at != Some(self.epoch) {
                if until.is_some() {
                    return (wake, until);
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
        (wake, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_head_is_passed_at_most_max_overtaken_times() {
        let mut p = Policy::<()>::default();
        let (_head, _next) = (p.enqueue(), p.enqueue());
        let now = Instant::now();
        p.queue[0].deadline = Some(now + Duration::from_secs(3600));
        assert!(p.may_try(0, now) && !p.may_try(1, now), "head first");
        p.queue[0].tried_at = Some(p.epoch);
        assert!(p.may_try(1, now), "a head that failed now is passed");
        p.queue[0].overtaken = MAX_OVERTAKEN;
        assert!(!p.may_try(1, now), "until it was overtaken enough");
        p.queue[0].deadline = Some(now);
        assert!(p.may_try(1, now), "or its deadline is over");
        let e = &mut p.queue[0];
        (e.overtaken, e.tried_at, e.deadline) = (0, None, None);
        e.woken_at = Some(now);
        assert!(!p.may_try(1, now), "a woken head has its grace");
        assert!(p.may_try(1, now + GRACE), "and is passed after it");
        p.epoch += 1;
        p.queue[0].woken_at = None;
        assert!(!p.may_try(1, now + GRACE), "polled since: first again");
    }
}

#[cfg(test)]
#[path = "policy_model.rs"]
mod model;
