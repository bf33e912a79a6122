//! `--out FILE.svg` with `--load`: each backend's request latency by
//! percentile, drawn with plotters' SVG backend.

use crate::lines::{self, Axes};
use hdrhistogram::Histogram;
use plotters::prelude::SeriesLabelPosition;
use std::path::Path;

/// The percentiles drawn: 1 .. 99.99, denser in the tail.
const PERCENTILES: [f64; 14] = [
    1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 98.0, 99.0, 99.5, 99.8, 99.9, 99.95, 99.99,
];

/// One line per `(name, latencies in µs)`.
pub fn write_chart(
    path: &Path,
    runs: &[(&str, &Histogram<u64>)],
    title: &str,
) -> Result<(), String> {
    if runs.is_empty() || runs.iter().any(|(_, h)| h.is_empty()) {
        return Err("no latencies to chart".into());
    }
    // x: the percentile's "nines" (-log10 of the tail), so the tail gets room.
    let nines = |p: f64| -(1.0 - p / 100.0).log10();
    let series: Vec<(&str, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|&(name, h)| {
            let points = PERCENTILES
                .iter()
                .map(|&p| (nines(p), h.value_at_percentile(p).max(1) as f64))
                .collect();
            (name, points)
        })
        .collect();
    let all: Vec<f64> = series.iter().flat_map(|s| &s.1).map(|p| p.1).collect();
    let lo = all.iter().cloned().fold(f64::INFINITY, f64::min) / 1.5;
    let hi = all.iter().cloned().fold(0.0, f64::max) * 3.0;
    let axes = Axes {
        x: 0f64..nines(PERCENTILES[PERCENTILES.len() - 1]),
        x_desc: "percentile",
        x_labels: &|x| {
            let p = format!("{:.2}", 100.0 * (1.0 - 10f64.powf(-x)));
            format!("p{}", p.trim_end_matches('0').trim_end_matches('.'))
        },
        y: lo..hi,
        y_desc: "request latency over loopback (µs, log)",
        legend: SeriesLabelPosition::UpperLeft,
    };
    lines::draw(path, title, axes, &series)
}
