//! One request of the serve example without HTTP: a fresh `wasmtime::Store`,
//! an instance of its handler (`examples/serve/handler.wat`), the handler's
//! two calls (which grow the memory by a page), and the drop, on
//!
//! - `instance_pool`: Wasmtime on-demand with this crate's
//!   `PooledMemoryCreator` (and `PooledStackCreator` for `_async`);
//! - `wasmtime_pooling`: Wasmtime's own pooling allocator (copy-on-write
//!   data, its stack pool);
//! - `wasmtime_on_demand`: Wasmtime's default allocator (an `mmap` per
//!   memory, a fresh stack per store): no pool at all;
//! - `calls_only`: the floor, the two calls on one instance kept alive (no
//!   instantiation, no isolation): what every row pays anyway.
//!
//! `cargo bench --features wasmtime-examples --bench wasmtime` (about a
//! minute) ends with the ratios from this run's medians.

#[path = "../common/estimates.rs"]
mod estimates;

use criterion::Criterion;
use instance_pool::wasmtime::{PooledMemoryCreator, PooledStackCreator};
use instance_pool::{PoolingConfig, PoolingInstanceAllocator, StackPool, StackPoolConfig};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};
use wasmtime::{
    Config, Engine, Instance, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder,
};

const HANDLER: &str = include_str!("../../examples/serve/handler.wat");
const SLOT: usize = 1 << 20;
const GUARD: usize = 64 << 10;
const STACK: usize = 1 << 20;
const KEEP_RESIDENT: usize = 64 << 10;
const SLOTS: u32 = 16;
const INPUT: &[u8] = b"hello from a tenant";

/// Which allocator a row measures.
#[derive(Clone, Copy)]
enum Kind {
    InstancePool,
    WasmtimePooling,
    WasmtimeOnDemand,
}

/// The engine, with what every row shares: the same code settings and
/// memory reservation.
fn engine(kind: Kind) -> (Engine, Option<(PoolingInstanceAllocator, StackPool)>) {
    let mut config = Config::new();
    config
        .max_wasm_stack(256 << 10)
        .async_stack_size(STACK)
        .memory_reservation(SLOT as u64)
        .memory_guard_size(GUARD as u64)
        .memory_reservation_for_growth(0)
        .memory_may_move(false);
    let pools = match kind {
        Kind::InstancePool => {
            let mut p = PoolingConfig::default();
            p.total_instances(SLOTS)
                .total_memories(SLOTS)
                .total_tables(1)
                .max_memory_size(SLOT)
                .memory_guard_size(GUARD)
                .memory_keep_resident(KEEP_RESIDENT);
            let pool = PoolingInstanceAllocator::new(&p).expect("pool");
            let mut s = StackPoolConfig::default();
            s.total_stacks(SLOTS)
                .stack_size(STACK)
                .stack_keep_resident(16 << 10);
            let stacks = StackPool::new(&s).expect("stacks");
            PooledMemoryCreator::new(&pool).install(&mut config);
            PooledStackCreator::new(&stacks).install(&mut config);
            Some((pool, stacks))
        }
        Kind::WasmtimePooling => {
            let mut p = PoolingAllocationConfig::new();
            p.total_core_instances(SLOTS)
                .total_memories(SLOTS)
                .total_stacks(SLOTS)
                .total_tables(0)
                .max_memory_size(SLOT)
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .async_stack_keep_resident(16 << 10);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
            None
        }
        Kind::WasmtimeOnDemand => None,
    };
    (Engine::new(&config).expect("engine"), pools)
}

fn pre(engine: &Engine) -> InstancePre<StoreLimits> {
    let module = Module::new(engine, HANDLER).expect("handler");
    Linker::new(engine)
        .instantiate_pre(&module)
        .expect("instantiate_pre")
}

fn store(engine: &Engine) -> Store<StoreLimits> {
    let limits = StoreLimitsBuilder::new().memory_size(256 << 10).build();
    let mut store = Store::new(engine, limits);
    store.limiter(|l| l);
    store
}

/// The handler's work: check, write the input, run (growing a page).
fn calls(store: &mut Store<StoreLimits>, instance: &Instance) {
    let check = instance
        .get_typed_func::<(), ()>(&mut *store, "check")
        .expect("check");
    check.call(&mut *store, ()).expect("check runs");
    let memory = instance.get_memory(&mut *store, "memory").expect("memory");
    memory.write(&mut *store, 0x10000, INPUT).expect("input");
    let run = instance
        .get_typed_func::<(i32, i32), i32>(&mut *store, "run")
        .expect("run");
    black_box(
        run.call(&mut *store, (INPUT.len() as i32, 1))
            .expect("run runs"),
    );
}

/// The async path's calls, on a fiber.
async fn calls_async(store: &mut Store<StoreLimits>, instance: &Instance) {
    let run = instance
        .get_typed_func::<(i32, i32), i32>(&mut *store, "run")
        .expect("run");
    let check = instance
        .get_typed_func::<(), ()>(&mut *store, "check")
        .expect("check");
    check.call_async(&mut *store, ()).await.expect("check runs");
    let memory = instance.get_memory(&mut *store, "memory").expect("memory");
    memory.write(&mut *store, 0x10000, INPUT).expect("input");
    let r = run.call_async(&mut *store, (INPUT.len() as i32, 1)).await;
    black_box(r.expect("run runs"));
}

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
        let (engine, _) = engine(Kind::WasmtimeOnDemand);
        let pre = pre(&engine);
        let mut store = store(&engine);
        let instance = pre.instantiate(&mut store).expect("instance");
        // Growth is refused once the limit is reached: the floor keeps the
        // calls and leaves out the growth itself.
        group.bench_function("calls_only", |b| b.iter(|| calls(&mut store, &instance)));
    }
    for (name, kind) in [
        ("instance_pool", Kind::InstancePool),
        ("wasmtime_pooling", Kind::WasmtimePooling),
        ("wasmtime_on_demand", Kind::WasmtimeOnDemand),
    ] {
        let (engine, pools) = engine(kind);
        let pre = pre(&engine);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut store = store(&engine);
                let instance = pre.instantiate(&mut store).expect("instance");
                calls(&mut store, &instance);
            })
        });
        group.bench_function(format!("{name}_async"), |b| {
            b.iter(|| {
                block_on(async {
                    let mut store = store(&engine);
                    let instance = pre.instantiate_async(&mut store).await.expect("instance");
                    calls_async(&mut store, &instance).await;
                })
            })
        });
        if let Some((pool, stacks)) = pools {
            assert_eq!(pool.metrics().memories_in_use, 0, "every slot returned");
            assert_eq!(stacks.metrics().stacks_in_use, 0, "every stack returned");
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
            "instance-pool vs Wasmtime pooling, async",
            "instance_pool_async",
            "wasmtime_pooling_async",
        ),
        (
            "instance-pool vs Wasmtime on-demand",
            "instance_pool",
            "wasmtime_on_demand",
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
        (
            "async vs sync, instance-pool",
            "instance_pool_async",
            "instance_pool",
        ),
    ] {
        if let (Some(n), Some(d)) = (t(num), t(den)) {
            let (fmt, r) = (estimates::fmt_time, n / d);
            println!("| {what} | **{r:.2}x** | {} / {} |", fmt(n), fmt(d));
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
