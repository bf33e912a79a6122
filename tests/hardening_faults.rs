//! Error paths of `Store::reset` (issue 12, item 5) and of a stack's first
//! use, through the fault seam.

use instance_pool::*;

#[test]
fn a_failed_reset_still_resets_every_memory_before_returning_the_error() {
    let mut config = PoolingConfig::default();
    config
        .total_memories(4)
        .max_memories_per_instance(2)
        .max_memory_size(1 << 20)
        .memory_guard_size(64 << 10);
    let pool = PoolingInstanceAllocator::new(&config).unwrap();
    let image = MemoryImage::new(b"second").unwrap();
    let layout = InstanceLayout::new()
        .memory(MemoryType::new(1, None))
        .memory_with_image(MemoryType::new(1, None), image);
    let mut store = Store::new(&pool, ());
    let i = store.instantiate(&layout).unwrap();
    let (a, b) = (i.memory(&store, 0).unwrap(), i.memory(&store, 1).unwrap());
    for m in [a, b] {
        m.grow(&mut store, 1).unwrap();
        m.data_mut(&mut store).fill(0x5A);
    }
    fault::reset();
    // The first memory: madvise (falls back to writing zeroes), then the
    // mprotect back to its minimum, which fails.
    fault::fail_nth(2);
    let err = store.reset().unwrap_err();
    assert!(matches!(err, Error::Os(_)), "{err:?}");
    fault::reset();
    // Contents are right in both, whatever their sizes.
    assert!(a.data(&store).iter().all(|&x| x == 0));
    assert_eq!(&b.data(&store)[..6], b"second");
    assert!(b.data(&store)[6..].iter().all(|&x| x == 0));
    assert_eq!(
        b.size(&store),
        1,
        "the second memory is back at its minimum"
    );
    // And a second reset finishes the first.
    store.reset().unwrap();
    assert_eq!(a.size(&store), 1);
}

#[test]
fn a_stack_that_cannot_be_made_usable_stays_in_the_pool() {
    for protection in [MemoryProtection::GuardMarkers, MemoryProtection::Mprotect] {
        let mut c = StackPoolConfig::default();
        c.total_stacks(1)
            .stack_size(64 << 10)
            .stack_protection(protection);
        let pool = StackPool::new(&c).unwrap();
        fault::reset();
        fault::fail_nth(1); // the first use's guard install or mprotect
        assert!(
            matches!(pool.allocate(), Err(Error::Os(_))),
            "{protection:?}"
        );
        fault::reset();
        assert_eq!(pool.metrics().stacks_in_use, 0, "{protection:?}");
        let s = pool.allocate().unwrap();
        // SAFETY: the stack's own bytes, read-write once allocated.
        let bytes = unsafe { std::slice::from_raw_parts_mut(s.bottom(), s.size()) };
        bytes.fill(1);
        assert_eq!(pool.metrics().stacks_in_use, 1);
    }
}

/// Issue 20, item 5: a stack whose first use fails was never handed out,
/// so nothing in the metrics moves (it is not an idle warm stack).
#[test]
fn a_refused_stack_allocation_leaves_the_metrics_as_they_were() {
    for protection in [MemoryProtection::GuardMarkers, MemoryProtection::Mprotect] {
        let mut c = StackPoolConfig::default();
        c.total_stacks(2)
            .stack_size(64 << 10)
            .stack_keep_resident(4096)
            .stack_protection(protection);
        let pool = StackPool::new(&c).unwrap();
        let held = pool.allocate().unwrap();
        let before = pool.metrics();
        fault::reset();
        fault::fail_nth(1); // the second stack's first use
        assert!(
            matches!(pool.allocate(), Err(Error::Os(_))),
            "{protection:?}"
        );
        fault::reset();
        assert_eq!(pool.metrics(), before, "{protection:?}");
        assert_eq!(pool.metrics().to_string(), before.to_string());
        // The refused stack is still there, and works.
        let second = pool.allocate().unwrap();
        assert_ne!(second.bottom(), held.bottom());
        let m = pool.metrics();
        assert_eq!((m.stacks_in_use, m.unused_warm_stacks), (2, 0));
    }
}
