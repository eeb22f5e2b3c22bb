//! Choosing the next token from logits: greedy, or temperature sampling with top-k / top-p, with an
//! optional repetition penalty. A seeded generator makes sampling reproducible: same seed, same
//! prompt, same model ⇒ same tokens.

use crate::{ModelError, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How [`Sampler`] chooses tokens. The filters apply in the order Hugging Face's `generate`
/// applies them: repetition penalty, then top-k, then top-p over the temperature-scaled softmax.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits before the softmax: below 1 sharpens, above 1 flattens. 0 means greedy
    /// (always the most likely token; `top_k`, `top_p` and `seed` then do nothing). Finite, ≥ 0.
    pub temperature: f32,
    /// Keep only the k most likely tokens (≥ 1; `None` keeps all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probabilities add up to at least p, in
    /// `(0, 1]` (nucleus sampling, Holtzman et al., 2019, "The Curious Case of Neural Text
    /// Degeneration").
    pub top_p: Option<f32>,
    /// Above 1, makes tokens already in the prompt or output less likely (1 = off): a seen
    /// token's positive logit is divided by it, a negative one multiplied (CTRL, Keskar et al.,
    /// 2019, as transformers' `RepetitionPenaltyLogitsProcessor` does). Finite, > 0.
    pub repetition_penalty: f32,
    /// Seeds the random generator (`StdRng`): the same seed, prompt and model give the same tokens.
    pub seed: u64,
}

impl SamplingParams {
    /// Always the most likely token: temperature 0, no filters, no repetition penalty, seed 0.
    pub fn greedy() -> SamplingParams {
        SamplingParams { temperature: 0.0, top_k: None, top_p: None, repetition_penalty: 1.0, seed: 0 }
    }

    /// Checks every field's range (see each field).
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidInput`] naming the first field out of range.
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

/// Draws next tokens for one sequence by its [`SamplingParams`], with its own seeded generator (so
/// each sequence's draws do not depend on the others').
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// A sampler whose generator is seeded with `params.seed`.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidInput`] when `params` fail [`SamplingParams::validate`].
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let rng = StdRng::seed_from_u64(params.seed);
        Ok(Sampler { params, rng })
    }

    /// The next token given `logits` (one per vocabulary entry) and the tokens so far (read only
    /// by the repetition penalty). When NaN or infinite logits leave no usable probabilities, it
    /// falls back to the most likely token.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidInput`] when `logits` is empty (there is no token to choose; a loaded
    /// model's vocabulary is never empty, so this is a caller's mistake).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(ModelError::InvalidInput("no logits to sample from: the vocabulary is empty".into()));
        }
        Ok(self.sample_nonempty(logits, history))
    }

    fn sample_nonempty(&mut self, logits: &[f32], history: &[u32]) -> u32 {
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
        // Sorting a 50k vocabulary costs milliseconds per token, as much as a decode step; so only
        // what must be ordered is: the top k are selected (not sorted), and for top-p the nucleus
        // is found by sorting a growing head of the candidates until it covers p.
        let t = self.params.temperature;
        // Most likely first; ties: lower id first (deterministic).
        let before = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
        let n = logits.len();
        let mut ids: Vec<u32> = (0..n as u32).collect();
        let k = self.params.top_k.unwrap_or(n).clamp(1, n);
        if k < n {
            ids.select_nth_unstable_by(k - 1, before);
            ids.truncate(k);
        }
        let max = ids.iter().map(|&i| logits[i as usize]).fold(f32::NEG_INFINITY, f32::max);
        // Unnormalised probabilities, computed once per candidate (indexed by token id).
        let mut weights = vec![0f32; n];
        for &i in &ids {
            weights[i as usize] = ((logits[i as usize] - max) / t).exp();
        }
        let weight = |i: u32| weights[i as usize] as f64;
        let total: f64 = ids.iter().map(|&i| weight(i)).sum();
        if !(total.is_finite() && total > 0.0) {
            return argmax(&logits);
        }
        let candidates: &[u32] = match self.params.top_p {
            None => &ids,
            Some(p) => {
                let mut head = ids.len().min(64);
                loop {
                    if head < ids.len() {
                        ids.select_nth_unstable_by(head - 1, before);
                    }
                    ids[..head].sort_unstable_by(before);
                    // The smallest prefix of the sorted candidates whose probability reaches p.
                    let mut cum = 0.0;
                    let covered = ids[..head].iter().position(|&i| {
                        cum += weight(i) / total;
                        cum >= p as f64
                    });
                    match covered {
                        Some(last) => break &ids[..=last],
                        None if head == ids.len() => break &ids,
                        None => head = (head * 4).min(ids.len()),
                    }
                }
            }
        };
        let kept: f64 = candidates.iter().map(|&i| weight(i)).sum();
        let r = self.rng.gen::<f64>() * kept;
        let mut cum = 0.0;
        for &id in candidates {
            cum += weight(id);
            if r < cum {
                return id;
            }
        }
        *candidates.last().expect("at least one candidate")
    }
}

