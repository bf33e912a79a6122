//! Wasmtime's JIT code on pooled memories (`PooledMemoryCreator`): traps in
//! the guard region on fresh and reused slots, `memory.grow` against
//! `StoreLimits`, no byte of one tenant read by the next, slots back in the
//! pool, and refusals that leave the pool as it was. Every case runs on
//! each pool shape.

mod common;

use common::config::{ALL_SHAPES, GUARD, MIB, SHAPES, small};
use common::jit::{WAT, assert_out_of_bounds, call, engine_on, pool, tenant};
use instance_pool::wasmtime::PooledMemoryCreator;
use instance_pool::{PoolingConfig, PoolingInstanceAllocator};
use wasmtime::{Engine, Instance, Module, Store, StoreLimits};

/// With 1 MiB slots the JIT checks each index against the reservation;
/// between the size and the reservation it relies on the slot faulting.
/// (The 4 GiB test below reaches the trailing guard itself.)
#[test]
fn out_of_bounds_loads_trap_on_fresh_and_reused_slots() {
    for shape in ALL_SHAPES {
        let pool = pool(shape, 1);
        let engine = engine_on(&pool);
        let module = Module::new(&engine, WAT).unwrap();
        let mut bases = Vec::new();
        for round in ["fresh", "reused"] {
            let (mut store, instance) = tenant(&engine, &module, MIB);
            let memory = instance.get_memory(&mut store, "memory").unwrap();
            bases.push(memory.data_ptr(&store) as usize);
            assert_eq!(&memory.data(&store)[16..21], b"hello", "{shape:?} {round}");
            let last: i32 = call(&mut store, &instance, "load", 65532).unwrap();
            assert_eq!(last, 0, "{shape:?} {round}: the last word is in bounds");
            // Past the size, inside the slot: what the previous tenant grew
            // into (in the reused round) faults again.
            for at in [65533, 4 << 16, 15 << 16] {
                let what = format!("{shape:?} {round}: load at {at:#x}");
                assert_out_of_bounds(call(&mut store, &instance, "load", at), &what);
            }
            // Past the reservation (the whole slot), by the offset.
            let past = (MIB - 0xf000 + 16) as i32;
            let r = call(&mut store, &instance, "load_guard", past);
            assert_out_of_bounds(r, &format!("{shape:?} {round}: past the slot"));
            // The trap leaves the store usable; this tenant grows to the
            // whole slot and writes all of it before the next one comes.
            let again: i32 = call(&mut store, &instance, "load", 16).unwrap();
            assert_eq!(again.to_le_bytes(), *b"hell", "{shape:?} {round}");
            assert_eq!(
                call::<i32, i32>(&mut store, &instance, "grow", 15).unwrap(),
                1
            );
            let _: () = call(&mut store, &instance, "fill", 0x5A).unwrap();
            assert_eq!(pool.metrics().memories_in_use, 1);
        }
        assert_eq!(bases[0], bases[1], "{shape:?}: one slot, reused");
        assert_eq!(pool.metrics().memories_in_use, 0, "{shape:?}");
    }
}

#[test]
fn memory_grow_past_a_store_limit_returns_minus_one_and_changes_nothing() {
    for shape in ALL_SHAPES {
        let pool = pool(shape, 2);
        let engine = engine_on(&pool);
        let module = Module::new(&engine, WAT).unwrap();
        // A tenant allowed 3 pages.
        let (mut store, instance) = tenant(&engine, &module, 3 << 16);
        let grown: i32 = call(&mut store, &instance, "grow", 2).unwrap();
        assert_eq!(grown, 1, "{shape:?}: 1 -> 3 pages, at the limit");
        let refused: i32 = call(&mut store, &instance, "grow", 1).unwrap();
        assert_eq!(refused, -1, "{shape:?}: past the limit");
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        assert_eq!(memory.size(&store), 3, "{shape:?}");
        // The grown pages are usable; the page past them still traps.
        let _: () = call(&mut store, &instance, "fill", 7).unwrap();
        assert_eq!(memory.data(&store)[3 * 65536 - 1], 7);
        assert_out_of_bounds(call(&mut store, &instance, "load", 3 << 16), "past 3 pages");
        // Past the declared maximum (16 pages) too, for a tenant without a
        // limit: Wasmtime refuses before the slot is asked.
        let (mut big, big_instance) = tenant(&engine, &module, usize::MAX);
        let past_max: i32 = call(&mut big, &big_instance, "grow", 16).unwrap();
        assert_eq!(past_max, -1, "{shape:?}");
        let to_max: i32 = call(&mut big, &big_instance, "grow", 15).unwrap();
        assert_eq!(to_max, 1, "{shape:?}: to the whole slot");
    }
}

