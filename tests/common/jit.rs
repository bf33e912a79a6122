//! Wasmtime on the pool (feature `wasmtime-examples`): the probe module
//! the JIT tests drive, and the few calls they all make.

use super::config::{Shape, small};
use instance_pool::PoolingInstanceAllocator;
use instance_pool::wasmtime::{PooledMemoryCreator, PooledModule};
use wasmtime::{Engine, Instance, Module, Store, StoreLimits, StoreLimitsBuilder, Trap};

/// One page of memory (at most `SLOT_PAGES`), a data segment, and the
/// operations the tests drive from outside.
pub const WAT: &str = r#"
(module
  (memory (export "memory") 1 16)
  (data (i32.const 16) "hello")
  (func (export "load") (param i32) (result i32) (i32.load (local.get 0)))
  ;; Past the memory by the offset: lands in the slot's trailing guard.
  (func (export "load_guard") (param i32) (result i32)
    (i32.load offset=0xf000 (local.get 0)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  ;; Writes `v` to every byte of the memory.
  (func (export "fill") (param $v i32)
    (memory.fill (i32.const 0) (local.get $v)
      (i32.mul (memory.size) (i32.const 65536))))
  ;; The number of nonzero bytes in the memory.
  (func (export "nonzero") (result i32)
    (local $i i32) (local $n i32) (local $end i32)
    (local.set $end (i32.mul (memory.size) (i32.const 65536)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (if (i32.load8_u (local.get $i))
          (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $n))
)
"#;

/// A pool of `slots` 1 MiB slots with 64 KiB guards, in `shape`.
pub fn pool(shape: Shape, slots: u32) -> PoolingInstanceAllocator {
    let mut c = small(slots);
    shape.apply(&mut c);
    PoolingInstanceAllocator::new(&c).unwrap()
}

pub fn engine_on(pool: &PoolingInstanceAllocator) -> Engine {
    let mut config = wasmtime::Config::new();
    PooledMemoryCreator::new(pool).install(&mut config);
    Engine::new(&config).unwrap()
}

/// A tenant: a store limited to `limit` bytes of memory, and its instance.
pub fn tenant(engine: &Engine, module: &Module, limit: usize) -> (Store<StoreLimits>, Instance) {
    let limits = StoreLimitsBuilder::new().memory_size(limit).build();
    let mut store = Store::new(engine, limits);
    store.limiter(|l| l);
    let instance = Instance::new(&mut store, module, &[]).unwrap();
    (store, instance)
}

pub fn call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    store: &mut Store<StoreLimits>,
    instance: &Instance,
    name: &str,
    args: P,
) -> wasmtime::Result<R> {
    let f = instance.get_typed_func::<P, R>(&mut *store, name)?;
    f.call(store, args)
}

pub fn assert_out_of_bounds(r: wasmtime::Result<i32>, what: &str) {
    let err = r.expect_err(what);
    assert_eq!(
        err.downcast_ref::<Trap>(),
        Some(&Trap::MemoryOutOfBounds),
        "{what}: {err:?}"
    );
}

/// Two pages; segments out of order and overlapping ("ERR" after "first":
/// "fiERR" at 0x100).
pub const PROBE: &str = r#"
(module
  (memory (export "memory") 2 16)
  (data (i32.const 0x10000) "page one")
  (data (i32.const 0x100) "first")
  (data (i32.const 0x102) "ERR")
  (func (export "store8") (param i32 i32) (i32.store8 (local.get 0) (local.get 1)))
  (func (export "load8") (param i32) (result i32) (i32.load8_u (local.get 0)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "fill") (param $v i32)
    (memory.fill (i32.const 0) (local.get $v)
      (i32.mul (memory.size) (i32.const 65536)))))
"#;

/// What `PROBE`'s memory holds after instantiation.
pub fn probe_bytes() -> Vec<u8> {
    let mut m = vec![0; 2 << 16];
    m[0x100..0x105].copy_from_slice(b"fiERR");
    m[0x10000..0x10008].copy_from_slice(b"page one");
    m
}

pub fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap()
}

pub fn baked(pool: &PoolingInstanceAllocator, engine: &Engine, wat: &str) -> PooledModule {
    PooledModule::new(pool, engine, &wasm(wat), Module::from_binary).unwrap()
}

pub fn memory_bytes(store: &mut Store<()>, instance: &Instance, name: &str) -> Vec<u8> {
    let memory = instance.get_memory(&mut *store, name).unwrap();
    memory.data(&*store).to_vec()
}
