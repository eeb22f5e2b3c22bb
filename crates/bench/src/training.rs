//! What a training result carries besides the throughput and step times every result has
//! (`BenchResult::throughput_per_s` is training samples per second there, `latency_ms` the step
//! time): the task and its data, the optimiser's settings, training tokens per second and the
//! price of a million of them, and every step's loss (the first steps' losses show that accelrt
//! and a peer trained the same model on the same batches).

use crate::limits::Limit;
use crate::result::usd_per_million;
use serde::{Deserialize, Serialize};

/// The most step losses a result file may hold (a training run of the harness takes minutes;
/// this bounds what a hostile file can make the report read).
pub const MAX_LOSSES: usize = 1_000_000;

/// [`TrainingMetrics::precision`] of a run in f32 throughout.
pub const PRECISION_F32: &str = "f32";
/// [`TrainingMetrics::precision`] of a run in bf16 mixed precision.
pub const PRECISION_BF16_MIXED: &str = "bf16-mixed";

fn f32_precision() -> String {
    PRECISION_F32.into()
}

/// A training run's own measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingMetrics {
    /// `mnrl` (MultipleNegativesRankingLoss on pairs) or `causal-lm` (next-token cross-entropy).
    pub task: String,
    /// The data file's name.
    pub data: String,
    /// Causal LM: tokens per window (every window is full, so tokens = rows × seq_len).
    pub seq_len: Option<usize>,
    /// AdamW's learning rate (constant, no schedule).
    pub lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Dropout probability of the run (0: the harness trains without dropout on every side).
    pub dropout: f64,
    /// [`PRECISION_F32`], or [`PRECISION_BF16_MIXED`] (`--dtype bf16`: products in bf16, f32
    /// master weights and optimiser; the PyTorch peer under `torch.autocast`). Result files
    /// written before the field existed were all f32.
    #[serde(default = "f32_precision")]
    pub precision: String,
    /// Unmeasured steps before the measured ones.
    pub warmup_steps: usize,
    /// Non-padding input tokens of the measured steps, warm-up excluded.
    pub tokens: u64,
    /// Training tokens per second: `tokens` over the measured steps' summed step times (the
    /// result's `duration_s`).
    pub tokens_per_s: f64,
    /// Every step's loss before its update, warm-up steps first.
    pub losses: Vec<f64>,
    /// US dollars per million training tokens: price per hour × 10⁶ / (3600 × `tokens_per_s`);
    /// absent when the run is unpriced.
    pub usd_per_million_tokens: Option<f64>,
}

/// A loss (or any measure) for a table: four decimals, or three significant digits in exponent
/// form when that would be wide or show nothing (a diverged loss of 1e300 must not widen a table
/// by 300 digits).
pub fn short_number(x: f64) -> String {
    if x == 0.0 || (1e-3..1e5).contains(&x.abs()) {
        format!("{x:.4}")
    } else {
        format!("{x:.3e}")
    }
}

/// The first and last loss of a run, for tables.
pub fn loss_span(losses: &[f64]) -> String {
    match (losses.first(), losses.last()) {
        (Some(a), Some(b)) => format!("{} → {}", short_number(*a), short_number(*b)),
        _ => "—".into(),
    }
}

impl TrainingMetrics {
    /// The cost per million training tokens at `usd_per_hour` and `tokens_per_s`
    /// ([`usd_per_million`]: price × 10⁶ / (3600 × throughput)).
    pub fn usd_per_million_tokens(usd_per_hour: Option<f64>, tokens_per_s: f64) -> Option<f64> {
        usd_per_hour.and_then(|p| usd_per_million(p, tokens_per_s))
    }

