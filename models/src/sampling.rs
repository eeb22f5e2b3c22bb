//! Choosing the next token from logits: greedy, or temperature sampling with top-k / top-p, with an
//! optional repetition penalty. A seeded generator makes sampling reproducible: same seed, same
//! prompt, same model ⇒ same tokens.

use crate::{ModelError, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Keep only the k most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probabilities add up to at least p.
    pub top_p: Option<f32>,
    /// > 1 makes tokens already in the prompt or output less likely (1 = off).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl SamplingParams {
    pub fn greedy() -> SamplingParams {
        SamplingParams { temperature: 0.0, top_k: None, top_p: None, repetition_penalty: 1.0, seed: 0 }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidInput(m));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if self.top_k == Some(0) {
            return bad("top-k must be ≥ 1".into());
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return bad(format!("top-p must be in (0, 1], got {p}"));
            }
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!("repetition penalty must be > 0, got {}", self.repetition_penalty));
        }
        Ok(())
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let rng = StdRng::seed_from_u64(params.seed);
        Ok(Sampler { params, rng })
    }

    /// The next token given `logits` (one per vocabulary entry) and the tokens so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
        if self.params.repetition_penalty != 1.0 {
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / self.params.repetition_penalty
                    } else {
                        *l * self.params.repetition_penalty
                    };
                }
            }
        }
        if self.params.temperature == 0.0 {
            return argmax(&logits);
        }
        // Candidates sorted by logit, most likely first (ties: lower id first, for determinism).
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        if let Some(k) = self.params.top_k {
            order.truncate(k.max(1));
        }
        let max = logits[order[0] as usize];
        let mut probs: Vec<f64> =
            order.iter().map(|&i| (((logits[i as usize] - max) / self.params.temperature) as f64).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if let Some(top_p) = self.params.top_p {
            let mut cum = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    cum += p;
                    cum >= top_p as f64
                })
                .map_or(probs.len(), |i| i + 1);
            order.truncate(keep);
            probs.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let r: f64 = self.rng.gen();
        let mut cum = 0.0;
        for (&id, &p) in order.iter().zip(&probs) {
            cum += p;
            if r < cum {
                return id;
            }
        }
        *order.last().expect("at least one candidate")
    }
}

/// The index of the largest logit (the lowest index among equals; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f32, top_k: Option<usize>, top_p: Option<f32>, seed: u64) -> Sampler {
        Sampler::new(SamplingParams { temperature, top_k, top_p, repetition_penalty: 1.0, seed }).unwrap()
    }

    #[test]
    fn greedy_takes_the_largest_and_the_first_of_ties() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut p = SamplingParams::greedy();
        p.repetition_penalty = 2.0;
        let mut s = Sampler::new(p).unwrap();
        // 3.0 / 2 = 1.5 < 2.0: the seen token 1 loses to token 0.
        assert_eq!(s.sample(&[2.0, 3.0, -1.0], &[1, 1]), 0);
        // Negative logits are multiplied, so the penalty still lowers them.
        assert_eq!(s.sample(&[-2.0, -1.5, -3.0], &[1]), 0);
    }

    #[test]
    fn same_seed_same_tokens_and_different_seeds_differ() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = sampler(1.0, None, None, seed);
            (0..64).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let logits = [5.0, 4.9, 4.8, 0.0, -1.0];
        let mut s = sampler(1.0, Some(2), None, 1);
        for _ in 0..200 {
            assert!(s.sample(&logits, &[]) < 2);
        }
        // The first token alone has p ≈ 0.36 < 0.5, the first two ≈ 0.69 ≥ 0.5.
        let mut s = sampler(1.0, None, Some(0.5), 2);
        let drawn: std::collections::BTreeSet<u32> = (0..400).map(|_| s.sample(&logits, &[])).collect();
        assert_eq!(drawn.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn bad_parameters_are_refused() {
        for p in [
            SamplingParams { temperature: -1.0, ..SamplingParams::greedy() },
            SamplingParams { top_k: Some(0), ..SamplingParams::greedy() },
            SamplingParams { top_p: Some(0.0), ..SamplingParams::greedy() },
            SamplingParams { top_p: Some(1.5), ..SamplingParams::greedy() },
            SamplingParams { repetition_penalty: 0.0, ..SamplingParams::greedy() },
        ] {
            assert!(Sampler::new(p).is_err());
        }
    }
}
