//! A process-wide deadline timer: one thread, started on first use, wakes
//! each registered waker at its instant (std only, no runtime). A waiter
//! that is served first cancels its entry, so entries never outlive waits
//! (but for each pool's one pending recheck, which holds no pool alive).
//!
//! After a `fork` the child has no timer thread, and a lock the parent's
//! held at the fork stays locked: a timer belongs to the process that
//! started it, and a child starts its own on first use, leaving the
//! parent's (and its locks and wakers) untouched. Its locks are std's: in
//! parking_lot's process-wide table a child finds the parent's timer thread
//! parked, gone since the fork, and corrupts its queue (SIGSEGV).

use crossbeam_utils::atomic::AtomicCell;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Set (under `due`'s lock) when another timer was published first:
    /// the thread ends.
    retired: AtomicBool,
}

fn lock(t: &Timer) -> MutexGuard<'_, Due> {
    t.due.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A leaked timer, compared by address.
#[derive(Clone, Copy)]
struct TimerRef(&'static Timer);

impl PartialEq for TimerRef {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}
impl Eq for TimerRef {}

/// This process's timer (leaked, never freed), or a parent's, or none.
/// A pointer-sized atomic: no lock a fork could leave held.
static TIMER: AtomicCell<Option<TimerRef>> = AtomicCell::new(None);

/// This process's timer, started on first use; `None` if the process
/// cannot start its thread (a later call tries again).
fn timer() -> Option<&'static Timer> {
    let pid = std::process::id();
    loop {
        let cur = TIMER.load();
        if let Some(TimerRef(t)) = cur
            && t.pid == pid
        {
            return Some(t);
        }
        // Leaked: its thread holds it for good. Two threads racing the first
        // use in a process leak one small `Timer` (its thread ends at once).
        let new: &'static Timer = Box::leak(Box::new(Timer {
            pid,
            due: Mutex::default(),
            cv: Condvar::new(),
            retired: AtomicBool::new(false),
        }));
        // The thread first: a published timer always has one, so no waker
        // is ever registered where nothing would wake it.
        drop(crate::sys::spawn_thread("instance-pool-timer", move || run(new)).ok()?);
        if TIMER.compare_exchange(cur, Some(TimerRef(new))).is_err() {
            let due = lock(new);
            new.retired.store(true, Ordering::Relaxed);
            drop(due);
            new.cv.notify_one();
            continue;
        }
        return Some(new);
    }
}

fn run(t: &'static Timer) {
    let mut due = lock(t);
    let mut fire = Vec::new();
    loop {
        if t.retired.load(Ordering::Relaxed) {
            return;
        }
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

/// Wakes `waker` at `at` unless cancelled first; `None` (and `waker`
/// dropped) if the process cannot start the timer's thread.
pub fn wake_at(at: Instant, waker: Waker) -> Option<Key> {
    let t = timer()?;
    let mut due = lock(t);
    let id = due.next_id;
    due.next_id += 1;
    due.wakers.insert((at, id), waker);
    drop(due);
    t.cv.notify_one();
    Some(Key(at, id, t.pid))
}

/// Drops a registration that is no longer needed.
pub fn cancel(key: Key) {
    if !key.is_live() {
        return; // The parent's timer: not ours to touch.
    }
    // A live key was registered with this process's timer: it is there.
    let removed = timer().and_then(|t| lock(t).wakers.remove(&(key.0, key.1)));
    // The waker goes after the lock (the statement above released it).
    drop(removed);
}

/// Registrations pending now.
#[cfg(test)]
pub fn pending() -> usize {
    timer().map_or(0, |t| lock(t).wakers.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timer_cell_is_lock_free() {
        // A lock-based cell could be left locked by a fork.
        assert!(AtomicCell::<Option<TimerRef>>::is_lock_free());
    }
}
