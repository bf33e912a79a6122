//! The main job: a density run. Many short-lived tenants share one pool; each
//! thread keeps a rolling window of live tenants (the oldest is dropped when
//! a new one arrives), and every instantiation is timed.
//!
//! ```text
//! cargo run --release --example density                  # ~10 s, safe defaults
//! cargo run --release --example density -- --tenants 5000 --threads 2 \
//!     --seconds 20 --image-size 1M --keep-resident 64K --out density.svg
//! cargo run --release --features wasmtime-examples --example density -- \
//!     --engine wasmtime --layout dense --tenants 1000000 --max-pages 2 \
//!     --seconds 60 --backend both --out density.svg
//! ```
//!
//! The window fills slowly: during the first half of the run the number of
//! live tenants rises linearly from 0 to `--tenants`, and it stays there for
//! the second half, so latency can be read against the number of live
//! tenants (the table at the end, and the chart with `--out`).
//!
//! A synthetic tenant (`--engine synthetic`, the default): new store with a
//! `StoreLimits` limiter, instantiate a memory (the image, 159 pages of room
//! to grow) and a table (10..=100 elements), grow the memory by a page, write
//! a byte at offset 70,000, set a table element; the store then stays live
//! until the window evicts it. A Wasmtime tenant (`--engine wasmtime`): see
//! `wasm.rs`.
//!
//! Files: `worker.rs` (a thread's window and latency histograms), `run.rs`
//! (one backend's run), `synthetic.rs` and `wasm.rs` (the two engines),
//! `child.rs` (a backend run in a child process), `report.rs` (the summary
//! tables), `chart.rs` (`--out`), and the byte sizes and seconds shared with
//! the other example in `../common`.

mod chart;
mod child;
#[path = "../common/mod.rs"]
mod common;
#[path = "../common/lines.rs"]
mod lines;
mod metrics;
mod report;
mod run;
mod synthetic;
#[cfg(feature = "wasmtime-examples")]
mod wasm;
mod worker;

