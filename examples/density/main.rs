//! The main job: a density run. Many short-lived tenants share one pool; each
//! thread keeps a rolling window of live tenants (the oldest is dropped when
//! a new one arrives), and every instantiation is timed.
//!
//! ```text
//! cargo run --release --example density                  # ~10 s, safe defaults
//! cargo run --release --example density -- --tenants 5000 --threads 2 \
//!     --seconds 20 --image-size 1M --keep-resident 64K --out density.svg
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
//!
//! Files: `worker.rs` (a thread's window and latency histograms),
//! `report.rs` (the summary tables), `chart.rs` (`--out`), and the byte
//! sizes and seconds shared with the other example in `../common`.

mod chart;
#[path = "../common/mod.rs"]
mod common;
#[path = "../common/lines.rs"]
mod lines;
mod metrics;
mod report;
mod worker;

use clap::{CommandFactory, Parser, error::ErrorKind};
use indicatif::{ProgressBar, ProgressStyle};
use instance_pool::{
    InstanceLayout, MemoryImage, MemoryLayout, MemoryProtection, MemoryType,
    OnDemandInstanceAllocator, PoolingConfig, PoolingInstanceAllocator, StoreLimitsBuilder,
    TableType, WASM_PAGE_SIZE,
};
use report::{Measured, Probe};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use worker::{Plan, Shared, WorkerStats};

/// A density run: many short-lived tenants share one pool, every
/// instantiation timed; ends with instantiations/s, latency percentiles,
/// RSS and kernel mappings per live tenant, and the pool's metrics.
#[derive(Debug, Parser)]
#[command(name = "density")]
struct Args {
    /// Live tenants kept at once, a rolling window shared out over the
    /// threads (the pool has exactly this many instance, memory and table
    /// slots)
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    tenants: u32,
    /// Worker threads, each with its own stores (by default the number of
    /// cores, at most 2)
    #[arg(long, value_name = "N", default_value_t = default_threads())]
    threads: usize,
    /// How long to run, in seconds (the window fills during the first half)
    #[arg(long, value_name = "S", default_value = "10", value_parser = common::parse_seconds)]
    seconds: Duration,
    /// Memory image size (K/M/G suffixes ok: 64K, 1MiB)
    #[arg(long, value_name = "BYTES", default_value = "4096", value_parser = common::parse_bytes)]
    image_size: usize,
    /// memory_keep_resident and table_keep_resident of the pool (0, the
    /// pool's default: released pages are discarded; a multiple of the host
    /// page)
    #[arg(long, value_name = "BYTES", default_value = "0",
          value_parser = common::parse_page_multiple)]
    keep_resident: usize,
    /// How the pool makes bytes past a memory's size fault: auto (guard
    /// markers where the kernel has them), guard-markers or mprotect
    #[arg(long, value_name = "HOW", default_value = "auto", value_parser = parse_protection)]
    protection: MemoryProtection,
    /// Where the pool's memory slots live: guarded (PROT_NONE slab, up to
    /// 3 kernel mappings per live tenant) or dense (one read-write slab
    /// protected by guard markers, a constant number of mappings)
    #[arg(long, value_name = "LAYOUT", default_value = "guarded", value_parser = parse_layout)]
    layout: MemoryLayout,
    /// The memory's maximum in wasm pages (a tenant grows by one page);
    /// also the slot size of the dense layout
    #[arg(long, value_name = "N", default_value_t = 160,
          value_parser = clap::value_parser!(u32).range(2..=65536))]
    max_pages: u32,
    /// memory_guard_size (default: 32 MiB guarded, 64 KiB dense)
    #[arg(long, value_name = "BYTES", value_parser = common::parse_page_multiple)]
    guard: Option<usize>,
    /// decommit_batch_size of the pool: released memories revoked together
    /// (default: the pool's)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch: Option<u32>,
    /// Use OnDemandInstanceAllocator instead of the pool (the baseline: an
    /// mmap per memory)
    #[arg(long)]
    on_demand: bool,
    /// Also write a chart of latency percentiles against live tenants
    #[arg(long, value_name = "FILE.svg")]
    out: Option<PathBuf>,
    /// Serve the pool's metrics (Prometheus text format) on
    /// http://127.0.0.1:PORT/metrics while the run goes on (0: any free
    /// port, printed at the start)
    #[arg(long, value_name = "PORT")]
    metrics_port: Option<u16>,
    /// Fetch /metrics once from that server a second into the run, and
    /// print it (with --metrics-port)
    #[arg(long, requires = "metrics_port")]
    scrape: bool,
}

