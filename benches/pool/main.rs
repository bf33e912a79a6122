//! Benchmarks of the pooling allocator against the on-demand allocator and
//! a hand-written "raw floor" (the bare syscalls, no bookkeeping).
//!
//! `cargo bench --bench pool` runs every group (a few minutes on 2 cores)
//! and ends with a table of ratios computed from this run's medians;
//! `cargo bench --bench pool -- cycle` runs the groups whose names contain
//! `cycle`. See `benches/README.md` for what each group measures.
//!
//! Files: `raw.rs` (the hand-written syscall floor), `summary.rs` (the
//! ratio table, from criterion's `estimates.json`).

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, measurement::WallTime};
use instance_pool::{
    InstanceAllocator, InstanceLayout, MemoryImage, MemoryLayout, MemoryProtection, MemoryType,
    OnDemandInstanceAllocator, PoolingConfig, PoolingInstanceAllocator, StackPool, StackPoolConfig,
    Store, StoreLimits, TableType, WASM_PAGE_SIZE,
};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The tenant's layout in `cycle`, `cycle_threads` and `grow`: one memory
/// of 1..=160 pages starting with `image`, one table of 10..=100 elements.
fn tenant_layout(image: &Arc<MemoryImage>) -> InstanceLayout {
    InstanceLayout::new()
        .memory_with_image(MemoryType::new(1, Some(160)), image.clone())
        .table(TableType::new(10, Some(100)))
}

/// A pool of `slots` of everything, otherwise `PoolingConfig::default()`
/// (4 GiB slots, 32 MiB guards, no keep-resident) changed by `tune`.
fn pool(slots: u32, tune: impl FnOnce(&mut PoolingConfig)) -> PoolingInstanceAllocator {
    let mut config = PoolingConfig::default();
    config
        .total_instances(slots)
        .total_memories(slots)
        .total_tables(slots);
    tune(&mut config);
    PoolingInstanceAllocator::new(&config).expect("bench pool")
}

/// The configuration that issues the fewest TLB-flushing syscalls per
/// request: no memory keep-resident, so a released slot's pages are
/// discarded, batched 16 at a time (one `madvise` + one `mprotect` per run
/// of neighbouring slots), and the table page kept resident.
fn batched_pool(protection: MemoryProtection) -> PoolingInstanceAllocator {
    pool(64, |c| {
        c.table_keep_resident(4 * KIB)
            .decommit_batch_size(16)
            .memory_protection(protection);
    })
}

/// A pool of 64 with 1 MiB kept resident, on `protection` (64 slots, so
/// that a batch of 16 never holds every slot of two threads).
fn keep_pool(protection: MemoryProtection, batch: usize) -> PoolingInstanceAllocator {
    pool(64, |c| {
        c.memory_keep_resident(MIB)
            .decommit_batch_size(batch)
            .memory_protection(protection);
    })
}

const MARKERS: MemoryProtection = MemoryProtection::GuardMarkers;
const MPROTECT: MemoryProtection = MemoryProtection::Mprotect;
/// For engines that check bounds themselves: growth and release change no
/// protection.
const CHECKED: MemoryProtection = MemoryProtection::BoundsChecked;

/// One tenant request: new store (with a limiter, as a host would have),
/// instantiate, grow by a page, write a byte in the new page, set a table
/// element, drop the store.
fn tenant_cycle(allocator: &impl InstanceAllocator, layout: &InstanceLayout) {
    let mut store = Store::new(allocator, StoreLimits::default());
    store.limiter(|limits| limits);
    let instance = store.instantiate(layout).expect("instantiate");
    let memory = instance.memory(&store, 0).expect("memory 0");
    memory.grow(&mut store, 1).expect("grow");
    memory.data_mut(&mut store)[70_000] = 1;
    let table = instance.table(&store, 0).expect("table 0");
    table.set(&mut store, 3, 42).expect("table set");
    black_box(&store);
}

