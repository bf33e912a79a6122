//! Wasmtime's async fibers on pooled stacks (`PooledStackCreator`), with
//! memories from the pool too: a deep recursion ends in a stack-overflow
//! trap, stacks come back zeroed and are all returned, and refusals are
//! typed and leave the pools as they were.

mod common;

use common::config::{MIB, SHAPES, small};
use instance_pool::wasmtime::{PooledMemoryCreator, PooledStackCreator};
use instance_pool::{
    Error, MemoryProtection, PoolingInstanceAllocator, StackPool, StackPoolConfig,
};
use wasmtime::{Engine, Instance, Module, Store, Trap};

const WAT: &str = r#"
(module
  (memory (export "memory") 1)
  (func $deep (export "deep") (param i32) (result i32)
    (if (result i32) (i32.eqz (local.get 0))
      (then (i32.const 0))
      (else (i32.add (i32.const 1)
        (call $deep (i32.sub (local.get 0) (i32.const 1)))))))
  (func $forever (export "forever") (param i32) (result i32)
    (call $forever (i32.add (local.get 0) (i32.const 1))))
)
"#;

/// Stacks of 1 MiB with 64 KiB guards; Wasmtime may use 256 KiB of one.
fn stacks(total: u32, protection: MemoryProtection) -> StackPool {
    let mut c = StackPoolConfig::default();
    c.total_stacks(total)
        .stack_size(MIB)
        .stack_guard_size(64 << 10)
        .stack_keep_resident(16 << 10)
        .stack_protection(protection);
    StackPool::new(&c).unwrap()
}

fn engine(pool: &PoolingInstanceAllocator, stacks: &StackPool) -> Engine {
    let mut config = wasmtime::Config::new();
    PooledMemoryCreator::new(pool).install(&mut config);
    PooledStackCreator::new(stacks).install(&mut config);
    config.max_wasm_stack(256 << 10);
    Engine::new(&config).unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Calls `name(arg)` with `call_async`, on a fiber of a pooled stack.
async fn call_async(
    store: &mut Store<()>,
    instance: &Instance,
    name: &str,
    arg: i32,
) -> wasmtime::Result<i32> {
    let f = instance.get_typed_func::<i32, i32>(&mut *store, name)?;
    f.call_async(store, arg).await
}

#[test]
fn a_deep_recursion_on_a_pooled_stack_is_a_stack_overflow_trap() {
    for protection in [MemoryProtection::GuardMarkers, MemoryProtection::Mprotect] {
        for shape in SHAPES {
            let mut c = small(2);
            shape.apply(&mut c);
            let pool = PoolingInstanceAllocator::new(&c).unwrap();
            let stacks = stacks(2, protection);
            let engine = engine(&pool, &stacks);
            let module = Module::new(&engine, WAT).unwrap();
            block_on(async {
                let mut store = Store::new(&engine, ());
                let instance = Instance::new_async(&mut store, &module, &[]).await.unwrap();
                assert_eq!(stacks.metrics().stacks_in_use, 0, "no fiber yet");
                let depth = call_async(&mut store, &instance, "deep", 1000)
                    .await
                    .unwrap();
                assert_eq!(depth, 1000, "{shape:?} {protection:?}");
                let err = call_async(&mut store, &instance, "forever", 0)
                    .await
                    .unwrap_err();
                assert_eq!(
                    err.downcast_ref::<Trap>(),
                    Some(&Trap::StackOverflow),
                    "{shape:?} {protection:?}: {err:?}"
                );
                // The store (and its cached stack) is still usable.
                let again = call_async(&mut store, &instance, "deep", 10).await.unwrap();
                assert_eq!(again, 10);
                assert!(stacks.metrics().stacks_in_use >= 1);
            });
            assert_eq!(
                stacks.metrics().stacks_in_use,
                0,
                "{shape:?} {protection:?}"
            );
            assert_eq!(
                pool.metrics().memories_in_use,
                0,
                "{shape:?} {protection:?}"
            );
        }
    }
}

#[test]
fn every_stack_is_back_when_stores_drop_and_exhaustion_is_typed() {
    let pool = PoolingInstanceAllocator::new(&small(4)).unwrap();
    let stacks = stacks(2, MemoryProtection::Auto);
    let engine = engine(&pool, &stacks);
    let module = Module::new(&engine, WAT).unwrap();
    block_on(async {
        let mut held = Vec::new();
        for _ in 0..2 {
            // A store keeps its fiber stack until it drops.
            let mut store = Store::new(&engine, ());
            let instance = Instance::new_async(&mut store, &module, &[]).await.unwrap();
            assert_eq!(
                call_async(&mut store, &instance, "deep", 5).await.unwrap(),
                5
            );
            held.push((store, instance));
        }
        assert_eq!(stacks.metrics().stacks_in_use, 2);
        let mut third = Store::new(&engine, ());
        let instance = Instance::new_async(&mut third, &module, &[]).await.unwrap();
        let err = call_async(&mut third, &instance, "deep", 5)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<Error>(),
                Some(Error::StacksExhausted { limit: 2 })
            ),
            "{err:?}"
        );
        assert_eq!(stacks.metrics().stacks_in_use, 2, "nothing taken");
        assert_eq!(stacks.metrics().stacks_exhausted, 1);
        held.clear();
        assert_eq!(stacks.metrics().stacks_in_use, 0);
        // A released stack serves the waiting store.
        assert_eq!(
            call_async(&mut third, &instance, "deep", 5).await.unwrap(),
            5
        );
    });
    assert_eq!(stacks.metrics().stacks_in_use, 0);
    assert_eq!(pool.metrics().memories_in_use, 0);
}

