//! `--out FILE.svg`: instantiation latency percentiles against live
//! tenants, drawn with plotters' SVG backend.

use crate::lines::{self, Axes};
use crate::report::bucket_range;
use crate::worker::{Latencies, quantile};
use plotters::prelude::SeriesLabelPosition;
use std::path::Path;

pub fn write_chart(
    path: &Path,
    by_live: &[Latencies],
    tenants: usize,
    title: &str,
) -> Result<(), String> {
    let quantiles = [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")];
    // (live tenants at the bucket's middle, latency in µs) per quantile.
    let series: Vec<(&str, Vec<(f64, f64)>)> = quantiles
        .iter()
        .map(|&(q, name)| {
            let points = by_live
                .iter()
                .enumerate()
                .filter_map(|(b, h)| {
                    let (lo, hi) = bucket_range(b, tenants);
                    let v = quantile(h, q)?;
                    Some(((lo + hi) as f64 / 2.0, (v as f64 / 1e3).max(0.01)))
                })
                .collect();
            (name, points)
        })
        .collect();
    let all: Vec<f64> = series.iter().flat_map(|s| &s.1).map(|p| p.1).collect();
    if all.is_empty() {
        return Err("no samples to chart".into());
    }
    let lo = all.iter().cloned().fold(f64::INFINITY, f64::min) / 1.5;
    // Head room above the highest point for the legend.
    let hi = all.iter().cloned().fold(0.0, f64::max) * 5.0;
    let axes = Axes {
        x: 0f64..tenants as f64,
        x_desc: "live tenants",
        x_labels: &|x| format!("{x:.0}"),
        y: lo..hi,
        y_desc: "instantiation latency (µs, log)",
        legend: SeriesLabelPosition::UpperRight,
    };
    lines::draw(path, title, axes, &series)
}
