//! Latency percentiles.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Latency summary in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// The nearest-rank percentile `p` (0–100) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Latency {
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
