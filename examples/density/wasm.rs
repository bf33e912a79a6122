//! `--engine wasmtime`: each tenant is a `wasmtime::Store` with an instance
//! of [`wat`]'s module (one memory of 1..2 pages starting with a data
//! segment, a 10-element funcref table, one exported function that grows
//! the memory by a page and writes past the first page), called once after
//! instantiation, then kept live in the window. `--async` instantiates and
//! calls on a fiber stack, which Wasmtime keeps until the store drops.
//!
//! Backends, with the same code settings:
//! - `pool`: Wasmtime's on-demand strategy with this crate's
//!   `PooledMemoryCreator` (memories in the pool's slots, either layout)
//!   and, with `--async`, `PooledStackCreator` over a `StackPool`;
//! - `wasmtime-pooling`: Wasmtime's pooling allocator for the same counts,
//!   slot size and guard (its memories, tables, instances and stacks).

use crate::report::{BackendRun, Probe};
use crate::run::{self, Options};
use crate::worker::Tenants;
use crate::{Args, Backend, common};
use instance_pool::wasmtime::{PooledMemoryCreator, PooledStackCreator};
use instance_pool::{PoolingInstanceAllocator, StackPool, StackPoolConfig, WASM_PAGE_SIZE};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use wasmtime::{
    Config, Engine, Instance, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder,
};

/// Wasm's own stack limit, and the fiber stacks (`--async`) above it:
/// room for the wasm stack and the host calls made on the fiber.
const MAX_WASM_STACK: usize = 64 << 10;
const FIBER_STACK: usize = 128 << 10;
/// Elements of the module's table.
const TABLE: u32 = 10;
/// Where the function writes: in the page it grew.
const WRITE_AT: u32 = 70_000;

/// The tenant's module: its memory starts with `data` bytes of 7.
fn wat(data: usize) -> String {
    format!(
        r#"(module
  (memory (export "memory") 1 2)
  (table {TABLE} funcref)
  (data (i32.const 0) "{}")
  (func (export "run") (result i32)
    (local $old i32)
    (local.set $old (memory.grow (i32.const 1)))
    (i32.store8 (i32.const {WRITE_AT}) (i32.const 1))
    (local.get $old)))"#,
        "\\07".repeat(data)
    )
}

/// Polls a future that never waits on anything outside itself (nothing in
/// these stores does) to completion.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

struct WasmTenants {
    engine: Engine,
    pre: InstancePre<StoreLimits>,
    limits: StoreLimits,
    async_calls: bool,
}

impl Tenants for WasmTenants {
    type Tenant = (Store<StoreLimits>, Instance);

    fn instantiate(&self) -> Result<Self::Tenant, String> {
        let mut store = Store::new(&self.engine, self.limits.clone());
        store.limiter(|limits| limits);
        let instance = if self.async_calls {
            block_on(self.pre.instantiate_async(&mut store))
        } else {
            self.pre.instantiate(&mut store)
        };
        let instance = instance.map_err(|e| format!("{e:#}"))?;
        Ok((store, instance))
    }

    fn work(&self, (store, instance): &mut Self::Tenant) -> Result<(), String> {
        let run = instance
            .get_typed_func::<(), i32>(&mut *store, "run")
            .map_err(|e| format!("{e:#}"))?;
        let old = if self.async_calls {
            block_on(run.call_async(&mut *store, ()))
        } else {
            run.call(&mut *store, ())
        };
        match old.map_err(|e| format!("{e:#}"))? {
            1 => Ok(()),
            old => Err(format!("memory.grow returned {old}, not the old size 1")),
        }
    }
}

/// The process's mappings, `(start, end)`.
fn mappings() -> Vec<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|l| {
            let (lo, hi) = l.split(' ').next()?.split_once('-')?;
            Some((
                usize::from_str_radix(lo, 16).ok()?,
                usize::from_str_radix(hi, 16).ok()?,
            ))
        })
        .collect()
}

/// Where the reservation made between the two snapshots starts: a new
/// mapping, or the part a changed one gained (the kernel merges a new
/// read-write reservation with a neighbour of the same kind).
fn new_reservation(before: &[(usize, usize)], after: &[(usize, usize)]) -> Option<usize> {
    let &(start, end) = after.iter().find(|r| !before.contains(r))?;
    match before.iter().find(|r| r.0 == start || r.1 == end) {
        Some(&(s, e)) if s == start => Some(e),
        Some(_) => Some(start),
        None => Some(start),
    }
}

/// Pages of `[start, start + len)` in memory (bit 63 of each page's entry
/// in `/proc/self/pagemap`).
fn resident_pages(start: usize, len: usize) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let page = instance_pool::host_page_size();
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").ok()?;
    pagemap
        .seek(SeekFrom::Start((start / page * 8) as u64))
        .ok()?;
    let (mut left, mut present) = (len / page, 0);
    let mut buf = vec![0u8; 64 << 10];
    while left > 0 {
        let n = (left * 8).min(buf.len());
        pagemap.read_exact(&mut buf[..n]).ok()?;
        present += buf[..n]
            .chunks_exact(8)
            .filter(|e| e[7] & 0x80 != 0)
            .count() as u64;
        left -= n / 8;
    }
    Some(present)
}

