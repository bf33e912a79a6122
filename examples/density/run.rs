//! One backend's run in this process: the worker threads, the progress
//! shown meanwhile, and the measurements with every window full.

use crate::metrics;
use crate::report::{Measured, Probe};
use crate::worker::{self, Plan, Shared, Tenants, WorkerStats};
use indicatif::{ProgressBar, ProgressStyle};
use instance_pool::{PoolMetrics, PoolingInstanceAllocator};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a run shows its progress.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A progress bar on the terminal.
    Bar,
    /// `progress <live> <peak live> <instantiations>` lines on stdout, for
    /// the parent process of a `--child` run (which may die at any moment:
    /// the parent knows the largest live count from the last line).
    Lines,
}

pub struct Options {
    pub threads: usize,
    pub tenants: usize,
    pub seconds: Duration,
    pub progress: Progress,
    /// `--metrics-port` (served from the pool, if the run has one).
    pub metrics_port: Option<u16>,
    pub scrape: bool,
}

/// What one backend's run measured.
pub struct Outcome {
    pub stats: WorkerStats,
    pub measured: Measured,
    /// The first error that stopped a worker (the run ended early).
    pub error: Option<String>,
    /// The pool's metrics with the windows full, and after release.
    pub metrics_full: Option<PoolMetrics>,
    pub metrics_after: Option<PoolMetrics>,
    /// What the backend's own probe found with the windows full.
    pub notes: Vec<(String, String)>,
}

/// Prints one `progress` line (see [`Progress::Lines`]).
pub fn progress_line(shared: &Shared) {
    let mut out = std::io::stdout().lock();
    // A parent that went away cannot be told anything.
    let _ = writeln!(
        out,
        "progress {} {} {}",
        shared.live.load(Ordering::Relaxed),
        shared.peak_live.load(Ordering::Relaxed),
        shared.instantiations.load(Ordering::Relaxed)
    );
    let _ = out.flush();
}

/// Runs `tenants` on `opts.threads` threads for `opts.seconds`; `before` was
/// probed before the backend was built, `idle` once it was, with no tenant.
/// `at_full` probes what only the backend knows, with the windows full
/// (given the live count).
pub fn measure(
    tenants: &impl Tenants,
    opts: &Options,
    pool: Option<&PoolingInstanceAllocator>,
    before: Probe,
    idle: Probe,
    at_full: &dyn Fn(usize) -> Vec<(String, String)>,
) -> Result<Outcome, String> {
    let run_for = opts.seconds;
    let shared = Shared::new(opts.threads);
    let metrics = match (opts.metrics_port, pool) {
        (Some(port), Some(_)) => {
            let (listener, port) =
                metrics::bind(port).map_err(|e| format!("--metrics-port: {e}"))?;
            println!("serving http://127.0.0.1:{port}/metrics during the run");
            Some((listener, port))
        }
        _ => None,
    };
    let stop_metrics = AtomicBool::new(false);
    let start = Instant::now();
    let bar = (opts.progress == Progress::Bar).then(|| {
        let bar = ProgressBar::new(run_for.as_millis() as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>3} [{bar:36}] {percent:>3}% {msg}")
                .expect("progress template")
                .progress_chars("=> "),
        );
        bar
    });

    let (ends, snapshot) = std::thread::scope(|s| {
        let metrics_port = metrics.map(|(listener, port)| {
            let (pool, stop) = (pool.expect("checked above"), &stop_metrics);
            s.spawn(move || metrics::serve(listener, pool, stop));
            port
        });
        let handles: Vec<_> = (0..opts.threads)
            .map(|t| {
                // Share the window out: the first threads take the remainder.
                let (n, threads) = (opts.tenants, opts.threads);
                let window = n / threads + usize::from(t < n % threads);
                let plan = Plan {
                    tenants: n,
                    window,
                    ramp: run_for / 2,
                    run: run_for,
                    start,
                };
                let shared = &shared;
                s.spawn(move || worker::worker(tenants, &plan, shared))
            })
            .collect();

        let mut last = (Instant::now(), 0u64);
        let mut scrape_at = opts
            .scrape
            .then(|| start + Duration::from_secs(1).min(run_for / 2));
        while start.elapsed() < run_for && !shared.stop.load(Ordering::Relaxed) {
            if let (Some(at), Some(port)) = (scrape_at, metrics_port)
                && Instant::now() >= at
            {
                scrape_at = None;
                let print = |text: &str| match &bar {
                    Some(bar) => bar.suspend(|| println!("{text}")),
                    None => println!("{text}"),
                };
                match metrics::scrape(port) {
                    Ok(text) => print(&text),
                    Err(e) => print(&format!("scrape failed: {e}")),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            let n = shared.instantiations.load(Ordering::Relaxed);
            let now = Instant::now();
            let rate = (n - last.1) as f64 / (now - last.0).as_secs_f64();
            last = (now, n);
            match &bar {
                Some(bar) => {
                    bar.set_position(start.elapsed().as_millis() as u64);
                    bar.set_message(format!(
                        "{} live, {rate:.0} inst/s",
                        shared.live.load(Ordering::Relaxed)
                    ));
                }
                None => progress_line(&shared),
            }
        }
        shared.full.wait();
        let live = shared.live.load(Ordering::Relaxed);
        let snapshot = (
            start.elapsed(),
            live,
            Probe::now(),
            pool.map(|p| p.metrics()),
            at_full(live),
        );
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        } else {
            progress_line(&shared);
        }
        shared.release.wait();
        let ends: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect();
        stop_metrics.store(true, Ordering::Relaxed);
        (ends, snapshot)
    });
    let (elapsed, live_at_full, full, metrics_full, notes) = snapshot;
    let mut stats = WorkerStats::new(worker::bucket_edges(opts.tenants).len());
    let mut error = None;
    for end in ends {
        stats.merge(&end.stats)?;
        error = error.or(end.error);
    }
    Ok(Outcome {
        stats,
        measured: Measured {
            threads: opts.threads,
            elapsed,
            live_at_full,
            peak_live: shared.peak_live.load(Ordering::Relaxed),
            before,
            idle,
            full,
            after: Probe::now(),
        },
        error,
        metrics_full,
        metrics_after: pool.map(|p| p.metrics()),
        notes,
    })
}