/// A request that does not grow: instantiate, write a byte of the first
/// page, set a table element, drop. With keep-resident covering the
/// minimum, its release makes no syscall at all: the common serverless
/// case.
fn tenant_cycle_no_grow(allocator: &impl InstanceAllocator, layout: &InstanceLayout) {
    let mut store = Store::new(allocator, StoreLimits::default());
    store.limiter(|limits| limits);
    let instance = store.instantiate(layout).expect("instantiate");
    let memory = instance.memory(&store, 0).expect("memory 0");
    memory.data_mut(&mut store)[60_000] = 1;
    let table = instance.table(&store, 0).expect("table 0");
    table.set(&mut store, 3, 42).expect("table set");
    black_box(&store);
}

/// The same request on a store kept between requests: instead of dropping
/// it and instantiating again, `Store::reset` puts the instance back to its
/// just-instantiated state in place (same slots, no limiter calls).
fn tenant_cycle_reset(store: &mut Store<StoreLimits>, instance: instance_pool::Instance) {
    let memory = instance.memory(store, 0).expect("memory 0");
    memory.grow(store, 1).expect("grow");
    memory.data_mut(store)[70_000] = 1;
    let table = instance.table(store, 0).expect("table 0");
    table.set(store, 3, 42).expect("table set");
    black_box(&*store);
    store.reset().expect("reset");
}

#[path = "../common/estimates.rs"]
mod estimates;
mod raw;
mod summary;
mod threads;

fn short(group: &mut BenchmarkGroup<'_, WallTime>, measure_secs: u64, samples: usize) {
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(measure_secs))
        .sample_size(samples);
}

fn cycle(c: &mut Criterion) {
    let image = MemoryImage::new(&[7u8; 4 * KIB]).unwrap();
    let layout = tenant_layout(&image);
    let mut g = c.benchmark_group("cycle");
    short(&mut g, 3, 30);

    let default = pool(16, |_| {});
    g.bench_function("pool_default", |b| {
        b.iter(|| tenant_cycle(&default, &layout))
    });
    drop(default);
    let default = pool(16, |c| {
        c.memory_protection(MPROTECT);
    });
    g.bench_function("pool_default_mprotect", |b| {
        b.iter(|| tenant_cycle(&default, &layout))
    });
    drop(default);

    let keep_mprotect = keep_pool(MPROTECT, 1);
    g.bench_function("pool_keep_resident_mprotect", |b| {
        b.iter(|| tenant_cycle(&keep_mprotect, &layout))
    });
    drop(keep_mprotect);
    let keep_batched = keep_pool(MARKERS, 16);
    g.bench_function("pool_keep_resident_batched", |b| {
        b.iter(|| tenant_cycle(&keep_batched, &layout))
    });
    drop(keep_batched);
    let keep = keep_pool(MARKERS, 1);
    g.bench_function("pool_keep_resident_no_grow", |b| {
        b.iter(|| tenant_cycle_no_grow(&keep, &layout))
    });
    g.bench_function("pool_keep_resident", |b| {
        b.iter(|| tenant_cycle(&keep, &layout))
    });
    {
        let mut store = Store::new(&keep, StoreLimits::default());
        store.limiter(|limits| limits);
        let instance = store.instantiate(&layout).expect("instantiate");
        g.bench_function("pool_keep_resident_reset", |b| {
            b.iter(|| tenant_cycle_reset(&mut store, instance))
        });
    }
    drop(keep);

    let checked = keep_pool(CHECKED, 1);
    g.bench_function("pool_bounds_checked", |b| {
        b.iter(|| tenant_cycle(&checked, &layout))
    });
    drop(checked);
    let checked = pool(16, |c| {
        c.memory_protection(CHECKED);
    });
    g.bench_function("pool_bounds_checked_default", |b| {
        b.iter(|| tenant_cycle(&checked, &layout))
    });
    drop(checked);
    let background = pool(16, |c| {
        c.background_revocation(true);
    });
    g.bench_function("pool_default_background", |b| {
        b.iter(|| tenant_cycle(&background, &layout))
    });
    drop(background);

    let default_reset = pool(16, |_| {});
    {
        let mut store = Store::new(&default_reset, StoreLimits::default());
        store.limiter(|limits| limits);
        let instance = store.instantiate(&layout).expect("instantiate");
        g.bench_function("pool_default_reset", |b| {
            b.iter(|| tenant_cycle_reset(&mut store, instance))
        });
    }
    drop(default_reset);

    let batched = batched_pool(MARKERS);
    g.bench_function("pool_batched", |b| {
        b.iter(|| tenant_cycle(&batched, &layout))
    });
    drop(batched);
    let batched = batched_pool(MPROTECT);
    g.bench_function("pool_batched_mprotect", |b| {
        b.iter(|| tenant_cycle(&batched, &layout))
    });
    drop(batched);

    let on_demand = OnDemandInstanceAllocator::default();
    g.bench_function("on_demand", |b| {
        b.iter(|| tenant_cycle(&on_demand, &layout))
    });

    let bytes = [7u8; 4 * KIB];
    g.bench_function("raw_mmap_munmap", |b| b.iter(|| raw::cycle_mmap(&bytes)));
    let mut slot = raw::Slot::new(&bytes);
    g.bench_function("raw_memset_madvise", |b| b.iter(|| slot.cycle()));
    let mut marked = raw::MarkedSlots::new(1);
    g.bench_function("raw_guard_markers", |b| b.iter(|| marked.cycle()));
    let mut marked = raw::MarkedSlots::new(16);
    g.bench_function("raw_guard_markers_batched", |b| b.iter(|| marked.cycle()));
    g.finish();
}

