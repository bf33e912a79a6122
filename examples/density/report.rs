//! The summary tables printed at the end of a run.

use crate::common::fmt_bytes;
use crate::run::Outcome;
use crate::worker::{Latencies, WorkerStats, bucket_edges, quantile};
use instance_pool::PoolMetrics;
use std::io::Read;
use std::time::Duration;

/// `VmRSS` and `VmHWM` (bytes) and kernel mappings of the process at one
/// moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Probe {
    pub rss: u64,
    pub rss_peak: u64,
    /// `VmPTE`: the process's page tables (guard markers live there).
    pub page_tables: u64,
    pub mappings: usize,
}

/// Lines of `/proc/self/maps`, read through a fixed buffer: near the
/// kernel's mapping limit a process may not get the memory to hold the
/// whole file (a large `malloc` is itself a new mapping).
fn mapping_count() -> usize {
    let Ok(mut maps) = std::fs::File::open("/proc/self/maps") else {
        return 0;
    };
    let mut buf = [0u8; 16 << 10];
    let mut lines = 0;
    loop {
        match maps.read(&mut buf) {
            Ok(0) | Err(_) => return lines,
            Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
        }
    }
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
            mappings: mapping_count(),
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
    /// With the backend made, before any tenant.
    pub idle: Probe,
    /// With every worker's window full (or as full as it got).
    pub full: Probe,
    pub after: Probe,
}

impl Measured {
    /// `(RSS, page tables)` per live instance with the windows full.
    pub fn per_live(&self) -> (f64, f64) {
        let live = self.live_at_full.max(1) as f64;
        (
            (self.full.rss as f64 - self.idle.rss as f64) / live,
            (self.full.page_tables as f64 - self.idle.page_tables as f64) / live,
        )
    }
}

/// How a backend's run ended.
#[derive(Clone, Debug)]
pub enum Ended {
    /// It ran for the whole time.
    Finished,
    /// An instantiation or a tenant's work failed (or the backend could not
    /// be made), and the run stopped there.
    Refused(String),
    /// Its process died (a child run): the signal or exit code, and the
    /// last words on its stderr.
    Died(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Finished => write!(f, "finished"),
            Ended::Refused(e) => write!(f, "refused with an error: {e}"),
            Ended::Died(how) => write!(f, "died: {how}"),
        }
    }
}

/// One backend's run, in this process or in a child (which may have died
/// before it could say more than its largest live count).
pub struct BackendRun {
    pub name: String,
    pub stats: Option<WorkerStats>,
    pub measured: Option<Measured>,
    pub largest_live: usize,
    pub ended: Ended,
    pub metrics_full: Option<PoolMetrics>,
    pub metrics_after: Option<PoolMetrics>,
    pub notes: Vec<(String, String)>,
}

impl BackendRun {
    pub fn new(name: String, o: Outcome) -> Self {
        BackendRun {
            name,
            largest_live: o.measured.peak_live,
            ended: o.error.map_or(Ended::Finished, Ended::Refused),
            stats: Some(o.stats),
            measured: Some(o.measured),
            metrics_full: o.metrics_full,
            metrics_after: o.metrics_after,
            notes: o.notes,
        }
    }
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

/// Live-tenant range of bucket `b` (see [`bucket_edges`]): `[lo, hi)`.
pub fn bucket_range(b: usize, tenants: usize) -> (usize, usize) {
    let edges = bucket_edges(tenants);
    (edges[b], edges.get(b + 1).copied().unwrap_or(tenants))
}

/// The "Results" table: throughput, latency percentiles, RSS, mappings.
fn results(stats: &WorkerStats, m: &Measured) -> Vec<(String, String)> {
    let n = stats.all.len();
    let secs = m.elapsed.as_secs_f64();
    let live = m.live_at_full.max(1) as f64;
    let (per_live, pt_per_live) = m.per_live();
    vec![
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
    ]
}

/// Instantiation latency by live tenants, a row per bucket.
fn by_live(stats: &WorkerStats, tenants: usize) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for (b, h) in stats.by_live.iter().enumerate() {
        if h.is_empty() {
            continue;
        }
        let (lo, hi) = bucket_range(b, tenants);
        rows.push((
            format!("{lo:>7}..{hi:<7} live"),
            format!(
                "p50 {:>9}  p99 {:>9}  p99.9 {:>9}  ({} samples)",
                q(h, 0.5),
                q(h, 0.99),
                q(h, 0.999),
                h.len()
            ),
        ));
    }
    rows
}

