//! `PooledModule` with Wasmtime's JIT code: a module's data as copy-on-write
//! images, exactly Wasmtime's own results where a module does not qualify,
//! `memory.init` and `data.drop` as on dropped segments, several memories,
//! warm slots, clean tenants, embedder images and snapshots.

mod common;

use common::config::{ALL_SHAPES, MIB, SHAPES, small};
use common::jit::{PROBE, baked, engine_on, memory_bytes, pool, probe_bytes};
use instance_pool::wasmtime::snapshot;
use instance_pool::{Error, MemoryImage, MemoryLayout, PoolingInstanceAllocator};
use wasmtime::{
    Config, Engine, Instance, InstanceAllocationStrategy, Module, PoolingAllocationConfig, Store,
    Trap,
};

/// Wasmtime's own pooling allocator, to compare with.
fn wasmtime_pooling() -> Engine {
    let mut p = PoolingAllocationConfig::new();
    p.total_core_instances(4)
        .total_memories(8)
        .total_tables(4)
        .max_memories_per_module(2)
        .max_memory_size(MIB);
    let mut c = Config::new();
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    Engine::new(&c).unwrap()
}

fn call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    store: &mut Store<()>,
    instance: &Instance,
    name: &str,
    args: P,
) -> wasmtime::Result<R> {
    let f = instance.get_typed_func::<P, R>(&mut *store, name)?;
    f.call(store, args)
}

fn trap(e: &wasmtime::Error) -> Option<Trap> {
    e.downcast_ref::<Trap>().copied()
}

#[test]
fn a_modules_data_is_visible_at_instantiation() {
    for shape in ALL_SHAPES {
        let pool = pool(shape, 2);
        let engine = engine_on(&pool);
        let module = baked(&pool, &engine, PROBE);
        assert_eq!(module.fallback_reason(), None);
        assert_eq!(module.image(0).unwrap().len(), 0x10008);
        let mut store = Store::new(&engine, ());
        let instance = module.instantiate(&mut store, &[]).unwrap();
        assert_eq!(
            memory_bytes(&mut store, &instance, "memory"),
            probe_bytes(),
            "{shape:?}"
        );
        let e: i32 = call(&mut store, &instance, "load8", 0x102).unwrap();
        assert_eq!(e, b'E' as i32, "{shape:?}: the JIT code reads the image");
        // Wasmtime's own allocator makes the same memory of the same module.
        let theirs = wasmtime_pooling();
        let original = Module::new(&theirs, PROBE).unwrap();
        let mut their_store = Store::new(&theirs, ());
        let i = Instance::new(&mut their_store, &original, &[]).unwrap();
        assert_eq!(memory_bytes(&mut their_store, &i, "memory"), probe_bytes());
        assert_eq!(pool.metrics().memories_in_use, 1, "{shape:?}");
        drop(store);
        assert_eq!(pool.metrics().memories_in_use, 0, "{shape:?}");
    }
}

/// Modules Wasmtime initialises itself: each result (memory or trap) is
/// compared with Wasmtime's own pooling allocator's.
#[test]
fn a_module_that_does_not_qualify_gets_exactly_wasmtimes_result() {
    let cases = [
        // Out of bounds of the minimum: the first segment is written, the
        // second traps.
        (
            "out of bounds",
            r#"(module (memory (export "memory") 1)
                 (data (i32.const 0) "written first")
                 (data (i32.const 65530) "past the end"))"#,
        ),
        (
            "global.get",
            r#"(module (global $at i32 (i32.const 32)) (memory (export "memory") 1)
                 (data (i32.const 0) "constant") (data (global.get $at) "from a global"))"#,
        ),
        (
            "global.get out of bounds",
            r#"(module (global $at i32 (i32.const 65536)) (memory (export "memory") 1)
                 (data (global.get $at) "x"))"#,
        ),
    ];
    for shape in ALL_SHAPES {
        let pool = pool(shape, 2);
        let engine = engine_on(&pool);
        let theirs = wasmtime_pooling();
        for (what, wat) in cases {
            let module = baked(&pool, &engine, wat);
            assert!(module.fallback_reason().is_some(), "{what}");
            assert!(module.image(0).is_none(), "{what}");
            let mut store = Store::new(&engine, ());
            let ours = module.instantiate(&mut store, &[]);
            let mut their_store = Store::new(&theirs, ());
            let original = Module::new(&theirs, wat).unwrap();
            let their = Instance::new(&mut their_store, &original, &[]);
            match (ours, their) {
                (Ok(a), Ok(b)) => assert_eq!(
                    memory_bytes(&mut store, &a, "memory"),
                    memory_bytes(&mut their_store, &b, "memory"),
                    "{shape:?} {what}"
                ),
                (Err(a), Err(b)) => {
                    assert_eq!(trap(&a), Some(Trap::MemoryOutOfBounds), "{what}: {a:?}");
                    assert_eq!(trap(&a), trap(&b), "{shape:?} {what}");
                }
                (a, b) => panic!("{shape:?} {what}: ours {a:?}, Wasmtime's {b:?}"),
            }
            drop(store);
            assert_eq!(pool.metrics().memories_in_use, 0, "{shape:?} {what}");
        }
    }
}