fn cycle_threads(c: &mut Criterion) {
    let image = MemoryImage::new(&[7u8; 4 * KIB]).unwrap();
    let layout = tenant_layout(&image);
    let mut g = c.benchmark_group("cycle_threads");
    short(&mut g, 3, 20);
    let keep = keep_pool(MARKERS, 1);
    let keep_batched = keep_pool(MARKERS, 16);
    let keep_mprotect = keep_pool(MPROTECT, 1);
    let default = pool(16, |_| {});
    let default_mprotect = pool(16, |c| {
        c.memory_protection(MPROTECT);
    });
    let shipped = PoolingInstanceAllocator::new(&PoolingConfig::default()).expect("bench pool");
    let batched = batched_pool(MARKERS);
    let checked = keep_pool(CHECKED, 1);
    let checked_default = pool(16, |c| {
        c.memory_protection(CHECKED);
    });
    let background = pool(16, |c| {
        c.background_revocation(true);
    });
    let on_demand = OnDemandInstanceAllocator::default();
    thread_local! {
        static RAW: std::cell::RefCell<Option<raw::Slot>> = const { std::cell::RefCell::new(None) };
        static MARKED: std::cell::RefCell<Option<raw::MarkedSlots>> = const { std::cell::RefCell::new(None) };
    }
    let bytes = [7u8; 4 * KIB];
    let raw_cycle =
        || RAW.with_borrow_mut(|slot| slot.get_or_insert_with(|| raw::Slot::new(&bytes)).cycle());
    let marked_cycle =
        || MARKED.with_borrow_mut(|s| s.get_or_insert_with(|| raw::MarkedSlots::new(16)).cycle());
    let rows: [(&str, &(dyn Fn() + Sync)); 17] = [
        ("pool_keep_resident", &|| tenant_cycle(&keep, &layout)),
        ("pool_keep_resident_no_grow", &|| {
            tenant_cycle_no_grow(&keep, &layout)
        }),
        ("pool_default_no_grow", &|| {
            tenant_cycle_no_grow(&default, &layout)
        }),
        ("pool_keep_resident_batched", &|| {
            tenant_cycle(&keep_batched, &layout)
        }),
        ("pool_keep_resident_mprotect", &|| {
            tenant_cycle(&keep_mprotect, &layout)
        }),
        ("pool_default", &|| tenant_cycle(&default, &layout)),
        ("pool_shipped", &|| tenant_cycle(&shipped, &layout)),
        ("pool_default_mprotect", &|| {
            tenant_cycle(&default_mprotect, &layout)
        }),
        ("pool_batched", &|| tenant_cycle(&batched, &layout)),
        ("pool_bounds_checked", &|| tenant_cycle(&checked, &layout)),
        ("pool_bounds_checked_default", &|| {
            tenant_cycle(&checked_default, &layout)
        }),
        ("pool_default_background", &|| {
            tenant_cycle(&background, &layout)
        }),
        ("on_demand", &|| tenant_cycle(&on_demand, &layout)),
        // Each thread its own hand-written slots (made on first use).
        ("raw_memset_madvise", &raw_cycle),
        ("raw_guard_markers_batched", &marked_cycle),
        ("raw_bounds_checked", &|| {
            thread_local! {
                static SCANNED: std::cell::RefCell<Option<raw::ScannedSlot>> = const { std::cell::RefCell::new(None) };
            }
            SCANNED.with_borrow_mut(|s| s.get_or_insert_with(raw::ScannedSlot::new).cycle())
        }),
        ("raw_guard_markers", &|| {
            thread_local! {
                static ONE: std::cell::RefCell<Option<raw::MarkedSlots>> = const { std::cell::RefCell::new(None) };
            }
            ONE.with_borrow_mut(|s| s.get_or_insert_with(|| raw::MarkedSlots::new(1)).cycle())
        }),
    ];
    std::thread::scope(|s| {
        for threads in [1usize, 2] {
            // Long-lived, pinned: made once for all rows of this count.
            let workers = threads::Workers::new(s, threads);
            // One iteration = one tenant cycle on every thread.
            g.throughput(Throughput::Elements(threads as u64));
            for (name, work) in rows {
                g.bench_function(BenchmarkId::new(name, threads), |b| {
                    b.iter_custom(|iters| workers.run(iters, work))
                });
            }
            workers.stop();
        }
    });
    g.finish();
}