#[test]
fn bytes_written_by_one_tenant_are_never_read_by_the_next_on_the_same_slot() {
    for shape in ALL_SHAPES {
        for keep_resident in [0, 64 << 10, MIB] {
            let mut c: PoolingConfig = small(1);
            shape.apply(&mut c).memory_keep_resident(keep_resident);
            let pool = PoolingInstanceAllocator::new(&c).unwrap();
            let engine = engine_on(&pool);
            let module = Module::new(&engine, WAT).unwrap();
            for round in 0..3 {
                let (mut store, instance) = tenant(&engine, &module, MIB);
                let first: i32 = call(&mut store, &instance, "nonzero", ()).unwrap();
                assert_eq!(
                    first, 5,
                    "{shape:?} kr {keep_resident} round {round}: hello only"
                );
                let grown: i32 = call(&mut store, &instance, "grow", 15).unwrap();
                assert_eq!(grown, 1);
                let after_grow: i32 = call(&mut store, &instance, "nonzero", ()).unwrap();
                assert_eq!(
                    after_grow, 5,
                    "{shape:?} kr {keep_resident} round {round}: grown"
                );
                let _: () = call(&mut store, &instance, "fill", 0xAA).unwrap();
                let dirty: i32 = call(&mut store, &instance, "nonzero", ()).unwrap();
                assert_eq!(dirty as usize, MIB, "the whole slot written");
            }
            assert_eq!(pool.metrics().memories_in_use, 0);
        }
    }
}

#[test]
fn every_slot_is_back_in_the_pool_when_stores_drop() {
    for shape in ALL_SHAPES {
        let pool = pool(shape, 4);
        let engine = engine_on(&pool);
        let module = Module::new(&engine, WAT).unwrap();
        let tenants: Vec<_> = (0..4).map(|_| tenant(&engine, &module, MIB)).collect();
        assert_eq!(pool.metrics().memories_in_use, 4, "{shape:?}");
        // A fifth is refused with the pool's message; nothing is taken.
        let mut store = Store::new(&engine, StoreLimits::default());
        let err = Instance::new(&mut store, &module, &[]).unwrap_err();
        assert!(
            format!("{err:?}").contains("maximum concurrent limit of 4 for memories"),
            "{shape:?}: {err:?}"
        );
        assert_eq!(pool.metrics().memories_in_use, 4, "{shape:?}");
        drop(tenants);
        assert_eq!(pool.metrics().memories_in_use, 0, "{shape:?}");
        // Each slot serves again.
        let again: Vec<_> = (0..4).map(|_| tenant(&engine, &module, MIB)).collect();
        assert_eq!(pool.metrics().memories_in_use, 4, "{shape:?}");
        drop(again);
        drop(store);
        assert_eq!(pool.metrics().memories_in_use, 0, "{shape:?}");
    }
}

/// A 1-page memory with no declared maximum, and its `memory.grow`.
const UNBOUNDED: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))
"#;

