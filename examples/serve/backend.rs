//! The ways the server runs its wasm: Wasmtime on this crate's pools
//! (`PooledMemoryCreator` and `PooledStackCreator`), on Wasmtime's own
//! pooling allocator, or on Wasmtime's default on-demand allocator (no pool
//! at all). All compile the same module with the same code settings; only
//! where memories and stacks come from differs. On the crate's pools the
//! module is a `PooledModule`: its 256 KiB of data is a copy-on-write
//! memory image (a memfd), as Wasmtime's own pool maps its own image of a
//! plain `Module`; the instantiation waits for a memory slot in the pool's
//! admission queue, up to a deadline, instead of failing when all are
//! taken. `benches/wasmtime` includes this file to measure a request
//! without HTTP.

use instance_pool::wasmtime::{PooledMemoryCreator, PooledModule, PooledStackCreator};
use instance_pool::{
    MemoryProtection, PoolingConfig, PoolingInstanceAllocator, StackPool, StackPoolConfig,
};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use wasmtime::{
    Config, Engine, Instance, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder,
};

/// The handler every request runs, without its data (see [`handler_wasm`]).
/// Memory: page 1 holds the request's input (at 0x10000) and output (at
/// 0x11000), pages 2-5 the data.
const WAT: &str = include_str!("handler.wat");

/// Where the handler's data segment starts, and its length: 256 KiB, in the
/// memory's minimum of 6 pages (so it is a memory image on both pools).
pub const DATA_AT: usize = 0x20000;
pub const DATA_LEN: usize = 256 << 10;
/// The tenant limit the server and the bench use by default: the
/// handler's minimum of 6 wasm pages and room for two more, so a growth by
/// 3 (a quarter of the load's requests) is refused.
pub const MEMORY_LIMIT: usize = 8 << 16;

/// Where the input and output live, and the largest input.
pub const INPUT_AT: usize = 0x10000;
pub const OUTPUT_AT: usize = 0x11000;
pub const MAX_INPUT: usize = 0x1000;

/// Sizes the backends share. Both pools keep a released memory's first
/// 512 KiB (all a tenant may have under the default `--memory-limit`)
/// resident and reset its written pages in place (`PAGEMAP_SCAN`; a written
/// page of the image gets the image's bytes back), and a stack's top 16
/// KiB.
pub const SLOT: usize = 1 << 20;
const GUARD: usize = 64 << 10;
const STACK: usize = 1 << 20;
const KEEP_RESIDENT: usize = MEMORY_LIMIT;
const STACK_KEEP_RESIDENT: usize = 16 << 10;
/// How long an instantiation on the crate's pool waits for a memory slot
/// by default (see [`Backend::admission_wait`]).
pub const ADMISSION_WAIT: Duration = Duration::from_secs(1);

/// The first word of the handler's 4 KiB data page `k` (what its
/// `$expected` computes): every eighth page is all zero.
fn data_word(k: usize) -> u64 {
    if k % 8 == 7 {
        0
    } else {
        (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// The handler's data: 64 pages of 4 KiB, each a known first word, then
/// text and a zero tail (strings, tables, zero-initialised statics), every
/// eighth page all zero.
pub fn handler_data() -> Vec<u8> {
    const TEXT: &[u8] = b"instance-pool serve v1: a handler's strings, tables and statics. ";
    let mut data = vec![0; DATA_LEN];
    for (k, page) in data.chunks_mut(4096).enumerate() {
        if k % 8 == 7 {
            continue;
        }
        page[..8].copy_from_slice(&data_word(k).to_le_bytes());
        for (i, b) in page[8..3072].iter_mut().enumerate() {
            *b = TEXT[(i + k) % TEXT.len()];
        }
    }
    data
}

/// The handler in the binary format, its 256 KiB data segment at
/// [`DATA_AT`].
pub fn handler_wasm() -> wasmtime::Result<Vec<u8>> {
    use std::fmt::Write;
    let mut segment = format!("(data (i32.const {DATA_AT})\n  \"");
    for b in handler_data() {
        let _ = write!(segment, "\\{b:02x}");
    }
    segment.push_str("\")");
    let wat = WAT.replacen(";; @data", &segment, 1);
    Ok(wat::parse_str(wat)?)
}

/// Which allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Wasmtime on-demand, memories and stacks from this crate's pools.
    InstancePool,
    /// The same on the guard-marker path (`MemoryProtection::GuardMarkers`).
    InstancePoolMarkers,
    /// Wasmtime's own pooling allocator.
    WasmtimePooling,
    /// Wasmtime's default: an `mmap` per memory, a fresh stack per store.
    WasmtimeOnDemand,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::InstancePool => "wasmtime + instance-pool",
            Kind::InstancePoolMarkers => "wasmtime + instance-pool, markers",
            Kind::WasmtimePooling => "wasmtime pooling allocator",
            Kind::WasmtimeOnDemand => "wasmtime on-demand (no pool)",
        }
    }
}

