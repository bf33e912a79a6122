//! Helpers for the admission hardening tests (`admission_inline`,
//! `admission_overtaking`).

use instance_pool::*;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Longer than any test runs: these waits must end by a release.
pub const HOUR: Duration = Duration::from_secs(3600);
/// How long a scenario that should finish may take before it counts as
/// stuck (a liveness bound, not a timing assertion).
pub const WATCHDOG: Duration = Duration::from_secs(30);

pub fn pool(instances: u32, memories: u32, per_instance: u32) -> PoolingInstanceAllocator {
    let mut c = PoolingConfig::default();
    c.total_instances(instances)
        .total_memories(memories)
        .total_tables(1)
        .max_memories_per_instance(per_instance)
        .max_memory_size(1 << 20)
        .memory_guard_size(64 << 10)
        .table_elements(16);
    PoolingInstanceAllocator::new(&c).unwrap()
}

pub fn memories(n: usize) -> InstanceLayout {
    (0..n).fold(InstanceLayout::new(), |l, _| {
        l.memory(MemoryType::new(1, None))
    })
}

pub fn hold(p: &PoolingInstanceAllocator, layout: &InstanceLayout) -> Store<()> {
    let mut s = Store::new(p, ());
    s.instantiate(layout).unwrap();
    s
}

#[allow(dead_code, reason = "not every test binary uses it")]
pub fn wait_for(what: impl Fn() -> bool) {
    for _ in 0..30_000 {
        if what() {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("condition not reached");
}

#[allow(dead_code, reason = "not every test binary uses it")]
/// A blocking waiter on its own thread; sends back its store once served.
pub fn waiter(
    p: &PoolingInstanceAllocator,
    layout: InstanceLayout,
    timeout: Duration,
) -> mpsc::Receiver<Result<Store<()>>> {
    let (tx, rx) = mpsc::channel();
    let p = p.clone();
    thread::spawn(move || {
        let mut s = Store::new(&p, ());
        let r = s.instantiate_timeout(&layout, timeout).map(|_| ());
        let _ = tx.send(r.map(|()| s));
    });
    rx
}
