//! One request of the serve example without HTTP: `Backend::run` of
//! `examples/serve/backend.rs` (a fresh `wasmtime::Store` with the tenant's
//! limits, an instance of the handler, its calls on a fiber, which grow the
//! memory by a page, and the drop), on
//!
//! - `instance_pool`: Wasmtime on-demand with this crate's
//!   `PooledMemoryCreator` and `PooledStackCreator` (`mprotect` path);
//!   `instance_pool_markers`: the same on guard markers;
//! - `wasmtime_pooling`: Wasmtime's own pooling allocator (copy-on-write
//!   data, its stack pool);
//! - `wasmtime_on_demand`: Wasmtime's default allocator (an `mmap` per
//!   memory, a fresh stack per store): no pool at all;
//! - `calls_only`: the floor, `Backend::handle` on one instance kept alive
//!   (no store, no instantiation, no isolation): what every row pays anyway.
//!
//! `wasmtime_data` times an instantiation (no access to the data) whose
//! memory starts with a data segment of 4 KiB to 512 KiB: copied in by
//! Wasmtime on the crate's pool, mapped copy-on-write by Wasmtime's own
//! (whose page faults come later, when a request reads the data).
//!
//! `cargo bench --features wasmtime-examples --bench wasmtime` (about a
//! minute) ends with the ratios from this run's medians.

#[path = "../../examples/serve/backend.rs"]
#[allow(dead_code, reason = "the bench uses the backend's request path only")]
mod backend;
#[path = "../common/estimates.rs"]
mod estimates;

use backend::{Backend, Kind};
use criterion::Criterion;
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
        let backend = Backend::new(Kind::WasmtimeOnDemand, SLOTS, 256 << 10).expect("backend");
        let mut store = backend.store();
        let instance = block_on(backend.pre().instantiate_async(&mut store)).expect("instance");
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
        let backend = Backend::new(kind, SLOTS, 256 << 10).expect("backend");
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
}

/// Data segment sizes of the `wasmtime_data` group.
const DATA_SIZES: [(usize, &str); 3] = [(4 << 10, "4K"), (64 << 10, "64K"), (512 << 10, "512K")];

/// What a data segment costs each instantiation: Wasmtime copies it into a
/// pooled memory (copy-on-write needs memories Wasmtime mapped itself),
/// where its own pool maps its image copy-on-write. One iteration: a
/// store, an instance of a module whose memory starts with `size` bytes
/// of data, the drop.
fn data_segments(c: &mut Criterion) {
    let mut group = c.benchmark_group("wasmtime_data");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    for (size, label) in DATA_SIZES {
        let data: String = std::iter::repeat_n("\\aa", size).collect();
        let wat =
            format!("(module (memory (export \"memory\") 16) (data (i32.const 0) \"{data}\"))");
        for (name, kind) in [
            ("instance_pool", Kind::InstancePool),
            ("wasmtime_pooling", Kind::WasmtimePooling),
        ] {
            let (config, _pools) = backend::engine_config(kind, SLOTS).expect("config");
            let engine = wasmtime::Engine::new(&config).expect("engine");
            let module = wasmtime::Module::new(&engine, &wat).expect("module");
            let pre = wasmtime::Linker::new(&engine)
                .instantiate_pre(&module)
                .expect("instantiate_pre");
            group.bench_function(format!("{name}_{label}"), |b| {
                b.iter(|| {
                    let mut store = wasmtime::Store::new(&engine, ());
                    let instance = pre.instantiate(&mut store).expect("instance");
                    black_box(instance);
                })
            });
        }
    }
    group.finish();
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
    let d = |id: &str| estimates::median_ns(&dir, &format!("wasmtime_data/{id}"), since);
    for (_, label) in DATA_SIZES {
        let (num, den) = (
            format!("instance_pool_{label}"),
            format!("wasmtime_pooling_{label}"),
        );
        if let (Some(n), Some(m)) = (d(&num), d(&den)) {
            let fmt = estimates::fmt_time;
            println!(
                "| instantiate with {label} of data: copied vs copy-on-write | **{:.2}x** | {} / {} |",
                n / m,
                fmt(n),
                fmt(m)
            );
        }
    }
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    summary(since);
}
