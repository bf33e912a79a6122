//! The main job: a density run. Many short-lived tenants share one pool; each
//! thread keeps a rolling window of live tenants (the oldest is dropped when
//! a new one arrives), and every instantiation is timed.
//!
//! ```text
//! cargo run --release --example density                  # ~10 s, safe defaults
//! cargo run --release --example density -- --tenants 5000 --threads 2 \
//!     --seconds 20 --image-size 1048576 --keep-resident 65536 --out density.svg
//! ```
//!
//! The window fills slowly: during the first half of the run the number of
//! live tenants rises linearly from 0 to `--tenants`, and it stays there for
//! the second half, so latency can be read against the number of live
//! tenants (the table at the end, and the chart with `--out`).
//!
//! A tenant's request: new store with a `StoreLimits` limiter, instantiate a
//! memory (the image, 159 pages of room to grow) and a table (10..=100
//! elements), grow the memory by a page, write a byte at offset 70,000, set
//! a table element; the store then stays live until the window evicts it.

use indicatif::{ProgressBar, ProgressStyle};
use instance_pool::{
    InstanceAllocator, InstanceLayout, MemoryImage, MemoryType, OnDemandInstanceAllocator,
    PoolMetrics, PoolingConfig, PoolingInstanceAllocator, Store, StoreLimits, StoreLimitsBuilder,
    TableType, WASM_PAGE_SIZE,
};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: cargo run --release --example density -- [options]

  --tenants N             live tenants kept at once, a rolling window shared
                          out over the threads (default 1000; the pool has
                          exactly this many instance, memory and table slots)
  --threads N             worker threads, each with its own stores (default:
                          the number of cores, at most 2)
  --seconds S             how long to run (default 10; the window fills
                          during the first half)
  --image-size BYTES      memory image size (default 4096; K/M/G suffixes ok)
  --keep-resident BYTES   memory_keep_resident and table_keep_resident of
                          the pool (default 0, the pool's default: released
                          pages are discarded; a multiple of the host page)
  --on-demand             use OnDemandInstanceAllocator instead of the pool
                          (the baseline: an mmap per memory)
  --out FILE.svg          also write a chart of latency percentiles against
                          live tenants
  -h, --help              this text";

/// Live-tenant buckets for latency-vs-density (the chart's x axis).
const BUCKETS: usize = 20;

#[derive(Debug)]
struct Args {
    tenants: usize,
    threads: usize,
    seconds: f64,
    image_size: usize,
    keep_resident: usize,
    on_demand: bool,
    out: Option<PathBuf>,
}

/// `4096`, `64K`, `1M`, `1MiB`, `2G`: bytes.
fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("not a byte count: {s:?}"))?;
    let unit = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("unknown byte suffix in {s:?} (use K, M or G)")),
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("byte count overflows: {s:?}"))
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = Args {
        tenants: 1000,
        threads: cores.min(2),
        seconds: 10.0,
        image_size: 4096,
        keep_resident: 0,
        on_demand: false,
        out: None,
    };
    while let Some(arg) = argv.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| argv.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let number = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: not a number: {v:?}"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--tenants" => args.tenants = number(value()?)?,
            "--threads" => args.threads = number(value()?)?,
            "--seconds" => {
                let v = value()?;
                args.seconds = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| format!("--seconds: not a positive number: {v:?}"))?;
            }
            "--image-size" => args.image_size = parse_bytes(&value()?)?,
            "--keep-resident" => args.keep_resident = parse_bytes(&value()?)?,
            "--on-demand" => args.on_demand = true,
            "--out" => args.out = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.tenants == 0 {
        return Err("--tenants must be at least 1".into());
    }
    if args.threads == 0 || args.threads > args.tenants {
        return Err(format!(
            "--threads must be between 1 and --tenants ({}), got {}",
            args.tenants, args.threads
        ));
    }
    let page = instance_pool::host_page_size();
    if !args.keep_resident.is_multiple_of(page) {
        return Err(format!(
            "--keep-resident must be a multiple of the host page ({page}), got {}",
            args.keep_resident
        ));
    }
    if args.image_size > (1 << 32) - 160 * WASM_PAGE_SIZE {
        return Err(format!(
            "--image-size must leave room for 160 pages in 4 GiB, got {}",
            args.image_size
        ));
    }
    Ok(args)
}

