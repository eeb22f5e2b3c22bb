//! SVG charts for reports (plotters).
//!
//! Axes always start at 0 and end at a finite, positive value, whatever the data: plotters' tick
//! search never terminates on an infinite or NaN range, so values that are negative, not finite, or
//! beyond `AXIS_MAX` are refused with an error instead of being drawn.

use plotters::prelude::*;
use std::path::Path;

/// The largest value a chart shows (results are validated far below it when they are loaded).
const AXIS_MAX: f64 = 1e15;
/// The shortest axis: all-zero or tiny values still get a drawable span.
const AXIS_MIN_SPAN: f64 = 1e-9;
/// Tick labels per axis.
const TICKS: usize = 10;

/// The end of an axis from 0 that shows every value with `headroom` (e.g. 1.1), or why the values
/// cannot be charted.
fn axis_end(values: impl IntoIterator<Item = f64>, headroom: f64) -> Result<f64, String> {
    let mut max = 0.0f64;
    for v in values {
        if !(v.is_finite() && (0.0..=AXIS_MAX).contains(&v)) {
            return Err(format!("cannot chart the value {v} (charts show finite values from 0 to {AXIS_MAX:e})"));
        }
        max = max.max(v);
    }
    Ok((max * headroom).max(AXIS_MIN_SPAN))
}

/// A horizontal bar chart of labelled values (one bar per row, label inside, value at its end).
pub fn bars(path: &Path, title: &str, x_label: &str, bars: &[(String, f64)]) -> Result<(), String> {
    let max = axis_end(bars.iter().map(|(_, v)| *v), 1.25)?;
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
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_labels(TICKS)
        .x_desc(x_label)
        .draw()
        .map_err(|e| e.to_string())?;
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
    let points = || series.iter().flat_map(|(_, p)| p.iter());
    let x_max = axis_end(points().map(|(x, _)| *x), 1.1)?;
    let y_max = axis_end(points().map(|(_, y)| *y), 1.1)?;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(TICKS)
        .y_labels(TICKS)
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `f` on a thread and fails (instead of hanging the test run) if it has not returned
    /// after a minute; a chart takes milliseconds.
    fn returns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(f()).unwrap());
        rx.recv_timeout(Duration::from_secs(60)).expect("the chart call never returned")
    }

    #[test]
    fn charts_refuse_unchartable_values_and_draw_degenerate_ones_without_looping() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [1.7e308, f64::MAX, f64::INFINITY, f64::NAN, -1.0, 1e16] {
            let path = dir.path().join("bars.svg");
            let err = returns(move || bars(&path, "t", "x", &[("a".into(), 1.0), ("b".into(), bad)])).unwrap_err();
            assert!(err.contains("cannot chart the value"), "{bad}: {err}");
            let path = dir.path().join("lines.svg");
            let err = returns(move || lines(&path, "t", "x", "y", &[("a".into(), vec![(1.0, bad)])])).unwrap_err();
            assert!(err.contains("cannot chart the value"), "{bad}: {err}");
            let path = dir.path().join("lines.svg");
            assert!(returns(move || lines(&path, "t", "x", "y", &[("a".into(), vec![(bad, 1.0)])])).is_err());
        }
        // Zero spans, tiny values, the largest allowed value and no data at all still draw.
        let cases: Vec<Vec<(String, f64)>> = vec![
            vec![],
            vec![("zero".into(), 0.0)],
            vec![("tiny".into(), 1e-300), ("zero".into(), 0.0)],
            vec![("huge".into(), AXIS_MAX), ("small".into(), 1e-3)],
        ];
        for case in cases {
            let path = dir.path().join("ok.svg");
            let series = vec![("s".to_string(), case.iter().map(|(_, v)| (*v, *v)).collect::<Vec<_>>())];
            let (p, c) = (path.clone(), case.clone());
            returns(move || bars(&p, "t", "x", &c)).unwrap_or_else(|e| panic!("{case:?}: {e}"));
            let p = path.clone();
            returns(move || lines(&p, "t", "x", "y", &series)).unwrap_or_else(|e| panic!("{case:?}: {e}"));
        }
    }
}
