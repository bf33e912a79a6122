//! Waiting for a slot: first come, first served, woken by releases, failing
//! at the deadline. Durations here are deadlines, not timing assertions:
//! every wait that should succeed is given far more time than it needs.

mod common;
use common::{block_on, config};

use instance_pool::*;
use parking_lot::Mutex;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn pool(slots: u32) -> PoolingInstanceAllocator {
    config::pool(&config::small(slots))
}

fn layout() -> InstanceLayout {
    InstanceLayout::new().memory(MemoryType::new(1, None))
}

fn hold(p: &PoolingInstanceAllocator) -> Store<()> {
    let mut s = Store::new(p, ());
    s.instantiate(&layout()).unwrap();
    s
}

fn wait_for(what: impl Fn() -> bool) {
    for _ in 0..30_000 {
        if what() {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("condition not reached");
}

#[test]
fn a_waiter_gets_the_first_freed_slot() {
    let p = pool(1);
    let holder = hold(&p);
    let waiter = {
        let p = p.clone();
        thread::spawn(move || {
            let mut s = Store::new(&p, ());
            let i = s.instantiate_timeout(&layout(), LONG).unwrap();
            assert!(i.memory(&s, 0).unwrap().data(&s).iter().all(|&b| b == 0));
        })
    };
    wait_for(|| p.metrics().waiters == 1);
    drop(holder);
    waiter.join().unwrap();
    let m = p.metrics();
    assert_eq!((m.waiters, m.memories_in_use), (0, 0));
    assert!(m.wait_time > Duration::ZERO);
}

#[test]
fn waiters_are_served_in_arrival_order() {
    let p = pool(1);
    let holder = hold(&p);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for n in 0..4 {
        let (q, order) = (p.clone(), order.clone());
        threads.push(thread::spawn(move || {
            let mut s = Store::new(&q, ());
            s.instantiate_timeout(&layout(), LONG).unwrap();
            order.lock().push(n);
            thread::sleep(Duration::from_millis(5));
        }));
        wait_for(|| p.metrics().waiters == n + 1);
    }
    drop(holder);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*order.lock(), [0, 1, 2, 3]);
}

#[test]
fn the_deadline_passes_with_pool_exhausted_and_nothing_leaks() {
    let p = pool(1);
    let _holder = hold(&p);
    let mut s = Store::new(&p, ());
    let err = s
        .instantiate_timeout(&layout(), Duration::from_millis(20))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::PoolExhausted {
            resource: Resource::Instance,
            limit: 1
        }
    ));
    let m = p.metrics();
    assert_eq!(
        (m.waiters, m.instances_in_use, m.memories_in_use),
        (0, 1, 1)
    );
}

#[test]
fn store_caps_and_unsupported_layouts_fail_at_once_without_waiting() {
    let p = pool(1);
    let _holder = hold(&p);
    let mut s = Store::new(&p, StoreLimitsBuilder::new().instances(0).build());
    s.limiter(|l| l);
    assert!(matches!(
        s.instantiate_timeout(&layout(), LONG),
        Err(Error::StoreLimit { .. })
    ));
    let mut s = Store::new(&p, ());
    let two = layout().memory(MemoryType::new(0, None));
    assert!(matches!(
        s.instantiate_timeout(&two, LONG),
        Err(Error::Unsupported(_))
    ));
    assert_eq!(p.metrics().wait_time, Duration::ZERO);
}

#[test]
fn instantiate_async_waits_up_to_the_configured_admission_timeout() {
    let mut c = config::small(1);
    c.admission_timeout(LONG);
    let p = config::pool(&c);
    let holder = hold(&p);
    let waiter = {
        let p = p.clone();
        thread::spawn(move || {
            let mut s = Store::new(&p, ());
            block_on(s.instantiate_async(&layout())).map(|_| ())
        })
    };
    wait_for(|| p.metrics().waiters == 1);
    drop(holder);
    waiter.join().unwrap().unwrap();
    // Without a timeout configured, async fails at once as before.
    let p = pool(1);
    let _holder = hold(&p);
    let mut s = Store::new(&p, ());
    assert!(matches!(
        block_on(s.instantiate_async(&layout())),
        Err(Error::PoolExhausted { .. })
    ));
}

#[test]
fn async_deadline_passes_with_pool_exhausted() {
    let p = pool(1);
    let _holder = hold(&p);
    let mut s = Store::new(&p, ());
    let r = block_on(s.instantiate_async_timeout(&layout(), Duration::from_millis(20)));
    assert!(matches!(r, Err(Error::PoolExhausted { .. })));
    assert_eq!(p.metrics().waiters, 0);
}

#[test]
fn no_waiter_is_lost_when_many_threads_release_at_once() {
    let slots = 3;
    let p = pool(slots);
    let threads = 12;
    let rounds = 60;
    let outcomes: Vec<(usize, usize)> = thread::scope(|scope| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let p = p.clone();
                scope.spawn(move || {
                    let (mut served, mut timed_out) = (0, 0);
                    for _ in 0..rounds {
                        let mut s = Store::new(&p, ());
                        match s.instantiate_timeout(&layout(), Duration::from_secs(20)) {
                            Ok(i) => {
                                i.memory(&s, 0).unwrap().data_mut(&mut s)[0] = 1;
                                served += 1;
                            }
                            Err(Error::PoolExhausted { .. }) => timed_out += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    (served, timed_out)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let served: usize = outcomes.iter().map(|o| o.0).sum();
    let timed_out: usize = outcomes.iter().map(|o| o.1).sum();
    assert_eq!(served + timed_out, threads * rounds);
    // Every holder releases almost at once, so with 20 s deadlines nobody
    // should ever time out.
    assert_eq!(timed_out, 0);
    let m = p.metrics();
    assert_eq!(
        (m.waiters, m.instances_in_use, m.memories_in_use),
        (0, 0, 0)
    );
}
