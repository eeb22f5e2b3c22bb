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
    let height = 160 + 36 * bars.len() as u32;
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
        .max_light_lines(0)
        .x_labels(TICKS)
        .x_label_formatter(&|v| tick(*v))
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

/// A tick label as people write numbers: no exponent, no float noise (`0.30000000000000004`), a
/// thousands separator for large values.
fn tick(v: f64) -> String {
    let a = v.abs();
    let s = if a == 0.0 {
        "0".to_string()
    } else if a >= 1000.0 {
        let digits = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        // Enough decimals for three significant digits, trailing zeros dropped.
        let decimals = (2 - a.log10().floor() as i32).clamp(0, 12) as usize;
        let t = format!("{a:.decimals$}");
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t
        }
    };
    if v < 0.0 {
        format!("-{s}")
    } else {
        s
    }
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

/// One server configuration's load search: (offered load, p99, valid) per run, the load the
/// result reports (when valid) and its p99 bound.
pub struct LoadCurve {
    pub name: String,
    pub points: Vec<(f64, f64, bool)>,
    pub chosen: Option<f64>,
    pub bound: Option<f64>,
}

/// p99 latency against offered load: valid runs as filled dots, invalid ones as crosses, the p99
/// bound as a dashed horizontal line and the chosen load as a dotted vertical one.
pub fn latency_vs_load(path: &Path, title: &str, curves: &[LoadCurve]) -> Result<(), String> {
    let xs = curves.iter().flat_map(|c| c.points.iter().map(|p| p.0).chain(c.chosen));
    let x_max = axis_end(xs, 1.1)?;
    let ys = curves.iter().flat_map(|c| c.points.iter().map(|p| p.1).chain(c.bound));
    let y_max = axis_end(ys, 1.1)?;
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
        .max_light_lines(0)
        .x_labels(TICKS)
        .y_labels(TICKS)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .x_desc("offered load (queries / s)")
        .y_desc("p99 latency (ms)")
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, c) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(c.points.iter().map(|p| (p.0, p.1)), color.stroke_width(1)))
            .map_err(|e| e.to_string())?
            .label(c.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(c.points.iter().filter(|p| p.2).map(|p| Circle::new((p.0, p.1), 4, color.filled())))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(c.points.iter().filter(|p| !p.2).map(|p| Cross::new((p.0, p.1), 5, color.stroke_width(2))))
            .map_err(|e| e.to_string())?;
        if let Some(b) = c.bound {
            let dashes = dashed((0.0, b), (x_max, b), x_max / 60.0, true);
            chart
                .draw_series(dashes.into_iter().map(|seg| PathElement::new(seg, RED.stroke_width(1))))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("p99 bound {} ms", tick(b)),
                    (x_max * 0.01, b),
                    ("sans-serif", 12).into_font().color(&RED),
                )))
                .map_err(|e| e.to_string())?;
        }
        if let Some(q) = c.chosen {
            let dashes = dashed((q, 0.0), (q, y_max), y_max / 40.0, false);
            chart
                .draw_series(dashes.into_iter().map(|seg| PathElement::new(seg, color.stroke_width(1))))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("chosen {} /s", tick(q)),
                    (q, y_max * 0.97),
                    ("sans-serif", 12).into_font().color(&color),
                )))
                .map_err(|e| e.to_string())?;
        }
    }
    // Legend entries for the markers.
    chart
        .draw_series(std::iter::once(Circle::new((0.0, 0.0), 0, BLACK.filled())))
        .map_err(|e| e.to_string())?
        .label("● valid  ✕ invalid")
        .legend(|(x, y)| Circle::new((x + 8, y), 3, BLACK.filled()));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// A dashed line from `a` to `b` (horizontal or vertical) as segments of length `step`.
fn dashed(a: (f64, f64), b: (f64, f64), step: f64, horizontal: bool) -> Vec<Vec<(f64, f64)>> {
    let (from, to) = if horizontal { (a.0, b.0) } else { (a.1, b.1) };
    let mut segments = Vec::new();
    let mut t = from;
    while t < to && segments.len() < 200 {
        let end = (t + step * 0.6).min(to);
        segments.push(if horizontal { vec![(t, a.1), (end, a.1)] } else { vec![(a.0, t), (a.0, end)] });
        t += step;
    }
    segments
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

    fn curve(points: Vec<(f64, f64, bool)>) -> LoadCurve {
        let chosen = points.iter().find(|p| p.2).map(|p| p.0);
        LoadCurve { name: "s".into(), points, chosen, bound: Some(1.0) }
    }

    #[test]
    fn tick_labels_are_plain_numbers() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(0.30000000000000004), "0.3");
        assert_eq!(tick(12.5), "12.5");
        assert_eq!(tick(250.0), "250");
        assert_eq!(tick(1500.0), "1,500");
        assert_eq!(tick(2_000_000.0), "2,000,000");
        assert_eq!(tick(0.00125), "0.00125");
    }

    #[test]
    fn charts_refuse_unchartable_values_and_draw_degenerate_ones_without_looping() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [1.7e308, f64::MAX, f64::INFINITY, f64::NAN, -1.0, 1e16] {
            let path = dir.path().join("bars.svg");
            let err = returns(move || bars(&path, "t", "x", &[("a".into(), 1.0), ("b".into(), bad)])).unwrap_err();
            assert!(err.contains("cannot chart the value"), "{bad}: {err}");
            let path = dir.path().join("lines.svg");
            let err = returns(move || latency_vs_load(&path, "t", &[curve(vec![(1.0, bad, true)])])).unwrap_err();
            assert!(err.contains("cannot chart the value"), "{bad}: {err}");
            let path = dir.path().join("lines.svg");
            assert!(returns(move || latency_vs_load(&path, "t", &[curve(vec![(bad, 1.0, false)])])).is_err());
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
            let series = vec![curve(case.iter().map(|(_, v)| (*v, *v, true)).collect::<Vec<_>>())];
            let (p, c) = (path.clone(), case.clone());
            returns(move || bars(&p, "t", "x", &c)).unwrap_or_else(|e| panic!("{case:?}: {e}"));
            let p = path.clone();
            returns(move || latency_vs_load(&p, "t", &series)).unwrap_or_else(|e| panic!("{case:?}: {e}"));
        }
    }
}
