//! Wasmtime settings around `PooledMemoryCreator::install`: GC heaps on the
//! pool's slots whatever `gc_heap_*` setting is made, a setting that undoes
//! `install` refused at the first memory with a message naming it (and the
//! pool left as it was), and the one setting no creator can see.

mod common;

use common::config::{GUARD, MIB, SHAPES};
use common::jit::{WAT, engine_on, pool};
use instance_pool::PoolingInstanceAllocator;
use instance_pool::wasmtime::PooledMemoryCreator;
use wasmtime::{Config, Engine, Instance, Module, Store};

/// No linear memory: the only memory its instances need is the store's GC
/// heap, made at instantiation for a module that allocates GC objects.
const GC_WAT: &str = r#"
(module
  (type $box (struct (field (mut i32))))
  (func (export "boxed") (param i32) (result i32)
    (struct.get $box 0 (struct.new $box (local.get 0)))))
"#;

/// A change to a Wasmtime `Config`.
type Setting = fn(&mut Config);

/// An engine on `pool` with `tune` applied before (`after` false) or after
/// `install`.
fn engine(pool: &PoolingInstanceAllocator, after: bool, tune: Setting) -> Engine {
    let mut config = Config::new();
    if !after {
        tune(&mut config);
    }
    PooledMemoryCreator::new(pool).install(&mut config);
    if after {
        tune(&mut config);
    }
    Engine::new(&config).unwrap()
}

/// Instantiates `wat` on `engine` and calls its `boxed` export if it has
/// one; the error, if any, as text.
fn run(engine: &Engine, wat: &str) -> Result<(), String> {
    let module = Module::new(engine, wat).unwrap();
    let mut store = Store::new(engine, ());
    let instance = Instance::new(&mut store, &module, &[]).map_err(|e| format!("{e:?}"))?;
    if let Some(f) = instance.get_func(&mut store, "boxed") {
        let boxed = f.typed::<i32, i32>(&store).unwrap();
        let v = boxed.call(&mut store, 7).map_err(|e| format!("{e:?}"))?;
        assert_eq!(v, 7);
    }
    Ok(())
}

#[test]
fn gc_heaps_take_slots_whatever_gc_heap_setting_is_made_around_install() {
    // One `gc_heap_*` call stops Wasmtime copying the `memory_*` values to
    // GC heaps; `install` sets them itself, before or after that call.
    let settings: [(&str, Setting); 3] = [
        ("none", |_| {}),
        ("gc_heap_may_move(false)", |c| {
            c.gc_heap_may_move(false);
        }),
        ("gc_heap_reservation_for_growth(0)", |c| {
            c.gc_heap_reservation_for_growth(0);
        }),
    ];
    for shape in SHAPES {
        for (name, tune) in settings {
            for after in [false, true] {
                let pool = pool(shape, 1);
                let engine = engine(&pool, after, tune);
                let what = format!("{shape:?}, {name}, after install: {after}");
                for round in 0..2 {
                    run(&engine, GC_WAT).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let m = pool.metrics();
                    assert_eq!(m.memory_acquisitions, round + 1, "{what}: the heap's slot");
                    assert_eq!((m.memories_in_use, m.creator_refusals), (0, 0), "{what}");
                }
            }
        }
    }
}

#[test]
fn gc_heap_settings_made_after_install_are_refused_naming_them() {
    let pool = pool(SHAPES[0], 2);
    let cases: [(Setting, &str); 3] = [
        (
            |c| {
                c.gc_heap_reservation(4 << 30);
            },
            "Config::gc_heap_reservation",
        ),
        (
            |c| {
                c.gc_heap_guard_size(2 * GUARD as u64);
            },
            "Config::gc_heap_guard_size",
        ),
        (
            |c| {
                c.gc_heap_initial_size(2 * MIB as u64);
            },
            "Config::gc_heap_initial_size",
        ),
    ];
    for (tune, setting) in cases {
        let before = pool.metrics();
        let engine = engine(&pool, true, tune);
        let err = run(&engine, GC_WAT).unwrap_err();
        assert!(err.contains(setting), "{setting}: {err}");
        let m = pool.metrics();
        assert_eq!(m.creator_refusals, before.creator_refusals + 1, "{setting}");
        assert_eq!(
            m.memory_acquisitions, before.memory_acquisitions,
            "{setting}"
        );
        assert_eq!(m.memories_in_use, 0, "{setting}");
        // The linear memories of the same engine are not affected.
        run(&engine, WAT).unwrap();
        assert_eq!(
            pool.metrics().memory_acquisitions,
            before.memory_acquisitions + 1
        );
    }
}

#[test]
fn memory_settings_made_after_install_are_refused_at_the_first_memory_naming_them() {
    // A larger reservation or guard the slot cannot honour; a smaller one
    // would cap growth below `max_memory_size` without a word.
    let cases: [(Setting, &str, &str); 5] = [
        (
            |c| {
                c.memory_reservation(2 * MIB as u64);
            },
            "Config::memory_reservation",
            "a reservation of 2097152",
        ),
        (
            |c| {
                c.memory_reservation(MIB as u64 / 2);
            },
            "Config::memory_reservation",
            "a reservation of 524288",
        ),
        (
            |c| {
                c.memory_reservation(0);
            },
            "Config::memory_reservation",
            "a reservation of 0",
        ),
        (
            |c| {
                c.memory_guard_size(2 * GUARD as u64);
            },
            "Config::memory_guard_size",
            "a guard of 131072",
        ),
        (
            |c| {
                c.memory_guard_size(0);
            },
            "Config::memory_guard_size",
            "a guard of 0",
        ),
    ];
    for shape in SHAPES {
        let pool = pool(shape, 1);
        for (tune, setting, asked) in cases {
            let before = pool.metrics();
            let err = run(&engine(&pool, true, tune), WAT).unwrap_err();
            let what = format!("{shape:?} {setting}: {err}");
            assert!(err.contains(setting) && err.contains(asked), "{what}");
            assert!(
                err.contains("call PooledMemoryCreator::install after"),
                "{what}"
            );
            let m = pool.metrics();
            assert_eq!(m.creator_refusals, before.creator_refusals + 1, "{what}");
            assert_eq!(m.memory_acquisitions, before.memory_acquisitions, "{what}");
            assert_eq!(m.memories_in_use, 0, "{what}");
            // Made before `install`, the same setting is overridden.
            run(&engine(&pool, false, tune), WAT).unwrap();
            let m = pool.metrics();
            assert_eq!(m.memory_acquisitions, before.memory_acquisitions + 1);
            assert_eq!(m.memories_in_use, 0);
        }
    }
}

/// What no creator can see: Wasmtime's pooling strategy set after
/// `install` makes every memory itself. The module docs say so; this pins
/// it, so that a Wasmtime that starts asking the creator is noticed.
#[test]
fn a_pooling_strategy_set_after_install_bypasses_the_pool_unseen() {
    let pool = pool(SHAPES[0], 1);
    let engine = engine(&pool, true, |c| {
        let mut p = wasmtime::PoolingAllocationConfig::new();
        p.total_memories(2)
            .total_core_instances(2)
            .total_tables(2)
            .total_gc_heaps(2)
            .max_memory_size(MIB);
        c.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(p));
    });
    run(&engine, WAT).unwrap();
    run(&engine, GC_WAT).unwrap();
    let m = pool.metrics();
    assert_eq!((m.memory_acquisitions, m.creator_refusals), (0, 0));
    // The same pool serves an engine that keeps `install`'s strategy.
    run(&engine_on(&pool), WAT).unwrap();
    assert_eq!(pool.metrics().memory_acquisitions, 1);
}
