//! `--engine synthetic` (the default): each tenant is a store of this crate
//! with one memory (the image, room to grow to `--max-pages`) and one table,
//! used from Rust: grow the memory by a page, write a byte at offset 70,000,
//! set a table element.

use crate::report::{BackendRun, Probe};
use crate::run::{self, Options};
use crate::worker::Tenants;
use crate::{Args, common};
use instance_pool::{
    Instance, InstanceAllocator, InstanceLayout, MemoryImage, MemoryType,
    OnDemandInstanceAllocator, PoolingInstanceAllocator, Store, StoreLimits, StoreLimitsBuilder,
    TableType, WASM_PAGE_SIZE,
};

struct Synthetic<'a, A> {
    allocator: &'a A,
    layout: InstanceLayout,
    limits: StoreLimits,
}

impl<A: InstanceAllocator + Sync> Tenants for Synthetic<'_, A> {
    type Tenant = (Store<StoreLimits>, Instance);

    fn instantiate(&self) -> Result<Self::Tenant, String> {
        let mut store = Store::new(self.allocator, self.limits.clone());
        store.limiter(|limits| limits);
        let instance = store.instantiate(&self.layout).map_err(|e| e.to_string())?;
        Ok((store, instance))
    }

    fn work(&self, (store, instance): &mut Self::Tenant) -> Result<(), String> {
        let memory = instance.memory(store, 0).ok_or("no memory 0")?;
        let table = instance.table(store, 0).ok_or("no table 0")?;
        memory
            .grow(store, 1)
            .and_then(|_| table.set(store, 3, 42))
            .map_err(|e| e.to_string())?;
        memory.data_mut(store)[70_000] = 1;
        Ok(())
    }
}

pub fn run(args: &Args, opts: &Options) -> Result<BackendRun, String> {
    let tenants = args.tenants();
    let image_pages = args.image_size.div_ceil(WASM_PAGE_SIZE) as u64;
    let min_pages = image_pages.max(1);
    let max_pages = (args.max_pages as u64).max(min_pages + 1);
    let image = MemoryImage::new(&vec![7u8; args.image_size]).map_err(|e| e.to_string())?;
    let layout = InstanceLayout::new()
        .memory_with_image(MemoryType::new(min_pages, Some(max_pages)), image)
        .table(TableType::new(10, Some(100)));
    let limits = StoreLimitsBuilder::new()
        .memory_size(max_pages as usize * WASM_PAGE_SIZE)
        .table_elements(100)
        .build();

    let before = Probe::now();
    let pool = if args.on_demand {
        None
    } else {
        let mut config = crate::pool_config(args);
        config
            .total_tables(args.tenants)
            // The layout's table maximum: small table slots share pages.
            .table_elements(100);
        Some(PoolingInstanceAllocator::new(&config).map_err(|e| format!("pool: {e}"))?)
    };
    let on_demand = OnDemandInstanceAllocator::default();
    let idle = Probe::now();

    let (name, detail) = match &pool {
        None => (
            "on-demand".to_string(),
            "on-demand (mmap per memory)".to_string(),
        ),
        Some(pool) => {
            let m = pool.metrics();
            let c = pool.config();
            let (slot, guard) = (c.get_max_memory_size(), c.get_memory_guard_size());
            (
                format!("instance-pool, {}", m.memory_layout.name()),
                format!(
                    "pool: {tenants} {} slots of {} + {} guard, keep-resident {}, {}, batches of {}",
                    m.memory_layout.name(),
                    common::fmt_bytes(slot as f64),
                    common::fmt_bytes(guard as f64),
                    common::fmt_bytes(args.keep_resident as f64),
                    m.memory_protection.name(),
                    c.get_decommit_batch_size()
                ),
            )
        }
    };
    println!(
        "density: {tenants} synthetic tenants on {} thread(s) for {} s; image {}, {detail}; {} cores",
        args.threads,
        args.seconds.as_secs_f64(),
        common::fmt_bytes(args.image_size as f64),
        crate::cores(),
    );
    let no_notes = |_: usize| Vec::new();
    let outcome = match &pool {
        Some(pool) => {
            let tenants = Synthetic {
                allocator: pool,
                layout,
                limits,
            };
            run::measure(&tenants, opts, Some(pool), before, idle, &no_notes)?
        }
        None => {
            let tenants = Synthetic {
                allocator: &on_demand,
                layout,
                limits,
            };
            run::measure(&tenants, opts, None, before, idle, &no_notes)?
        }
    };
    Ok(BackendRun::new(name, outcome))
}
