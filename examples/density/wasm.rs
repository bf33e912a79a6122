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
//!   and, with `--async`, `PooledStackCreator` over a `StackPool`; the
//!   module is a `PooledModule`, so its data segment is a memory image
//!   (mapped copy-on-write on the guarded layout, where a tenant that never
//!   touches the data page holds none of it; copied into the slot on the
//!   dense layout, which maps no file per slot, so each tenant holds a
//!   private copy of the data page);
//! - `wasmtime-pooling`: Wasmtime's pooling allocator for the same counts,
//!   slot size and guard (its memories, tables, instances and stacks).
//!
//! Where a live tenant's bytes go (the report's notes; one run each, 20 s,
//! `--max-pages 2`, sync calls):
//! - **dense** (100,000 live): 13.3 KiB RSS + 395 B page tables. The slot
//!   holds 8.0 KiB: the page the function grew and wrote, and the data
//!   page's private copy. The page tables map the slot and its guard
//!   (marked): a 4 KiB table page maps 2 MiB, so 384 B for 128 KiB + 64
//!   KiB. The remaining 5.3 KiB is the heap.
//! - **guarded** (20,000 live, the default 4 GiB slots + 32 MiB guard):
//!   9.4 KiB RSS, of which the slot holds 4.0 KiB: the data page stays the
//!   image's and is never faulted in, since the tenant does not read it.
//!   But each slot takes 8.0 KiB of page tables, a table page and a
//!   directory page of its own at 4 GiB apart, and 3 kernel mappings.
//! - `--async` on dense adds the fiber stack's one touched page (4.0 KiB)
//!   and its page tables (17.4 KiB + 660 B in all).
//!
//! The heap part is Wasmtime's own records, about 5.0 KiB a store with the
//! on-demand strategy a memory creator needs (counted with a counting
//! global allocator): the `Store` and its default caller 1.4 KiB, the
//! module's registration in the store's code registry 2.4 KiB (three B-tree
//! nodes), the instance and its `VMContext` 1.0 KiB, the memory's and the
//! table's records 0.25 KiB. No `Config` setting shrinks them, and the
//! example adds nothing per tenant but the `(Store, Instance)` handles in
//! its window. So on the dense layout the floor is 8 KiB of slot + 0.4
//! KiB of page tables + 5 KiB of heap: under 10 KiB needs the data page
//! shared or never materialised. The guarded layout's image mapping does
//! that, at 3 mappings a slot; the dense layout's copy cannot.

use crate::report::{BackendRun, Probe};
use crate::run::{self, Options};
use crate::worker::Tenants;
use crate::{Args, Backend, common};
use instance_pool::wasmtime::{PooledMemoryCreator, PooledModule, PooledStackCreator};
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
    /// On the crate's pool: the module with its data in an image (`pre` is
    /// of its module).
    pooled: Option<PooledModule>,
    limits: StoreLimits,
    async_calls: bool,
}

impl Tenants for WasmTenants {
    type Tenant = (Store<StoreLimits>, Instance);

