//! Benchmarks of the pooling allocator against the on-demand allocator and
//! a hand-written "raw floor" (the bare syscalls, no bookkeeping).
//!
//! `cargo bench --bench pool` runs every group (a few minutes on 2 cores)
//! and ends with a table of ratios computed from this run's medians;
//! `cargo bench --bench pool -- cycle` runs the groups whose names contain
//! `cycle`. See `benches/README.md` for what each group measures.

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, measurement::WallTime};
use instance_pool::{
    InstanceAllocator, InstanceLayout, MemoryImage, MemoryType, OnDemandInstanceAllocator,
    PoolingConfig, PoolingInstanceAllocator, Store, StoreLimits, TableType, WASM_PAGE_SIZE,
};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

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
fn batched_pool() -> PoolingInstanceAllocator {
    pool(64, |c| {
        c.table_keep_resident(4 * KIB).decommit_batch_size(16);
    })
}

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

/// The same request written by hand with `rustix::mm`: the syscall floor
/// the allocators are measured against.
mod raw {
    use rustix::mm::{self, Advice, MapFlags, MprotectFlags, ProtFlags};
    use std::ptr;

    const PAGE: usize = super::WASM_PAGE_SIZE;
    /// 160 pages plus a 32 MiB guard, like the on-demand allocator's
    /// reservation without the leading guard.
    const RESERVATION: usize = 160 * PAGE + (32 << 20);
    const RW: MprotectFlags = MprotectFlags::READ.union(MprotectFlags::WRITE);

    fn reserve() -> *mut u8 {
        // SAFETY: a fresh mapping at a kernel-chosen address aliases nothing.
        let p = unsafe {
            mm::mmap_anonymous(
                ptr::null_mut(),
                RESERVATION,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        };
        p.expect("mmap").cast()
    }

    /// mmap a reservation, mprotect the first page, copy the image in,
    /// mprotect the grown page, write, munmap. The table is a heap vector.
    pub fn cycle_mmap(image: &[u8]) {
        let base = reserve();
        // SAFETY: `base` is our own reservation of RESERVATION bytes; every
        // range below is inside it and made read-write before it is
        // touched; nothing references it after the munmap.
        unsafe {
            mm::mprotect(base.cast(), PAGE, RW).expect("mprotect");
            ptr::copy_nonoverlapping(image.as_ptr(), base, image.len());
            mm::mprotect(base.add(PAGE).cast(), PAGE, RW).expect("mprotect");
            base.add(70_000).write_volatile(1);
            let mut table = vec![0usize; 10];
            table[3] = 42;
            std::hint::black_box(&table);
            mm::munmap(base.cast(), RESERVATION).expect("munmap");
        }
    }

    /// One reused slot: `[0, 1 page)` stays read-write and holds the
    /// image between tenants; a request mprotects the grown page, writes,
    /// and the reset memsets the first page back to the image and zeroes,
    /// `madvise(DONTNEED)`s the grown page and makes it `PROT_NONE` again.
    pub struct Slot {
        base: *mut u8,
        image: Vec<u8>,
        table: [usize; 100],
    }

    impl Slot {
        pub fn new(image: &[u8]) -> Slot {
            let base = reserve();
            // SAFETY: the first page of our own reservation; nothing else
            // references it.
            unsafe {
                mm::mprotect(base.cast(), PAGE, RW).expect("mprotect");
                ptr::copy_nonoverlapping(image.as_ptr(), base, image.len());
            }
            Slot {
                base,
                image: image.to_vec(),
                table: [0; 100],
            }
        }

        pub fn cycle(&mut self) {
            let grown = self.base.wrapping_add(PAGE);
            // SAFETY: `[0, 2 pages)` of our own reservation; the grown page
            // is read-write before it is written and no reference to it
            // outlives the madvise/mprotect that take it back.
            unsafe {
                mm::mprotect(grown.cast(), PAGE, RW).expect("mprotect");
                self.base.add(70_000).write_volatile(1);
                self.table[3] = 42;
                std::hint::black_box(&self.table);
                // Reset: memset what stays resident, discard the rest.
                ptr::copy_nonoverlapping(self.image.as_ptr(), self.base, self.image.len());
                ptr::write_bytes(self.base.add(self.image.len()), 0, PAGE - self.image.len());
                self.table[..10].fill(0);
                mm::madvise(grown.cast(), PAGE, Advice::LinuxDontNeed).expect("madvise");
                mm::mprotect(grown.cast(), PAGE, MprotectFlags::empty()).expect("mprotect");
            }
        }
    }

    impl Drop for Slot {
        fn drop(&mut self) {
            // SAFETY: our own reservation; nothing references it any more.
            unsafe { mm::munmap(self.base.cast(), RESERVATION).expect("munmap") };
        }
    }
}

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

