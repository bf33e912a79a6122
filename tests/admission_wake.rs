//! The admission wake: a waiter blocked on a full pool is served soon
//! after a release frees what it needs, not at its deadline.
//!
//! Every way a slot comes back goes through the pool's one release path,
//! which wakes waiters: a store dropped, a failed instantiation rolled
//! back, and (with the `wasmtime-examples` feature) a Wasmtime memory
//! dropped.
//!
//! These tests hold a latency bound, [`LATENCY_BOUND`]: each waiter waits
//! with a deadline of [`TIMEOUT`] (30 s) and must be served within 100 ms
//! of the release, measured from just before it. A waiter the release did
//! not wake would be served only at its deadline; a wake takes microseconds,
//! so the bound leaves room for a noisy machine with 2 shared cores.

mod common;
use common::config;

use instance_pool::*;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long after a release its waiter may be served.
const LATENCY_BOUND: Duration = Duration::from_millis(100);
/// Each waiter's deadline: far past the bound.
const TIMEOUT: Duration = Duration::from_secs(30);

fn layout() -> InstanceLayout {
    InstanceLayout::new()
        .memory(MemoryType::new(1, None))
        .table(TableType::new(1, None))
}

fn hold(p: &PoolingInstanceAllocator) -> Store<()> {
    let mut s = Store::new(p, ());
    s.instantiate(&layout()).unwrap();
    s
}

fn exhausted(p: &PoolingInstanceAllocator) -> u64 {
    let m = p.metrics();
    m.instances_exhausted + m.memories_exhausted + m.tables_exhausted
}