fn parse_layout(s: &str) -> Result<MemoryLayout, String> {
    match s {
        "guarded" => Ok(MemoryLayout::Guarded),
        "dense" => Ok(MemoryLayout::Dense),
        _ => Err(format!("expected guarded or dense, got {s:?}")),
    }
}

fn parse_protection(s: &str) -> Result<MemoryProtection, String> {
    match s {
        "auto" => Ok(MemoryProtection::Auto),
        "guard-markers" => Ok(MemoryProtection::GuardMarkers),
        "mprotect" => Ok(MemoryProtection::Mprotect),
        _ => Err(format!(
            "expected auto, guard-markers or mprotect, got {s:?}"
        )),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn default_threads() -> usize {
    cores().min(2)
}

impl Args {
    fn tenants(&self) -> usize {
        self.tenants as usize
    }

    /// What one flag's parser cannot see.
    fn check(&self) -> Result<(), String> {
        if self.threads == 0 || self.threads > self.tenants() {
            return Err(format!(
                "--threads must be between 1 and --tenants ({}), got {}",
                self.tenants, self.threads
            ));
        }
        if self.image_size > (1 << 32) - 160 * WASM_PAGE_SIZE {
            return Err(format!(
                "--image-size must leave room for 160 pages in 4 GiB, got {}",
                self.image_size
            ));
        }
        Ok(())
    }
}

fn run(args: &Args) -> Result<(), String> {
    let tenants = args.tenants();
    let image_pages = args.image_size.div_ceil(WASM_PAGE_SIZE) as u64;
    let min_pages = image_pages.max(1);
    let max_pages = (args.max_pages as u64).max(min_pages + 1);
    let image = MemoryImage::new(&vec![7u8; args.image_size]).map_err(|e| e.to_string())?;
    let layout = InstanceLayout::new()
        .memory_with_image(MemoryType::new(min_pages, Some(max_pages)), image.clone())
        .table(TableType::new(10, Some(100)));
    let limits = StoreLimitsBuilder::new()
        .memory_size(max_pages as usize * WASM_PAGE_SIZE)
        .table_elements(100)
        .build();

    let before = Probe::now();
    let pool = if args.on_demand {
        None
    } else {
        let mut config = PoolingConfig::default();
        config
            .total_instances(args.tenants)
            .total_memories(args.tenants)
            .total_tables(args.tenants)
            // The layout's table maximum: small table slots share pages.
            .table_elements(100)
            .memory_keep_resident(args.keep_resident)
            .table_keep_resident(args.keep_resident)
            .memory_protection(args.protection)
            .memory_layout(args.layout);
        if let Some(batch) = args.batch {
            config.decommit_batch_size(batch as usize);
        }
        if args.layout == MemoryLayout::Dense {
            // Slots of the memory's maximum: markers cost page tables in
            // proportion to slot + guard.
            config
                .max_memory_size(max_pages as usize * WASM_PAGE_SIZE)
                .memory_guard_size(args.guard.unwrap_or(64 << 10));
        } else if let Some(guard) = args.guard {
            config.memory_guard_size(guard);
        }
        Some(PoolingInstanceAllocator::new(&config).map_err(|e| format!("pool: {e}"))?)
    };
    let on_demand = OnDemandInstanceAllocator::default();
    let idle = Probe::now();

    let allocator_name = match &pool {
        None => "on-demand (mmap per memory)".to_string(),
        Some(pool) => {
            let m = pool.metrics();
            let c = pool.config();
            let (slot, guard) = (c.get_max_memory_size(), c.get_memory_guard_size());
            format!(
                "pool: {tenants} {} slots of {} + {} guard, keep-resident {}, {}, batches of {}",
                m.memory_layout.name(),
                common::fmt_bytes(slot as f64),
                common::fmt_bytes(guard as f64),
                common::fmt_bytes(args.keep_resident as f64),
                m.memory_protection.name(),
                c.get_decommit_batch_size()
            )
        }
    };
    println!(
        "density: {tenants} tenants on {} thread(s) for {} s; image {}, {allocator_name}; {} cores",
        args.threads,
        args.seconds.as_secs_f64(),
        common::fmt_bytes(args.image_size as f64),
        cores(),
    );

    let run_for = args.seconds;
    let shared = Shared::new(args.threads);
    let start = Instant::now();
    let progress = ProgressBar::new(run_for.as_millis() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>3} [{bar:36}] {percent:>3}% {msg}")
            .expect("progress template")
            .progress_chars("=> "),
    );

    let metrics = match (args.metrics_port, &pool) {
        (Some(port), Some(_)) => {
            let (listener, port) =
                metrics::bind(port).map_err(|e| format!("--metrics-port: {e}"))?;
            println!("serving http://127.0.0.1:{port}/metrics during the run");
            Some((listener, port))
        }
        (Some(_), None) => return Err("--metrics-port needs the pool (not --on-demand)".into()),
        _ => None,
    };
    let stop_metrics = std::sync::atomic::AtomicBool::new(false);

    let (results, at_full) = std::thread::scope(|s| {
        let metrics_port = metrics.map(|(listener, port)| {
            let (pool, stop) = (pool.as_ref().expect("checked above"), &stop_metrics);
            s.spawn(move || metrics::serve(listener, pool, stop));
            port
        });
        let handles: Vec<_> = (0..args.threads)
            .map(|t| {
                // Share the window out: the first threads take the remainder.
                let window = tenants / args.threads + usize::from(t < tenants % args.threads);
                let plan = Plan {
                    tenants,
                    window,
                    ramp: run_for / 2,
                    run: run_for,
                    start,
                };
                let (layout, limits, shared) = (&layout, &limits, &shared);
                let (pool, on_demand) = (pool.as_ref(), &on_demand);
                s.spawn(move || match pool {
                    Some(pool) => worker::worker(pool, layout, limits, &plan, shared),
                    None => worker::worker(on_demand, layout, limits, &plan, shared),
                })
            })
            .collect();

        let mut last = (Instant::now(), 0u64);
        let mut scrape_at = (args.scrape).then(|| start + Duration::from_secs(1).min(run_for / 2));
        while start.elapsed() < run_for && !shared.stop.load(Ordering::Relaxed) {
            if let (Some(at), Some(port)) = (scrape_at, metrics_port)
                && Instant::now() >= at
            {
                scrape_at = None;
                match metrics::scrape(port) {
                    Ok(text) => progress.suspend(|| println!("{text}")),
                    Err(e) => progress.suspend(|| eprintln!("scrape failed: {e}")),
                }
            }
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
        let snapshot = (
            start.elapsed(),
            shared.live.load(Ordering::Relaxed),
            Probe::now(),
            pool.as_ref().map(|p| p.metrics()),
        );
        progress.finish_and_clear();
        shared.release.wait();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect();
        stop_metrics.store(true, Ordering::Relaxed);
        (results, snapshot)
    });
    let (elapsed, live_at_full, full, metrics_full) = at_full;
    let mut stats = WorkerStats::new();
    for r in results {
        stats.merge(&r?)?;
    }
    let measured = Measured {
        threads: args.threads,
        elapsed,
        live_at_full,
        peak_live: shared.peak_live.load(Ordering::Relaxed),
        before,
        idle,
        full,
        after: Probe::now(),
    };

    report::results(&stats, &measured);
    report::by_live(&stats, tenants)?;
    if let Some(m) = &metrics_full {
        report::table(
            "Pool metrics with the window full",
            &report::metrics_rows(m),
        );
    }
    if let Some(pool) = &pool {
        let m = pool.metrics();
        report::table(
            "Pool metrics after release",
            &report::metrics_rows(&m)
                .into_iter()
                .take(7)
                .collect::<Vec<_>>(),
        );
    }

    if let Some(out) = &args.out {
        let title = format!(
            "instantiation latency vs live tenants ({}, {} thread(s))",
            if args.on_demand { "on-demand" } else { "pool" },
            args.threads
        );
        chart::write_chart(out, &stats.by_live, tenants, &title)?;
        println!("\nwrote {}", out.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.check() {
        Args::command().error(ErrorKind::ValueValidation, e).exit();
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("density: {e}");
            ExitCode::FAILURE
        }
    }
}
