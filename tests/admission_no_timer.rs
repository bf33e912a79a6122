//! A wait for slots where the process cannot start the crate's timer
//! thread (a thread limit): it ends at once with `PoolExhausted`, as at its
//! deadline, without a panic and with nothing left behind; once threads can
//! be started again, a later wait starts the timer and is served.
//!
//! Its own test binary, with one test: the timer is process-wide and
//! started at the first wait, so no other test may have waited before.

mod common;
use common::config;
use instance_pool::*;
use std::sync::mpsc;
use std::time::Duration;

/// A liveness bound, not a timing: a wait that ignored the refusal would
/// sleep until its hour-long deadline.
const LIVENESS: Duration = Duration::from_secs(30);
const HOUR: Duration = Duration::from_secs(3600);

fn layout() -> InstanceLayout {
    InstanceLayout::new().memory(MemoryType::new(1, None))
}

#[test]
fn a_wait_without_a_timer_thread_ends_at_once_and_a_later_one_is_served() {
    let p = PoolingInstanceAllocator::new(&config::small(1)).unwrap();
    let mut holder = Store::new(&p, ());
    holder.instantiate(&layout()).unwrap();

    let (tx, rx) = mpsc::channel();
    let waiting = p.clone();
    std::thread::spawn(move || {
        fault::refuse(Syscall::Thread);
        let mut s = Store::new(&waiting, ());
        let r = s.instantiate_timeout(&layout(), HOUR).map(drop);
        let _ = tx.send((r, fault::counts().thread));
    });
    let (r, tries) = rx
        .recv_timeout(LIVENESS)
        .expect("the wait did not end without its timer thread");
    assert!(
        matches!(r, Err(Error::PoolExhausted { .. })),
        "ended with {r:?}"
    );
    assert!(tries >= 1, "the timer thread was never asked for");
    let m = p.metrics();
    assert_eq!(
        (m.instances_in_use, m.memories_in_use, m.waiters),
        (1, 1, 0),
        "the failed wait left something behind"
    );

    // Threads can be started again (the refusal was the other thread's).
    let (tx, rx) = mpsc::channel();
    let waiting = p.clone();
    std::thread::spawn(move || {
        let mut s = Store::new(&waiting, ());
        let r = s.instantiate_timeout(&layout(), HOUR).map(|_| ());
        let _ = tx.send(r.map(|()| s));
    });
    for _ in 0..30_000 {
        if p.metrics().waiters == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(p.metrics().waiters, 1, "the second wait never queued");
    drop(holder);
    let served = rx
        .recv_timeout(LIVENESS)
        .expect("the second wait was not served after the release");
    let store = served.expect("served a slot");
    assert_eq!(p.metrics().memories_in_use, 1);
    drop(store);
    assert_eq!(p.metrics().memories_in_use, 0);
}