#[test]
fn a_stack_larger_than_the_pools_is_refused_and_nothing_is_taken() {
    let pool = PoolingInstanceAllocator::new(&small(1)).unwrap();
    let stacks = stacks(1, MemoryProtection::Auto);
    let mut config = wasmtime::Config::new();
    PooledMemoryCreator::new(&pool).install(&mut config);
    PooledStackCreator::new(&stacks).install(&mut config);
    config.async_stack_size(2 * MIB);
    let engine = Engine::new(&config).unwrap();
    let module = Module::new(&engine, WAT).unwrap();
    block_on(async {
        let mut store = Store::new(&engine, ());
        let instance = Instance::new_async(&mut store, &module, &[]).await.unwrap();
        let err = call_async(&mut store, &instance, "deep", 1)
            .await
            .unwrap_err();
        let text = format!("{err:?}");
        assert!(
            text.contains("fiber stack of 2097152 bytes") && text.contains("at most 1048576"),
            "{text}"
        );
    });
    let m = stacks.metrics();
    assert_eq!((m.stacks_in_use, m.stack_acquisitions), (0, 0));
}

#[test]
fn a_reused_pooled_stack_holds_nothing_of_the_last_fiber() {
    // Wasmtime may run the next fiber on the same stack: the pool must have
    // zeroed it. The stack's bytes are read through the pool's own view
    // after the store drops.
    let pool = PoolingInstanceAllocator::new(&small(1)).unwrap();
    let stacks = stacks(1, MemoryProtection::Auto);
    let engine = engine(&pool, &stacks);
    let module = Module::new(&engine, WAT).unwrap();
    block_on(async {
        let mut store = Store::new(&engine, ());
        let instance = Instance::new_async(&mut store, &module, &[]).await.unwrap();
        assert_eq!(
            call_async(&mut store, &instance, "deep", 2000)
                .await
                .unwrap(),
            2000
        );
    });
    let stack = stacks.allocate().unwrap();
    // SAFETY: the stack is ours, `size` read-write bytes from `bottom`.
    let bytes = unsafe { std::slice::from_raw_parts(stack.bottom(), stack.size()) };
    assert!(bytes.iter().all(|&b| b == 0), "a fiber's frames were left");
    assert_eq!(stacks.metrics().stack_acquisitions, 2);
}

#[test]
fn the_stack_creator_describes_exactly_the_pooled_stack_and_its_guard() {
    use wasmtime::StackCreator;
    let stacks = stacks(2, MemoryProtection::Auto);
    let creator = PooledStackCreator::new(&stacks);
    let a = creator.new_stack(MIB, true).unwrap();
    let b = creator.new_stack(MIB / 2, false).unwrap();
    for s in [&a, &b] {
        let range = s.range();
        let guard = s.guard_range();
        assert_eq!(s.top() as usize, range.end);
        assert_eq!(range.len(), MIB, "a whole pooled stack, whatever was asked");
        assert_eq!(guard.end as usize, range.start, "the guard right below");
        assert_eq!(guard.end as usize - guard.start as usize, 64 << 10);
        assert_eq!(range.start % instance_pool::host_page_size(), 0);
    }
    // Neighbours: one stack's guard never overlaps the other stack.
    let (ra, rb) = (a.range(), b.range());
    assert!(ra.end <= b.guard_range().start as usize || rb.end <= a.guard_range().start as usize);
    assert_eq!(stacks.metrics().stacks_in_use, 2);
    drop((a, b));
    assert_eq!(stacks.metrics().stacks_in_use, 0);
}
