//! One worker thread: its rolling window of live tenants, and the latency
//! histograms of every instantiation and release it made.

use instance_pool::{InstanceAllocator, InstanceLayout, Store, StoreLimits};
use std::collections::VecDeque;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Live-tenant buckets for latency-vs-density (the chart's x axis).
pub const BUCKETS: usize = 20;

// ---- a log-linear latency histogram (about 3% resolution) ---------------

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    pub total: u64,
    pub max: u64,
}

impl Histogram {
    pub fn new() -> Self {
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

    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The `q` quantile (0..=1), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
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
    pub by_live: Vec<Histogram>,
    pub all: Histogram,
    /// Instantiations once the window was full.
    pub steady: Histogram,
    /// Dropping a store (returning its slots).
    pub release: Histogram,
}

impl WorkerStats {
    pub fn new() -> Self {
        WorkerStats {
            by_live: vec![Histogram::new(); BUCKETS],
            all: Histogram::new(),
            steady: Histogram::new(),
            release: Histogram::new(),
        }
    }

    pub fn merge(&mut self, other: &WorkerStats) {
        for (a, b) in self.by_live.iter_mut().zip(&other.by_live) {
            a.merge(b);
        }
        self.all.merge(&other.all);
        self.steady.merge(&other.steady);
        self.release.merge(&other.release);
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
        let bucket = (live_before * BUCKETS / (plan.tenants + 1)).min(BUCKETS - 1);
        stats.by_live[bucket].record(ns);
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