const IMAGE_SIZES: [(usize, &str); 4] = [
    (4 * KIB, "4KiB"),
    (MIB, "1MiB"),
    (16 * MIB, "16MiB"),
    (64 * MIB, "64MiB"),
];

fn cold_start(c: &mut Criterion) {
    let mut g = c.benchmark_group("cold_start");
    short(&mut g, 2, 20);
    // Default slots (4 GiB) hold every image; a few slots are plenty.
    let pool = pool(4, |_| {});
    // One slot and two images alternated: every instantiation finds the
    // other image in the slot and must map its own (no affinity hit).
    let switching = self::pool(1, |_| {});
    let keep = self::pool(4, |c| {
        c.memory_keep_resident(MIB);
    });
    let keep_mprotect = self::pool(4, |c| {
        c.memory_keep_resident(MIB).memory_protection(MPROTECT);
    });
    // The dense layout copies the image in: slots of 32 MiB hold images up
    // to 16 MiB.
    let dense = self::pool(4, |c| {
        c.max_memory_size(32 * MIB)
            .memory_guard_size(64 * KIB)
            .memory_layout(MemoryLayout::Dense);
    });
    let on_demand = OnDemandInstanceAllocator::default();
    let start = |allocator: &dyn Fn() -> Store<StoreLimits>, layout: &InstanceLayout| {
        let mut store = allocator();
        store.limiter(|limits| limits);
        black_box(store.instantiate(layout).expect("instantiate"));
    };
    for (size, name) in IMAGE_SIZES {
        let pages = size.div_ceil(WASM_PAGE_SIZE) as u64;
        let layout = |byte: u8| {
            InstanceLayout::new()
                .memory_with_image(
                    MemoryType::new(pages, Some(pages + 160)),
                    MemoryImage::new(&vec![byte; size]).unwrap(),
                )
                .table(TableType::new(10, Some(100)))
        };
        let (first, second) = (layout(7), layout(8));
        g.bench_function(BenchmarkId::new("pool", name), |b| {
            b.iter(|| start(&|| Store::new(&pool, StoreLimits::default()), &first))
        });
        let mut flip = false;
        g.bench_function(BenchmarkId::new("pool_image_switch", name), |b| {
            b.iter(|| {
                flip = !flip;
                let layout = if flip { &first } else { &second };
                start(&|| Store::new(&switching, StoreLimits::default()), layout)
            })
        });
        g.bench_function(BenchmarkId::new("pool_keep_resident", name), |b| {
            b.iter(|| start(&|| Store::new(&keep, StoreLimits::default()), &first))
        });
        g.bench_function(BenchmarkId::new("pool_keep_resident_mprotect", name), |b| {
            b.iter(|| {
                start(
                    &|| Store::new(&keep_mprotect, StoreLimits::default()),
                    &first,
                )
            })
        });
        if size <= 16 * MIB {
            g.bench_function(BenchmarkId::new("pool_dense", name), |b| {
                b.iter(|| start(&|| Store::new(&dense, StoreLimits::default()), &first))
            });
        }
        g.bench_function(BenchmarkId::new("on_demand", name), |b| {
            b.iter(|| start(&|| Store::new(&on_demand, StoreLimits::default()), &first))
        });
    }
    g.finish();
}

