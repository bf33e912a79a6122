//! What both examples' SVG charts share: lines of points with markers, a
//! legend, on a linear x axis and a logarithmic y axis (plotters' SVG
//! backend). Included with `#[path]` by the examples that draw.

use plotters::prelude::*;
use std::path::Path;

/// The axes: `x` range and description, `y` range (log) and description,
/// and how the x labels read.
pub struct Axes<'a> {
    pub x: std::ops::Range<f64>,
    pub x_desc: &'a str,
    pub x_labels: &'a dyn Fn(&f64) -> String,
    pub y: std::ops::Range<f64>,
    pub y_desc: &'a str,
    pub legend: SeriesLabelPosition,
}

/// Draws `lines` (name, points) into a 900x540 SVG at `path`.
pub fn draw(
    path: &Path,
    title: &str,
    axes: Axes<'_>,
    lines: &[(&str, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(axes.x, axes.y.log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(axes.x_desc)
        .x_labels(6)
        .x_label_formatter(axes.x_labels)
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .y_desc(axes.y_desc)
        .draw()
        .map_err(|e| err(&e))?;
    for ((name, points), color) in lines.iter().zip([BLUE, RED, BLACK, GREEN]) {
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
        .position(axes.legend)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
