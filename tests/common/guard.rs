//! Guard pages, observed: a case writes one byte through
//! `Memory::data_ptr` in a child process (this test binary run again with
//! an environment variable naming the case), and the parent checks how the
//! child ended: killed by `SIGSEGV`/`SIGBUS` for a byte a tenant must not
//! reach, a clean exit for its in-bounds neighbour.

use super::config::{self, GUARD, MIB};
use instance_pool::*;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const CASE_VAR: &str = "INSTANCE_POOL_GUARD_CASE";
/// Which shape (`Shape::name`) the child's pools use (see [`config`]).
pub const PROTECTION_VAR: &str = "INSTANCE_POOL_GUARD_PROTECTION";
const SIGBUS: i32 = 7;
const SIGSEGV: i32 = 11;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expect {
    Fault,
    NoFault,
}

/// Runs `case` in a child process (when this process is the parent) or
/// performs it (when this process is the child asked to run it).
///
/// `test` is the test's name, for `--exact`; `write` sets up a pool and
/// returns the address to write, or panics if the setup does not hold.
pub fn run(test: &str, expect: Expect, write: impl FnOnce() -> *mut u8) {
    // Every case on every layout and protection that faults past the size.
    run_on(test, expect, &config::SHAPES, write);
}

/// [`run`] on `shapes`.
pub fn run_on(
    test: &str,
    expect: Expect,
    shapes: &[config::Shape],
    write: impl FnOnce() -> *mut u8,
) {
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
    for &shape in shapes {
        check_child(test, expect, shape);
    }
}

fn check_child(test: &str, expect: Expect, shape: config::Shape) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CASE_VAR, test)
        .env(PROTECTION_VAR, shape.name())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!(
        "{shape:?}: child {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
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

/// [`config::small`] with the guard before the first slot asked for
/// explicitly, on the protection the parent chose for this child.
pub fn config(total_memories: u32) -> PoolingConfig {
    let mut c = config::small(total_memories);
    c.guard_before_memory(true);
    let wanted = std::env::var(PROTECTION_VAR).unwrap_or_default();
    if let Some(&shape) = config::ALL_SHAPES.iter().find(|s| s.name() == wanted) {
        shape.apply(&mut c);
    }
    c
}

/// A store with one memory of `min` pages (and `image`), checked to sit in
/// a 1 MiB slot followed by a 64 KiB guard.
pub fn tenant(
    pool: &PoolingInstanceAllocator,
    min: u64,
    image: Option<&[u8]>,
) -> (Store<()>, Memory) {
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
pub fn addr<T>(store: Store<T>, m: Memory, offset: isize) -> *mut u8 {
    let base = m.data_ptr(&store);
    std::mem::forget(store);
    base.wrapping_offset(offset)
}

/// A memory of 2 pages in a pool of one slot, under a limiter that refuses
/// more than 2 pages; `fail_grow` makes a grow of it fail (and checks how).
/// The address is `data_size + delta`: the failed grow must have left the
/// end where it was.
pub fn after_failed_grow(
    delta: isize,
    fail_grow: impl FnOnce(&mut Store<StoreLimits>, Memory),
) -> *mut u8 {
    let pool = config::pool(&config(1));
    let two_pages = StoreLimitsBuilder::new()
        .memory_size(2 * WASM_PAGE_SIZE)
        .build();
    let mut store = Store::new(&pool, two_pages);
    store.limiter(|l| l);
    let inst = store
        .instantiate(&InstanceLayout::new().memory(MemoryType::new(2, None)))
        .unwrap();
    let m = inst.memory(&store, 0).unwrap();
    fail_grow(&mut store, m);
    let size = m.data_size(&store);
    assert_eq!(size, 2 * WASM_PAGE_SIZE);
    std::mem::forget(pool);
    addr(store, m, size as isize + delta)
}
