//! Stores dropped while a thread's locals are torn down (issue 20, item 1):
//! a server keeps a tenant's store in a `thread_local!` per worker and
//! resets it between requests; when the worker exits, the store is
//! dropped from the thread-local destructors, after the crate's own
//! thread-locals may already be gone. The release must still reset the
//! slot, and nothing may abort.
//!
//! Each case runs in a child process (this test binary run again), so an
//! abort is reported as this test's failure, with the child's output.

mod common;

use common::config::{self, ALL_SHAPES};
use instance_pool::*;
use std::cell::RefCell;
use std::process::Command;

const CASE_VAR: &str = "INSTANCE_POOL_THREAD_EXIT_CASE";
const KEEP: usize = 256 << 10;

thread_local! {
    static TENANT: RefCell<Option<(Store<()>, Instance)>> = const { RefCell::new(None) };
}

fn pool(shape: config::Shape) -> PoolingInstanceAllocator {
    let mut c = config::small(1);
    shape.apply(&mut c).memory_keep_resident(KEEP);
    config::pool(&c)
}

fn layout() -> InstanceLayout {
    let image = MemoryImage::new(&[7u8; 10_000]).unwrap();
    InstanceLayout::new().memory_with_image(MemoryType::new(4, None), image)
}

/// The worker: its store lives in a thread-local (registered before any
/// of the crate's, so it is destroyed after them), is reset once between
/// "requests", dirtied again, and left for thread exit to drop.
fn worker(pool: PoolingInstanceAllocator) {
    TENANT.with(|t| {
        let mut store = Store::new(&pool, ());
        let instance = store.instantiate(&layout()).unwrap();
        *t.borrow_mut() = Some((store, instance));
    });
    TENANT.with(|t| {
        let mut t = t.borrow_mut();
        let (store, instance) = t.as_mut().unwrap();
        let m = instance.memory(store, 0).unwrap();
        for round in 0..2 {
            m.data_mut(store)
                .iter_mut()
                .step_by(4096)
                .for_each(|b| *b = 0xaa);
            if round == 0 {
                store.reset().unwrap();
            }
        }
    });
}

fn child(shape: config::Shape) {
    let pool = pool(shape);
    let p = pool.clone();
    std::thread::spawn(move || worker(p)).join().unwrap();
    let m = pool.metrics();
    assert_eq!((m.instances_in_use, m.memories_in_use), (0, 0));
    // The one slot, reset: the image, then zeroes.
    let mut store = Store::new(&pool, ());
    let instance = store.instantiate(&layout()).unwrap();
    let data = instance.memory(&store, 0).unwrap().data(&store);
    assert_eq!(data.len(), 4 * WASM_PAGE_SIZE);
    assert!(data[..10_000].iter().all(|&b| b == 7), "image restored");
    assert!(data[10_000..].iter().all(|&b| b == 0), "zeroes after it");
    println!("thread-exit case: slot back and reset");
}

#[test]
fn a_store_dropped_at_thread_exit_comes_back_reset_without_abort() {
    let test = "a_store_dropped_at_thread_exit_comes_back_reset_without_abort";
    if let Ok(name) = std::env::var(CASE_VAR) {
        let shape = ALL_SHAPES.into_iter().find(|s| s.name() == name).unwrap();
        return child(shape);
    }
    for shape in ALL_SHAPES {
        in_child(test, shape);
    }
}

/// Runs `test` for `shape` in a child process; it must exit cleanly with
/// its slot back and reset.
fn in_child(test: &str, shape: config::Shape) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CASE_VAR, shape.name())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("slot back and reset"),
        "{shape:?}: child {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

/// The same with a Wasmtime store whose memory is a pool slot: Wasmtime's
/// memory goes back through the same reset.
#[cfg(feature = "wasmtime-examples")]
#[test]
fn a_wasmtime_store_dropped_at_thread_exit_gives_its_slot_back_without_abort() {
    let test = "a_wasmtime_store_dropped_at_thread_exit_gives_its_slot_back_without_abort";
    if let Ok(name) = std::env::var(CASE_VAR) {
        let shape = ALL_SHAPES.into_iter().find(|s| s.name() == name).unwrap();
        return wasmtime_child(shape);
    }
    for shape in ALL_SHAPES {
        in_child(test, shape);
    }
}

#[cfg(feature = "wasmtime-examples")]
fn wasmtime_child(shape: config::Shape) {
    use instance_pool::wasmtime::PooledMemoryCreator;
    thread_local! {
        static WASM: RefCell<Option<::wasmtime::Store<()>>> = const { RefCell::new(None) };
    }
    let pool = pool(shape);
    let mut wc = ::wasmtime::Config::new();
    PooledMemoryCreator::new(&pool).install(&mut wc);
    let engine = ::wasmtime::Engine::new(&wc).unwrap();
    let wat = r#"(module (memory (export "m") 4)
        (func (export "dirty") (i32.store (i32.const 70000) (i32.const -1))))"#;
    let module = ::wasmtime::Module::new(&engine, wat).unwrap();
    let (e, m) = (engine.clone(), module.clone());
    let run = move |store: &mut ::wasmtime::Store<()>| {
        let instance = ::wasmtime::Instance::new(&mut *store, &m, &[]).unwrap();
        let dirty = instance
            .get_typed_func::<(), ()>(&mut *store, "dirty")
            .unwrap();
        dirty.call(&mut *store, ()).unwrap();
    };
    std::thread::spawn(move || {
        WASM.with(|w| *w.borrow_mut() = Some(::wasmtime::Store::new(&e, ())));
        // An earlier request on this worker, whose release sets up the
        // crate's thread-locals after the worker's own.
        let mut earlier = ::wasmtime::Store::new(&e, ());
        run(&mut earlier);
        drop(earlier);
        WASM.with(|w| run(w.borrow_mut().as_mut().unwrap()));
    })
    .join()
    .unwrap();
    assert_eq!(pool.metrics().memories_in_use, 0);
    // The one slot, reset: the next memory reads as zeroes.
    let mut store = ::wasmtime::Store::new(&engine, ());
    let instance = ::wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
    let memory = instance.get_memory(&mut store, "m").unwrap();
    assert!(memory.data(&store).iter().all(|&b| b == 0), "slot reset");
    println!("thread-exit case: slot back and reset");
}
