//! 100,000 live Wasmtime instances in this process, their memories in
//! the dense layout's slots of 2 pages + 64 KiB guard (`PooledMemoryCreator`,
//! the module a `PooledModule` as in the density example, so each slot gets
//! the data segment from its image, copied in):
//! the kernel mappings do not grow with them (the guarded layout needs one
//! or more per live memory, and `vm.max_map_count` is 65,530), and
//! neighbouring slots stay isolated. The instances are made once and shared
//! by the tests (each test takes its own sample of them).

mod common;

use common::jit::assert_out_of_bounds;
use instance_pool::wasmtime::{PooledMemoryCreator, PooledModule};
use instance_pool::{MemoryLayout, PoolingConfig, PoolingInstanceAllocator, WASM_PAGE_SIZE};
use std::sync::{Mutex, MutexGuard, OnceLock};
use wasmtime::{Engine, Instance, Linker, Module, Store};

const LIVE: usize = 100_000;
const SLOT: usize = 2 * WASM_PAGE_SIZE;
const GUARD: usize = 64 << 10;
/// Where each instance writes its number when it is made.
const TAG_AT: usize = 4096;

/// The density example's tenant module (one memory of 1..2 pages with a
/// 4 KiB data segment, a 10-element table), with calls to drive it.
fn wat() -> String {
    format!(
        r#"(module
  (memory (export "memory") 1 2)
  (table 10 funcref)
  (data (i32.const 0) "{}")
  (func (export "grow") (result i32) (memory.grow (i32.const 1)))
  (func (export "store8") (param i32 i32) (i32.store8 (local.get 0) (local.get 1)))
  (func (export "store32") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
  (func (export "fill") (param $v i32)
    (memory.fill (i32.const 0) (local.get $v)
      (i32.mul (memory.size) (i32.const 65536)))))"#,
        "\\07".repeat(TAG_AT)
    )
}

struct Tenant {
    store: Store<()>,
    instance: Instance,
    /// Its number, written at `TAG_AT`.
    tag: u32,
}

impl Tenant {
    fn call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
        args: P,
    ) -> wasmtime::Result<R> {
        let f = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, name)?;
        f.call(&mut self.store, args)
    }

    fn memory(&mut self) -> wasmtime::Memory {
        self.instance
            .get_memory(&mut self.store, "memory")
            .expect("memory export")
    }

    fn bytes(&mut self) -> Vec<u8> {
        let memory = self.memory();
        memory.data(&self.store).to_vec()
    }

    fn base(&mut self) -> usize {
        let memory = self.memory();
        memory.data_ptr(&self.store) as usize
    }

    /// What it holds untouched since it was made: the data segment, its
    /// tag, zeroes to one page.
    fn as_made(&self) -> Vec<u8> {
        let mut bytes = vec![0u8; WASM_PAGE_SIZE];
        bytes[..TAG_AT].fill(7);
        bytes[TAG_AT..TAG_AT + 4].copy_from_slice(&self.tag.to_le_bytes());
        bytes
    }
}

struct Dense {
    _pool: PoolingInstanceAllocator,
    /// Kernel mappings with 1,000 and with all instances live.
    mappings_at_1000: usize,
    mappings_full: usize,
    /// Every instance, by the address of its memory.
    tenants: Vec<Tenant>,
}

fn dense() -> MutexGuard<'static, Dense> {
    static DENSE: OnceLock<Mutex<Dense>> = OnceLock::new();
    let dense = DENSE.get_or_init(|| {
        let mut config = PoolingConfig::default();
        config
            .total_instances(LIVE as u32)
            .total_memories(LIVE as u32)
            .total_tables(1)
            .table_elements(10)
            .max_memory_size(SLOT)
            .memory_guard_size(GUARD)
            .memory_layout(MemoryLayout::Dense);
        let pool = PoolingInstanceAllocator::new(&config).unwrap();
        let mut wasmtime = wasmtime::Config::new();
        PooledMemoryCreator::new(&pool).install(&mut wasmtime);
        let engine = Engine::new(&wasmtime).unwrap();
        let wasm = wat::parse_str(wat()).unwrap();
        let module = PooledModule::new(&pool, &engine, &wasm, Module::from_binary).unwrap();
        assert_eq!(module.fallback_reason(), None, "the data is in an image");
        let pre = Linker::new(&engine)
            .instantiate_pre(module.module())
            .unwrap();
        let mut tenants = Vec::with_capacity(LIVE);
        let mut mappings_at_1000 = 0;
        for tag in 0..LIVE as u32 {
            let mut store = Store::new(&engine, ());
            let instance = module.instantiate_pre(&mut store, &pre).unwrap();
            let mut tenant = Tenant {
                store,
                instance,
                tag,
            };
            tenant
                .call::<_, ()>("store32", (TAG_AT as i32, tag as i32))
                .unwrap();
            tenants.push(tenant);
            if tenants.len() == 1000 {
                mappings_at_1000 = instance_pool::kernel_mappings().unwrap();
            }
        }
        let mappings_full = instance_pool::kernel_mappings().unwrap();
        let metrics = pool.metrics();
        assert_eq!(metrics.memories_in_use, LIVE as u32);
        // The dense layout copies images (no file mapping per slot).
        assert_eq!(metrics.images_copied, LIVE as u64);
        let mut by_base: Vec<(usize, Tenant)> =
            tenants.into_iter().map(|mut t| (t.base(), t)).collect();
        by_base.sort_unstable_by_key(|(base, _)| *base);
        let tenants = by_base.into_iter().map(|(_, t)| t).collect();
        Mutex::new(Dense {
            _pool: pool,
            mappings_at_1000,
            mappings_full,
            tenants,
        })
    });
    // A test that failed holding the lock leaves the instances usable.
    dense.lock().unwrap_or_else(|e| e.into_inner())
}

