//! Every failure point of the Wasmtime adapter's slot work, walked (as
//! `faults_*.rs` do for stores): a failed instantiation takes nothing, a
//! failed `grow_to` is `memory.grow` = -1 with the memory as it was, and a
//! failed reset never shows the next tenant anything. On each pool shape.

mod common;

use common::config::ALL_SHAPES;
use common::fault::{MAX_STEPS, with_nth_failing};
use common::jit::{WAT, assert_out_of_bounds, call, engine_on, pool, tenant};
use instance_pool::PoolingInstanceAllocator;
use wasmtime::{Engine, Instance, Module, Store, StoreLimits};

const FULL: usize = 1 << 20;

/// The next tenant finds a fresh memory: only the data segment's 5 bytes,
/// even after growing to the whole slot, and nothing past its size.
fn assert_next_tenant_fresh(
    pool: &PoolingInstanceAllocator,
    engine: &Engine,
    module: &Module,
    ctx: &str,
) {
    let (mut store, instance) = tenant(engine, module, FULL);
    let fresh: i32 = call(&mut store, &instance, "nonzero", ()).unwrap();
    assert_eq!(fresh, 5, "{ctx}");
    assert_out_of_bounds(call(&mut store, &instance, "load", 65533), ctx);
    let grown: i32 = call(&mut store, &instance, "grow", 15).unwrap();
    assert_eq!(grown, 1, "{ctx}");
    let all: i32 = call(&mut store, &instance, "nonzero", ()).unwrap();
    assert_eq!(all, 5, "{ctx}: grown pages");
    drop(store);
    assert_eq!(pool.metrics().memories_in_use, 0, "{ctx}");
}

/// A tenant that grows to the whole slot and writes every byte.
fn dirty_tenant(engine: &Engine, module: &Module) -> Store<StoreLimits> {
    let (mut store, instance) = tenant(engine, module, FULL);
    let _: i32 = call(&mut store, &instance, "grow", 15).unwrap();
    let _: () = call(&mut store, &instance, "fill", 0xAA).unwrap();
    store
}

#[test]
fn a_failed_instantiation_takes_nothing_and_the_slot_serves_again() {
    for shape in ALL_SHAPES {
        for warm in [false, true] {
            let mut failures = 0;
            for n in 1..=MAX_STEPS {
                let ctx = format!("{shape:?} warm={warm} syscall {n}");
                let pool = pool(shape, 1);
                let engine = engine_on(&pool);
                let module = Module::new(&engine, WAT).unwrap();
                if warm {
                    drop(dirty_tenant(&engine, &module));
                }
                let mut store = Store::new(&engine, StoreLimits::default());
                let (result, reached) =
                    with_nth_failing(n, || Instance::new(&mut store, &module, &[]));
                match result {
                    Err(e) => {
                        assert!(reached, "{ctx}: {e:?}");
                        assert!(format!("{e:?}").contains("instance_pool"), "{ctx}: {e:?}");
                        failures += 1;
                        assert_eq!(pool.metrics().memories_in_use, 0, "{ctx}: nothing held");
                    }
                    Ok(_) if !reached => break,
                    Ok(_) => {}
                }
                drop(store);
                assert_next_tenant_fresh(&pool, &engine, &module, &ctx);
            }
            // A warm slot may need none: its release left the minimum open.
            assert!(
                warm || failures > 0,
                "{shape:?}: preparing a cold slot makes syscalls"
            );
        }
    }
}

/// Walks every failure point of a grow by `grow` pages from 1, after a
/// first tenant of the slot grew by `before` pages: a failure is
/// `memory.grow` = -1, the size stays 1 page and every page past it still
/// traps; the memory grows afterwards, and the next tenant finds it fresh.
fn walk_grow(before: i32, grow: i32) {
    for shape in ALL_SHAPES {
        let mut failures = 0;
        for n in 1..=MAX_STEPS {
            let ctx = format!("{shape:?} before {before} grow {grow}: syscall {n}");
            let pool = pool(shape, 1);
            let engine = engine_on(&pool);
            let module = Module::new(&engine, WAT).unwrap();
            if before > 0 {
                let (mut first, instance) = tenant(&engine, &module, FULL);
                let _: i32 = call(&mut first, &instance, "grow", before).unwrap();
            }
            let (mut store, instance) = tenant(&engine, &module, FULL);
            let (result, reached) =
                with_nth_failing(n, || call::<i32, i32>(&mut store, &instance, "grow", grow));
            let old = result.unwrap();
            if !reached {
                assert_eq!(old, 1, "{ctx}");
                break;
            }
            if old == -1 {
                failures += 1;
                let memory = instance.get_memory(&mut store, "memory").unwrap();
                assert_eq!(memory.size(&store), 1, "{ctx}: size unchanged");
                for page in 1..=grow {
                    let r = call(&mut store, &instance, "load", page << 16);
                    assert_out_of_bounds(r, &format!("{ctx}: page {page}"));
                }
                let again: i32 = call(&mut store, &instance, "grow", grow).unwrap();
                assert_eq!(again, 1, "{ctx}: growable after the failure");
            }
            let _: () = call(&mut store, &instance, "fill", 0x55).unwrap();
            let r = call(&mut store, &instance, "load", (grow + 1) << 16);
            assert_out_of_bounds(r, &ctx);
            drop(store);
            assert_next_tenant_fresh(&pool, &engine, &module, &ctx);
        }
        if shape.faults_past_size() {
            assert!(failures > 0, "{shape:?}: growing makes a syscall");
        } else {
            // Open to the capacity: Wasmtime's code checks the size.
            assert_eq!(failures, 0, "{shape:?}: growing makes no syscall");
        }
    }
}

#[test]
fn a_failed_grow_is_minus_one_and_leaves_the_memory_as_it_was() {
    walk_grow(0, 3);
}

/// A tenant grew the slot to 8 pages, so the next one's growth to 12 both
/// removes markers (up to 8) and widens the mapping (past 8).
#[test]
fn a_failed_grow_past_the_slots_high_water_leaves_nothing_past_the_size_open() {
    walk_grow(7, 11);
}

#[test]
fn a_failed_reset_never_shows_the_next_tenant_anything() {
    for shape in ALL_SHAPES {
        let mut reached_any = false;
        for n in 1..=MAX_STEPS {
            let ctx = format!("{shape:?} syscall {n}");
            let pool = pool(shape, 1);
            let engine = engine_on(&pool);
            let module = Module::new(&engine, WAT).unwrap();
            let store = dirty_tenant(&engine, &module);
            let ((), reached) = with_nth_failing(n, || drop(store));
            assert_eq!(pool.metrics().memories_in_use, 0, "{ctx}");
            assert_next_tenant_fresh(&pool, &engine, &module, &ctx);
            if !reached {
                break;
            }
            reached_any = true;
        }
        assert!(reached_any, "{shape:?}: a reset makes syscalls");
    }
}