use clap::{CommandFactory, Parser, ValueEnum, error::ErrorKind};
use instance_pool::{MemoryLayout, MemoryProtection, PoolingConfig, WASM_PAGE_SIZE};
use report::BackendRun;
use run::{Options, Progress};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// A density run: many short-lived tenants share one pool, every
/// instantiation timed; ends with instantiations/s, latency percentiles,
/// RSS and kernel mappings per live tenant, and the pool's metrics.
#[derive(Debug, Parser)]
#[command(name = "density", args_override_self = true)]
pub struct Args {
    /// Live tenants kept at once, a rolling window shared out over the
    /// threads (the pool has exactly this many instance, memory and table
    /// slots)
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub tenants: u32,
    /// Worker threads, each with its own stores (by default the number of
    /// cores, at most 2)
    #[arg(long, value_name = "N", default_value_t = default_threads())]
    pub threads: usize,
    /// How long to run, in seconds (the window fills during the first half)
    #[arg(long, value_name = "S", default_value = "10", value_parser = common::parse_seconds)]
    pub seconds: Duration,
    /// What a tenant is: synthetic (this crate's Store: a memory and a
    /// table, used from Rust) or wasmtime (a wasmtime::Store with an
    /// instance of a small module whose function grows its memory and
    /// writes; needs the wasmtime-examples feature)
    #[arg(long, value_enum, default_value_t = Engine::Synthetic)]
    pub engine: Engine,
    /// Where memories come from: pool (this crate's, in this process),
    /// wasmtime-pooling (Wasmtime's pooling allocator with the same slot
    /// size, guard and counts, in a child process: past the kernel's
    /// mapping limit it can take its process down), or both, one after the
    /// other, side by side in the report and on the --out chart
    #[arg(long, value_enum, default_value_t = Backend::Pool)]
    pub backend: Backend,
    /// With --engine wasmtime: instantiate and call on fiber stacks
    /// (instantiate_async, call_async), from this crate's StackPool or
    /// Wasmtime's stack pool, one per live store
    #[arg(long = "async")]
    pub async_calls: bool,
    /// Memory image size (K/M/G suffixes ok: 64K, 1MiB); with --engine
    /// wasmtime, the module's data segment (at most 64K)
    #[arg(long, value_name = "BYTES", default_value = "4096", value_parser = common::parse_bytes)]
    pub image_size: usize,
    /// memory_keep_resident and table_keep_resident of the pool (0, the
    /// pool's default: released pages are discarded; a multiple of the host
    /// page)
    #[arg(long, value_name = "BYTES", default_value = "0",
          value_parser = common::parse_page_multiple)]
    pub keep_resident: usize,
    /// How the pool makes bytes past a memory's size fault: auto (guard
    /// markers where the kernel has them), guard-markers, mprotect, or
    /// bounds-checked (nothing past the size faults inside a slot: for
    /// engines that check bounds; with --engine wasmtime its code does)
    #[arg(long, value_name = "HOW", default_value = "auto", value_parser = parse_protection)]
    pub protection: MemoryProtection,
    /// Where the pool's memory slots live: guarded (PROT_NONE slab, up to
    /// 3 kernel mappings per live tenant) or dense (one read-write slab
    /// protected by guard markers, a constant number of mappings)
    #[arg(long, value_name = "LAYOUT", default_value = "guarded", value_parser = parse_layout)]
    pub layout: MemoryLayout,
    /// The memory's maximum in wasm pages (a tenant grows by one page);
    /// also the slot size of the dense layout
    #[arg(long, value_name = "N", default_value_t = 160,
          value_parser = clap::value_parser!(u32).range(2..=65536))]
    pub max_pages: u32,
    /// memory_guard_size (default: 32 MiB guarded, 64 KiB dense)
    #[arg(long, value_name = "BYTES", value_parser = common::parse_page_multiple)]
    pub guard: Option<usize>,
    /// decommit_batch_size of the pool: released memories revoked together
    /// (default: the pool's)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: Option<u32>,
    /// Revoke full batches on the pool's own thread (background_revocation)
    #[arg(long)]
    pub background: bool,
    /// Use OnDemandInstanceAllocator instead of the pool (the baseline: an
    /// mmap per memory; synthetic tenants only)
    #[arg(long)]
    pub on_demand: bool,
    /// Also write a chart of latency percentiles against live tenants
    /// (every backend of the run on it)
    #[arg(long, value_name = "FILE.svg")]
    pub out: Option<PathBuf>,
    /// Serve the pool's metrics (Prometheus text format) on
    /// http://127.0.0.1:PORT/metrics while the run goes on (0: any free
    /// port, printed at the start)
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,
    /// Fetch /metrics once from that server a second into the run, and
    /// print it (with --metrics-port)
    #[arg(long, requires = "metrics_port")]
    pub scrape: bool,
    /// Run the one backend of --backend in this process and report to the
    /// parent on stdout (how a backend runs in a child process)
    #[arg(long, hide = true)]
    pub child: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    Synthetic,
    Wasmtime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Pool,
    WasmtimePooling,
    Both,
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
        "bounds-checked" => Ok(MemoryProtection::BoundsChecked),
        _ => Err(format!(
            "expected auto, guard-markers, mprotect or bounds-checked, got {s:?}"
        )),
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn default_threads() -> usize {
    cores().min(2)
}

const WASMTIME_FEATURE: &str = "--engine wasmtime needs the wasmtime-examples feature: \
     cargo run --release --features wasmtime-examples --example density -- --engine wasmtime ...";

impl Args {
    pub fn tenants(&self) -> usize {
        self.tenants as usize
    }

    /// The backends to run, in order.
    fn backends(&self) -> Vec<Backend> {
        match self.backend {
            Backend::Both => vec![Backend::Pool, Backend::WasmtimePooling],
            one => vec![one],
        }
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
        let wasmtime = self.engine == Engine::Wasmtime;
        if wasmtime && !cfg!(feature = "wasmtime-examples") {
            return Err(WASMTIME_FEATURE.into());
        }
        if !wasmtime && self.backend != Backend::Pool {
            return Err(
                "--backend wasmtime-pooling and both run Wasmtime instances: add --engine wasmtime"
                    .into(),
            );
        }
        if !wasmtime && self.async_calls {
            return Err("--async is for Wasmtime instances: add --engine wasmtime".into());
        }
        if wasmtime && self.on_demand {
            return Err("--on-demand is the synthetic tenants' baseline; with --engine wasmtime, compare --backend wasmtime-pooling".into());
        }
        if wasmtime && self.image_size > WASM_PAGE_SIZE {
            return Err(format!(
                "with --engine wasmtime, --image-size is the data segment in the module's first page: at most 64K, got {}",
                self.image_size
            ));
        }
        // A child gets its parent's flags; it serves no metrics.
        let pool_here = !self.on_demand && self.backend != Backend::WasmtimePooling;
        if self.metrics_port.is_some() && !self.child && !pool_here {
            return Err("--metrics-port serves this crate's pool: not with --on-demand or --backend wasmtime-pooling".into());
        }
        if self.child && self.backend == Backend::Both {
            return Err("--child runs one backend".into());
        }
        Ok(())
    }

