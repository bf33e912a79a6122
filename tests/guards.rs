//! Guard pages, observed: each case writes one byte through
//! `Memory::data_ptr` in a child process (this test binary run again with
//! an environment variable naming the case), and the parent checks how the
//! child ended: killed by `SIGSEGV`/`SIGBUS` for a byte a tenant must not
//! reach, a clean exit for its in-bounds neighbour.

use instance_pool::*;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const CASE_VAR: &str = "INSTANCE_POOL_GUARD_CASE";
const MIB: usize = 1 << 20;
const PAGE: usize = WASM_PAGE_SIZE;
const GUARD: usize = 64 << 10;
const SIGBUS: i32 = 7;
const SIGSEGV: i32 = 11;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Fault,
    NoFault,
}

/// Runs `case` in a child process (when this process is the parent) or
/// performs it (when this process is the child asked to run it).
///
/// `test` is the test's name, for `--exact`; `write` sets up a pool and
/// returns the address to write, or panics if the setup does not hold.
fn run(test: &str, expect: Expect, write: impl FnOnce() -> *mut u8) {
    if std::env::var(CASE_VAR).as_deref() == Ok(test) {
        let ptr = write();
        println!("guard-case {test}: writing {ptr:p}");
        use std::io::Write;
        std::io::stdout().flush().unwrap();
        // SAFETY: this is the point of the test: the write either hits
        // memory the case owns, or faults and kills this child process.
        unsafe { std::ptr::write_volatile(ptr, 0x5a) };
        // SAFETY: as above; read back so the write cannot be elided.
        assert_eq!(unsafe { std::ptr::read_volatile(ptr) }, 0x5a);
        println!("guard-case {test}: wrote");
        std::io::stdout().flush().unwrap();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CASE_VAR, test)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!(
        "child {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    // The child really ran this case up to the write (a mistyped name would
    // run no test and exit cleanly).
    assert!(
        stdout.contains(&format!("guard-case {test}: writing")),
        "the case did not reach its write: {report}"
    );
    match expect {
        Expect::Fault => {
            let signal = out.status.signal();
            assert!(
                signal == Some(SIGSEGV) || signal == Some(SIGBUS),
                "expected SIGSEGV or SIGBUS: {report}"
            );
            assert!(!stdout.contains("wrote"), "{report}");
        }
        Expect::NoFault => {
            assert!(out.status.success(), "expected a clean exit: {report}");
            assert!(
                stdout.contains(&format!("guard-case {test}: wrote")),
                "{report}"
            );
        }
    }
}

fn config(total_memories: u32) -> PoolingConfig {
    let mut c = PoolingConfig::default();
    c.total_instances(total_memories)
        .total_memories(total_memories)
        .total_tables(total_memories)
        .max_memory_size(MIB)
        .memory_guard_size(GUARD)
        .guard_before_memory(true);
    c
}

/// A store with one memory of `min` pages (and `image`), checked to sit in
/// a 1 MiB slot followed by a 64 KiB guard.
fn tenant(pool: &PoolingInstanceAllocator, min: u64, image: Option<&[u8]>) -> (Store<()>, Memory) {
    let mut store = Store::new(pool, ());
    let ty = MemoryType::new(min, None);
    let layout = match image {
        Some(bytes) => {
            InstanceLayout::new().memory_with_image(ty, MemoryImage::new(bytes).unwrap())
        }
        None => InstanceLayout::new().memory(ty),
    };
    let inst = store.instantiate(&layout).unwrap();
    let m = inst.memory(&store, 0).unwrap();
    assert_eq!(m.reserved_size(&store), MIB);
    assert_eq!(m.guard_size(&store), GUARD);
    (store, m)
}

/// `base + offset` of a memory whose store is kept alive (leaked) for the
/// child's remaining life.
fn addr(store: Store<()>, m: Memory, offset: isize) -> *mut u8 {
    let base = m.data_ptr(&store);
    std::mem::forget(store);
    base.wrapping_offset(offset)
}

// ---- the guard before the base ----

fn before_base(offset: isize) -> *mut u8 {
    // Slot 1, so the byte before it is slot 0's trailing guard; and slot 0
    // for the leading guard.
    let pool = PoolingInstanceAllocator::new(&config(2)).unwrap();
    let (first, _) = tenant(&pool, 1, None);
    let (store, m) = tenant(&pool, 1, None);
    std::mem::forget(first);
    std::mem::forget(pool);
    addr(store, m, offset)
}

#[test]
fn write_to_byte_before_base_faults() {
    run("write_to_byte_before_base_faults", Expect::Fault, || {
        before_base(-1)
    });
}

#[test]
fn write_to_base_does_not_fault() {
    run("write_to_base_does_not_fault", Expect::NoFault, || {
        before_base(0)
    });
}

fn before_first_slot(offset: isize) -> *mut u8 {
    let pool = PoolingInstanceAllocator::new(&config(1)).unwrap();
    let (store, m) = tenant(&pool, 1, None);
    std::mem::forget(pool);
    addr(store, m, offset)
}

#[test]
fn write_to_byte_before_first_slot_faults() {
    run(
        "write_to_byte_before_first_slot_faults",
        Expect::Fault,
        || before_first_slot(-1),
    );
}

#[test]
fn write_to_first_guard_byte_before_first_slot_faults() {
    run(
        "write_to_first_guard_byte_before_first_slot_faults",
        Expect::Fault,
        || before_first_slot(-(GUARD as isize)),
    );
}

// ---- the accessible end ----

fn at_end(image: bool, delta: isize) -> *mut u8 {
    let pool = PoolingInstanceAllocator::new(&config(1)).unwrap();
    let bytes = vec![9u8; 5000];
    let (store, m) = tenant(&pool, 2, image.then_some(bytes.as_slice()));
    let size = m.data_size(&store);
    assert_eq!(size, 2 * PAGE);
    std::mem::forget(pool);
    addr(store, m, size as isize + delta)
}

#[test]
fn write_at_data_size_faults() {
    run("write_at_data_size_faults", Expect::Fault, || {
        at_end(false, 0)
    });
}

#[test]
fn write_at_data_size_minus_one_does_not_fault() {
    run(
        "write_at_data_size_minus_one_does_not_fault",
        Expect::NoFault,
        || at_end(false, -1),
    );
}

#[test]
fn write_at_data_size_with_image_faults() {
    run(
        "write_at_data_size_with_image_faults",
        Expect::Fault,
        || at_end(true, 0),
    );
}

#[test]
fn write_at_data_size_minus_one_with_image_does_not_fault() {
    run(
        "write_at_data_size_minus_one_with_image_does_not_fault",
        Expect::NoFault,
        || at_end(true, -1),
    );
}

// ---- after a grow ----

fn after_grow(delta: isize) -> *mut u8 {
    let pool = PoolingInstanceAllocator::new(&config(1)).unwrap();
    let (mut store, m) = tenant(&pool, 1, None);
    let base = m.data_ptr(&store);
    assert_eq!(m.grow(&mut store, 3).unwrap(), 1);
    assert_eq!(m.data_ptr(&store), base, "a pooled memory moved");
    let size = m.data_size(&store);
    assert_eq!(size, 4 * PAGE);
    std::mem::forget(pool);
    addr(store, m, size as isize + delta)
}

#[test]
fn write_at_new_end_after_grow_faults() {
    run("write_at_new_end_after_grow_faults", Expect::Fault, || {
        after_grow(0)
    });
}

#[test]
fn write_before_new_end_after_grow_does_not_fault() {
    run(
        "write_before_new_end_after_grow_does_not_fault",
        Expect::NoFault,
        || after_grow(-1),
    );
}

// ---- the end of the slot's reservation ----

/// A memory grown to `pages` (16 is the whole 1 MiB slot); the address is
/// `base + reserved_size + delta`.
fn reservation_end(pages: u64, delta: isize) -> *mut u8 {
    let pool = PoolingInstanceAllocator::new(&config(2)).unwrap();
    // Slot 0, so the guard after it is followed by slot 1 (taken too, and
    // fully grown, to show the guard holds even between two live slots).
    let (mut store, m) = tenant(&pool, 1, None);
    let (mut next, n) = tenant(&pool, 1, None);
    n.grow(&mut next, 15).unwrap();
    let gap = (n.data_ptr(&next) as usize).abs_diff(m.data_ptr(&store) as usize);
    assert!(gap >= MIB + GUARD, "slots too close: {gap}");
    std::mem::forget(next);
    m.grow(&mut store, pages - 1).unwrap();
    let reserved = m.reserved_size(&store);
    std::mem::forget(pool);
    addr(store, m, reserved as isize + delta)
}

#[test]
fn write_to_last_reserved_byte_when_not_fully_grown_faults() {
    run(
        "write_to_last_reserved_byte_when_not_fully_grown_faults",
        Expect::Fault,
        || reservation_end(15, -1),
    );
}

#[test]
fn write_to_last_reserved_byte_when_fully_grown_does_not_fault() {
    run(
        "write_to_last_reserved_byte_when_fully_grown_does_not_fault",
        Expect::NoFault,
        || reservation_end(16, -1),
    );
}

#[test]
fn write_to_first_guard_byte_after_reservation_faults() {
    run(
        "write_to_first_guard_byte_after_reservation_faults",
        Expect::Fault,
        || reservation_end(16, 0),
    );
}

#[test]
fn write_to_last_guard_byte_after_reservation_faults() {
    run(
        "write_to_last_guard_byte_after_reservation_faults",
        Expect::Fault,
        || reservation_end(16, GUARD as isize - 1),
    );
}

// ---- reuse by a tenant with a smaller minimum ----

/// A pool of one memory: the first tenant grows to the whole slot, writes
/// it and leaves; the second, with a minimum of 2 pages, gets the same slot
/// and must find the rest of it inaccessible again.
fn reuse_smaller(keep_resident: usize, batch: usize, image: bool, delta: isize) -> *mut u8 {
    let mut c = config(1);
    c.memory_keep_resident(keep_resident)
        .decommit_batch_size(batch);
    let pool = PoolingInstanceAllocator::new(&c).unwrap();
    let bytes = vec![3u8; 5000];
    let img = image.then_some(bytes.as_slice());
    let (mut first, m) = tenant(&pool, 8, img);
    m.grow(&mut first, 8).unwrap();
    m.data_mut(&mut first).fill(0xEE);
    let first_base = m.data_ptr(&first);
    drop(first);
    let (store, m) = tenant(&pool, 2, img);
    assert_eq!(m.data_ptr(&store), first_base, "not the same slot");
    let size = m.data_size(&store);
    assert_eq!(size, 2 * PAGE);
    let data = m.data(&store);
    let expected_image = img.unwrap_or(&[]);
    assert_eq!(&data[..expected_image.len()], expected_image);
    assert!(data[expected_image.len()..].iter().all(|&b| b == 0));
    std::mem::forget(pool);
    addr(store, m, size as isize + delta)
}

#[test]
fn write_at_data_size_after_reuse_by_smaller_tenant_faults() {
    run(
        "write_at_data_size_after_reuse_by_smaller_tenant_faults",
        Expect::Fault,
        || reuse_smaller(0, 1, false, 0),
    );
}

#[test]
fn write_before_data_size_after_reuse_by_smaller_tenant_does_not_fault() {
    run(
        "write_before_data_size_after_reuse_by_smaller_tenant_does_not_fault",
        Expect::NoFault,
        || reuse_smaller(0, 1, false, -1),
    );
}

/// With the whole slot kept resident, the reset leaves it read-write: the
/// next, smaller tenant must still get its end protected.
#[test]
fn write_at_data_size_after_reuse_with_keep_resident_faults() {
    run(
        "write_at_data_size_after_reuse_with_keep_resident_faults",
        Expect::Fault,
        || reuse_smaller(MIB, 1, false, 0),
    );
}

#[test]
fn write_before_data_size_after_reuse_with_keep_resident_does_not_fault() {
    run(
        "write_before_data_size_after_reuse_with_keep_resident_does_not_fault",
        Expect::NoFault,
        || reuse_smaller(MIB, 1, false, -1),
    );
}

#[test]
fn write_at_data_size_after_reuse_with_image_and_partial_keep_resident_faults() {
    run(
        "write_at_data_size_after_reuse_with_image_and_partial_keep_resident_faults",
        Expect::Fault,
        || reuse_smaller(4 * PAGE, 1, true, 0),
    );
}

/// With batched resets the released slot waits in the queue; the second
/// acquisition flushes it.
#[test]
fn write_at_data_size_after_reuse_with_batched_reset_faults() {
    run(
        "write_at_data_size_after_reuse_with_batched_reset_faults",
        Expect::Fault,
        || reuse_smaller(0, 4, true, 0),
    );
}

#[test]
fn write_at_last_byte_of_old_size_after_reuse_faults() {
    run(
        "write_at_last_byte_of_old_size_after_reuse_faults",
        Expect::Fault,
        || reuse_smaller(MIB, 1, true, (16 - 2) * PAGE as isize - 1),
    );
}

// ---- refused and failed grows leave the end where it was ----

/// A limiter that refuses everything past 2 pages.
struct TwoPages;

impl ResourceLimiter for TwoPages {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> bool {
        desired <= 2 * PAGE
    }
    fn table_growing(&mut self, _current: u32, _desired: u32, _max: Option<u32>) -> bool {
        true
    }
}

/// `how`: 0 the limiter refuses, 1 past the slot (`MaximumExceeded`),
/// 2 the OS fails (`mprotect` made to fail through the fault seam).
fn after_refused_grow(how: u8, delta: isize) -> *mut u8 {
    let pool = PoolingInstanceAllocator::new(&config(1)).unwrap();
    let mut store = Store::new(&pool, TwoPages);
    store.limiter(|l| l);
    let inst = store
        .instantiate(&InstanceLayout::new().memory(MemoryType::new(2, None)))
        .unwrap();
    let m = inst.memory(&store, 0).unwrap();
    let result = match how {
        0 => m.grow(&mut store, 1),
        1 => {
            store.limiter(|_| Box::leak(Box::new(StoreLimits::default())));
            m.grow(&mut store, 15)
        }
        _ => {
            store.limiter(|_| Box::leak(Box::new(StoreLimits::default())));
            instance_pool::fault::reset();
            instance_pool::fault::fail_nth(1);
            let r = m.grow(&mut store, 1);
            assert!(!instance_pool::fault::pending(), "grow made no syscall");
            r
        }
    };
    match (how, &result) {
        (0, Err(Error::LimiterDenied { .. }))
        | (1, Err(Error::MaximumExceeded { .. }))
        | (2, Err(Error::Os(_))) => {}
        _ => panic!("unexpected grow result {result:?}"),
    }
    let size = m.data_size(&store);
    assert_eq!(size, 2 * PAGE);
    std::mem::forget(pool);
    let base = m.data_ptr(&store);
    std::mem::forget(store);
    base.wrapping_offset(size as isize + delta)
}

#[test]
fn write_at_data_size_after_denied_grow_faults() {
    run(
        "write_at_data_size_after_denied_grow_faults",
        Expect::Fault,
        || after_refused_grow(0, 0),
    );
}

#[test]
fn write_at_data_size_after_grow_past_slot_faults() {
    run(
        "write_at_data_size_after_grow_past_slot_faults",
        Expect::Fault,
        || after_refused_grow(1, 0),
    );
}

#[test]
fn write_at_data_size_after_failed_grow_faults() {
    run(
        "write_at_data_size_after_failed_grow_faults",
        Expect::Fault,
        || after_refused_grow(2, 0),
    );
}

#[test]
fn write_before_data_size_after_failed_grow_does_not_fault() {
    run(
        "write_before_data_size_after_failed_grow_does_not_fault",
        Expect::NoFault,
        || after_refused_grow(2, -1),
    );
}

// ---- a memory of 0 pages has no accessible byte ----

fn empty_memory(reuse: bool) -> *mut u8 {
    let mut c = config(1);
    c.memory_keep_resident(MIB);
    let pool = PoolingInstanceAllocator::new(&c).unwrap();
    if reuse {
        // The previous tenant leaves the whole slot resident and read-write.
        let (mut first, m) = tenant(&pool, 16, None);
        m.data_mut(&mut first).fill(1);
        drop(first);
    }
    let (store, m) = tenant(&pool, 0, None);
    assert_eq!(m.data_size(&store), 0);
    std::mem::forget(pool);
    addr(store, m, 0)
}

#[test]
fn write_to_base_of_empty_memory_faults() {
    run(
        "write_to_base_of_empty_memory_faults",
        Expect::Fault,
        || empty_memory(false),
    );
}

#[test]
fn write_to_base_of_empty_memory_in_reused_resident_slot_faults() {
    run(
        "write_to_base_of_empty_memory_in_reused_resident_slot_faults",
        Expect::Fault,
        || empty_memory(true),
    );
}

// ---- Store::reset shrinks the accessible part back to the minimum ----

fn after_reset(keep_resident: usize, delta: isize) -> *mut u8 {
    let mut c = config(1);
    c.memory_keep_resident(keep_resident);
    let pool = PoolingInstanceAllocator::new(&c).unwrap();
    let bytes = vec![4u8; 5000];
    let (mut store, m) = tenant(&pool, 2, Some(&bytes));
    m.grow(&mut store, 14).unwrap();
    m.data_mut(&mut store).fill(0xEE);
    store.reset().unwrap();
    let size = m.data_size(&store);
    assert_eq!(size, 2 * PAGE);
    let data = m.data(&store);
    assert_eq!(&data[..bytes.len()], bytes.as_slice());
    assert!(data[bytes.len()..].iter().all(|&b| b == 0));
    std::mem::forget(pool);
    addr(store, m, size as isize + delta)
}

#[test]
fn write_at_data_size_after_reset_faults() {
    run(
        "write_at_data_size_after_reset_faults",
        Expect::Fault,
        || after_reset(0, 0),
    );
}

#[test]
fn write_at_data_size_after_reset_with_keep_resident_faults() {
    run(
        "write_at_data_size_after_reset_with_keep_resident_faults",
        Expect::Fault,
        || after_reset(MIB, 0),
    );
}

#[test]
fn write_before_data_size_after_reset_does_not_fault() {
    run(
        "write_before_data_size_after_reset_does_not_fault",
        Expect::NoFault,
        || after_reset(MIB, -1),
    );
}
