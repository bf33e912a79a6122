//! `wasmtime_bounds`: both sides of `MemoryProtection::BoundsChecked`, in
//! one run. The same pool shape (4 GiB slots, 32 MiB guards: Wasmtime's
//! defaults, where its code on a guarded memory has no bounds checks at
//! all) on guard markers, and in the bounds-checked mode, where
//! `PooledMemoryCreator::install` turns signals-based traps off so that
//! Wasmtime's code checks every access:
//!
//! - `loop_*`: the JIT code's cost, one call of a loop that reads and
//!   writes every 4-byte word of a 1 MiB memory (262,144 loads and stores);
//! - `request_*`: what the mode saves, a request (a store, an instance,
//!   `memory.grow` by a page, a write in the new page, the drop).

use criterion::Criterion;
use instance_pool::wasmtime::PooledMemoryCreator;
use instance_pool::{MemoryProtection, PoolingConfig, PoolingInstanceAllocator};
use std::hint::black_box;
use std::time::{Duration, SystemTime};
use wasmtime::{Engine, Instance, Module, Store, TypedFunc};

const WAT: &str = r#"
(module
  (memory (export "memory") 16)
  ;; Every word of the first MiB: read, add its index, write back.
  (func (export "sweep") (result i32)
    (local $i i32) (local $v i32)
    (loop $next
      (local.set $v (i32.add (i32.load (local.get $i)) (local.get $i)))
      (i32.store (local.get $i) (local.get $v))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 0x100000))))
    (local.get $v))
  ;; A request's work: one page more, one byte written in it.
  (func (export "grow_write") (result i32)
    (drop (memory.grow (i32.const 1)))
    (i32.store8 (i32.const 0x100010) (i32.const 1))
    (i32.load8_u (i32.const 0x100010)))
)
"#;

const MODES: [(&str, MemoryProtection); 2] = [
    ("signals", MemoryProtection::GuardMarkers),
    ("checked", MemoryProtection::BoundsChecked),
];

fn engine(protection: MemoryProtection) -> (Engine, PoolingInstanceAllocator) {
    let mut c = PoolingConfig::default();
    c.total_instances(4)
        .total_memories(4)
        .total_tables(4)
        .memory_protection(protection);
    let pool = PoolingInstanceAllocator::new(&c).expect("pool");
    let mut config = wasmtime::Config::new();
    PooledMemoryCreator::new(&pool).install(&mut config);
    (Engine::new(&config).expect("engine"), pool)
}

pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("wasmtime_bounds");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    for (name, protection) in MODES {
        let (engine, pool) = engine(protection);
        assert_eq!(
            engine.get_signals_based_traps(),
            protection != MemoryProtection::BoundsChecked
        );
        let module = Module::new(&engine, WAT).expect("module");
        {
            let mut store = Store::new(&engine, ());
            let instance = Instance::new(&mut store, &module, &[]).expect("instance");
            let sweep: TypedFunc<(), i32> = instance.get_typed_func(&mut store, "sweep").unwrap();
            group.bench_function(format!("loop_{name}"), |b| {
                b.iter(|| black_box(sweep.call(&mut store, ()).expect("sweep")))
            });
        }
        group.bench_function(format!("request_{name}"), |b| {
            b.iter(|| {
                let mut store = Store::new(&engine, ());
                let instance = Instance::new(&mut store, &module, &[]).expect("instance");
                let f: TypedFunc<(), i32> =
                    instance.get_typed_func(&mut store, "grow_write").unwrap();
                assert_eq!(f.call(&mut store, ()).expect("grow_write"), 1);
            })
        });
        assert_eq!(pool.metrics().memories_in_use, 0, "every slot returned");
    }
    group.finish();
}

pub fn summary(since: SystemTime) {
    let dir = crate::estimates::criterion_dir();
    let t = |id: &str| crate::estimates::median_ns(&dir, &format!("wasmtime_bounds/{id}"), since);
    for (what, num, den) in [
        (
            "the JIT loop over 1 MiB, explicit bounds checks / none (signals-based)",
            "loop_checked",
            "loop_signals",
        ),
        (
            "a request (instantiate, grow, write, drop), bounds-checked pool / guard markers",
            "request_checked",
            "request_signals",
        ),
    ] {
        if let (Some(n), Some(d)) = (t(num), t(den)) {
            let fmt = crate::estimates::fmt_time;
            println!(
                "| wasmtime_bounds: {what} | **{:.2}x** | {} / {} |",
                n / d,
                fmt(n),
                fmt(d)
            );
        }
    }
}
