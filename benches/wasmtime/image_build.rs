//! `image_build`: the first instantiation with a fresh image, at 4 KiB,
//! 1 MiB and 64 MiB of data. The module: one memory whose data segment
//! starts at 1 MiB (where rustc puts data, after the stack), every eighth
//! 4 KiB page of it zero (zero-initialised statics, padding). One
//! iteration builds everything from the bytes, instantiates once and drops
//! it all:
//!
//! - `wasmtime_pooling`: `Module::deserialize` of the module precompiled
//!   with its data (`Engine::precompile_module`), then `Instance::new` on
//!   Wasmtime's pooling allocator, which builds the module's image (a memfd)
//!   at this first instantiation and maps it: a cold start from an
//!   embedder's cache of precompiled artifacts.
//! - `memory_image`: the same `Module::deserialize`, of the same module
//!   precompiled for the crate's engine (its result dropped unused: the row
//!   pays what `wasmtime_pooling` pays to get its data in), then
//!   `MemoryImage::new` of the memory's bytes and an instance of a
//!   `PooledModule` with that image (`with_image`) on the crate's pool. Set
//!   against `wasmtime_pooling`, the ratio is the image build and first
//!   mapping alone, crate against Wasmtime.
//! - `module_images`: what an embedder of the crate does for a cold start:
//!   `PooledModule::new` from the module's bytes (it reads the data into
//!   the image and hands its compile function the module without it, here
//!   `Module::deserialize` of that smaller module precompiled, as a cache
//!   keyed by those bytes would), then the instance. Its data is read once
//!   from the wasm bytes where `wasmtime_pooling` reads it once from its
//!   artifact, so this is the end-to-end comparison.

use criterion::{Criterion, SamplingMode};
use instance_pool::wasmtime::{PooledMemoryCreator, PooledModule};
use instance_pool::{MemoryImage, PoolingConfig, PoolingInstanceAllocator};
use std::cell::OnceCell;
use std::hint::black_box;
use std::time::Duration;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig, Store,
};

/// Data sizes: size, row label, summary label.
pub const SIZES: [(usize, &str, &str); 3] = [
    (4 << 10, "4K", "4 KiB"),
    (1 << 20, "1M", "1 MiB"),
    (64 << 20, "64M", "64 MiB"),
];

/// Where the data starts in the memory.
const DATA_AT: usize = 1 << 20;
/// Slots big enough for the largest memory.
const SLOT: usize = 128 << 20;
const GUARD: usize = 64 << 10;
const SLOTS: u32 = 4;

/// `size` bytes of data: letters, every eighth 4 KiB page zero.
fn data(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| match (i / 4096) % 8 {
            7 => 0,
            _ => b'a' + (i % 26) as u8,
        })
        .collect()
}

/// A module whose memory holds `data` at `DATA_AT` (without it: `None`).
fn module_wasm(size: usize, data: Option<&[u8]>) -> Vec<u8> {
    let pages = (DATA_AT + size).div_ceil(65536) + 1;
    let mut wat = String::with_capacity(64 + 2 * size);
    wat.push_str(&format!("(module (memory (export \"memory\") {pages})"));
    if let Some(data) = data {
        wat.push_str(&format!("(data (i32.const {DATA_AT}) \""));
        for &b in data {
            match b {
                0 => wat.push_str("\\00"),
                b => wat.push(char::from(b)),
            }
        }
        wat.push_str("\")");
    }
    wat.push(')');
    wat::parse_str(&wat).expect("wat")
}

/// The crate's pool and an engine on it.
fn crate_engine() -> (Engine, PoolingInstanceAllocator) {
    let mut p = PoolingConfig::default();
    p.total_instances(SLOTS)
        .total_memories(SLOTS)
        .total_tables(1)
        .max_memory_size(SLOT)
        .memory_guard_size(GUARD);
    let pool = PoolingInstanceAllocator::new(&p).expect("pool");
    let mut config = Config::new();
    PooledMemoryCreator::new(&pool).install(&mut config);
    (Engine::new(&config).expect("engine"), pool)
}

/// An engine on Wasmtime's pooling allocator with the same slots.
fn wasmtime_engine() -> Engine {
    let mut p = PoolingAllocationConfig::new();
    p.total_core_instances(SLOTS)
        .total_memories(SLOTS)
        .total_tables(0)
        .total_stacks(0)
        .max_memory_size(SLOT);
    let mut config = Config::new();
    config
        .memory_reservation(SLOT as u64)
        .memory_guard_size(GUARD as u64)
        .memory_reservation_for_growth(0)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    Engine::new(&config).expect("engine")
}