fn wait_for(what: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if what() {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("condition not reached");
}

/// A waiter on its own thread (not scoped: a test that fails must not
/// wait for it): sends its result and when it got it.
fn waiter(p: &PoolingInstanceAllocator) -> mpsc::Receiver<(Result<Store<()>>, Instant)> {
    let (tx, rx) = mpsc::channel();
    let p = p.clone();
    thread::spawn(move || {
        let mut s = Store::new(&p, ());
        let r = s.instantiate_timeout(&layout(), TIMEOUT).map(|_| ());
        let _ = tx.send((r.map(|()| s), Instant::now()));
    });
    rx
}

/// Starts a waiter on `p`, full now, and returns once it is waiting:
/// counted as a waiter, past a try that found the pool exhausted when
/// `tries`, and given time to go to sleep.
fn blocked_waiter(
    p: &PoolingInstanceAllocator,
    tries: bool,
) -> mpsc::Receiver<(Result<Store<()>>, Instant)> {
    let (waiters, exhausted_before) = (p.metrics().waiters, exhausted(p));
    let rx = waiter(p);
    wait_for(|| p.metrics().waiters > waiters && (!tries || exhausted(p) > exhausted_before));
    // Settling, not a timing assertion: a release before the waiter sleeps
    // serves it without a wake, and the test would prove nothing.
    thread::sleep(Duration::from_millis(50));
    assert!(rx.try_recv().is_err(), "served from a full pool");
    rx
}

/// The waiter on `rx` is served within [`LATENCY_BOUND`] of `released`.
fn served_within_bound(rx: &mpsc::Receiver<(Result<Store<()>>, Instant)>, released: Instant) {
    let (r, at) = rx
        .recv_timeout(LATENCY_BOUND)
        .unwrap_or_else(|_| panic!("not served within {LATENCY_BOUND:?} of the release"));
    let store = r.unwrap();
    let latency = at - released;
    assert!(
        latency <= LATENCY_BOUND,
        "served {latency:?} after the release"
    );
    drop(store);
}

#[test]
fn a_blocked_waiter_is_served_within_the_bound_after_a_store_is_dropped() {
    let p = config::pool(&config::small(1));
    let holder = hold(&p);
    let rx = blocked_waiter(&p, true);
    let released = Instant::now();
    drop(holder);
    served_within_bound(&rx, released);
}

#[test]
fn a_blocked_waiter_is_served_within_the_bound_after_a_store_is_dropped_on_another_thread() {
    let p = config::pool(&config::small(1));
    let holder = hold(&p);
    let rx = blocked_waiter(&p, true);
    let released = Instant::now();
    thread::spawn(move || drop(holder)).join().unwrap();
    served_within_bound(&rx, released);
}

/// A limiter that holds an instantiation in its first call (its slots
/// taken) until told to answer, then refuses.
struct Gate {
    entered: mpsc::Sender<()>,
    open: mpsc::Receiver<()>,
}

impl ResourceLimiter for Gate {
    fn memory_growing(&mut self, _: usize, _: usize, _: Option<usize>) -> bool {
        let _ = self.entered.send(());
        let _ = self.open.recv();
        false
    }

    fn table_growing(&mut self, _: u32, _: u32, _: Option<u32>) -> bool {
        true
    }
}

/// The outcome of a refused instantiation, with its store: kept alive, so
/// that only the instantiation's own rollback can wake a waiter (dropping
/// the store is a release of its own).
type Refused = (Result<Instance>, Store<Gate>);

/// Runs an instantiation on its own thread that takes the last free slots
/// of `p` and holds them in its limiter; returns once it does, with the
/// sender that makes the limiter refuse and the instantiation's outcome.
fn refused_instantiation(
    p: &PoolingInstanceAllocator,
    waiting: bool,
) -> (mpsc::Sender<()>, mpsc::Receiver<Refused>) {
    let (entered_tx, entered) = mpsc::channel();
    let (open, open_rx) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let p = p.clone();
    thread::spawn(move || {
        let gate = Gate {
            entered: entered_tx,
            open: open_rx,
        };
        let mut s = Store::new(&p, gate);
        s.limiter(|g| g);
        let r = if waiting {
            s.instantiate_timeout(&layout(), TIMEOUT)
        } else {
            s.instantiate(&layout())
        };
        let _ = done_tx.send((r, s));
    });
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the instantiation never reached its limiter");
    (open, done)
}

fn refusal_serves_waiter(waiting: bool) {
    // Two of everything: one held, one taken by the instantiation that
    // will be refused.
    let p = config::pool(&config::small(2));
    let holder = hold(&p);
    let (open, done) = refused_instantiation(&p, waiting);
    assert_eq!(common::in_use(&p), (2, 2, 2));
    // A waiting instantiation may keep later ones from trying while its
    // own try runs; a plain one never does.
    let rx = blocked_waiter(&p, !waiting);
    let released = Instant::now();
    open.send(()).unwrap();
    served_within_bound(&rx, released);
    let (refused, store) = done.recv_timeout(LATENCY_BOUND).unwrap();
    assert!(
        matches!(refused, Err(Error::LimiterDenied { .. })),
        "{refused:?}"
    );
    drop((store, holder));
    common::assert_nothing_in_use(&p);
}

#[test]
fn a_blocked_waiter_is_served_within_the_bound_after_a_refused_instantiation_rolls_back() {
    refusal_serves_waiter(false);
}

#[test]
fn a_blocked_waiter_is_served_within_the_bound_after_a_refused_waiting_instantiation_rolls_back() {
    refusal_serves_waiter(true);
}

#[cfg(feature = "wasmtime-examples")]
#[test]
fn a_blocked_waiter_is_served_within_the_bound_after_a_wasmtime_memory_is_dropped() {
    use instance_pool::wasmtime::PooledMemoryCreator;
    // One memory slot, taken by a Wasmtime instance's memory.
    let mut c = config::small(2);
    c.total_memories(1);
    let p = config::pool(&c);
    let mut wc = ::wasmtime::Config::new();
    PooledMemoryCreator::new(&p).install(&mut wc);
    let engine = ::wasmtime::Engine::new(&wc).unwrap();
    let module = ::wasmtime::Module::new(&engine, "(module (memory 1))").unwrap();
    let mut store = ::wasmtime::Store::new(&engine, ());
    ::wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
    assert_eq!(p.metrics().memories_in_use, 1);
    let rx = blocked_waiter(&p, true);
    let released = Instant::now();
    drop(store);
    served_within_bound(&rx, released);
}