    let keep = pool(16, |c| {
        c.memory_keep_resident(MIB);
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

    let batched = batched_pool();
    g.bench_function("pool_batched", |b| {
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
    g.finish();
}

/// Runs `per_thread` calls of `work` on each of `threads` threads started
/// together; the wall time from the first start to the last finish.
fn on_threads(threads: usize, per_thread: u64, work: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..per_thread {
                        work();
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    end - start
}

fn cycle_threads(c: &mut Criterion) {
    let image = MemoryImage::new(&[7u8; 4 * KIB]).unwrap();
    let layout = tenant_layout(&image);
    let mut g = c.benchmark_group("cycle_threads");
    short(&mut g, 3, 20);
    let keep = pool(16, |c| {
        c.memory_keep_resident(MIB);
    });
    let default = pool(16, |_| {});
    let batched = batched_pool();
    let on_demand = OnDemandInstanceAllocator::default();
    thread_local! {
        static RAW: std::cell::RefCell<Option<raw::Slot>> = const { std::cell::RefCell::new(None) };
    }
    let bytes = [7u8; 4 * KIB];
    let raw_cycle =
        || RAW.with_borrow_mut(|slot| slot.get_or_insert_with(|| raw::Slot::new(&bytes)).cycle());
    let rows: [(&str, &(dyn Fn() + Sync)); 5] = [
        ("pool_keep_resident", &|| tenant_cycle(&keep, &layout)),
        ("pool_default", &|| tenant_cycle(&default, &layout)),
        ("pool_batched", &|| tenant_cycle(&batched, &layout)),
        ("on_demand", &|| tenant_cycle(&on_demand, &layout)),
        // Each thread its own hand-written slot (made on first use).
        ("raw_memset_madvise", &raw_cycle),
    ];
    for threads in [1usize, 2] {
        // One iteration = one tenant cycle on every thread.
        g.throughput(Throughput::Elements(threads as u64));
        for (name, work) in rows {
            g.bench_function(BenchmarkId::new(name, threads), |b| {
                b.iter_custom(|iters| on_threads(threads, iters, work))
            });
        }
    }
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
    g.finish();
}

// ---- the ratio summary -------------------------------------------------

/// Where criterion writes its results (the same search it does).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Path::new(&target).join("criterion");
    }
    // The bench binary is target/<profile>/deps/pool-<hash>.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The median time (ns) of `group/id` if criterion wrote it during this run.
fn median_ns(dir: &Path, id: &str, since: SystemTime) -> Option<f64> {
    let path = dir.join(id).join("new").join("estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let json = std::fs::read_to_string(&path).ok()?;
    let median = &json[json.find("\"median\":")?..];
    let value = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = value.find([',', '}'])?;
    value[..end].trim().parse().ok()
}

fn fmt_time(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} µs", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

/// Prints, as Markdown, the ratios the README quotes, from the medians of
/// the benchmarks that ran in this process (a group that did not run is
/// left out).
fn summary(since: SystemTime) {
    let dir = criterion_dir();
    let t = |id: &str| median_ns(&dir, id, since);
    // `what` is true of the ratio t(num) / t(den); `target` is
    // (bound, whether the ratio must be at least the bound).
    let ratio = |what: &str, num: &str, den: &str, target: Option<(f64, bool)>| {
        let (n, d) = (t(num)?, t(den)?);
        let r = n / d;
        let verdict = match target {
            Some((bound, at_least)) => {
                let sign = if at_least { ">=" } else { "<=" };
                let met = if (r >= bound) == at_least {
                    "met"
                } else {
                    "MISSED"
                };
                format!(" (target {sign} {bound}x: {met})")
            }
            None => String::new(),
        };
        Some(format!(
            "| {what} | **{r:.2}x**{verdict} | {} / {} |",
            fmt_time(n),
            fmt_time(d)
        ))
    };
    let mut lines = Vec::new();
    let cycle = |id: &str| format!("cycle/{id}");
    for (name, label, target) in [
        (
            "pool_keep_resident",
            "pool+keep-resident",
            Some((5.0, true)),
        ),
        ("pool_batched", "pool batched", None),
        ("pool_default", "pool default", None),
        ("raw_memset_madvise", "raw memset+madvise floor", None),
        ("raw_mmap_munmap", "raw mmap/munmap floor", None),
    ] {
        lines.extend(ratio(
            &format!("cycle: {label} is faster than on-demand by"),
            &cycle("on_demand"),
            &cycle(name),
            target,
        ));
    }
    for (reset, full, label) in [
        (
            "pool_keep_resident_reset",
            "pool_keep_resident",
            "keep-resident",
        ),
        ("pool_default_reset", "pool_default", "default"),
    ] {
        lines.extend(ratio(
            &format!("cycle: Store::reset is faster than drop + instantiate ({label} pool) by"),
            &cycle(full),
            &cycle(reset),
            None,
        ));
    }
    for (name, label, target) in [
        (
            "pool_keep_resident",
            "pool+keep-resident",
            Some((3.0, false)),
        ),
        ("pool_batched", "pool batched", None),
    ] {
        lines.extend(ratio(
            &format!("cycle: {label} costs this much of the raw memset+madvise floor"),
            &cycle(name),
            &cycle("raw_memset_madvise"),
            target,
        ));
    }
    // Throughput: an iteration is one cycle per thread, so 2 threads do
    // twice the work per iteration.
    for name in [
        "pool_keep_resident",
        "pool_batched",
        "pool_default",
        "on_demand",
        "raw_memset_madvise",
    ] {
        let one = t(&format!("cycle_threads/{name}/1"));
        let two = t(&format!("cycle_threads/{name}/2"));
        if let (Some(one), Some(two)) = (one, two) {
            let (tp1, tp2) = (1e9 / one, 2e9 / two);
            let r = tp2 / tp1;
            let verdict = match (name, r >= 1.6) {
                ("pool_keep_resident", true) => " (target >= 1.6x: met)",
                ("pool_keep_resident", false) => " (target >= 1.6x: MISSED)",
                _ => "",
            };
            lines.push(format!(
                "| cycle_threads: {name}, 2 threads' throughput over 1 thread's | **{r:.2}x**{verdict} | {:.0}/s / {:.0}/s |",
                tp2, tp1
            ));
        }
    }
    for (_, name) in &IMAGE_SIZES[1..] {
        for alloc in ["pool", "pool_image_switch", "on_demand"] {
            let target = (alloc == "pool" && *name == "64MiB").then_some((2.0, false));
            lines.extend(ratio(
                &format!("cold_start: {alloc}, {name} image costs this much of a 4KiB one"),
                &format!("cold_start/{alloc}/{name}"),
                &format!("cold_start/{alloc}/4KiB"),
                target,
            ));
        }
    }
    for (_, name) in &IMAGE_SIZES {
        lines.extend(ratio(
            &format!("cold_start: pool is faster than on-demand by, {name} image"),
            &format!("cold_start/on_demand/{name}"),
            &format!("cold_start/pool/{name}"),
            None,
        ));
    }
    for name in ["pool_default", "pool_keep_resident"] {
        lines.extend(ratio(
            &format!("grow 1 -> 160 pages: {name} is faster than on-demand by"),
            "grow/on_demand",
            &format!("grow/{name}"),
            None,
        ));
    }
    for slots in ["1000", "10000"] {
        if let Some(ns) = t(&format!("pool_new/{slots}")) {
            let verdict = match (slots, ns < 1e6) {
                ("10000", true) => " (target < 1 ms: met)",
                ("10000", false) => " (target < 1 ms: MISSED)",
                _ => "",
            };
            lines.push(format!(
                "| pool_new: new + drop, {slots} slots of 4 GiB + 32 MiB guard | **{}**{verdict} | |",
                fmt_time(ns)
            ));
        }
    }
    if lines.is_empty() {
        return;
    }
    println!("\nRatios from this run (criterion medians; time A / time B):\n");
    println!("| comparison | ratio | A / B |");
    println!("|---|---|---|");
    for line in lines {
        println!("{line}");
    }
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
    summary(since);
}
