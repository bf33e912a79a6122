//! The fiber stack pool: typed exhaustion, a guard below every stack, and
//! a stack's bytes never visible to its next user.

mod common;
use common::guard::{Expect, PROTECTION_VAR, run};
use instance_pool::*;

const PROTECTIONS: [MemoryProtection; 2] =
    [MemoryProtection::GuardMarkers, MemoryProtection::Mprotect];

fn config(stacks: u32, size: usize, keep: usize) -> StackPoolConfig {
    let mut c = StackPoolConfig::default();
    c.total_stacks(stacks)
        .stack_size(size)
        .stack_keep_resident(keep);
    // A guard case's child runs once per pool shape (`common::guard`):
    // the mprotect shape's child takes the mprotect path for stacks too.
    if let Ok(shape) = std::env::var(PROTECTION_VAR) {
        c.stack_protection(if shape.ends_with("mprotect") {
            MemoryProtection::Mprotect
        } else {
            MemoryProtection::GuardMarkers
        });
    }
    c
}

#[test]
fn stacks_are_handed_out_until_exhausted_and_all_come_back() {
    for p in PROTECTIONS {
        handed_out_until_exhausted(p);
    }
}

fn handed_out_until_exhausted(protection: MemoryProtection) {
    let mut c = config(3, 64 << 10, 0);
    c.stack_protection(protection);
    let pool = StackPool::new(&c).unwrap();
    assert_eq!(
        pool.metrics().guard_markers,
        protection == MemoryProtection::GuardMarkers
    );
    let stacks: Vec<_> = (0..3).map(|_| pool.allocate().unwrap()).collect();
    for s in &stacks {
        assert_eq!(s.size(), 64 << 10);
        assert_eq!(s.top() as usize - s.bottom() as usize, 64 << 10);
        assert_eq!(s.top() as usize % 16, 0);
        assert_eq!(s.guard_size(), host_page_size());
    }
    match pool.allocate() {
        Err(e @ Error::StacksExhausted { limit: 3 }) => {
            assert_eq!(
                e.to_string(),
                "maximum concurrent limit of 3 for stacks reached"
            )
        }
        other => panic!("expected StacksExhausted, got {other:?}"),
    }
    let m = pool.metrics();
    assert_eq!(
        (m.stacks_in_use, m.stack_acquisitions, m.stacks_exhausted),
        (3, 3, 1)
    );
    drop(stacks);
    let m = pool.metrics();
    assert_eq!((m.stacks_in_use, m.unused_warm_stacks), (0, 3));
    let again: Vec<_> = (0..3).map(|_| pool.allocate().unwrap()).collect();
    assert_eq!(pool.metrics().stacks_in_use, 3);
    drop(again);
}

#[test]
fn a_reused_stack_reads_as_zeroes_whatever_was_kept_resident() {
    let size = 256 << 10;
    for (keep, protection) in [0, 4096, 64 << 10, size]
        .into_iter()
        .flat_map(|k| PROTECTIONS.map(|p| (k, p)))
    {
        let mut c = config(1, size, keep);
        c.stack_protection(protection);
        let pool = StackPool::new(&c).unwrap();
        for round in 0..3 {
            let s = pool.allocate().unwrap();
            // SAFETY: `[bottom, top)` is this stack's, read-write, ours.
            let bytes = unsafe { std::slice::from_raw_parts_mut(s.bottom(), s.size()) };
            assert!(bytes.iter().all(|&b| b == 0), "keep {keep}, round {round}");
            bytes.fill(0xC3);
        }
        assert_eq!(
            pool.metrics().unused_resident_bytes,
            keep as u64,
            "keep {keep}"
        );
    }
}

/// Where a stack's user writes in the test below: both ends, both sides
/// of the first page's end, both sides of where the part kept resident (at
/// the top) begins, and the middle of each part.
fn positions(size: usize, keep: usize) -> Vec<usize> {
    let page = host_page_size();
    let kept_from = size - keep;
    let mut at = vec![0, 1, page - 1, page, kept_from / 2, size - keep / 2 - 1];
    at.extend([kept_from.wrapping_sub(1), kept_from, kept_from + 1]);
    at.push(size - 1);
    at.retain(|&p| p < size);
    at.sort_unstable();
    at.dedup();
    at
}

#[test]
fn reused_stacks_read_as_zeroes_wherever_the_last_user_wrote() {
    let page = host_page_size();
    let size = 16 * page;
    for protection in PROTECTIONS {
        for keep in [0, page, 5 * page, size - page, size] {
            let ctx = format!("{protection:?}, keep {keep}");
            let mut c = config(2, size, keep);
            c.stack_protection(protection);
            let pool = StackPool::new(&c).unwrap();
            let at = positions(size, keep);
            let mut bottoms = std::collections::BTreeSet::new();
            for round in 0..4u8 {
                let stacks = [pool.allocate().unwrap(), pool.allocate().unwrap()];
                for (n, s) in stacks.iter().enumerate() {
                    bottoms.insert(s.bottom() as usize);
                    // SAFETY: `[bottom, top)` is this stack's, read-write, ours.
                    let bytes = unsafe { std::slice::from_raw_parts_mut(s.bottom(), s.size()) };
                    if let Some(p) = bytes.iter().position(|&b| b != 0) {
                        panic!(
                            "{ctx}, round {round}: byte {p} of a stack reads {:#x}",
                            bytes[p]
                        );
                    }
                    // A value no earlier round wrote at that byte, never 0.
                    let value = 0x10 * (round + 1) + n as u8 + 1;
                    for &p in &at {
                        bytes[p] = value ^ (p as u8 & 0x0c);
                    }
                    // A whole page at the bottom, in the discarded part
                    // unless everything is kept.
                    bytes[..page].fill(value);
                }
                // Released in either order.
                let [a, b] = stacks;
                if round % 2 == 0 {
                    drop((a, b));
                } else {
                    drop((b, a));
                }
            }
            assert_eq!(bottoms.len(), 2, "{ctx}: the same two stacks each round");
            assert_eq!(pool.metrics().stacks_in_use, 0, "{ctx}");
        }
    }
}