#[test]
fn the_creators_refusals_and_failed_grows_are_counted() {
    for shape in ALL_SHAPES {
        let pool = pool(shape, 1);
        let mut config = wasmtime::Config::new();
        config.wasm_custom_page_sizes(true);
        PooledMemoryCreator::new(&pool).install(&mut config);
        // Wasmtime lets a growth past the reservation reach the slot only
        // when it thinks memories may move.
        config.memory_may_move(true);
        let engine = Engine::new(&config).unwrap();
        let refuse = |engine: &Engine, wat: &str| {
            let module = Module::new(engine, wat).unwrap();
            let mut store = Store::new(engine, StoreLimits::default());
            Instance::new(&mut store, &module, &[]).unwrap_err();
        };
        // A page size, a minimum, a reservation the slots cannot honour.
        refuse(&engine, "(module (memory 1 1 (pagesize 1)))");
        refuse(&engine, "(module (memory 17))");
        let mut big = wasmtime::Config::new();
        PooledMemoryCreator::new(&pool).install(&mut big);
        big.memory_reservation(2 * MIB as u64);
        refuse(&Engine::new(&big).unwrap(), WAT);
        let m = pool.metrics();
        assert_eq!(
            (m.creator_refusals, m.memory_acquisitions),
            (3, 0),
            "{shape:?}"
        );
        // The one slot taken; the next memory is refused for exhaustion.
        let module = Module::new(&engine, UNBOUNDED).unwrap();
        let (mut store, instance) = tenant(&engine, &module, 2 * MIB);
        refuse(&engine, UNBOUNDED);
        let m = pool.metrics();
        assert_eq!(
            (m.creator_refusals, m.memories_exhausted),
            (4, 1),
            "{shape:?}"
        );
        // Past the slot: the slot refuses (-1), counted. Past the store's
        // limit: Wasmtime refuses before the slot is asked, not counted.
        let past_slot: i32 = call(&mut store, &instance, "grow", 16).unwrap();
        assert_eq!(past_slot, -1, "{shape:?}");
        assert_eq!(pool.metrics().creator_failed_grows, 1, "{shape:?}");
        let to_slot: i32 = call(&mut store, &instance, "grow", 15).unwrap();
        assert_eq!(to_slot, 1, "{shape:?}");
        let past_limit: i32 = call(&mut store, &instance, "grow", 17).unwrap();
        assert_eq!(past_limit, -1, "{shape:?}");
        let m = pool.metrics();
        assert_eq!(
            (m.creator_refusals, m.creator_failed_grows),
            (4, 1),
            "{shape:?}"
        );
        let text = m.to_string();
        assert!(
            text.contains("instance_pool_creator_refusals_total 4\n"),
            "{text}"
        );
        assert!(
            text.contains("instance_pool_creator_failed_grows_total 1\n"),
            "{text}"
        );
        drop(store);
        assert_eq!(pool.metrics().memories_in_use, 0, "{shape:?}");
    }
}

#[test]
fn memories_the_slots_cannot_hold_are_refused_with_what_was_asked() {
    for shape in ALL_SHAPES {
        let pool = pool(shape, 1);
        let mut config = wasmtime::Config::new();
        PooledMemoryCreator::new(&pool).install(&mut config);
        config.wasm_custom_page_sizes(true);
        let engine = Engine::new(&config).unwrap();
        let cases = [
            (
                "(module (memory 1 1 (pagesize 1)))",
                "a memory page size of 1 bytes is not supported",
            ),
            (
                "(module (memory 17))",
                "a minimum of 1114112 bytes (the memory's declared minimum, or Config::gc_heap_initial_size for a GC heap) exceeds the pool's slots of 1048576",
            ),
        ];
        for (wat, message) in cases {
            let module = Module::new(&engine, wat).unwrap();
            let mut store = Store::new(&engine, ());
            let err = Instance::new(&mut store, &module, &[]).unwrap_err();
            assert!(format!("{err:?}").contains(message), "{shape:?}: {err:?}");
            let m = pool.metrics();
            assert_eq!(
                (m.memories_in_use, m.memory_acquisitions),
                (0, 0),
                "{shape:?}"
            );
        }
        // The pool serves a memory that fits right after.
        let module = Module::new(&engine, WAT).unwrap();
        let (store, _) = tenant(&engine, &module, MIB);
        assert_eq!(pool.metrics().memories_in_use, 1);
        drop(store);
    }
}

