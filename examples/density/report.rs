//! The summary tables printed at the end of a run.

use crate::common::fmt_bytes;
use crate::worker::{BUCKETS, Latencies, WorkerStats, quantile};
use instance_pool::PoolMetrics;
use std::time::Duration;

/// `VmRSS` and `VmHWM` (bytes) and kernel mappings of the process at one
/// moment.
#[derive(Clone, Copy)]
pub struct Probe {
    pub rss: u64,
    pub rss_peak: u64,
    /// `VmPTE`: the process's page tables (guard markers live there).
    pub page_tables: u64,
    pub mappings: usize,
}

impl Probe {
    pub fn now() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        Probe {
            rss: field("VmRSS:"),
            rss_peak: field("VmHWM:"),
            page_tables: field("VmPTE:"),
            mappings: instance_pool::kernel_mappings().unwrap_or(0),
        }
    }
}

/// What the run measured besides the latencies.
pub struct Measured {
    pub threads: usize,
    pub elapsed: Duration,
    pub live_at_full: usize,
    pub peak_live: usize,
    pub before: Probe,
    /// With the pool made, before any tenant.
    pub idle: Probe,
    /// With every worker's window full.
    pub full: Probe,
    pub after: Probe,
}

fn fmt_ns(ns: Option<u64>) -> String {
    match ns {
        None => "-".into(),
        Some(n) if n >= 1_000_000 => format!("{:.2} ms", n as f64 / 1e6),
        Some(n) if n >= 1_000 => format!("{:.2} µs", n as f64 / 1e3),
        Some(n) => format!("{n} ns"),
    }
}

fn q(h: &Latencies, p: f64) -> String {
    fmt_ns(quantile(h, p))
}

/// Prints `rows` as an aligned two-column table.
pub fn table(title: &str, rows: &[(String, String)]) {
    let w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    println!("\n{title}");
    println!("{}", "-".repeat(title.chars().count()));
    for (k, v) in rows {
        println!("  {k:<w$}  {v}");
    }
}

pub fn metrics_rows(m: &PoolMetrics) -> Vec<(String, String)> {
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
pub fn bucket_range(b: usize, tenants: usize) -> (usize, usize) {
    let lo = (b * (tenants + 1)).div_ceil(BUCKETS);
    let hi = ((b + 1) * (tenants + 1)).div_ceil(BUCKETS);
    (lo, hi)
}

/// The "Results" table: throughput, latency percentiles, RSS, mappings.
pub fn results(stats: &WorkerStats, m: &Measured) {
    let n = stats.all.len();
    let secs = m.elapsed.as_secs_f64();
    let live = m.live_at_full.max(1) as f64;
    let per_live = (m.full.rss as f64 - m.idle.rss as f64) / live;
    let pt_per_live = (m.full.page_tables as f64 - m.idle.page_tables as f64) / live;
    let rows = vec![
        ("instantiations".into(), format!("{n} in {secs:.2} s")),
        (
            "instantiations/s".into(),
            format!(
                "{:.0} overall, {:.0} per thread",
                n as f64 / secs,
                n as f64 / secs / m.threads as f64
            ),
        ),
        (
            "instantiation p50 / p99 / p99.9".into(),
            format!(
                "{} / {} / {} (max {})",
                q(&stats.all, 0.5),
                q(&stats.all, 0.99),
                q(&stats.all, 0.999),
                fmt_ns((!stats.all.is_empty()).then(|| stats.all.max()))
            ),
        ),
        (
            "  with the window full".into(),
            format!(
                "{} / {} / {} ({} samples)",
                q(&stats.steady, 0.5),
                q(&stats.steady, 0.99),
                q(&stats.steady, 0.999),
                stats.steady.len()
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
        ("peak live instances".into(), m.peak_live.to_string()),
        (
            "process RSS: start / idle pool / full / after".into(),
            format!(
                "{} / {} / {} / {} (peak {})",
                fmt_bytes(m.before.rss as f64),
                fmt_bytes(m.idle.rss as f64),
                fmt_bytes(m.full.rss as f64),
                fmt_bytes(m.after.rss as f64),
                fmt_bytes(m.full.rss_peak as f64)
            ),
        ),
        (
            "RSS per live instance".into(),
            format!(
                "{} ((full - idle pool) / {} live)",
                fmt_bytes(per_live),
                m.live_at_full
            ),
        ),
        (
            "page tables (VmPTE): idle pool / full".into(),
            format!(
                "{} / {}; {} per live instance",
                fmt_bytes(m.idle.page_tables as f64),
                fmt_bytes(m.full.page_tables as f64),
                fmt_bytes(pt_per_live)
            ),
        ),
        (
            "RSS + page tables per live instance".into(),
            fmt_bytes(per_live + pt_per_live),
        ),
        (
            "kernel mappings per live instance".into(),
            format!(
                "{:.3}",
                (m.full.mappings as f64 - m.before.mappings as f64) / live
            ),
        ),
        (
            "kernel mappings: start / idle pool / full / after".into(),
            format!(
                "{} / {} / {} / {}",
                m.before.mappings, m.idle.mappings, m.full.mappings, m.after.mappings
            ),
        ),
    ];
    table("Results", &rows);
}

/// Instantiation latency by live tenants, two chart buckets a row.
pub fn by_live(stats: &WorkerStats, tenants: usize) -> Result<(), String> {
    let mut rows = Vec::new();
    for (i, pair) in stats.by_live.chunks(2).enumerate() {
        let mut h = pair[0].clone();
        for other in &pair[1..] {
            h.add(other)
                .map_err(|e| format!("merging latencies: {e}"))?;
        }
        if h.is_empty() {
            continue;
        }
        let (lo, _) = bucket_range(2 * i, tenants);
        let (_, hi) = bucket_range(2 * i + pair.len() - 1, tenants);
        rows.push((
            format!("{lo:>6}..{hi:<6} live"),
            format!(
                "p50 {:>9}  p99 {:>9}  p99.9 {:>9}  ({} samples)",
                q(&h, 0.5),
                q(&h, 0.99),
                q(&h, 0.999),
                h.len()
            ),
        ));
    }
    table("Instantiation latency by live tenants", &rows);
    Ok(())
}
