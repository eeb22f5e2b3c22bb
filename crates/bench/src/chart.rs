//! SVG charts for reports (plotters).

use plotters::prelude::*;
use std::path::Path;

/// A horizontal bar chart of labelled values (one bar per row, label inside, value at its end).
pub fn bars(path: &Path, title: &str, x_label: &str, bars: &[(String, f64)]) -> Result<(), String> {
    let max = bars.iter().map(|(_, v)| *v).fold(0.0f64, f64::max).max(1e-9) * 1.25;
    let n = bars.len().max(1) as f64;
    let height = 120 + 36 * bars.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(10)
        .build_cartesian_2d(0.0..max, 0.0..n)
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().disable_y_mesh().disable_y_axis().x_desc(x_label).draw().map_err(|e| e.to_string())?;
    let row = |i: usize| n - i as f64 - 1.0;
    chart
        .draw_series(
            bars.iter().enumerate().map(|(i, (_, v))| {
                Rectangle::new([(0.0, row(i) + 0.15), (*v, row(i) + 0.85)], BLUE.mix(0.35).filled())
            }),
        )
        .map_err(|e| e.to_string())?;
    let font = ("sans-serif", 13).into_font().color(&BLACK);
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (label, v))| {
            Text::new(format!("{label}: {}", format_value(*v)), (max * 0.01, row(i) + 0.62), font.clone())
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Lines of (x, y) points, one per named series.
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x_max, mut y_max) = (1e-9f64, 1e-9f64);
    for (x, y) in points {
        x_max = x_max.max(*x);
        y_max = y_max.max(*y);
    }
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max * 1.1, 0.0..y_max * 1.1)
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().map_err(|e| e.to_string())?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled()))).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