    /// Whether the derived numbers follow from the measured ones: `tokens_per_s` = tokens over
    /// the result's `duration_s`, and the cost = price × 10⁶ / (3600 × tokens/s), each within 1e-6
    /// relative (a hand-edited file must not show a throughput or cost it did not measure).
    pub(crate) fn check_consistent(&self, duration_s: f64, usd_per_hour: Option<f64>) -> Result<(), String> {
        if ![PRECISION_F32, PRECISION_BF16_MIXED].contains(&self.precision.as_str()) {
            return Err(format!(
                "`training.precision` {:?} is neither {PRECISION_F32} nor {PRECISION_BF16_MIXED}",
                self.precision
            ));
        }
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(b.abs());
        if duration_s > 0.0 && !close(self.tokens_per_s, self.tokens as f64 / duration_s) {
            return Err(format!(
                "`training.tokens_per_s` {} is not `training.tokens` {} over `duration_s` {duration_s}",
                self.tokens_per_s, self.tokens
            ));
        }
        let cost = Self::usd_per_million_tokens(usd_per_hour, self.tokens_per_s);
        let agrees = match (cost, self.usd_per_million_tokens) {
            (Some(want), Some(got)) => close(want, got),
            (None, None) => true,
            _ => false,
        };
        if !agrees {
            return Err(format!(
                "`training.usd_per_million_tokens` {:?} does not follow from the price {usd_per_hour:?} and {} tokens/s",
                self.usd_per_million_tokens, self.tokens_per_s
            ));
        }
        Ok(())
    }

    /// Each number with its limit, named as in the result file, for `BenchResult::check`.
    pub(crate) fn fields(&self) -> Vec<(String, f64, Limit)> {
        let mut fields = vec![
            ("training.seq_len".into(), self.seq_len.unwrap_or(1) as f64, Limit::TOKENS),
            ("training.lr".into(), self.lr, Limit::HYPER),
            ("training.weight_decay".into(), self.weight_decay, Limit::HYPER),
            ("training.dropout".into(), self.dropout, Limit::PROBABILITY),
            ("training.warmup_steps".into(), self.warmup_steps as f64, Limit::COUNT),
            ("training.tokens".into(), self.tokens as f64, Limit::COUNT),
            ("training.tokens_per_s".into(), self.tokens_per_s, Limit::RATE),
            ("training.usd_per_million_tokens".into(), self.usd_per_million_tokens.unwrap_or(0.0), Limit::COST),
            ("training.losses (count)".into(), self.losses.len() as f64, Limit::LOSSES),
        ];
        // A loss is finite (a run whose loss diverged stops with an error instead of a result).
        if let Some((i, l)) = self.losses.iter().enumerate().find(|(_, l)| !l.is_finite()) {
            fields.push((format!("training.losses[{i}]"), *l, Limit::COUNT));
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> TrainingMetrics {
        TrainingMetrics {
            task: "causal-lm".into(),
            data: "corpus-train.txt".into(),
            seq_len: Some(128),
            lr: 5e-5,
            weight_decay: 0.01,
            dropout: 0.0,
            precision: PRECISION_F32.into(),
            warmup_steps: 1,
            tokens: 5120,
            tokens_per_s: 1000.0,
            losses: vec![3.7, 3.6],
            usd_per_million_tokens: None,
        }
    }

    #[test]
    fn cost_per_million_tokens() {
        // $3.60/h is $0.001/s; 1M tokens at 1000 tokens/s take 1000 s: $1.
        assert!((TrainingMetrics::usd_per_million_tokens(Some(3.6), 1000.0).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(TrainingMetrics::usd_per_million_tokens(None, 1000.0), None);
        assert_eq!(TrainingMetrics::usd_per_million_tokens(Some(3.6), 0.0), None);
    }

    #[test]
    fn a_precision_other_than_the_two_is_refused_and_a_missing_one_reads_as_f32() {
        let m = metrics();
        let mut bad = m.clone();
        bad.precision = "fp8\u{1b}[2J".into();
        let err = bad.check_consistent(0.0, None).unwrap_err();
        assert!(err.contains("training.precision"), "{err}");
        let mut json = serde_json::to_value(&m).unwrap();
        json.as_object_mut().unwrap().remove("precision");
        assert_eq!(serde_json::from_value::<TrainingMetrics>(json).unwrap().precision, PRECISION_F32);
    }

    #[test]
    fn checked_fields_catch_a_bad_loss_and_bad_numbers() {
        let check = |m: &TrainingMetrics| {
            m.fields().into_iter().find_map(|(name, v, limit)| limit.check(v).err().map(|_| name))
        };
        assert_eq!(check(&metrics()), None);
        let mut m = metrics();
        m.losses[1] = f64::NAN;
        assert_eq!(check(&m).as_deref(), Some("training.losses[1]"));
        let mut m = metrics();
        m.dropout = 1.5;
        assert_eq!(check(&m).as_deref(), Some("training.dropout"));
        let mut m = metrics();
        m.tokens_per_s = -1.0;
        assert_eq!(check(&m).as_deref(), Some("training.tokens_per_s"));
    }
}