/// Stacks have no affinity (issue 20, item 6): a released stack is handed
/// out again before a never-used one, the least recently released first,
/// as Wasmtime's stack pool does.
#[test]
fn a_released_stack_is_reused_before_a_cold_one_oldest_release_first() {
    for protection in PROTECTIONS {
        let mut c = config(3, 64 << 10, 0);
        c.stack_protection(protection);
        let pool = StackPool::new(&c).unwrap();
        let (a, b) = (pool.allocate().unwrap(), pool.allocate().unwrap());
        let (at_a, at_b) = (a.bottom(), b.bottom());
        drop(a);
        drop(b);
        let first = pool.allocate().unwrap();
        let second = pool.allocate().unwrap();
        assert_eq!(
            (first.bottom(), second.bottom()),
            (at_a, at_b),
            "{protection:?}"
        );
        // Only then the never-used one.
        let third = pool.allocate().unwrap();
        assert!(![at_a, at_b].contains(&third.bottom()), "{protection:?}");
    }
}

#[test]
fn the_stack_pool_refuses_what_it_cannot_lay_out() {
    let page = host_page_size();
    let cases: [(&str, StackPoolConfig); 5] = [
        ("stack_size", config(1, page + 1, 0)),
        ("stack_size", config(1, 0, 0)),
        ("stack_keep_resident", config(1, page, 2 * page)),
        ("stack_guard_size", {
            let mut c = config(1, page, 0);
            c.stack_guard_size(0);
            c
        }),
        ("overflows", config(u32::MAX, usize::MAX & !(page - 1), 0)),
    ];
    for (field, c) in cases {
        match StackPool::new(&c) {
            Err(Error::InvalidConfig(msg)) => assert!(msg.contains(field), "{field}: {msg}"),
            other => panic!("{field}: expected InvalidConfig, got {other:?}"),
        }
    }
    // Extreme but legal: an empty pool, and many stacks costing nothing up
    // front.
    let empty = StackPool::new(&config(0, page, 0)).unwrap();
    assert!(matches!(
        empty.allocate(),
        Err(Error::StacksExhausted { limit: 0 })
    ));
    if let Ok(many) = StackPool::new(&config(u32::MAX, page, 0)) {
        drop(many.allocate().unwrap());
    }
}

fn stack_byte(offset: isize) -> *mut u8 {
    let pool = StackPool::new(&config(2, 64 << 10, 0)).unwrap();
    let first = pool.allocate().unwrap();
    let second = pool.allocate().unwrap();
    let ptr = second.bottom().wrapping_offset(offset);
    // Keep both stacks (and the pool) for the child's write.
    std::mem::forget((first, second, pool));
    ptr
}

#[test]
fn a_write_below_a_stack_faults() {
    run("a_write_below_a_stack_faults", Expect::Fault, || {
        stack_byte(-1)
    });
}

#[test]
fn a_write_at_a_stacks_bottom_does_not_fault() {
    run(
        "a_write_at_a_stacks_bottom_does_not_fault",
        Expect::NoFault,
        || stack_byte(0),
    );
}

#[test]
fn a_write_at_the_top_of_the_stack_below_does_not_reach_this_ones_guard() {
    // The last byte of the first stack is just below the second's guard.
    run(
        "a_write_at_the_top_of_the_stack_below_does_not_reach_this_ones_guard",
        Expect::NoFault,
        || stack_byte(-(host_page_size() as isize) - 1),
    );
}

#[test]
fn stack_metrics_print_in_the_prometheus_format() {
    let mut c = config(2, 64 << 10, 4096);
    c.stack_protection(MemoryProtection::Mprotect);
    let pool = StackPool::new(&c).unwrap();
    let held = pool.allocate().unwrap();
    drop(pool.allocate().unwrap());
    assert!(pool.allocate().is_ok_and(|s| {
        drop(s);
        true
    }));
    let _third = pool.allocate().unwrap();
    assert!(pool.allocate().is_err());
    let text = pool.metrics().to_string();
    for line in [
        "instance_pool_stacks_in_use 2",
        "instance_pool_stack_acquisitions_total 4",
        "instance_pool_stacks_exhausted_total 1",
        "instance_pool_stack_guard_markers 0",
        "# TYPE instance_pool_stacks_in_use gauge",
        "# TYPE instance_pool_stack_acquisitions_total counter",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in:\n{text}"
        );
    }
    drop(held);
    assert!(
        pool.metrics()
            .to_string()
            .contains("instance_pool_stacks_in_use 1\n")
    );
}