// ---- a log-linear latency histogram (about 3% resolution) ---------------

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;

#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; 64 * SUB],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 2 * SUB as u64 {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros();
        let shift = msb - SUB_BITS;
        ((shift as usize) << SUB_BITS) + (v >> shift) as usize
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        if i < 2 * SUB {
            return i as u64;
        }
        let shift = (i >> SUB_BITS) - 1;
        let top = (i & (SUB - 1)) + SUB;
        ((top as u64) << shift) + ((1u64 << shift) >> 1)
    }

    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The `q` quantile (0..=1), `None` when empty.
    fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::value(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

// ---- the run ---------------------------------------------------------------

/// What every worker shares.
struct Shared {
    live: AtomicUsize,
    peak_live: AtomicUsize,
    instantiations: AtomicU64,
    stop: AtomicBool,
    /// Workers wait here with their windows full, so the main thread can
    /// measure RSS and mappings, and again before they release them.
    full: Barrier,
    release: Barrier,
}

/// One worker's results.
struct WorkerStats {
    /// Instantiation latency by live-tenant bucket.
    by_live: Vec<Histogram>,
    all: Histogram,
    /// Instantiations once the window was full.
    steady: Histogram,
    /// Dropping a store (returning its slots).
    release: Histogram,
}

struct Plan {
    tenants: usize,
    window: usize,
    ramp: Duration,
    run: Duration,
    start: Instant,
}

fn worker(
    allocator: &impl InstanceAllocator,
    layout: &InstanceLayout,
    limits: &StoreLimits,
    plan: &Plan,
    shared: &Shared,
) -> Result<WorkerStats, String> {
    let mut stats = WorkerStats {
        by_live: vec![Histogram::new(); BUCKETS],
        all: Histogram::new(),
        steady: Histogram::new(),
        release: Histogram::new(),
    };
    let mut window: VecDeque<Store<StoreLimits>> = VecDeque::with_capacity(plan.window);
    let mut result = Ok(());
    while !shared.stop.load(Ordering::Relaxed) {
        let elapsed = plan.start.elapsed();
        if elapsed >= plan.run {
            break;
        }
        let fill = (elapsed.as_secs_f64() / plan.ramp.as_secs_f64()).min(1.0);
        let target = ((plan.window as f64 * fill).ceil() as usize).clamp(1, plan.window);
        if window.len() >= target {
            let oldest = window.pop_front().expect("window is not empty");
            let t = Instant::now();
            drop(oldest);
            stats.release.record(t.elapsed().as_nanos() as u64);
            shared.live.fetch_sub(1, Ordering::Relaxed);
        }
        let live_before = shared.live.load(Ordering::Relaxed);
        let t = Instant::now();
        let mut store = Store::new(allocator, limits.clone());
        store.limiter(|limits| limits);
        let instance = match store.instantiate(layout) {
            Ok(i) => i,
            Err(e) => {
                result = Err(format!("instantiation failed: {e}"));
                break;
            }
        };
        let ns = t.elapsed().as_nanos() as u64;
        stats.all.record(ns);
        stats.by_live[(live_before * BUCKETS / (plan.tenants + 1)).min(BUCKETS - 1)].record(ns);
        if fill >= 1.0 {
            stats.steady.record(ns);
        }
        let live = shared.live.fetch_add(1, Ordering::Relaxed) + 1;
        shared.peak_live.fetch_max(live, Ordering::Relaxed);
        shared.instantiations.fetch_add(1, Ordering::Relaxed);

        // The tenant's work.
        let memory = instance.memory(&store, 0).expect("memory 0");
        let table = instance.table(&store, 0).expect("table 0");
        let work = memory
            .grow(&mut store, 1)
            .and_then(|_| table.set(&mut store, 3, 42));
        if let Err(e) = work {
            result = Err(format!("tenant work failed: {e}"));
            break;
        }
        memory.data_mut(&mut store)[70_000] = 1;
        window.push_back(store);
    }
    if result.is_err() {
        shared.stop.store(true, Ordering::Relaxed);
    }
    // Hold the window while the main thread measures.
    shared.full.wait();
    shared.release.wait();
    let n = window.len();
    for store in window.drain(..) {
        let t = Instant::now();
        drop(store);
        stats.release.record(t.elapsed().as_nanos() as u64);
    }
    shared.live.fetch_sub(n, Ordering::Relaxed);
    result.map(|()| stats)
}

/// `VmRSS` and `VmHWM` of this process, in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mappings() -> usize {
    instance_pool::kernel_mappings().unwrap_or(0)
}