/// Index triples `(left, middle, right)` of neighbouring slots, `n` of
/// them spread over the slab, from `first` on.
fn neighbours(d: &mut Dense, first: usize, n: usize) -> Vec<[usize; 3]> {
    let step = (LIVE - 3) / n;
    (0..n)
        .map(|k| {
            let i = first + k * step;
            let at = [i, i + 1, i + 2];
            let bases = at.map(|j| d.tenants[j].base());
            assert_eq!(
                bases[1] - bases[0],
                SLOT + GUARD,
                "slots {at:?} are neighbours"
            );
            assert_eq!(
                bases[2] - bases[1],
                SLOT + GUARD,
                "slots {at:?} are neighbours"
            );
            at
        })
        .collect()
}

#[test]
fn a_hundred_thousand_live_instances_need_no_more_kernel_mappings_than_a_thousand() {
    let d = dense();
    assert!(
        d.mappings_full < 1_000,
        "{} kernel mappings with {LIVE} live instances",
        d.mappings_full
    );
    // 99,000 more live memories: not one mapping each.
    assert!(
        d.mappings_full < d.mappings_at_1000 + 100,
        "{} mappings with 1,000 live, {} with {LIVE}",
        d.mappings_at_1000,
        d.mappings_full
    );
}

#[test]
fn a_write_by_one_instance_is_never_visible_in_its_neighbours() {
    let mut d = dense();
    for [left, middle, right] in neighbours(&mut d, 0, 40) {
        let t = &mut d.tenants;
        // Its whole memory, grown to the slot: the bytes next to both
        // neighbours' (and its guards').
        assert_eq!(t[middle].call::<(), i32>("grow", ()).unwrap(), 1);
        t[middle].call::<_, ()>("fill", 0xA5).unwrap();
        for side in [left, right] {
            let expected = t[side].as_made();
            assert!(t[side].bytes() == expected, "slot {side} beside {middle}");
        }
        // And the neighbours' writes are not visible in it.
        for side in [left, right] {
            t[side].call::<_, ()>("fill", 0x5A).unwrap();
        }
        let middle_bytes = t[middle].bytes();
        assert_eq!(middle_bytes.len(), SLOT);
        assert!(middle_bytes.iter().all(|&b| b == 0xA5), "slot {middle}");
        for side in [left, right] {
            assert!(t[side].bytes().iter().all(|&b| b == 0x5A), "slot {side}");
        }
    }
}

#[test]
fn a_write_past_a_memorys_size_traps_and_leaves_the_neighbours_as_they_were() {
    let mut d = dense();
    // Another sample than the test above's.
    for [left, middle, right] in neighbours(&mut d, 1_000, 40) {
        let t = &mut d.tenants;
        let store8 = |t: &mut Tenant, at: usize| t.call::<_, ()>("store8", (at as i32, 0x11));
        let past_size = |t: &mut Tenant, at: usize, what: &str| {
            let r = store8(t, at).map(|()| 0);
            assert_out_of_bounds(r, &format!("slot {middle}: {what}"));
        };
        // One page: the slot's second page, then the guard, then far off.
        for at in [
            WASM_PAGE_SIZE,
            SLOT - 1,
            SLOT,
            SLOT + GUARD - 1,
            u32::MAX as usize,
        ] {
            past_size(&mut t[middle], at, &format!("store at {at:#x} with 1 page"));
        }
        assert_eq!(t[middle].call::<(), i32>("grow", ()).unwrap(), 1);
        store8(&mut t[middle], SLOT - 1).unwrap();
        for at in [SLOT, SLOT + GUARD - 1, SLOT + GUARD, u32::MAX as usize] {
            past_size(
                &mut t[middle],
                at,
                &format!("store at {at:#x} with 2 pages"),
            );
        }
        assert_eq!(t[middle].bytes()[SLOT - 1], 0x11);
        for side in [left, right] {
            let expected = t[side].as_made();
            assert!(t[side].bytes() == expected, "slot {side} beside {middle}");
        }
    }
}
