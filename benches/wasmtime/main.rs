//! One request of the serve example without HTTP: `Backend::run` of
//! `examples/serve/backend.rs` (a fresh `wasmtime::Store` with the tenant's
//! limits, an instance of the handler, its calls on a fiber, which grow the
//! memory by a page, and the drop), on
//!
//! - `instance_pool`: Wasmtime on-demand with this crate's
//!   `PooledMemoryCreator` and `PooledStackCreator` (`mprotect` path), the
//!   handler a `PooledModule` (its 256 KiB of data a copy-on-write image);
//!   `instance_pool_markers`: the same on guard markers;
//! - `wasmtime_pooling`: Wasmtime's own pooling allocator (copy-on-write
//!   data, its stack pool);
//! - `wasmtime_on_demand`: Wasmtime's default allocator (an `mmap` per
//!   memory, a fresh stack per store): no pool at all;
//! - `calls_only`: the floor, `Backend::handle` on one instance kept alive
//!   (no store, no instantiation, no isolation): what every row pays anyway.
//!
//! `wasmtime_data` times an instantiation whose memory starts with a data
//! segment of 4 KiB to 512 KiB, and (`_reads` rows) the same with one byte
//! of every data page read after it, so copy-on-write pays its faults:
//! `module_images` (a `PooledModule` on the crate's pool: its image
//! mapped; `module_images_keep_slot` on a pool that keeps the whole slot
//! resident, so that its reset leaves unwritten pages alone as Wasmtime's
//! does), `instance_pool` (a plain `wasmtime::Module` on the crate's
//! pool: Wasmtime copies the data in), `wasmtime_pooling` (Wasmtime's own
//! pool: its image mapped).
//!
//! `image_build` (see `image_build.rs`) times the first instantiation with
//! a fresh image, 4 KiB to 64 MiB of data: the crate building its
//! `MemoryImage` against Wasmtime building its own.
//!
//! `interleaved` (`INTERLEAVED=1`, see `interleaved.rs`) compares the
//! `module_images` and `wasmtime_pooling` rows in one process instead,
//! in alternating rounds, where a difference of a few percent would be
//! lost in criterion's run-to-run noise.
//!
//! `cargo bench --features wasmtime-examples --bench wasmtime` (about five
//! minutes) ends with the ratios from this run's medians.

#[path = "../../examples/serve/backend.rs"]
#[allow(dead_code, reason = "the bench uses the backend's request path only")]
mod backend;
mod bounds;
#[path = "../common/estimates.rs"]
mod estimates;
mod image_build;
mod interleaved;

use backend::{Backend, Kind};
use criterion::Criterion;
use instance_pool::PoolingInstanceAllocator;
use instance_pool::wasmtime::{PooledMemoryCreator, PooledModule};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

const SLOTS: u32 = 16;
const INPUT: &[u8] = b"hello from a tenant";

/// Polls a future that never waits on anything outside itself (nothing in
/// these stores does) to completion.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("a bench future did not complete")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("wasmtime_request");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    {
        let backend =
            Backend::new(Kind::WasmtimeOnDemand, SLOTS, backend::MEMORY_LIMIT).expect("backend");
        let mut store = backend.store();
        let instance = block_on(backend.instantiate(&mut store)).expect("instance");
        // Growth is refused once the limit is reached: the floor keeps the
        // calls and leaves out the growth itself.
        group.bench_function("calls_only", |b| {
            b.iter(|| black_box(block_on(backend.handle(&mut store, &instance, INPUT, 1))))
        });
    }
    for (name, kind) in [
        ("instance_pool", Kind::InstancePool),
        ("instance_pool_markers", Kind::InstancePoolMarkers),
        ("wasmtime_pooling", Kind::WasmtimePooling),
        ("wasmtime_on_demand", Kind::WasmtimeOnDemand),
    ] {
        let backend = Backend::new(kind, SLOTS, backend::MEMORY_LIMIT).expect("backend");
        group.bench_function(name, |b| {
            b.iter(|| {
                let reply = block_on(backend.run(INPUT, 1)).expect("a request");
                assert_eq!(reply.leaked, 0);
                black_box(reply)
            })
        });
        if let Some((pool, stacks)) = &backend.pools {
            assert_eq!(pool.metrics().memories_in_use, 0, "every slot returned");
            assert_eq!(stacks.metrics().stacks_in_use, 0, "every stack returned");
        }
    }
    group.finish();
    data_segments(c);
    image_build::bench(c);
}