/// Wasmtime's defaults: 4 GiB reservations and 32 MiB guards, so the JIT
/// code has no bounds checks at all and every out-of-bounds access is a
/// fault in the slot or its guard.
#[test]
fn with_4_gib_slots_the_jit_drops_bounds_checks_and_the_guard_traps() {
    const WAT4: &str = r#"
    (module
      (memory (export "memory") 1)
      (func (export "load") (param i32) (result i32) (i32.load (local.get 0)))
      (func (export "load_far") (param i32) (result i32)
        (i32.load offset=0x1000000 (local.get 0))))
    "#;
    for shape in &SHAPES[..2] {
        let mut c = PoolingConfig::default();
        c.total_instances(2).total_memories(2).total_tables(2);
        shape.apply(&mut c);
        let pool = PoolingInstanceAllocator::new(&c).unwrap();
        let engine = engine_on(&pool);
        let module = Module::new(&engine, WAT4).unwrap();
        for round in ["fresh", "reused"] {
            let (mut store, instance) = tenant(&engine, &module, usize::MAX);
            let ok: i32 = call(&mut store, &instance, "load", 65532).unwrap();
            assert_eq!(ok, 0, "{shape:?} {round}");
            for at in [65533, 1 << 20, i32::MAX, -4] {
                let what = format!("{shape:?} {round}: load at {at:#x}");
                assert_out_of_bounds(call(&mut store, &instance, "load", at), &what);
            }
            // The highest index plus a 16 MiB offset: past the 4 GiB slot,
            // inside its 32 MiB guard.
            let far = call(&mut store, &instance, "load_far", -1);
            assert_out_of_bounds(far, &format!("{shape:?} {round}: into the guard"));
        }
        assert_eq!(pool.metrics().memories_in_use, 0);
    }
}

#[test]
fn host_memories_are_not_taken_from_the_pool() {
    // Wasmtime 48 makes `Memory::new` memories with its default allocator,
    // whatever the creator (the module docs say so): none of the pool's
    // slots is taken, and the pool's own instances still get theirs.
    let pool = pool(SHAPES[0], 1);
    let engine = engine_on(&pool);
    let mut store = Store::new(&engine, ());
    let host = wasmtime::Memory::new(&mut store, wasmtime::MemoryType::new(1, None)).unwrap();
    assert_eq!(host.size(&store), 1);
    assert_eq!(pool.metrics().memory_acquisitions, 0);
    let module = Module::new(&engine, WAT).unwrap();
    let (tenant_store, _) = tenant(&engine, &module, MIB);
    assert_eq!(pool.metrics().memories_in_use, 1);
    drop((tenant_store, store));
    assert_eq!(pool.metrics().memories_in_use, 0);
}

#[test]
fn grow_to_refuses_partial_pages_and_the_reservation_and_changes_nothing() {
    // Wasmtime never asks these (other page sizes are refused first), so
    // the creator is driven through the trait directly.
    use wasmtime::MemoryCreator;
    for shape in ALL_SHAPES {
        let pool = pool(shape, 1);
        let creator = PooledMemoryCreator::new(&pool);
        let ty = wasmtime::MemoryType::new(1, None);
        // No reservation asked: the whole slot.
        let mut m = creator
            .new_memory(ty.clone(), 1 << 16, None, None, GUARD)
            .unwrap();
        assert_eq!((m.byte_size(), m.byte_capacity()), (1 << 16, MIB));
        let half = m.grow_to((2 << 16) + 1).unwrap_err();
        assert!(
            format!("{half:?}").contains("not whole pages"),
            "{shape:?}: {half:?}"
        );
        let past = m.grow_to(MIB + (1 << 16)).unwrap_err();
        assert!(
            format!("{past:?}").contains("exceeds the reservation"),
            "{shape:?}: {past:?}"
        );
        assert_eq!(m.byte_size(), 1 << 16, "{shape:?}: unchanged");
        assert_eq!(pool.metrics().creator_failed_grows, 2, "{shape:?}");
        m.grow_to(MIB).unwrap();
        assert_eq!(m.byte_size(), MIB);
        // SAFETY: `[0, byte_size)` is this memory's, read-write, and no
        // one else refers to it.
        let bytes = unsafe { std::slice::from_raw_parts(m.as_ptr(), m.byte_size()) };
        assert!(bytes.iter().all(|&b| b == 0), "{shape:?}: zero-filled");
        assert_eq!(pool.metrics().memories_in_use, 1);
        drop(m);
        assert_eq!(pool.metrics().memories_in_use, 0, "{shape:?}");
    }
}

/// A bounds-checked pool makes nothing past a memory's size fault, so the
/// engine's code must check every access: `install` turns signals-based
/// traps off for it (and only for it).
#[test]
fn install_turns_signals_based_traps_off_for_a_bounds_checked_pool_only() {
    for shape in ALL_SHAPES {
        let pool = pool(shape, 1);
        let engine = engine_on(&pool);
        let expected = shape.faults_past_size();
        assert_eq!(engine.get_signals_based_traps(), expected, "{shape:?}");
    }
}