/// A tenant's store data: its limits.
pub struct Tenant {
    limits: StoreLimits,
}

/// What one request's run gave.
#[derive(Debug)]
pub struct Reply {
    pub output: Vec<u8>,
    /// `memory.grow`'s result: the old size in pages, or -1.
    pub grow: i32,
    /// Bits set among the bytes a previous tenant writes: must be 0.
    pub leaked: u32,
}

/// The crate's memory pool and stack pool.
pub type Pools = (PoolingInstanceAllocator, StackPool);

/// The engine settings every backend shares (code, stacks, reservation),
/// then `kind`'s allocator; the crate's pools when it uses them.
/// `stacks` fiber stacks (at least `slots`: one a live store).
pub fn engine_config(
    kind: Kind,
    slots: u32,
    stacks: u32,
) -> wasmtime::Result<(Config, Option<Pools>)> {
    let mut config = Config::new();
    config
        .max_wasm_stack(256 << 10)
        .memory_reservation(SLOT as u64)
        .memory_guard_size(GUARD as u64)
        .memory_reservation_for_growth(0)
        .memory_may_move(false)
        .async_stack_size(STACK)
        // Nothing of one tenant visible to the next, stacks included: the
        // crate's stack pool always zeroes; Wasmtime's only when asked.
        .async_stack_zeroing(true);
    let pools = match kind {
        Kind::InstancePool | Kind::InstancePoolMarkers => {
            let protection = if kind == Kind::InstancePool {
                MemoryProtection::Mprotect
            } else {
                MemoryProtection::GuardMarkers
            };
            let mut p = PoolingConfig::default();
            p.total_instances(slots)
                .total_memories(slots)
                .total_tables(1)
                .max_memory_size(SLOT)
                .memory_guard_size(GUARD)
                .memory_keep_resident(KEEP_RESIDENT)
                // Every page a tenant may grow stays resident between
                // tenants (KEEP_RESIDENT is the tenant limit): `mprotect`
                // keeps grown pages behind PROT_NONE, where guard markers
                // would discard them and fault them in again (markers take
                // 1.39x as long a request in benches/wasmtime, one run).
                .memory_protection(protection);
            let pool = PoolingInstanceAllocator::new(&p)?;
            let mut s = StackPoolConfig::default();
            s.total_stacks(stacks)
                .stack_size(STACK)
                .stack_keep_resident(STACK_KEEP_RESIDENT);
            let stacks = StackPool::new(&s)?;
            PooledMemoryCreator::new(&pool).install(&mut config);
            PooledStackCreator::new(&stacks).install(&mut config);
            Some((pool, stacks))
        }
        Kind::WasmtimePooling => {
            let mut p = PoolingAllocationConfig::new();
            p.total_core_instances(slots)
                .total_memories(slots)
                .total_stacks(stacks)
                .total_tables(0)
                .max_memory_size(SLOT)
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .async_stack_keep_resident(STACK_KEEP_RESIDENT)
                .pagemap_scan(wasmtime::Enabled::Auto);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
            None
        }
        Kind::WasmtimeOnDemand => None,
    };
    Ok((config, pools))
}

/// An engine, the module ready to instantiate, and the pools behind it.
pub struct Backend {
    engine: Engine,
    pre: InstancePre<Tenant>,
    /// The module with its data as a memory image (on the crate's pools).
    pooled: Option<PooledModule>,
    /// The crate's pools (for `InstancePool`).
    pub pools: Option<Pools>,
    memory_limit: usize,
    /// How long an instantiation on the crate's pool waits for a memory
    /// slot before it fails with `PoolExhausted` (zero: fails at once).
    pub admission_wait: Duration,
    pub requests: AtomicU64,
    pub refused_grows: AtomicU64,
    pub leaked: AtomicU64,
}

impl Backend {
    /// `slots` memories and stacks; every tenant's memory limited to
    /// `memory_limit` bytes.
    pub fn new(kind: Kind, slots: u32, memory_limit: usize) -> wasmtime::Result<Backend> {
        Backend::with_stacks(kind, slots, slots, memory_limit)
    }