#[test]
fn an_imported_memory_is_written_by_wasmtime_as_before() {
    let wat = r#"(module (import "host" "memory" (memory 1))
                   (data (i32.const 8) "into the import"))"#;
    let pool = pool(SHAPES[0], 1);
    let engine = engine_on(&pool);
    let module = baked(&pool, &engine, wat);
    assert!(module.fallback_reason().unwrap().contains("imported"));
    let mut store = Store::new(&engine, ());
    let memory = wasmtime::Memory::new(&mut store, wasmtime::MemoryType::new(1, None)).unwrap();
    module.instantiate(&mut store, &[memory.into()]).unwrap();
    assert_eq!(&memory.data(&store)[8..23], b"into the import");
}

/// Segment 0 is active (baked), segment 1 passive.
const SEGMENTS: &str = r#"
(module
  (memory (export "memory") 1)
  (data (i32.const 0) "active")
  (data "passive")
  (func (export "init0") (param i32 i32 i32)
    (memory.init 0 (local.get 0) (local.get 1) (local.get 2)))
  (func (export "init1") (param i32 i32 i32)
    (memory.init 1 (local.get 0) (local.get 1) (local.get 2)))
  (func (export "drop0") (data.drop 0))
  (func (export "drop1") (data.drop 1)))
"#;

/// Each call's outcome (a trap code or the memory's first 16 bytes at 200).
fn run_segments(store: &mut Store<()>, instance: &Instance) -> Vec<Result<Vec<u8>, Option<Trap>>> {
    let inits: [(&str, (i32, i32, i32)); 8] = [
        ("init0", (200, 0, 0)),
        ("init0", (200, 0, 1)),
        ("init0", (200, 1, 0)),
        ("init1", (200, 0, 7)),
        ("init1", (200, 7, 1)),
        ("init1", (65535, 0, 2)),
        ("drop0", (0, 0, 0)),
        ("drop1", (0, 0, 0)),
    ];
    let mut out = Vec::new();
    for (name, args) in inits
        .into_iter()
        .chain([("init1", (200, 0, 1)), ("init0", (0, 0, 0))])
    {
        let r = if name.starts_with("drop") {
            call::<(), ()>(store, instance, name, ())
        } else {
            call::<(i32, i32, i32), ()>(store, instance, name, args)
        };
        let bytes = memory_bytes(store, instance, "memory")[200..216].to_vec();
        out.push(r.map(|()| bytes).map_err(|e| trap(&e)));
    }
    out
}

#[test]
fn memory_init_and_data_drop_on_a_baked_segment_behave_as_on_a_dropped_one() {
    let pool = pool(SHAPES[0], 1);
    let engine = engine_on(&pool);
    let module = baked(&pool, &engine, SEGMENTS);
    assert_eq!(module.fallback_reason(), None);
    let mut store = Store::new(&engine, ());
    let instance = module.instantiate(&mut store, &[]).unwrap();
    assert_eq!(
        &memory_bytes(&mut store, &instance, "memory")[..6],
        b"active"
    );
    let ours = run_segments(&mut store, &instance);
    let theirs = wasmtime_pooling();
    let mut their_store = Store::new(&theirs, ());
    let original = Module::new(&theirs, SEGMENTS).unwrap();
    let their_instance = Instance::new(&mut their_store, &original, &[]).unwrap();
    let expected = run_segments(&mut their_store, &their_instance);
    assert_eq!(ours, expected);
    // The walk covers both outcomes: a trap on the dropped segment, a copy
    // from the passive one.
    assert_eq!(expected[1], Err(Some(Trap::MemoryOutOfBounds)));
    assert_eq!(&expected[3].as_ref().unwrap()[..7], b"passive");
}

