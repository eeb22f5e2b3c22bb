//! Learning-rate schedules, as pure functions of the optimiser step.
//!
//! The formulas are those of Hugging Face transformers (`transformers/optimization.py`):
//! [`LrSchedule::Constant`] is `get_constant_schedule_with_warmup` (plain `get_constant_schedule`
//! when `warmup_steps` is 0) and [`LrSchedule::WarmupCosine`] is `get_cosine_schedule_with_warmup`
//! with its default `num_cycles = 0.5` (one half cosine from the peak down to 0).
//!
//! Step convention, also transformers': `step` is the 0-based index of the optimiser step about to
//! be taken (the scheduler's `last_epoch` after `step - 1` calls of `scheduler.step()`), so with
//! warm-up the very first update uses a learning rate of 0, exactly as a PyTorch loop that calls
//! `optimizer.step(); scheduler.step()` does. Matching this is what lets accelrt's first steps be
//! compared with PyTorch's number for number.

use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};

/// A learning-rate schedule: peak rate and shape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// `lr * step / max(1, warmup_steps)` during warm-up, then `lr`.
    Constant {
        /// The peak learning rate, finite and ≥ 0.
        lr: f64,
        /// Optimiser steps of linear warm-up from 0; 0 means none.
        warmup_steps: u64,
    },
    /// Linear warm-up to `lr` over `warmup_steps`, then half a cosine from `lr` to 0 at
    /// `total_steps` (and 0 after it, where transformers' formula would climb again).
    WarmupCosine {
        /// The peak learning rate, reached at step `warmup_steps`; finite and ≥ 0.
        lr: f64,
        /// Optimiser steps of linear warm-up from 0; at most `total_steps`.
        warmup_steps: u64,
        /// The step at which the rate reaches 0 (warm-up included); at least 1.
        total_steps: u64,
    },
}

impl LrSchedule {
    /// Checks the parameters once, so [`LrSchedule::lr_at`] can be a total function.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] for a learning rate that is negative or not finite, and,
    /// for the cosine schedule, `total_steps` 0 or `warmup_steps > total_steps`.
    pub fn validate(&self) -> Result<()> {
        let (lr, warmup, total) = match *self {
            LrSchedule::Constant { lr, warmup_steps } => (lr, warmup_steps, None),
            LrSchedule::WarmupCosine { lr, warmup_steps, total_steps } => (lr, warmup_steps, Some(total_steps)),
        };
        if !lr.is_finite() || lr < 0.0 {
            return Err(TrainError::InvalidArgument(format!("learning rate must be finite and >= 0, got {lr}")));
        }
        if let Some(total) = total {
            if total == 0 {
                return Err(TrainError::InvalidArgument("a cosine schedule needs total_steps > 0".into()));
            }
            if warmup > total {
                return Err(TrainError::InvalidArgument(format!(
                    "warm-up ({warmup} steps) is longer than the whole schedule ({total} steps)"
                )));
            }
        }
        Ok(())
    }

    /// The peak learning rate.
    pub fn peak(&self) -> f64 {
        match *self {
            LrSchedule::Constant { lr, .. } | LrSchedule::WarmupCosine { lr, .. } => lr,
        }
    }

    /// The learning rate of optimiser step `step` (0-based; see the module docs).
    pub fn lr_at(&self, step: u64) -> f64 {
        self.peak() * self.multiplier(step)
    }

    /// The factor transformers' `LambdaLR` multiplies the peak rate by at `step`.
    pub fn multiplier(&self, step: u64) -> f64 {
        match *self {
            LrSchedule::Constant { warmup_steps, .. } => {
                if step < warmup_steps {
                    step as f64 / warmup_steps.max(1) as f64
                } else {
                    1.0
                }
            }
            LrSchedule::WarmupCosine { warmup_steps, total_steps, .. } => {
                if step < warmup_steps {
                    return step as f64 / warmup_steps.max(1) as f64;
                }
                // Clamped at 1: transformers' formula is only meant up to total_steps (past it the
                // cosine climbs again); a schedule asked beyond its end stays at 0 instead.
                let progress =
                    ((step - warmup_steps) as f64 / total_steps.saturating_sub(warmup_steps).max(1) as f64).min(1.0);
                const NUM_CYCLES: f64 = 0.5;
                (0.5 * (1.0 + (std::f64::consts::PI * NUM_CYCLES * 2.0 * progress).cos())).max(0.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn constant_without_warmup_is_flat() {
        let s = LrSchedule::Constant { lr: 3e-4, warmup_steps: 0 };
        s.validate().unwrap();
        for step in [0, 1, 10, 1_000_000] {
            assert_eq!(s.lr_at(step), 3e-4);
        }
    }

    #[test]
    fn constant_with_warmup_ramps_from_zero() {
        let s = LrSchedule::Constant { lr: 1.0, warmup_steps: 4 };
        let got: Vec<f64> = (0..6).map(|k| s.lr_at(k)).collect();
        assert_eq!(got, vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.0]);
    }

    #[test]
    fn cosine_matches_transformers_values() {
        // get_cosine_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=10), lr=1:
        // the lambda evaluated by hand from the transformers formula at the listed steps.
        let s = LrSchedule::WarmupCosine { lr: 1.0, warmup_steps: 2, total_steps: 10 };
        s.validate().unwrap();
        let expect = |step: u64| -> f64 {
            if step < 2 {
                step as f64 / 2.0
            } else {
                let p = ((step - 2) as f64 / 8.0).min(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * p).cos())).max(0.0)
            }
        };
        for step in 0..14 {
            assert!(close(s.lr_at(step), expect(step)), "step {step}: {} vs {}", s.lr_at(step), expect(step));
        }
        assert_eq!(s.lr_at(0), 0.0);
        assert_eq!(s.lr_at(2), 1.0, "the peak is reached right after warm-up");
        assert!(close(s.lr_at(6), 0.5), "half-way through the decay the rate is half the peak");
        assert!(s.lr_at(10).abs() < 1e-15 && s.lr_at(13).abs() < 1e-15, "0 at and after the end");
    }

    #[test]
    fn cosine_is_monotone_after_warmup() {
        let s = LrSchedule::WarmupCosine { lr: 5e-5, warmup_steps: 10, total_steps: 100 };
        let lrs: Vec<f64> = (10..=100).map(|k| s.lr_at(k)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]), "the decay never goes up");
        assert!(close(s.lr_at(10), 5e-5));
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(LrSchedule::Constant { lr: f64::NAN, warmup_steps: 0 }.validate().is_err());
        assert!(LrSchedule::Constant { lr: -1.0, warmup_steps: 0 }.validate().is_err());
        assert!(LrSchedule::WarmupCosine { lr: 1.0, warmup_steps: 5, total_steps: 0 }.validate().is_err());
        assert!(LrSchedule::WarmupCosine { lr: 1.0, warmup_steps: 11, total_steps: 10 }.validate().is_err());
        assert!(LrSchedule::WarmupCosine { lr: 1.0, warmup_steps: 10, total_steps: 10 }.validate().is_ok());
    }

    #[test]
    fn serialises_with_a_kind_tag() {
        let s = LrSchedule::WarmupCosine { lr: 1e-4, warmup_steps: 3, total_steps: 30 };
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"kind\":\"warmup_cosine\""), "{json}");
        assert_eq!(serde_json::from_str::<LrSchedule>(&json).unwrap(), s);
    }
}