    fn instantiate(&self) -> Result<Self::Tenant, String> {
        let mut store = Store::new(&self.engine, self.limits.clone());
        store.limiter(|limits| limits);
        let (pre, store_mut) = (&self.pre, &mut store);
        let instance = match (&self.pooled, self.async_calls) {
            (Some(m), true) => block_on(m.instantiate_pre_async(store_mut, pre)),
            (Some(m), false) => m.instantiate_pre(store_mut, pre),
            (None, true) => block_on(pre.instantiate_async(store_mut)),
            (None, false) => pre.instantiate(store_mut),
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

/// Pages of the ranges `(start, len)` in memory (bit 63 of each page's
/// entry in `/proc/self/pagemap`).
fn resident_pages(ranges: impl IntoIterator<Item = (usize, usize)>) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let page = instance_pool::host_page_size();
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").ok()?;
    let mut buf = vec![0u8; 64 << 10];
    let mut present = 0;
    for (start, len) in ranges {
        pagemap
            .seek(SeekFrom::Start((start / page * 8) as u64))
            .ok()?;
        let mut left = len / page;
        while left > 0 {
            let n = (left * 8).min(buf.len());
            pagemap.read_exact(&mut buf[..n]).ok()?;
            present += buf[..n]
                .chunks_exact(8)
                .filter(|e| e[7] & 0x80 != 0)
                .count() as u64;
            left -= n / 8;
        }
    }
    Some(present)
}

/// `"{bytes} in all, {bytes} per live instance"` for `pages` host pages
/// (`None`: `missing` says what could not be found).
fn share(pages: Option<u64>, live: usize, missing: &str) -> String {
    pages.map_or(format!("- ({missing} not found)"), |pages| {
        let bytes = pages as f64 * instance_pool::host_page_size() as f64;
        format!(
            "{} in all, {} per live instance",
            common::fmt_bytes(bytes),
            common::fmt_bytes(bytes / live.max(1) as f64)
        )
    })
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
    // Where the crate's memory slab starts, for the notes.
    let mut memory_slab = None;
    let (pool, stacks, name, detail) = match backend {
        Backend::Pool => {
            let maps = mappings();
            let pool =
                PoolingInstanceAllocator::new(&pool_config).map_err(|e| format!("pool: {e}"))?;
            memory_slab = new_reservation(&maps, &mappings());
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
                "this crate's pool through PooledMemoryCreator and PooledModule: {n} {layout} slots, {}, data {}",
                m.memory_protection.name(),
                match m.memory_layout {
                    instance_pool::MemoryLayout::Dense => "copied into each slot",
                    _ => "mapped copy-on-write",
                }
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
    let wasm = wat::parse_str(wat(args.image_size)).map_err(|e| format!("module: {e}"))?;
    let pooled = match &pool {
        Some(pool) => {
            let m = PooledModule::new(pool, &engine, &wasm, Module::from_binary)
                .map_err(|e| format!("module: {e:#}"))?;
            if let Some(why) = m.fallback_reason() {
                return Err(format!("module: data not in an image: {why}"));
            }
            Some(m)
        }
        None => None,
    };
    let module = match &pooled {
        Some(m) => m.module().clone(),
        None => Module::from_binary(&engine, &wasm).map_err(|e| format!("module: {e:#}"))?,
    };
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
        pooled,
        limits: StoreLimitsBuilder::new()
            .memory_size(2 * WASM_PAGE_SIZE)
            .table_elements(TABLE as usize)
            .instances(1)
            .build(),
        async_calls: args.async_calls,
    };
    let pre_guard = if pool_config.get_guard_before_memory() {
        guard
    } else {
        0
    };
    // The bytes of each live tenant, where they are: its memory slot's
    // pages, its fiber stack's; the rest of the RSS is the heap (Wasmtime's
    // records of the store and instance).
    let notes = |live: usize| {
        let mut notes = Vec::new();
        if pool.is_some() {
            let slots = memory_slab.map(|start| {
                (0..n as usize).map(move |i| (start + pre_guard + i * (slot + guard), slot))
            });
            let pages = slots.and_then(resident_pages);
            notes.push((
                "memory slots' RSS (in the RSS above)".to_string(),
                share(pages, live, "memory slab"),
            ));
        }
        if let Some(slab) = stacks {
            let pages = slab.and_then(|range| resident_pages([range]));
            let mut text = share(pages, live, "stack slab");
            if let Some(pages) = pages {
                text += &format!(
                    " ({:.2} pages of each {} stack)",
                    pages as f64 / live.max(1) as f64,
                    common::fmt_bytes(FIBER_STACK as f64)
                );
            }
            notes.push(("fiber stacks' RSS (in the RSS above)".to_string(), text));
        }
        notes
    };
    let outcome = run::measure(&tenants, opts, pool.as_ref(), before, idle, &notes)?;
    drop(tenants);
    Ok(BackendRun::new(name, outcome))
}