fn fmt_ns(ns: Option<u64>) -> String {
    match ns {
        None => "-".into(),
        Some(n) if n >= 1_000_000 => format!("{:.2} ms", n as f64 / 1e6),
        Some(n) if n >= 1_000 => format!("{:.2} µs", n as f64 / 1e3),
        Some(n) => format!("{n} ns"),
    }
}

fn fmt_bytes(b: f64) -> String {
    match b.abs() {
        a if a >= (1u64 << 30) as f64 => format!("{:.2} GiB", b / (1u64 << 30) as f64),
        a if a >= (1 << 20) as f64 => format!("{:.1} MiB", b / (1 << 20) as f64),
        a if a >= 1024.0 => format!("{:.1} KiB", b / 1024.0),
        _ => format!("{b:.0} B"),
    }
}

/// Prints `rows` as an aligned two-column table.
fn table(title: &str, rows: &[(String, String)]) {
    let w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    println!("\n{title}");
    println!("{}", "-".repeat(title.chars().count()));
    for (k, v) in rows {
        println!("  {k:<w$}  {v}");
    }
}

fn metrics_rows(m: &PoolMetrics) -> Vec<(String, String)> {
    [
        ("instances_in_use", m.instances_in_use as u64),
        ("memories_in_use", m.memories_in_use as u64),
        ("tables_in_use", m.tables_in_use as u64),
        ("unused_warm_memories", m.unused_warm_memories as u64),
        ("unused_warm_tables", m.unused_warm_tables as u64),
        ("unused_resident_bytes", m.unused_resident_bytes),
        ("decommit_queue_len", m.decommit_queue_len as u64),
        ("instance_acquisitions", m.instance_acquisitions),
        ("memory_acquisitions", m.memory_acquisitions),
        ("table_acquisitions", m.table_acquisitions),
        ("instances_exhausted", m.instances_exhausted),
        ("memories_exhausted", m.memories_exhausted),
        ("tables_exhausted", m.tables_exhausted),
        ("limiter_denials", m.limiter_denials),
        ("images_mapped", m.images_mapped),
        ("images_reused", m.images_reused),
        ("images_copied", m.images_copied),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Live-tenant range of bucket `b`: `[lo, hi)`.
fn bucket_range(b: usize, tenants: usize) -> (usize, usize) {
    let lo = (b * (tenants + 1)).div_ceil(BUCKETS);
    let hi = ((b + 1) * (tenants + 1)).div_ceil(BUCKETS);
    (lo, hi)
}

fn write_chart(
    path: &std::path::Path,
    by_live: &[Histogram],
    tenants: usize,
    title: &str,
) -> Result<(), String> {
    use plotters::prelude::*;
    let quantiles = [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")];
    let colors = [BLUE, RED, BLACK];
    // (live tenants at the bucket's middle, latency in µs) per quantile.
    let series: Vec<Vec<(f64, f64)>> = quantiles
        .iter()
        .map(|(q, _)| {
            by_live
                .iter()
                .enumerate()
                .filter_map(|(b, h)| {
                    let (lo, hi) = bucket_range(b, tenants);
                    let v = h.quantile(*q)?;
                    Some(((lo + hi) as f64 / 2.0, (v as f64 / 1e3).max(0.01)))
                })
                .collect()
        })
        .collect();
    let all: Vec<f64> = series.iter().flatten().map(|p| p.1).collect();
    if all.is_empty() {
        return Err("no samples to chart".into());
    }
    let lo = all.iter().cloned().fold(f64::INFINITY, f64::min) / 1.5;
    // Head room above the highest point for the legend.
    let hi = all.iter().cloned().fold(0.0, f64::max) * 5.0;
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());

    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..tenants as f64, (lo..hi).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("live tenants")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .y_desc("instantiation latency (µs, log)")
        .draw()
        .map_err(|e| err(&e))?;
    for (((_, name), points), color) in quantiles.iter().zip(&series).zip(colors) {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn run(args: &Args) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let image_pages = args.image_size.div_ceil(WASM_PAGE_SIZE) as u64;
    let min_pages = image_pages.max(1);
    let max_pages = min_pages + 159;
    let image = MemoryImage::new(&vec![7u8; args.image_size]).map_err(|e| e.to_string())?;
    let layout = InstanceLayout::new()
        .memory_with_image(MemoryType::new(min_pages, Some(max_pages)), image.clone())
        .table(TableType::new(10, Some(100)));
    let limits = StoreLimitsBuilder::new()
        .memory_size(max_pages as usize * WASM_PAGE_SIZE)
        .table_elements(100)
        .build();

    let (rss_before, _) = rss();
    let maps_before = mappings();
    let pool = if args.on_demand {
        None
    } else {
        let mut config = PoolingConfig::default();
        config
            .total_instances(args.tenants as u32)
            .total_memories(args.tenants as u32)
            .total_tables(args.tenants as u32)
            .memory_keep_resident(args.keep_resident)
            .table_keep_resident(args.keep_resident);
        Some(PoolingInstanceAllocator::new(&config).map_err(|e| format!("pool: {e}"))?)
    };
    let on_demand = OnDemandInstanceAllocator::default();
    let (rss_idle, _) = rss();
    let maps_idle = mappings();

    let allocator_name = if args.on_demand {
        "on-demand (mmap per memory)".to_string()
    } else {
        format!(
            "pool: {} slots of 4 GiB + 32 MiB guard, keep-resident {}",
            args.tenants,
            fmt_bytes(args.keep_resident as f64)
        )
    };
    println!(
        "density: {} tenants on {} thread(s) for {} s; image {}, {allocator_name}; {cores} cores",
        args.tenants,
        args.threads,
        args.seconds,
        fmt_bytes(args.image_size as f64),
    );

    let run_for = Duration::from_secs_f64(args.seconds);
    let shared = Shared {
        live: AtomicUsize::new(0),
        peak_live: AtomicUsize::new(0),
        instantiations: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        full: Barrier::new(args.threads + 1),
        release: Barrier::new(args.threads + 1),
    };
    let start = Instant::now();
    let progress = ProgressBar::new(run_for.as_millis() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>3} [{bar:36}] {percent:>3}% {msg}")
            .expect("progress template")
            .progress_chars("=> "),
    );

    let (results, at_full) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.threads)
            .map(|t| {
                // Share the window out: the first threads take the remainder.
                let window =
                    args.tenants / args.threads + usize::from(t < args.tenants % args.threads);
                let plan = Plan {
                    tenants: args.tenants,
                    window,
                    ramp: run_for / 2,
                    run: run_for,
                    start,
                };
                let (layout, limits, shared) = (&layout, &limits, &shared);
                let (pool, on_demand) = (pool.as_ref(), &on_demand);
                s.spawn(move || match pool {
                    Some(pool) => worker(pool, layout, limits, &plan, shared),
                    None => worker(on_demand, layout, limits, &plan, shared),
                })
            })
            .collect();

        let mut last = (Instant::now(), 0u64);
        while start.elapsed() < run_for && !shared.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            let n = shared.instantiations.load(Ordering::Relaxed);
            let now = Instant::now();
            let rate = (n - last.1) as f64 / (now - last.0).as_secs_f64();
            last = (now, n);
            progress.set_position(start.elapsed().as_millis() as u64);
            progress.set_message(format!(
                "{} live, {:.0} inst/s",
                shared.live.load(Ordering::Relaxed),
                rate
            ));
        }
        shared.full.wait();
        let elapsed = start.elapsed();
        let snapshot = (
            elapsed,
            shared.live.load(Ordering::Relaxed),
            rss(),
            mappings(),
            pool.as_ref().map(|p| p.metrics()),
        );
        progress.finish_and_clear();
        shared.release.wait();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect();
        (results, snapshot)
    });
    let (elapsed, live_at_full, (rss_full, rss_peak), maps_full, metrics_full) = at_full;
    let mut stats = WorkerStats {
        by_live: vec![Histogram::new(); BUCKETS],
        all: Histogram::new(),
        steady: Histogram::new(),
        release: Histogram::new(),
    };
    for r in results {
        let r = r?;
        for (a, b) in stats.by_live.iter_mut().zip(&r.by_live) {
            a.merge(b);
        }
        stats.all.merge(&r.all);
        stats.steady.merge(&r.steady);
        stats.release.merge(&r.release);
    }
    let (rss_after, _) = rss();
    let maps_after = mappings();

    let n = stats.all.total;
    let secs = elapsed.as_secs_f64();
    let q = |h: &Histogram, p: f64| fmt_ns(h.quantile(p));
    let per_live = (rss_full as f64 - rss_idle as f64) / live_at_full.max(1) as f64;
    let rows = vec![
        ("instantiations".into(), format!("{n} in {secs:.2} s")),
        (
            "instantiations/s".into(),
            format!(
                "{:.0} overall, {:.0} per thread",
                n as f64 / secs,
                n as f64 / secs / args.threads as f64
            ),
        ),
        (
            "instantiation p50 / p99 / p99.9".into(),
            format!(
                "{} / {} / {} (max {})",
                q(&stats.all, 0.5),
                q(&stats.all, 0.99),
                q(&stats.all, 0.999),
                fmt_ns(Some(stats.all.max))
            ),
        ),
        (
            "  with the window full".into(),
            format!(
                "{} / {} / {} ({} samples)",
                q(&stats.steady, 0.5),
                q(&stats.steady, 0.99),
                q(&stats.steady, 0.999),
                stats.steady.total
            ),
        ),
        (
            "release (drop store) p50 / p99 / p99.9".into(),
            format!(
                "{} / {} / {}",
                q(&stats.release, 0.5),
                q(&stats.release, 0.99),
                q(&stats.release, 0.999)
            ),
        ),
        (
            "peak live instances".into(),
            shared.peak_live.load(Ordering::Relaxed).to_string(),
        ),
        (
            "process RSS: start / idle pool / full / after".into(),
            format!(
                "{} / {} / {} / {} (peak {})",
                fmt_bytes(rss_before as f64),
                fmt_bytes(rss_idle as f64),
                fmt_bytes(rss_full as f64),
                fmt_bytes(rss_after as f64),
                fmt_bytes(rss_peak as f64)
            ),
        ),
        (
            "RSS per live instance".into(),
            format!(
                "{} ((full - idle pool) / {live_at_full} live)",
                fmt_bytes(per_live)
            ),
        ),
        (
            "kernel mappings: start / idle pool / full / after".into(),
            format!("{maps_before} / {maps_idle} / {maps_full} / {maps_after}"),
        ),
    ];
    table("Results", &rows);

    let by_live_rows: Vec<(String, String)> = stats
        .by_live
        .chunks(2)
        .enumerate()
        .filter_map(|(i, pair)| {
            let mut h = pair[0].clone();
            pair.iter().skip(1).for_each(|o| h.merge(o));
            (h.total > 0).then(|| {
                let (lo, _) = bucket_range(2 * i, args.tenants);
                let (_, hi) = bucket_range(2 * i + pair.len() - 1, args.tenants);
                (
                    format!("{lo:>6}..{hi:<6} live"),
                    format!(
                        "p50 {:>9}  p99 {:>9}  p99.9 {:>9}  ({} samples)",
                        q(&h, 0.5),
                        q(&h, 0.99),
                        q(&h, 0.999),
                        h.total
                    ),
                )
            })
        })
        .collect();
    table("Instantiation latency by live tenants", &by_live_rows);

    if let Some(m) = &metrics_full {
        table("Pool metrics with the window full", &metrics_rows(m));
    }
    if let Some(pool) = &pool {
        let m = pool.metrics();
        table(
            "Pool metrics after release",
            &metrics_rows(&m).into_iter().take(7).collect::<Vec<_>>(),
        );
    }

    if let Some(out) = &args.out {
        let title = format!(
            "instantiation latency vs live tenants ({}, {} thread(s))",
            if args.on_demand { "on-demand" } else { "pool" },
            args.threads
        );
        write_chart(out, &stats.by_live, args.tenants, &title)?;
        println!("\nwrote {}", out.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("density: {e} (see --help)");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("density: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_round_trip() {
        for v in [0u64, 1, 63, 64, 65, 100, 1000, 12_345, 1 << 40] {
            let mid = Histogram::value(Histogram::index(v));
            let err = (mid as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.04, "{v} -> {mid}");
        }
    }
}