/// Data segment sizes of the `wasmtime_data` group: row label, summary
/// label.
const DATA_SIZES: [(usize, &str, &str); 3] = [
    (4 << 10, "4K", "4 KiB"),
    (64 << 10, "64K", "64 KiB"),
    (512 << 10, "512K", "512 KiB"),
];

/// How a `wasmtime_data` row gets its module's data into the memory.
#[derive(Clone, Copy)]
enum Data {
    /// A `PooledModule` on the crate's pool: its image mapped.
    ModuleImages,
    /// The same on a pool that keeps the whole slot resident (see
    /// [`keep_slot`]).
    ModuleImagesKeepSlot,
    /// A plain `wasmtime::Module` on the crate's pool: Wasmtime copies it.
    Copied,
    /// Wasmtime's pooling allocator: its own image mapped.
    WasmtimePooling,
}

/// What a data segment costs each instantiation. One iteration: a store,
/// an instance of a module whose 1 MiB memory starts with `size` bytes of
/// data, the drop; in the `_reads` rows also one byte read of every host
/// page of the data, so copy-on-write pays its page faults.
fn data_segments(c: &mut Criterion) {
    let mut group = c.benchmark_group("wasmtime_data");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    for (size, label, _) in DATA_SIZES {
        let wasm = data_module(size);
        for (name, data) in [
            ("module_images", Data::ModuleImages),
            ("module_images_keep_slot", Data::ModuleImagesKeepSlot),
            ("instance_pool", Data::Copied),
            ("wasmtime_pooling", Data::WasmtimePooling),
        ] {
            let kind = match data {
                Data::WasmtimePooling => Kind::WasmtimePooling,
                _ => Kind::InstancePool,
            };
            let (config, pools) = match data {
                Data::ModuleImagesKeepSlot => keep_slot(),
                _ => backend::engine_config(kind, SLOTS, SLOTS).expect("config"),
            };
            let engine = wasmtime::Engine::new(&config).expect("engine");
            let linker = wasmtime::Linker::new(&engine);
            let pooled = match (data, &pools) {
                (Data::ModuleImages | Data::ModuleImagesKeepSlot, Some((pool, _))) => Some(
                    PooledModule::new(pool, &engine, &wasm, wasmtime::Module::from_binary)
                        .expect("pooled module"),
                ),
                _ => None,
            };
            let module = match &pooled {
                Some(p) => p.module().clone(),
                None => wasmtime::Module::from_binary(&engine, &wasm).expect("module"),
            };
            let pre = linker.instantiate_pre(&module).expect("instantiate_pre");
            for reads in [false, true] {
                let row = match reads {
                    false => format!("{name}_{label}"),
                    true => format!("{name}_reads_{label}"),
                };
                group.bench_function(row, |b| {
                    b.iter(|| data_request(&engine, pooled.as_ref(), &pre, size, reads))
                });
            }
            if let Some((pool, _)) = &pools {
                assert_eq!(pool.metrics().memories_in_use, 0, "every slot returned");
            }
        }
    }
    group.finish();
}

/// The `wasmtime_data` module: a 1 MiB memory whose first `size` bytes
/// are a data segment of `0xaa`.
fn data_module(size: usize) -> Vec<u8> {
    let data: String = std::iter::repeat_n("\\aa", size).collect();
    let wat = format!("(module (memory (export \"memory\") 16) (data (i32.const 0) \"{data}\"))");
    wat::parse_str(&wat).expect("wat")
}

/// One `wasmtime_data` iteration: a store, an instance of `pre` (through
/// `pooled` when given), with `reads` one byte read of every host page of
/// the `size` bytes of data (checked), the drop.
fn data_request(
    engine: &wasmtime::Engine,
    pooled: Option<&PooledModule>,
    pre: &wasmtime::InstancePre<()>,
    size: usize,
    reads: bool,
) {
    let mut store = wasmtime::Store::new(engine, ());
    let instance = match pooled {
        Some(p) => p.instantiate_pre(&mut store, pre),
        None => pre.instantiate(&mut store),
    }
    .expect("instance");
    if reads {
        let memory = instance.get_memory(&mut store, "memory").expect("memory");
        let bytes = memory.data(&store);
        let sum = (0..size).step_by(4096).fold(0u8, |s, i| s ^ bytes[i]);
        assert_eq!(sum, 0xaa * ((size / 4096) % 2) as u8);
    }
    black_box(instance);
}

