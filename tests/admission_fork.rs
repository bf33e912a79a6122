//! The deadline timer after `fork` (issue 12, item 4): in a child forked
//! after the process-wide timer thread started, a deadline still fires.
//!
//! Its own test binary, with one test: at the fork, the only other threads
//! are the test harness's and the timer's.

mod common;
use common::fork;

use instance_pool::*;
use std::time::Duration;

fn full_pool() -> (PoolingInstanceAllocator, Store<()>) {
    let mut c = PoolingConfig::default();
    c.total_instances(1)
        .total_memories(1)
        .total_tables(1)
        .max_memory_size(1 << 20)
        .memory_guard_size(64 << 10)
        .table_elements(16);
    let p = PoolingInstanceAllocator::new(&c).unwrap();
    let mut holder = Store::new(&p, ());
    holder
        .instantiate(&InstanceLayout::new().memory(MemoryType::new(1, None)))
        .unwrap();
    (p, holder)
}

/// A wait on a full pool that must end at its deadline.
fn times_out() -> bool {
    let (p, _holder) = full_pool();
    let mut s = Store::new(&p, ());
    let layout = InstanceLayout::new().memory(MemoryType::new(1, None));
    matches!(
        s.instantiate_timeout(&layout, Duration::from_millis(20)),
        Err(Error::PoolExhausted { .. })
    )
}

#[test]
fn a_deadline_fires_in_a_child_forked_after_the_timer_started() {
    // Starts the timer thread in this process.
    assert!(times_out());
    // The child builds its own pool and waits on it (the harness's and the timer's
    // threads hold no lock it needs).
    let status = fork::in_child(|| if times_out() { 0 } else { 2 })
        .expect("the child's instantiate_timeout never returned: no timer after fork");
    assert!(
        fork::exited(status, 0),
        "the child's wait did not end with PoolExhausted (status {status:#x}; exit 2: another outcome, 3: a panic)"
    );
}