#[test]
fn a_multi_memory_module_gets_each_memory_its_own_image() {
    let wat = r#"(module
      (memory $a (export "a") 1)
      (memory $b (export "b") 2)
      (data (memory $b) (i32.const 0x10000) "b, page one")
      (data (memory $a) (i32.const 4) "in a")
      (data (memory $b) (i32.const 4) "in b"))"#;
    for shape in ALL_SHAPES {
        let pool = pool(shape, 2);
        let engine = engine_on(&pool);
        let module = baked(&pool, &engine, wat);
        assert_eq!(module.fallback_reason(), None);
        let (a, b) = (module.image(0).unwrap(), module.image(1).unwrap());
        assert_eq!((a.len(), b.len()), (8, 0x1000b));
        let mut store = Store::new(&engine, ());
        let instance = module.instantiate(&mut store, &[]).unwrap();
        let mem_a = memory_bytes(&mut store, &instance, "a");
        let mem_b = memory_bytes(&mut store, &instance, "b");
        assert_eq!((mem_a.len(), mem_b.len()), (1 << 16, 2 << 16), "{shape:?}");
        assert_eq!(&mem_a[..8], b"\0\0\0\0in a", "{shape:?}");
        assert!(mem_a[8..].iter().all(|&x| x == 0), "{shape:?}");
        assert_eq!(&mem_b[4..8], b"in b", "{shape:?}");
        assert_eq!(&mem_b[0x10000..0x1000b], b"b, page one", "{shape:?}");
        assert_eq!(pool.metrics().memories_in_use, 2, "{shape:?}");
    }
}

#[test]
fn a_repeat_instantiation_reuses_the_warm_slot() {
    for shape in ALL_SHAPES {
        let pool = pool(shape, 2);
        let engine = engine_on(&pool);
        let module = baked(&pool, &engine, PROBE);
        let mut bases = Vec::new();
        for _ in 0..3 {
            let mut store = Store::new(&engine, ());
            let instance = module.instantiate(&mut store, &[]).unwrap();
            let memory = instance.get_memory(&mut store, "memory").unwrap();
            bases.push(memory.data_ptr(&store) as usize);
            assert_eq!(memory.data(&store), probe_bytes(), "{shape:?}");
        }
        assert!(
            bases.iter().all(|b| *b == bases[0]),
            "{shape:?}: {bases:x?}"
        );
        let m = pool.metrics();
        let counts = (m.images_mapped, m.images_reused, m.images_copied);
        if shape.layout == MemoryLayout::Dense {
            assert_eq!(counts, (0, 0, 3), "{shape:?}: the dense layout copies");
        } else {
            assert_eq!(counts, (1, 2, 0), "{shape:?}: mapped once, then reused");
        }
    }
}

#[test]
fn the_next_tenant_sees_only_the_image() {
    for shape in ALL_SHAPES {
        for keep_resident in [0, 64 << 10, MIB] {
            let mut c = small(1);
            shape.apply(&mut c).memory_keep_resident(keep_resident);
            let pool = PoolingInstanceAllocator::new(&c).unwrap();
            let engine = engine_on(&pool);
            let module = baked(&pool, &engine, PROBE);
            for round in 0..3 {
                let what = format!("{shape:?} keep_resident {keep_resident} round {round}");
                let mut store = Store::new(&engine, ());
                let instance = module.instantiate(&mut store, &[]).unwrap();
                assert_eq!(
                    memory_bytes(&mut store, &instance, "memory"),
                    probe_bytes(),
                    "{what}"
                );
                let grown: i32 = call(&mut store, &instance, "grow", 14).unwrap();
                assert_eq!(grown, 2, "{what}");
                let () = call(&mut store, &instance, "fill", 0xAA).unwrap();
            }
        }
    }
}