    /// `slots` memories and `stacks` fiber stacks: more stacks than
    /// memories when more requests may be in flight than there are
    /// memories (the stores waiting for a memory hold no stack, but one
    /// that just got a memory may ask for a stack before the store that
    /// gave the memory back has returned its own).
    pub fn with_stacks(
        kind: Kind,
        slots: u32,
        stacks: u32,
        memory_limit: usize,
    ) -> wasmtime::Result<Backend> {
        let (config, pools) = engine_config(kind, slots, stacks.max(slots))?;
        let engine = Engine::new(&config)?;
        let wasm = handler_wasm()?;
        let pooled = match &pools {
            Some((pool, _)) => Some(PooledModule::new(
                pool,
                &engine,
                &wasm,
                Module::from_binary,
            )?),
            None => None,
        };
        if let Some(why) = pooled.as_ref().and_then(|m| m.fallback_reason()) {
            wasmtime::bail!("the handler's data is not a memory image: {why}");
        }
        let module = match &pooled {
            Some(m) => m.module().clone(),
            None => Module::new(&engine, &wasm)?,
        };
        let pre = Linker::new(&engine).instantiate_pre(&module)?;
        Ok(Backend {
            engine,
            pre,
            pooled,
            pools,
            memory_limit,
            admission_wait: ADMISSION_WAIT,
            requests: AtomicU64::new(0),
            refused_grows: AtomicU64::new(0),
            leaked: AtomicU64::new(0),
        })
    }

    /// A tenant's fresh store: its memory limited to `memory_limit`.
    pub fn store(&self) -> Store<Tenant> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.memory_limit)
            .instances(1)
            .build();
        let mut store = Store::new(&self.engine, Tenant { limits });
        store.limiter(|t| &mut t.limits);
        store
    }

    /// An instance of the handler in `store` (of [`store`](Self::store)):
    /// on the crate's pool through its `PooledModule` (its image mapped,
    /// waiting up to `admission_wait` for a slot), else Wasmtime's own
    /// instantiation.
    pub async fn instantiate(&self, store: &mut Store<Tenant>) -> wasmtime::Result<Instance> {
        match &self.pooled {
            Some(module) => {
                module
                    .instantiate_async_timeout(store, &[], self.admission_wait)
                    .await
            }
            None => self.pre.instantiate_async(store).await,
        }
    }

    /// One request: a fresh store with the tenant's limits, an instance on
    /// a pooled memory, the handler on a pooled fiber stack.
    pub async fn run(&self, input: &[u8], grow: u32) -> wasmtime::Result<Reply> {
        if input.len() > MAX_INPUT {
            wasmtime::bail!("input of {} bytes exceeds {MAX_INPUT}", input.len());
        }
        let mut store = self.store();
        let instance = self.instantiate(&mut store).await?;
        self.handle(&mut store, &instance, input, grow).await
    }

    /// The handler's calls on `instance`: check, write the input, run, read
    /// the output (what `run` does after instantiating; the bench calls it
    /// alone as its floor).
    pub async fn handle(
        &self,
        mut store: &mut Store<Tenant>,
        instance: &Instance,
        input: &[u8],
        grow: u32,
    ) -> wasmtime::Result<Reply> {
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| wasmtime::format_err!("no memory export"))?;
        instance
            .get_typed_func::<(), ()>(&mut store, "check")?
            .call_async(&mut store, ())
            .await?;
        memory.write(&mut store, INPUT_AT, input)?;
        let run = instance.get_typed_func::<(i32, i32), i32>(&mut store, "run")?;
        let grow = run
            .call_async(&mut store, (input.len() as i32, grow as i32))
            .await?;
        let mut output = vec![0; input.len()];
        memory.read(&*store, OUTPUT_AT, &mut output)?;
        let seen = instance
            .get_global(&mut store, "seen")
            .and_then(|g| g.get(&mut store).i32())
            .ok_or_else(|| wasmtime::format_err!("no i32 global `seen`"))?;
        let leaked = seen as u32;
        self.requests.fetch_add(1, Relaxed);
        self.leaked.fetch_add(u64::from(leaked), Relaxed);
        if grow == -1 {
            self.refused_grows.fetch_add(1, Relaxed);
        }
        Ok(Reply {
            output,
            grow,
            leaked,
        })
    }

    /// The Prometheus text for `/metrics`: the pools' metrics (for the
    /// crate's backend) and the server's counters.
    pub fn metrics(&self) -> String {
        let mut text = String::new();
        if let Some((pool, stacks)) = &self.pools {
            text.push_str(&pool.metrics().to_string());
            text.push_str(&stacks.metrics().to_string());
        }
        for (name, help, value) in [
            ("requests_total", "Requests run.", &self.requests),
            (
                "grow_refused_total",
                "memory.grow calls refused (-1).",
                &self.refused_grows,
            ),
            (
                "leaked_bits_total",
                "Bits a tenant found set that another wrote (must be 0).",
                &self.leaked,
            ),
        ] {
            text.push_str(&format!(
                "# HELP serve_{name} {help}\n# TYPE serve_{name} counter\nserve_{name} {}\n",
                value.load(Relaxed)
            ));
        }
        text
    }
}
