//! One worker thread: its rolling window of live tenants, and the latency
//! histograms of every instantiation and release it made.

use hdrhistogram::Histogram;
use instance_pool::{InstanceAllocator, InstanceLayout, Store, StoreLimits};
use std::collections::VecDeque;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Live-tenant buckets for latency-vs-density (the chart's x axis).
pub const BUCKETS: usize = 20;

/// Latencies in nanoseconds, 2 significant digits (1% resolution) up to a
/// minute; a slower sample is counted as a minute.
pub type Latencies = Histogram<u64>;

const HIGHEST_NS: u64 = 60_000_000_000;

pub fn latencies() -> Latencies {
    Histogram::new_with_bounds(1, HIGHEST_NS, 2).expect("constant histogram bounds are valid")
}

/// The `q` quantile (0..=1) in nanoseconds, `None` when empty.
pub fn quantile(h: &Latencies, q: f64) -> Option<u64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q))
}

fn record(h: &mut Latencies, elapsed: Duration) {
    h.saturating_record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
}

/// What every worker shares.
pub struct Shared {
    pub live: AtomicUsize,
    pub peak_live: AtomicUsize,
    pub instantiations: AtomicU64,
    pub stop: AtomicBool,
    /// Workers wait here with their windows full, so the main thread can
    /// measure RSS and mappings, and again before they release them.
    pub full: Barrier,
    pub release: Barrier,
}

impl Shared {
    pub fn new(threads: usize) -> Self {
        Shared {
            live: AtomicUsize::new(0),
            peak_live: AtomicUsize::new(0),
            instantiations: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            full: Barrier::new(threads + 1),
            release: Barrier::new(threads + 1),
        }
    }
}

/// One worker's results, or all workers' once merged.
pub struct WorkerStats {
    /// Instantiation latency by live-tenant bucket.
    pub by_live: Vec<Latencies>,
    pub all: Latencies,
    /// Instantiations once the window was full.
    pub steady: Latencies,
    /// Dropping a store (returning its slots).
    pub release: Latencies,
}

impl WorkerStats {
    pub fn new() -> Self {
        WorkerStats {
            by_live: vec![latencies(); BUCKETS],
            all: latencies(),
            steady: latencies(),
            release: latencies(),
        }
    }

    pub fn merge(&mut self, other: &WorkerStats) -> Result<(), String> {
        let pairs = self.by_live.iter_mut().zip(&other.by_live).chain([
            (&mut self.all, &other.all),
            (&mut self.steady, &other.steady),
            (&mut self.release, &other.release),
        ]);
        for (a, b) in pairs {
            a.add(b).map_err(|e| format!("merging latencies: {e}"))?;
        }
        Ok(())
    }
}

pub struct Plan {
    pub tenants: usize,
    pub window: usize,
    pub ramp: Duration,
    pub run: Duration,
    pub start: Instant,
}

pub fn worker(
    allocator: &impl InstanceAllocator,
    layout: &InstanceLayout,
    limits: &StoreLimits,
    plan: &Plan,
    shared: &Shared,
) -> Result<WorkerStats, String> {
    let mut stats = WorkerStats::new();
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
            record(&mut stats.release, t.elapsed());
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
        let took = t.elapsed();
        record(&mut stats.all, took);
        let bucket = (live_before * BUCKETS / (plan.tenants + 1)).min(BUCKETS - 1);
        record(&mut stats.by_live[bucket], took);
        if fill >= 1.0 {
            record(&mut stats.steady, took);
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
        record(&mut stats.release, t.elapsed());
    }
    shared.live.fetch_sub(n, Ordering::Relaxed);
    result.map(|()| stats)
}
