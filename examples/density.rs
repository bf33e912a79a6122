//! The main job, simplest form: many short-lived tenants on one pool.
//!
//! `cargo run --release --example density`
use instance_pool::*;
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let mut config = PoolingConfig::default();
    config
        .total_instances(1000)
        .total_memories(1000)
        .total_tables(1000)
        .memory_keep_resident(1 << 20);
    let pool = PoolingInstanceAllocator::new(&config)?;
    let image = MemoryImage::new(&[7u8; 4096])?;
    let layout = InstanceLayout::new()
        .memory_with_image(MemoryType::new(1, Some(160)), image)
        .table(TableType::new(10, Some(100)));

    let run_for = Duration::from_secs(3);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < run_for {
        let mut store = Store::new(&pool, StoreLimits::default());
        store.limiter(|l| l);
        let instance = store.instantiate(&layout)?;
        let memory = instance.memory(&store, 0).unwrap();
        memory.grow(&mut store, 1)?;
        memory.data_mut(&mut store)[70_000] = 1;
        instance.table(&store, 0).unwrap().set(&mut store, 3, 42)?;
        drop(store);
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{n} tenants in {secs:.2} s: {:.0} instances/s",
        n as f64 / secs
    );
    println!("{:#?}", pool.metrics());
    Ok(())
}
