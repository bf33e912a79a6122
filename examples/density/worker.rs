//! One worker thread: its rolling window of live tenants, and the latency
//! histograms of every instantiation and release it made.

use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// Lower edges of the live-tenant buckets (the by-live table and the
/// chart's x axis): 0, then 100, 200, 500, 1,000, 2,000, 5,000 ... below
/// `tenants`. Logarithmic, so that 1,000 live and 1,000,000 live both get
/// a bucket of their own.
pub fn bucket_edges(tenants: usize) -> Vec<usize> {
    let mut edges = vec![0];
    let mut decade = 100usize;
    'outer: loop {
        for m in [1, 2, 5] {
            let edge = decade.saturating_mul(m);
            if edge >= tenants || edge == usize::MAX {
                break 'outer;
            }
            edges.push(edge);
        }
        decade = decade.saturating_mul(10);
    }
    edges
}

/// The bucket of `live` among `edges`.
pub fn bucket_of(edges: &[usize], live: usize) -> usize {
    edges.partition_point(|&e| e <= live).saturating_sub(1)
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
    /// Instantiation latency by live-tenant bucket (see [`bucket_edges`]).
    pub by_live: Vec<Latencies>,
    pub all: Latencies,
    /// Instantiations once the window was full.
    pub steady: Latencies,
    /// Dropping a tenant (returning its slots).
    pub release: Latencies,
}

impl WorkerStats {
    pub fn new(buckets: usize) -> Self {
        WorkerStats {
            by_live: vec![latencies(); buckets],
            all: latencies(),
            steady: latencies(),
            release: latencies(),
        }
    }

    pub fn merge(&mut self, other: &WorkerStats) -> Result<(), String> {
        if self.by_live.len() != other.by_live.len() {
            return Err("merging latencies of different buckets".into());
        }
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

/// What a worker makes live: the synthetic tenants or Wasmtime instances.
pub trait Tenants: Sync {
    type Tenant;
    /// A new tenant, instantiated: the part that is timed.
    fn instantiate(&self) -> Result<Self::Tenant, String>;
    /// What the tenant does once, right after (not timed).
    fn work(&self, tenant: &mut Self::Tenant) -> Result<(), String>;
}

pub struct Plan {
    pub tenants: usize,
    pub window: usize,
    pub ramp: Duration,
    pub run: Duration,
    pub start: Instant,
}

/// A worker's latencies, and the error that stopped it early (an
/// instantiation or a tenant's work that failed).
pub struct WorkerEnd {
    pub stats: WorkerStats,
    pub error: Option<String>,
}

pub fn worker(tenants: &impl Tenants, plan: &Plan, shared: &Shared) -> WorkerEnd {
    let edges = bucket_edges(plan.tenants);
    let mut stats = WorkerStats::new(edges.len());
    let mut window = VecDeque::with_capacity(plan.window);
    let mut error = None;
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
        let mut tenant = match tenants.instantiate() {
            Ok(tenant) => tenant,
            Err(e) => {
                error = Some(format!("instantiation failed: {e}"));
                break;
            }
        };
        let took = t.elapsed();
        record(&mut stats.all, took);
        record(&mut stats.by_live[bucket_of(&edges, live_before)], took);
        if fill >= 1.0 {
            record(&mut stats.steady, took);
        }
        let live = shared.live.fetch_add(1, Ordering::Relaxed) + 1;
        shared.peak_live.fetch_max(live, Ordering::Relaxed);
        shared.instantiations.fetch_add(1, Ordering::Relaxed);
        let worked = tenants.work(&mut tenant);
        // Live whether its work succeeded or not: it holds its slots.
        window.push_back(tenant);
        if let Err(e) = worked {
            error = Some(format!("tenant work failed: {e}"));
            break;
        }
    }
    if error.is_some() {
        shared.stop.store(true, Ordering::Relaxed);
    }
    // Hold the window while the main thread measures.
    shared.full.wait();
    shared.release.wait();
    let n = window.len();
    for tenant in window.drain(..) {
        let t = Instant::now();
        drop(tenant);
        record(&mut stats.release, t.elapsed());
    }
    shared.live.fetch_sub(n, Ordering::Relaxed);
    WorkerEnd { stats, error }
}
