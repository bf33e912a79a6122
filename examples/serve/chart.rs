//! `--out FILE.svg` with `--load`: each backend's request latency by
//! percentile, drawn with plotters' SVG backend.

use hdrhistogram::Histogram;
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
    use plotters::prelude::*;
    // x: the percentile's "nines" (-log10 of the tail), so the tail gets room.
    let nines = |p: f64| -(1.0 - p / 100.0).log10();
    let series: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|(_, h)| {
            PERCENTILES
                .iter()
                .map(|&p| (nines(p), h.value_at_percentile(p).max(1) as f64))
                .collect()
        })
        .collect();
    let all: Vec<f64> = series.iter().flatten().map(|p| p.1).collect();
    if all.is_empty() || runs.iter().any(|(_, h)| h.is_empty()) {
        return Err("no latencies to chart".into());
    }
    let lo = all.iter().cloned().fold(f64::INFINITY, f64::min) / 1.5;
    let hi = all.iter().cloned().fold(0.0, f64::max) * 3.0;
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let x_max = nines(PERCENTILES[PERCENTILES.len() - 1]);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (lo..hi).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .x_labels(5)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            format!("p{p:.2}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        })
        .y_desc("request latency over loopback (µs, log)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    for (((name, _), points), color) in runs.iter().zip(&series).zip([BLUE, RED, BLACK]) {
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
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