fn grow(c: &mut Criterion) {
    let image = MemoryImage::new(&[7u8; 4 * KIB]).unwrap();
    let layout = tenant_layout(&image);
    let mut g = c.benchmark_group("grow");
    short(&mut g, 3, 20);
    // One iteration: instantiate at 1 page, 159 grows of 1 page, release.
    g.throughput(Throughput::Elements(159));
    fn grow_to_160(allocator: &impl InstanceAllocator, layout: &InstanceLayout) {
        let mut store = Store::new(allocator, StoreLimits::default());
        store.limiter(|limits| limits);
        let instance = store.instantiate(layout).expect("instantiate");
        let memory = instance.memory(&store, 0).expect("memory 0");
        for _ in 1..160 {
            memory.grow(&mut store, 1).expect("grow");
        }
        black_box(&store);
    }
    let default = pool(4, |_| {});
    g.bench_function("pool_default", |b| {
        b.iter(|| grow_to_160(&default, &layout))
    });
    let default = pool(4, |c| {
        c.memory_protection(MPROTECT);
    });
    g.bench_function("pool_default_mprotect", |b| {
        b.iter(|| grow_to_160(&default, &layout))
    });
    let keep = pool(4, |c| {
        c.memory_keep_resident(MIB);
    });
    g.bench_function("pool_keep_resident", |b| {
        b.iter(|| grow_to_160(&keep, &layout))
    });
    let on_demand = OnDemandInstanceAllocator::default();
    g.bench_function("on_demand", |b| b.iter(|| grow_to_160(&on_demand, &layout)));
    g.finish();
}

fn pool_new(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool_new");
    short(&mut g, 3, 20);
    for slots in [1_000u32, 10_000] {
        // 4 GiB + 32 MiB guard per memory slot (the defaults): 10,000 slots
        // reserve about 40 TiB. Tables are kept to 100 slots of 100
        // elements so their (read-write) slab does not dominate.
        let mut config = PoolingConfig::default();
        config
            .total_instances(slots)
            .total_memories(slots)
            .total_tables(100)
            .table_elements(100);
        g.bench_function(BenchmarkId::from_parameter(slots), |b| {
            b.iter(|| drop(black_box(PoolingInstanceAllocator::new(&config).unwrap())))
        });
    }
    // The dense layout: 100,000 and 1,000,000 slots of 128 KiB + 64 KiB
    // guard, tables of 100 elements; nothing is done per slot until a slot
    // is first used, so a million slots cost what 100,000 do.
    for slots in [100_000u32, 1_000_000] {
        let mut config = PoolingConfig::default();
        config
            .total_instances(slots)
            .total_memories(slots)
            .total_tables(slots)
            .table_elements(100)
            .max_memory_size(2 * WASM_PAGE_SIZE)
            .memory_guard_size(64 * KIB)
            .memory_layout(MemoryLayout::Dense);
        g.bench_function(format!("dense_{slots}"), |b| {
            b.iter(|| drop(black_box(PoolingInstanceAllocator::new(&config).unwrap())))
        });
    }
    // A million fiber stacks of 128 KiB + a guard page (a million live
    // async Wasmtime stores hold one each): the same, per stack.
    let mut config = StackPoolConfig::default();
    config.total_stacks(1_000_000).stack_size(128 * KIB);
    g.bench_function("stacks_1000000", |b| {
        b.iter(|| drop(black_box(StackPool::new(&config).unwrap())))
    });
    g.finish();
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    cycle(&mut c);
    cycle_threads(&mut c);
    cold_start(&mut c);
    grow(&mut c);
    pool_new(&mut c);
    c.final_summary();
    summary::summary(since);
}