/// The index of the largest logit (the lowest index among equals; NaN never wins); 0 for an empty
/// slice, so check the length where that can happen ([`Sampler::sample`] refuses it).
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
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0], &[]).unwrap(), 1);
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut p = SamplingParams::greedy();
        p.repetition_penalty = 2.0;
        let mut s = Sampler::new(p).unwrap();
        // 3.0 / 2 = 1.5 < 2.0: the seen token 1 loses to token 0.
        assert_eq!(s.sample(&[2.0, 3.0, -1.0], &[1, 1]).unwrap(), 0);
        // Negative logits are multiplied, so the penalty still lowers them.
        assert_eq!(s.sample(&[-2.0, -1.5, -3.0], &[1]).unwrap(), 0);
    }

    #[test]
    fn same_seed_same_tokens_and_different_seeds_differ() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = sampler(1.0, None, None, seed);
            (0..64).map(|_| s.sample(&logits, &[]).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let logits = [5.0, 4.9, 4.8, 0.0, -1.0];
        let mut s = sampler(1.0, Some(2), None, 1);
        for _ in 0..200 {
            assert!(s.sample(&logits, &[]).unwrap() < 2);
        }
        // The first token alone has p ≈ 0.36 < 0.5, the first two ≈ 0.69 ≥ 0.5.
        let mut s = sampler(1.0, None, Some(0.5), 2);
        let drawn: std::collections::BTreeSet<u32> = (0..400).map(|_| s.sample(&logits, &[]).unwrap()).collect();
        assert_eq!(drawn.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    }

    /// Draw frequencies follow the (restricted, renormalised) softmax, over a vocabulary large enough
    /// that the top-p nucleus is found by growing the sorted head several times.
    #[test]
    fn draws_follow_the_softmax_of_the_kept_candidates() {
        let n = 1000;
        let logits: Vec<f32> = (0..n).map(|i| -((i as f32) / 300.0)).collect();
        let softmax = |kept: usize| -> Vec<f64> {
            let w: Vec<f64> = logits[..kept].iter().map(|&l| (l as f64).exp()).collect();
            let total: f64 = w.iter().sum();
            w.into_iter().map(|x| x / total).collect()
        };
        // The nucleus for p = 0.6: the smallest prefix (the logits are already in order) reaching 0.6.
        let full = softmax(n);
        let mut cum = 0.0;
        let nucleus = full.iter().position(|p| {
            cum += p;
            cum >= 0.6
        });
        let nucleus = nucleus.unwrap() + 1;
        assert!(nucleus > 256, "the test needs a nucleus beyond the first growth steps ({nucleus})");
        for (top_k, top_p, kept) in [(None, None, n), (Some(10), None, 10), (None, Some(0.6), nucleus)] {
            let mut s = sampler(1.0, top_k, top_p, 3);
            let draws = 50_000;
            let mut counts = vec![0usize; n];
            for _ in 0..draws {
                counts[s.sample(&logits, &[]).unwrap() as usize] += 1;
            }
            assert!(counts[kept..].iter().all(|&c| c == 0), "{top_k:?} {top_p:?}: drew outside the kept set");
            // Compare the mass of ten equal slices of the kept set (per-token counts are too small).
            let want = softmax(kept);
            for slice in 0..10 {
                let range = slice * kept / 10..(slice + 1) * kept / 10;
                let got: f64 = counts[range.clone()].iter().sum::<usize>() as f64 / draws as f64;
                let expect: f64 = want[range].iter().sum();
                assert!((got - expect).abs() < 0.01, "{top_k:?} {top_p:?} slice {slice}: {got} vs {expect}");
            }
        }
    }

    /// An empty vocabulary is an error whatever the temperature (it used to panic when sampling,
    /// and to return token 0 when greedy).
    #[test]
    fn empty_logits_are_an_error() {
        for mut s in [
            Sampler::new(SamplingParams::greedy()).unwrap(),
            sampler(1.0, None, None, 0),
            sampler(0.7, Some(5), Some(0.9), 0),
        ] {
            let err = s.sample(&[], &[1, 2]).unwrap_err();
            assert!(matches!(err, ModelError::InvalidInput(_)), "{err}");
        }
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
