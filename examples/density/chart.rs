//! `--out FILE.svg`: instantiation latency percentiles against live
//! tenants, drawn with plotters' SVG backend.

use crate::report::bucket_range;
use crate::worker::{Latencies, quantile};
use std::path::Path;

pub fn write_chart(
    path: &Path,
    by_live: &[Latencies],
    tenants: usize,
    title: &str,
) -> Result<(), String> {
    use plotters::prelude::*;
    let quantiles = [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")];
    let colors = [BLUE, RED, BLACK];
    // (live tenants at the bucket's middle, latency in µs) per quantile.
    let series: Vec<Vec<(f64, f64)>> = quantiles
        .iter()
        .map(|(q, _)| {
            by_live
                .iter()
                .enumerate()
                .filter_map(|(b, h)| {
                    let (lo, hi) = bucket_range(b, tenants);
                    let v = quantile(h, *q)?;
                    Some(((lo + hi) as f64 / 2.0, (v as f64 / 1e3).max(0.01)))
                })
                .collect()
        })
        .collect();
    let all: Vec<f64> = series.iter().flatten().map(|p| p.1).collect();
    if all.is_empty() {
        return Err("no samples to chart".into());
    }
    let lo = all.iter().cloned().fold(f64::INFINITY, f64::min) / 1.5;
    // Head room above the highest point for the legend.
    let hi = all.iter().cloned().fold(0.0, f64::max) * 5.0;
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());

    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..tenants as f64, (lo..hi).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("live tenants")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .y_desc("instantiation latency (µs, log)")
        .draw()
        .map_err(|e| err(&e))?;
    for (((_, name), points), color) in quantiles.iter().zip(&series).zip(colors) {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