/// `Kind::InstancePool`'s engine and pools, but with `memory_keep_resident`
/// of the whole slot: a reset then restores only the pages a tenant wrote
/// (`PAGEMAP_SCAN`) and leaves the rest as it is, mapped and accessible,
/// as Wasmtime's pool does with `pagemap_scan` whatever its keep-resident
/// size. At 256 KiB the crate's reset discards everything past it and
/// makes it `PROT_NONE` (opened again at the next instantiation), so the
/// image's pages there are faulted in again by every tenant that reads
/// them.
fn keep_slot() -> (wasmtime::Config, Option<backend::Pools>) {
    let (mut config, pools) =
        backend::engine_config(Kind::InstancePool, SLOTS, SLOTS).expect("config");
    let (pool, stacks) = pools.expect("the crate's pools");
    let mut c = pool.config().clone();
    c.memory_keep_resident(backend::SLOT);
    let pool = PoolingInstanceAllocator::new(&c).expect("pool");
    PooledMemoryCreator::new(&pool).install(&mut config);
    (config, Some((pool, stacks)))
}

fn summary(since: SystemTime) {
    let dir = estimates::criterion_dir();
    let t = |id: &str| estimates::median_ns(&dir, &format!("wasmtime_request/{id}"), since);
    println!("\n| wasmtime_request | ratio | medians |\n|---|---|---|");
    for (what, num, den) in [
        (
            "instance-pool vs Wasmtime pooling",
            "instance_pool",
            "wasmtime_pooling",
        ),
        (
            "instance-pool vs Wasmtime on-demand",
            "instance_pool",
            "wasmtime_on_demand",
        ),
        (
            "instance-pool, guard markers vs mprotect",
            "instance_pool_markers",
            "instance_pool",
        ),
        (
            "instance-pool vs the calls alone",
            "instance_pool",
            "calls_only",
        ),
        (
            "Wasmtime pooling vs the calls alone",
            "wasmtime_pooling",
            "calls_only",
        ),
    ] {
        if let (Some(n), Some(d)) = (t(num), t(den)) {
            let (fmt, r) = (estimates::fmt_time, n / d);
            println!("| {what} | **{r:.2}x** | {} / {} |", fmt(n), fmt(d));
        }
    }
    let rows = [
        (
            "module images / Wasmtime pooling",
            "module_images_",
            "wasmtime_pooling_",
        ),
        (
            "module images / Wasmtime pooling + reads",
            "module_images_reads_",
            "wasmtime_pooling_reads_",
        ),
        (
            "module images, whole slot kept / Wasmtime pooling",
            "module_images_keep_slot_",
            "wasmtime_pooling_",
        ),
        (
            "module images, whole slot kept / Wasmtime pooling + reads",
            "module_images_keep_slot_reads_",
            "wasmtime_pooling_reads_",
        ),
        (
            "copied / Wasmtime pooling",
            "instance_pool_",
            "wasmtime_pooling_",
        ),
        (
            "copied / Wasmtime pooling + reads",
            "instance_pool_reads_",
            "wasmtime_pooling_reads_",
        ),
    ];
    let ratios = |group, rows: &[(&str, &str, &str)], sizes: &[(usize, &str, &str)]| {
        for (what, num, den) in rows {
            for (_, label, size) in sizes {
                let t = |id: String| estimates::median_ns(&dir, &format!("{group}/{id}"), since);
                if let (Some(n), Some(m)) = (t(format!("{num}{label}")), t(format!("{den}{label}")))
                {
                    let fmt = estimates::fmt_time;
                    println!(
                        "| {group}: {what}, {size} | **{:.2}x** | {} / {} |",
                        n / m,
                        fmt(n),
                        fmt(m)
                    );
                }
            }
        }
    };
    ratios("wasmtime_data", &rows, &DATA_SIZES);
    ratios("image_build", &image_build::SUMMARY, &image_build::SIZES);
}

fn main() {
    if std::env::var_os("INTERLEAVED").is_some() {
        return interleaved::run();
    }
    let since = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    bounds::bench(&mut c);
    c.final_summary();
    summary(since);
    bounds::summary(since);
}