/// A module deserialized from `artifact`, precompiled by `engine` itself.
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: `artifact` is `engine.precompile_module`'s output, made in
    // this process and never changed since.
    unsafe { Module::deserialize(engine, artifact) }
}

pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("image_build");
    group
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    let (crate_engine, pool) = crate_engine();
    let wasmtime_engine = wasmtime_engine();
    // Criterion calls a row's closure only when its filter selects the
    // row: everything below is made the first time one of its rows runs.
    for (size, label, _) in SIZES {
        let inputs = OnceCell::new();
        let inputs = || inputs.get_or_init(|| Inputs::new(size));
        let check = |module: &PooledModule| {
            let mut store = Store::new(&crate_engine, ());
            let instance = module.instantiate(&mut store, &[]).expect("instance");
            let memory = instance.get_memory(&mut store, "memory").expect("memory");
            assert!(memory.data(&store)[..DATA_AT + size] == inputs().memory_bytes[..]);
        };

        let ready = OnceCell::new();
        group.bench_function(format!("wasmtime_pooling_{label}"), |b| {
            let artifact = ready.get_or_init(|| {
                let wasm = &inputs().wasm;
                wasmtime_engine.precompile_module(wasm).expect("precompile")
            });
            b.iter(|| {
                let module = deserialize(&wasmtime_engine, artifact).expect("module");
                let mut store = Store::new(&wasmtime_engine, ());
                let instance = wasmtime::Instance::new(&mut store, &module, &[]);
                black_box(instance.expect("instance"));
            })
        });

        let ready = OnceCell::new();
        group.bench_function(format!("memory_image_{label}"), |b| {
            let (artifact, base) = ready.get_or_init(|| {
                let artifact = crate_engine.precompile_module(&inputs().wasm);
                let empty = module_wasm(size, None);
                let base = PooledModule::new(&pool, &crate_engine, &empty, Module::from_binary)
                    .expect("pooled module");
                let image = MemoryImage::new(&inputs().memory_bytes).expect("image");
                check(&base.with_image(0, image).expect("fits"));
                (artifact.expect("precompile"), base)
            });
            let memory_bytes = &inputs().memory_bytes;
            b.iter(|| {
                black_box(deserialize(&crate_engine, artifact).expect("module"));
                let image = MemoryImage::new(memory_bytes).expect("image");
                let module = base.with_image(0, image).expect("fits");
                let mut store = Store::new(&crate_engine, ());
                black_box(module.instantiate(&mut store, &[]).expect("instance"));
            })
        });

        let ready = OnceCell::new();
        group.bench_function(format!("module_images_{label}"), |b| {
            let artifact = ready.get_or_init(|| {
                let mut without_data = Vec::new();
                let module = PooledModule::new(&pool, &crate_engine, &inputs().wasm, |e, bytes| {
                    without_data = bytes.to_vec();
                    Module::from_binary(e, bytes)
                })
                .expect("pooled module");
                check(&module);
                let artifact = crate_engine.precompile_module(&without_data);
                artifact.expect("precompile")
            });
            let wasm = &inputs().wasm;
            b.iter(|| {
                let cached = |engine: &Engine, _: &[u8]| deserialize(engine, artifact);
                let module = PooledModule::new(&pool, &crate_engine, wasm, cached).expect("module");
                assert!(module.fallback_reason().is_none(), "the data is an image");
                let mut store = Store::new(&crate_engine, ());
                black_box(module.instantiate(&mut store, &[]).expect("instance"));
            })
        });
        assert_eq!(pool.metrics().memories_in_use, 0, "every slot returned");
    }
    group.finish();
}

/// One size's module, and its memory's bytes from offset 0.
struct Inputs {
    wasm: Vec<u8>,
    memory_bytes: Vec<u8>,
}

impl Inputs {
    fn new(size: usize) -> Inputs {
        let data = data(size);
        let mut memory_bytes = vec![0; DATA_AT];
        memory_bytes.extend_from_slice(&data);
        Inputs {
            wasm: module_wasm(size, Some(&data)),
            memory_bytes,
        }
    }
}

/// The summary's `image_build` lines: crate row, Wasmtime row.
pub const SUMMARY: [(&str, &str, &str); 2] = [
    (
        "memory image / Wasmtime pooling",
        "memory_image_",
        "wasmtime_pooling_",
    ),
    (
        "module images (PooledModule::new) / Wasmtime pooling",
        "module_images_",
        "wasmtime_pooling_",
    ),
];
