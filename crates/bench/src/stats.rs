//! Latency percentiles.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Latency summary in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median, in ms.
    pub p50: f64,
    /// 90th percentile, in ms.
    pub p90: f64,
    /// 95th percentile, in ms.
    pub p95: f64,
    /// 99th percentile, in ms (what `--p99-ms` is checked against).
    pub p99: f64,
    /// 99.9th percentile, in ms; serialised as `p99.9`.
    #[serde(rename = "p99.9")]
    pub p999: f64,
    /// Slowest sample, in ms.
    pub max: f64,
    /// Arithmetic mean, in ms.
    pub mean: f64,
}

/// The nearest-rank percentile `p` (0–100) of samples sorted ascending: the sample of rank
/// `ceil(p / 100 × n)`, clamped to `1..=n`. Zero for no samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Latency {
    /// The summary of `samples` (any order; every field is zero when there are none).
    pub fn from_samples(samples: &[Duration]) -> Latency {
        let mut s = samples.to_vec();
        s.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mean = if s.is_empty() { 0.0 } else { s.iter().map(|d| ms(*d)).sum::<f64>() / s.len() as f64 };
        Latency {
            p50: ms(percentile(&s, 50.0)),
            p90: ms(percentile(&s, 90.0)),
            p95: ms(percentile(&s, 95.0)),
            p99: ms(percentile(&s, 99.0)),
            p999: ms(percentile(&s, 99.9)),
            max: ms(s.last().copied().unwrap_or_default()),
            mean,
        }
    }
}
