//! The measures of a training workload (issue 14, item 7): samples/s, tokens/s, step time
//! percentiles, peak memory and dollars per million training tokens, from per-step samples that
//! either side of a run produces — accelrt's own steps or a [`crate::train_peer::TrainingPeer`]'s —
//! so both are summarised by the same arithmetic.
//!
//! Throughput is counted over the measured steps' summed step times: steps run back to back, and
//! whatever the harness does between steps (reading the next batch) is left out on both sides.

use crate::result::usd_per_million;
use crate::stats::Latency;
use crate::train_peer::PeerStep;
use crate::{BenchError, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One training step as measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSample {
    /// Examples in the batch (pairs, or windows).
    pub rows: usize,
    /// Non-padding input tokens of the batch.
    pub tokens: u64,
    /// Wall time of the step.
    pub time: Duration,
}

impl From<&PeerStep> for StepSample {
    /// A peer's step as the harness timed it (around query and reply, as for inference peers):
    /// the pipe and JSON add well under a millisecond to steps of tens of milliseconds and more.
    fn from(step: &PeerStep) -> StepSample {
        StepSample { rows: step.rows, tokens: step.tokens, time: step.round_trip }
    }
}

/// A training run's summary, as result files and reports carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Steps measured (after the warm-up).
    pub steps: usize,
    pub samples_per_s: f64,
    pub tokens_per_s: f64,
    /// Step time percentiles, in milliseconds.
    pub step_ms: Latency,
    pub peak_memory_bytes: Option<u64>,
    /// `usd_per_hour` spread over the tokens trained per hour; absent when the run is not priced.
    pub usd_per_million_tokens: Option<f64>,
}

/// Summarises `samples` after dropping the first `warmup` (compilation, allocator growth and
/// caches make first steps slower than the steady state a training run is priced at).
pub fn summarize(
    samples: &[StepSample],
    warmup: usize,
    peak_memory_bytes: Option<u64>,
    usd_per_hour: Option<f64>,
) -> Result<TrainingSummary> {
    let measured = samples.get(warmup..).unwrap_or(&[]);
    if measured.is_empty() {
        return Err(BenchError::Invalid(format!(
            "{} training steps with {warmup} of warm-up leave none to measure",
            samples.len()
        )));
    }
    let seconds: f64 = measured.iter().map(|s| s.time.as_secs_f64()).sum();
    if seconds <= 0.0 {
        return Err(BenchError::Invalid("the measured training steps took no time".into()));
    }
    let rows: usize = measured.iter().map(|s| s.rows).sum();
    let tokens: u64 = measured.iter().map(|s| s.tokens).sum();
    let tokens_per_s = tokens as f64 / seconds;
    Ok(TrainingSummary {
        steps: measured.len(),
        samples_per_s: rows as f64 / seconds,
        tokens_per_s,
        step_ms: Latency::from_samples(&measured.iter().map(|s| s.time).collect::<Vec<_>>()),
        peak_memory_bytes,
        usd_per_million_tokens: usd_per_hour.and_then(|p| usd_per_million(p, tokens_per_s)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, rows: usize, tokens: u64) -> StepSample {
        StepSample { rows, tokens, time: Duration::from_millis(ms) }
    }

    #[test]
    fn throughput_percentiles_and_cost() {
        // A slow first step (warm-up), then 100 steps: 99 of 100 ms and one of 300 ms.
        let mut samples = vec![sample(5000, 8, 1000)];
        samples.extend((0..99).map(|_| sample(100, 8, 1000)));
        samples.push(sample(300, 8, 1000));
        let s = summarize(&samples, 1, Some(3 << 30), Some(3.6)).unwrap();
        assert_eq!(s.steps, 100);
        // 100 steps in 10.2 s: 800 samples, 100 000 tokens.
        assert!((s.samples_per_s - 800.0 / 10.2).abs() < 1e-9);
        assert!((s.tokens_per_s - 100_000.0 / 10.2).abs() < 1e-6);
        assert_eq!(s.step_ms.p50, 100.0);
        assert_eq!(s.step_ms.p99, 100.0, "nearest rank: the 99th of 100 sorted samples");
        assert_eq!(s.step_ms.max, 300.0);
        // $3.60/h is $0.001/s; 1M tokens take 1e6 / 9803.9 s = 102 s, so $0.102.
        assert!((s.usd_per_million_tokens.unwrap() - 0.102).abs() < 1e-9);
        assert_eq!(s.peak_memory_bytes, Some(3 << 30));
        assert!(summarize(&samples, 1, None, None).unwrap().usd_per_million_tokens.is_none());
    }

    #[test]
    fn nothing_to_measure_is_an_error() {
        let samples = vec![sample(100, 8, 1000); 3];
        assert!(summarize(&samples, 3, None, None).is_err());
        assert!(summarize(&samples, 5, None, None).is_err());
        assert!(summarize(&[sample(0, 8, 1000)], 0, None, None).is_err());
    }

    #[test]
    fn a_peer_step_is_counted_as_the_harness_timed_it() {
        let step = PeerStep {
            rows: 4,
            loss: 3.7,
            tokens: 512,
            step: Duration::from_millis(90),
            round_trip: Duration::from_millis(91),
            peak_memory_bytes: None,
        };
        assert_eq!(StepSample::from(&step), sample(91, 4, 512));
    }
}