pub fn run(args: &Args, backend: Backend, opts: &Options) -> Result<BackendRun, String> {
    let n = args.tenants;
    let mut pool_config = crate::pool_config(args);
    // Wasmtime keeps its own tables (on the heap) with a memory creator.
    pool_config.total_tables(1).table_elements(TABLE);
    let (slot, guard) = (
        pool_config.get_max_memory_size(),
        pool_config.get_memory_guard_size(),
    );
    let before = Probe::now();
    let mut config = Config::new();
    config.max_wasm_stack(MAX_WASM_STACK);
    let (pool, stacks, name, detail) = match backend {
        Backend::Pool => {
            let pool =
                PoolingInstanceAllocator::new(&pool_config).map_err(|e| format!("pool: {e}"))?;
            let stacks = if args.async_calls {
                let mut s = StackPoolConfig::default();
                s.total_stacks(n).stack_size(FIBER_STACK);
                let maps = mappings();
                let stacks = StackPool::new(&s).map_err(|e| format!("stack pool: {e}"))?;
                let slab = new_reservation(&maps, &mappings());
                PooledStackCreator::new(&stacks).install(&mut config);
                let len = n as usize * (FIBER_STACK + s.get_stack_guard_size());
                Some(slab.map(|start| (start, len)))
            } else {
                None
            };
            // Last: it sets the memory settings it needs.
            PooledMemoryCreator::new(&pool).install(&mut config);
            let m = pool.metrics();
            let layout = m.memory_layout.name();
            let detail = format!(
                "this crate's pool through PooledMemoryCreator: {n} {layout} slots, {}",
                m.memory_protection.name()
            );
            (
                Some(pool),
                stacks,
                format!("instance-pool, {layout}"),
                detail,
            )
        }
        _ => {
            let mut p = PoolingAllocationConfig::new();
            p.total_core_instances(n)
                .total_memories(n)
                .total_tables(n)
                .table_elements(TABLE as usize)
                .max_memory_size(slot)
                .linear_memory_keep_resident(args.keep_resident)
                .table_keep_resident(args.keep_resident)
                .decommit_batch_size(pool_config.get_decommit_batch_size())
                .max_unused_warm_slots(pool_config.get_max_unused_warm_slots())
                // Its stack pool protects every guard page when made: only
                // what the run uses.
                .total_stacks(if args.async_calls { n } else { 0 });
            config
                .memory_reservation(slot as u64)
                .memory_guard_size(guard as u64)
                .guard_before_linear_memory(pool_config.get_guard_before_memory())
                .memory_reservation_for_growth(0)
                .memory_may_move(false)
                .async_stack_size(FIBER_STACK)
                // The crate's stack pool always zeroes a released stack.
                .async_stack_zeroing(true)
                .allocation_strategy(InstanceAllocationStrategy::Pooling(p));
            let detail = format!("Wasmtime's pooling allocator: {n} slots, copy-on-write data");
            (None, None, "Wasmtime pooling allocator".into(), detail)
        }
    };
    let engine = Engine::new(&config).map_err(|e| format!("wasmtime engine: {e:#}"))?;
    let module =
        Module::new(&engine, wat(args.image_size)).map_err(|e| format!("module: {e:#}"))?;
    let pre = Linker::new(&engine)
        .instantiate_pre(&module)
        .map_err(|e| format!("module: {e:#}"))?;
    let idle = Probe::now();
    println!(
        "density: {n} Wasmtime instances on {} thread(s) for {} s, {} calls; data {}, slots of {} + {} guard; {detail}; {} cores",
        args.threads,
        args.seconds.as_secs_f64(),
        if args.async_calls { "async" } else { "sync" },
        common::fmt_bytes(args.image_size as f64),
        common::fmt_bytes(slot as f64),
        common::fmt_bytes(guard as f64),
        crate::cores(),
    );
    let tenants = WasmTenants {
        engine,
        pre,
        limits: StoreLimitsBuilder::new()
            .memory_size(2 * WASM_PAGE_SIZE)
            .table_elements(TABLE as usize)
            .instances(1)
            .build(),
        async_calls: args.async_calls,
    };
    let stack_share = |live: usize| {
        let Some(slab) = stacks else {
            return Vec::new();
        };
        let pages = slab.and_then(|(start, len)| resident_pages(start, len));
        let share = pages.map_or("- (stack slab not found)".into(), |pages| {
            let bytes = pages as f64 * instance_pool::host_page_size() as f64;
            format!(
                "{} in all, {} per live instance ({:.2} pages of each {} stack)",
                common::fmt_bytes(bytes),
                common::fmt_bytes(bytes / live.max(1) as f64),
                pages as f64 / live.max(1) as f64,
                common::fmt_bytes(FIBER_STACK as f64)
            )
        });
        vec![("fiber stacks' RSS (in the RSS above)".to_string(), share)]
    };
    let outcome = run::measure(&tenants, opts, pool.as_ref(), before, idle, &stack_share)?;
    drop(tenants);
    Ok(BackendRun::new(name, outcome))
}
