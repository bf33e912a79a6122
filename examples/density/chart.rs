//! `--out FILE.svg`: instantiation latency percentiles against live
//! tenants (a logarithmic axis, so 1,000 and 1,000,000 live both show),
//! every backend of the run on one chart, drawn with plotters' SVG backend.

use crate::lines::{self, Axes};
use crate::report::bucket_range;
use crate::worker::{WorkerStats, quantile};
use plotters::prelude::SeriesLabelPosition;
use std::path::Path;

/// `1.5k`, `20k`, `1M`: a live count on the axis.
fn fmt_count(n: f64) -> String {
    let (v, unit) = match n {
        n if n >= 1e6 => (n / 1e6, "M"),
        n if n >= 1e3 => (n / 1e3, "k"),
        n => (n, ""),
    };
    let digits = if v < 10.0 { 1 } else { 0 };
    let s = format!("{v:.digits$}");
    format!("{}{unit}", s.strip_suffix(".0").unwrap_or(&s))
}

/// One backend: p50, p99 and p99.9; several: p50 and p99 each (the chart
/// has four colours).
pub fn write_chart(
    path: &Path,
    runs: &[(&str, &WorkerStats)],
    tenants: usize,
    title: &str,
) -> Result<(), String> {
    let quantiles: &[(f64, &str)] = if runs.len() == 1 {
        &[(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")]
    } else {
        &[(0.5, "p50"), (0.99, "p99")]
    };
    let mut names = Vec::new();
    let mut points = Vec::new();
    for (backend, stats) in runs {
        for &(q, label) in quantiles {
            names.push(if runs.len() == 1 {
                label.to_string()
            } else {
                format!("{backend} {label}")
            });
            // (log10 of the bucket's middle live count, latency in µs).
            points.push(
                stats
                    .by_live
                    .iter()
                    .enumerate()
                    .filter_map(|(b, h)| {
                        let (lo, hi) = bucket_range(b, tenants);
                        let mid = if lo == 0 {
                            hi as f64 / 2.0
                        } else {
                            (lo as f64 * hi as f64).sqrt()
                        };
                        let v = quantile(h, q)?;
                        Some((mid.max(1.0).log10(), (v as f64 / 1e3).max(0.01)))
                    })
                    .collect::<Vec<_>>(),
            );
        }
    }
    let series: Vec<(&str, Vec<(f64, f64)>)> = names
        .iter()
        .map(String::as_str)
        .zip(points)
        .take(4)
        .collect();
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    if all.is_empty() {
        return Err("no samples to chart".into());
    }
    let y_lo = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min) / 1.5;
    // Head room above the highest point for the legend.
    let y_hi = all.iter().map(|p| p.1).fold(0.0, f64::max) * 5.0;
    let x_lo = all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min) - 0.2;
    let x_hi = (tenants.max(2) as f64).log10() + 0.1;
    let axes = Axes {
        x: x_lo..x_hi,
        x_desc: "live tenants (log)",
        x_labels: &|x| fmt_count(10f64.powf(*x)),
        y: y_lo..y_hi,
        y_desc: "instantiation latency (µs, log)",
        legend: SeriesLabelPosition::UpperRight,
    };
    lines::draw(path, title, axes, &series)
}