/// Everything about one backend's run.
pub fn backend(run: &BackendRun, tenants: usize) {
    let mut rows = vec![
        (
            "largest live count".to_string(),
            run.largest_live.to_string(),
        ),
        ("how it ended".to_string(), run.ended.to_string()),
    ];
    if let (Some(stats), Some(m)) = (&run.stats, &run.measured) {
        rows.extend(results(stats, m));
    }
    rows.extend(run.notes.iter().cloned());
    table(&format!("Results: {}", run.name), &rows);
    if let Some(stats) = &run.stats {
        let title = format!("Instantiation latency by live tenants: {}", run.name);
        table(&title, &by_live(stats, tenants));
    }
    if let Some(m) = &run.metrics_full {
        table("Pool metrics with the window full", &metrics_rows(m));
    }
    if let Some(m) = &run.metrics_after {
        let rows: Vec<_> = metrics_rows(m).into_iter().take(7).collect();
        table("Pool metrics after release", &rows);
    }
}

/// The bucket of instantiations made with 1,000 to 2,000 live, if the run
/// has one: the low-density end of the p99 comparison.
fn at_thousand(stats: &WorkerStats, tenants: usize) -> Option<&Latencies> {
    let b = bucket_edges(tenants).iter().position(|&e| e == 1000)?;
    stats.by_live.get(b).filter(|h| !h.is_empty())
}

/// The backends of one run, a column each.
pub fn side_by_side(runs: &[&BackendRun], tenants: usize) {
    type Cell = fn(&BackendRun, usize) -> String;
    let rows: [(&str, Cell); 8] = [
        ("largest live count", |r, _| r.largest_live.to_string()),
        ("how it ended", |r, _| {
            let s = r.ended.to_string();
            // The whole message is in the backend's own table.
            match s.char_indices().nth(60) {
                Some((i, _)) => format!("{}...", &s[..i]),
                None => s,
            }
        }),
        ("instantiations/s", |r, _| match (&r.stats, &r.measured) {
            (Some(s), Some(m)) => format!("{:.0}", s.all.len() as f64 / m.elapsed.as_secs_f64()),
            _ => "-".into(),
        }),
        ("p50 / p99 at 1,000-2,000 live", |r, t| {
            let h = r.stats.as_ref().and_then(|s| at_thousand(s, t));
            h.map_or("-".into(), |h| format!("{} / {}", q(h, 0.5), q(h, 0.99)))
        }),
        ("p50 / p99 with the window full", |r, _| match &r.stats {
            Some(s) if !s.steady.is_empty() => {
                format!("{} / {}", q(&s.steady, 0.5), q(&s.steady, 0.99))
            }
            _ => "-".into(),
        }),
        ("p99 full / p99 at 1,000", |r, t| {
            let Some(s) = &r.stats else { return "-".into() };
            match (quantile(&s.steady, 0.99), at_thousand(s, t)) {
                (Some(full), Some(k)) => {
                    format!("{:.2}x", full as f64 / k.value_at_quantile(0.99) as f64)
                }
                _ => "-".into(),
            }
        }),
        ("RSS + page tables per live instance", |r, _| {
            r.measured.as_ref().map_or("-".into(), |m| {
                let (rss, pt) = m.per_live();
                format!("{} + {}", fmt_bytes(rss), fmt_bytes(pt))
            })
        }),
        ("kernel mappings (largest live)", |r, _| {
            r.measured
                .as_ref()
                .map_or("-".into(), |m| m.full.mappings.to_string())
        }),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, cell)| runs.iter().map(|r| cell(r, tenants)).collect())
        .collect();
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let label_w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let col_w: Vec<usize> = (0..runs.len())
        .map(|c| {
            cells
                .iter()
                .map(|row| row[c].chars().count())
                .chain([names[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let title = "Backends side by side";
    println!("\n{title}\n{}", "-".repeat(title.len()));
    let line = |label: &str, values: &[&str]| {
        let mut s = format!("  {label:<label_w$}");
        for (v, w) in values.iter().zip(&col_w) {
            s.push_str(&format!("  {v:<w$}"));
        }
        println!("{}", s.trim_end());
    };
    line("", &names);
    for ((label, _), row) in rows.iter().zip(&cells) {
        line(label, &row.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