#[test]
fn an_embedder_image_and_a_snapshot_work() {
    for shape in ALL_SHAPES {
        let pool = pool(shape, 2);
        let engine = engine_on(&pool);
        let module = baked(&pool, &engine, PROBE);
        // A first tenant initialises some state, then is snapshotted.
        let mut store = Store::new(&engine, ());
        let instance = module.instantiate(&mut store, &[]).unwrap();
        let () = call(&mut store, &instance, "store8", (0x2000, 7)).unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        let image = snapshot(&store, &memory).unwrap();
        assert_eq!(image.len(), 0x11000, "trailing zero pages trimmed");
        let mut expected = probe_bytes();
        expected[0x2000] = 7;
        drop(store);
        let from_snapshot = module.with_image(0, image).unwrap();
        for round in 0..2 {
            let mut store = Store::new(&engine, ());
            let instance = from_snapshot.instantiate(&mut store, &[]).unwrap();
            assert_eq!(
                memory_bytes(&mut store, &instance, "memory"),
                expected,
                "{shape:?} {round}"
            );
        }
        // The module itself is unchanged; an image of the embedder's own
        // replaces the module's data.
        let mut store = Store::new(&engine, ());
        let instance = module.instantiate(&mut store, &[]).unwrap();
        assert_eq!(memory_bytes(&mut store, &instance, "memory"), probe_bytes());
        let custom = module
            .with_image(0, MemoryImage::new(b"custom").unwrap())
            .unwrap();
        let mut store = Store::new(&engine, ());
        let instance = custom.instantiate(&mut store, &[]).unwrap();
        let bytes = memory_bytes(&mut store, &instance, "memory");
        assert_eq!(&bytes[..6], b"custom", "{shape:?}");
        assert!(
            bytes[6..].iter().all(|&b| b == 0),
            "{shape:?}: none of the module's data"
        );
    }
}

/// A module that may use Wasmtime's GC heap is left to Wasmtime (its
/// heap's request cannot be told from a memory's), and still works.
#[test]
fn a_module_that_may_use_the_gc_heap_keeps_its_data_with_wasmtime() {
    let wat = r#"(module
      (type $box (struct (field i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "gc data")
      (func (export "boxed") (param i32) (result i32)
        (struct.get $box 0 (struct.new $box (local.get 0)))))"#;
    let pool = pool(SHAPES[0], 2);
    let engine = engine_on(&pool);
    let module = baked(&pool, &engine, wat);
    assert!(module.fallback_reason().unwrap().contains("GC heap"));
    let mut store = Store::new(&engine, ());
    let instance = module.instantiate(&mut store, &[]).unwrap();
    assert_eq!(
        &memory_bytes(&mut store, &instance, "memory")[..7],
        b"gc data"
    );
    let boxed: i32 = call(&mut store, &instance, "boxed", 9).unwrap();
    assert_eq!(boxed, 9);
    assert_eq!(
        pool.metrics().memories_in_use,
        2,
        "the memory and the GC heap"
    );
    let err = module
        .with_image(0, MemoryImage::new(b"x").unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
}

/// Passive segments need bulk memory: without it Wasmtime refuses the
/// baked module, and the original is kept, data and all.
#[test]
fn a_module_wasmtime_refuses_without_its_active_segments_is_kept_whole() {
    let pool = pool(SHAPES[0], 1);
    let mut config = Config::new();
    config.wasm_bulk_memory(false).wasm_reference_types(false);
    instance_pool::wasmtime::PooledMemoryCreator::new(&pool).install(&mut config);
    let engine = match Engine::new(&config) {
        Ok(e) => e,
        Err(e) => panic!("bulk memory cannot be turned off: {e:?}"),
    };
    let wat = r#"(module (memory (export "memory") 1) (data (i32.const 8) "kept"))"#;
    let module = baked(&pool, &engine, wat);
    assert!(
        module.fallback_reason().unwrap().contains("refused"),
        "{module:?}"
    );
    let mut store = Store::new(&engine, ());
    let instance = module.instantiate(&mut store, &[]).unwrap();
    assert_eq!(
        &memory_bytes(&mut store, &instance, "memory")[8..12],
        b"kept"
    );
}