    /// The run settings of [`run::measure`].
    fn options(&self, progress: Progress) -> Options {
        Options {
            threads: self.threads,
            tenants: self.tenants(),
            seconds: self.seconds,
            progress,
            metrics_port: self.metrics_port.filter(|_| progress == Progress::Bar),
            scrape: self.scrape,
        }
    }
}

/// The crate's pool as the flags shape it: memory slots for every tenant,
/// with the layout's geometry. Tables are the caller's to set.
/// `--engine wasmtime` gives Wasmtime's pool the same geometry.
pub fn pool_config(args: &Args) -> PoolingConfig {
    let mut config = PoolingConfig::default();
    config
        .total_instances(args.tenants)
        .total_memories(args.tenants)
        .memory_keep_resident(args.keep_resident)
        .table_keep_resident(args.keep_resident)
        .memory_protection(args.protection)
        .memory_layout(args.layout)
        .background_revocation(args.background);
    if let Some(batch) = args.batch {
        config.decommit_batch_size(batch as usize);
    }
    if args.layout == MemoryLayout::Dense {
        // Slots of the memory's maximum: markers cost page tables in
        // proportion to slot + guard.
        config
            .max_memory_size(args.max_pages as usize * WASM_PAGE_SIZE)
            .memory_guard_size(args.guard.unwrap_or(64 << 10));
    } else if let Some(guard) = args.guard {
        config.memory_guard_size(guard);
    }
    config
}

/// One backend's run in this process.
pub fn run_here(args: &Args, backend: Backend, progress: Progress) -> Result<BackendRun, String> {
    let opts = args.options(progress);
    match args.engine {
        Engine::Synthetic => synthetic::run(args, &opts),
        #[cfg(feature = "wasmtime-examples")]
        Engine::Wasmtime => wasm::run(args, backend, &opts),
        #[cfg(not(feature = "wasmtime-examples"))]
        Engine::Wasmtime => {
            let _ = backend;
            Err(WASMTIME_FEATURE.into())
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let tenants = args.tenants();
    let mut runs = Vec::new();
    for backend in args.backends() {
        let run = match backend {
            Backend::WasmtimePooling => child::run(args, backend)?,
            _ => run_here(args, backend, Progress::Bar)?,
        };
        report::backend(&run, tenants);
        runs.push((backend, run));
    }
    if runs.len() > 1 {
        report::side_by_side(&runs.iter().map(|r| &r.1).collect::<Vec<_>>(), tenants);
    }
    if let Some(out) = &args.out {
        let drawn: Vec<_> = runs
            .iter()
            .filter_map(|(_, r)| Some((r.name.as_str(), r.stats.as_ref()?)))
            .collect();
        let engine = match args.engine {
            Engine::Synthetic if args.on_demand => "synthetic tenants, on-demand",
            Engine::Synthetic => "synthetic tenants",
            Engine::Wasmtime => "Wasmtime instances",
        };
        let title = format!(
            "instantiation latency vs live tenants ({engine}, {} thread(s))",
            args.threads
        );
        chart::write_chart(out, &drawn, tenants, &title)?;
        println!("\nwrote {}", out.display());
    }
    // A backend in this process that did not finish fails the run; one in
    // a child is reported, whatever became of it.
    match runs.iter().find_map(|(b, r)| match (&r.ended, b) {
        (report::Ended::Refused(e), Backend::Pool) => Some(e.clone()),
        _ => None,
    }) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.check() {
        Args::command().error(ErrorKind::ValueValidation, e).exit();
    }
    let result = if args.child {
        child::serve(&args)
    } else {
        run(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("density: {e}");
            ExitCode::FAILURE
        }
    }
}
