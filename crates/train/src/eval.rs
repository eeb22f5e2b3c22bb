//! Held-out measures, which need no gradient.
//!
//! - On embeddings: the MultipleNegativesRankingLoss of a batch (the held-out loss of an embedding
//!   model, and a check of the training loss against sentence-transformers), and retrieval of each
//!   anchor's positive among many (the before/after metric of a fine-tune). Computed in f64 from
//!   the f32 embeddings.
//! - For a causal LM: [`CausalLmEvaluator`], the mean next-token cross-entropy over windows of a
//!   corpus (the held-out loss of a SmolLM2 fine-tune), with accelrt's own forward pass — the
//!   training step's forward graph and loss, run without the backward pass or the update.

use crate::corpus::TokenWindows;
use crate::step::{causal_lm_loss_graph, DequantizedGguf};
use crate::{Result, TrainError};
use accelrt_core::{Backend, Executable, HostTensor, PrepareOptions, WeightSource};
use accelrt_models::{llama, ChatTokenizer, GgufFile};
use serde::{Deserialize, Serialize};
use std::path::Path;

fn check(anchors: &[Vec<f32>], positives: &[Vec<f32>]) -> Result<usize> {
    if anchors.is_empty() || anchors.len() != positives.len() {
        return Err(TrainError::InvalidArgument(format!(
            "{} anchors and {} positives: need the same number, at least one",
            anchors.len(),
            positives.len()
        )));
    }
    let dim = anchors[0].len();
    if dim == 0 || anchors.iter().chain(positives).any(|v| v.len() != dim) {
        return Err(TrainError::InvalidArgument("embeddings of different (or zero) dimensions".into()));
    }
    Ok(dim)
}

fn unit(v: &[f32]) -> Vec<f64> {
    let norm = v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt();
    // sentence-transformers' cos_sim normalises with an epsilon floor of 1e-12 on the norm.
    let norm = norm.max(1e-12);
    v.iter().map(|&x| x as f64 / norm).collect()
}

fn cosine_matrix(anchors: &[Vec<f32>], positives: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let a: Vec<Vec<f64>> = anchors.iter().map(|v| unit(v)).collect();
    let p: Vec<Vec<f64>> = positives.iter().map(|v| unit(v)).collect();
    a.iter().map(|ai| p.iter().map(|pj| ai.iter().zip(pj).map(|(x, y)| x * y).sum()).collect()).collect()
}

/// sentence-transformers' MultipleNegativesRankingLoss (default direction, no hard negatives):
/// `mean_i cross_entropy(scale * cos(anchor_i, positive_j) over j, target i)`.
pub fn mnrl_loss(anchors: &[Vec<f32>], positives: &[Vec<f32>], scale: f64) -> Result<f64> {
    check(anchors, positives)?;
    let sims = cosine_matrix(anchors, positives);
    let mut total = 0.0;
    for (i, row) in sims.iter().enumerate() {
        let logits: Vec<f64> = row.iter().map(|s| s * scale).collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        total += log_sum - logits[i];
    }
    Ok(total / sims.len() as f64)
}

/// How well each anchor finds its own positive among all the positives given.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    /// Number of (anchor, positive) pairs, which is also the number of candidates per anchor.
    pub pairs: usize,
    /// Share of anchors whose positive ranks first.
    pub recall_at_1: f64,
    /// Share of anchors whose positive is among the 10 best.
    pub recall_at_10: f64,
    /// Mean of 1 / rank of the positive.
    pub mrr: f64,
}

/// Ranks all positives by cosine similarity to each anchor. A tie with another candidate counts
/// against the anchor (rank = 1 + candidates scoring at least as high), so a model that maps
/// everything to one vector scores the minimum, not the maximum.
pub fn retrieval(anchors: &[Vec<f32>], positives: &[Vec<f32>]) -> Result<RetrievalMetrics> {
    check(anchors, positives)?;
    let sims = cosine_matrix(anchors, positives);
    let n = sims.len();
    let (mut r1, mut r10, mut rr) = (0usize, 0usize, 0.0f64);
    for (i, row) in sims.iter().enumerate() {
        let own = row[i];
        let rank = 1 + row.iter().enumerate().filter(|&(j, &s)| j != i && s >= own).count();
        r1 += usize::from(rank == 1);
        r10 += usize::from(rank <= 10);
        rr += 1.0 / rank as f64;
    }
    Ok(RetrievalMetrics {
        pairs: n,
        recall_at_1: r1 as f64 / n as f64,
        recall_at_10: r10 as f64 / n as f64,
        mrr: rr / n as f64,
    })
}

/// A causal LM's held-out loss over some windows of a corpus.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeldoutLoss {
    /// Windows evaluated.
    pub windows: usize,
    /// Next-token predictions counted: `windows × (seq_len − 1)`.
    pub predictions: usize,
    /// Mean cross-entropy (nats) over those predictions.
    pub mean_loss: f64,
}

/// The mean next-token cross-entropy of a Llama-architecture model over windows of a corpus,
/// defined as the training loss is ([`crate::step::causal_lm_loss_graph`]: every window predicts
/// its tokens 1..S from their prefixes), so it is the number `accelrt train`'s step log shows,
/// measured on text the model is not trained on.
pub struct CausalLmEvaluator {
    exe: Box<dyn Executable>,
    tokenizer: Option<ChatTokenizer>,
}

impl CausalLmEvaluator {
    /// Prepares the loss graph of `cfg` with `weights` (converted to f32 as the training step
    /// converts them) on `backend`.
    pub fn new(
        cfg: &llama::LlamaConfig,
        weights: &dyn WeightSource,
        backend: &dyn Backend,
        options: &PrepareOptions,
    ) -> Result<CausalLmEvaluator> {
        let graph = causal_lm_loss_graph(cfg)?;
        let exe = backend.prepare(&graph, weights, options)?;
        Ok(CausalLmEvaluator { exe, tokenizer: None })
    }

    /// Loads a GGUF model (a file, or a directory holding one: the original or one `accelrt train`
    /// wrote), dequantised to f32, with its tokenizer.
    pub fn from_gguf(path: &Path, backend: &dyn Backend, options: &PrepareOptions) -> Result<CausalLmEvaluator> {
        let gguf = accelrt_models::generator::find_gguf(path)?;
        let file = GgufFile::open(&gguf)?;
        let cfg = llama::LlamaConfig::from_gguf(&file)?;
        let mut evaluator = Self::new(&cfg, &DequantizedGguf(&file), backend, options)?;
        evaluator.tokenizer = Some(ChatTokenizer::from_gguf(&file)?);
        Ok(evaluator)
    }

    /// The model's tokenizer ([`CausalLmEvaluator::from_gguf`] only), to cut a corpus into windows.
    pub fn tokenizer(&self) -> Option<&ChatTokenizer> {
        self.tokenizer.as_ref()
    }

    /// The mean loss over the first `count` windows of `windows` (all of them if fewer), run in
    /// batches of `batch` windows; each batch's mean is weighted by its predictions, summed in f64.
    pub fn loss(&self, windows: &TokenWindows, count: usize, batch: usize) -> Result<HeldoutLoss> {
        let count = count.min(windows.len());
        if count == 0 || batch == 0 {
            return Err(TrainError::InvalidArgument("evaluate at least one window, in batches of at least one".into()));
        }
        let per_window = windows.seq_len() - 1;
        let mut total = 0.0f64;
        for start in (0..count).step_by(batch) {
            let rows: Vec<usize> = (start..(start + batch).min(count)).collect();
            let t = HostTensor::u32(vec![rows.len(), windows.seq_len()], windows.batch(&rows)?)?;
            let out = self.exe.run(&[(llama::TOKENS, &t)])?;
            let loss = out
                .get(accelrt_core::training::LOSS_OUTPUT)
                .map(|l| l.to_f64_vec()[0])
                .ok_or_else(|| TrainError::InvalidArgument("the loss graph has no loss output".into()))?;
            if !loss.is_finite() {
                return Err(TrainError::InvalidArgument(format!("the loss of windows {start}.. is {loss}")));
            }
            total += loss * (rows.len() * per_window) as f64;
        }
        let predictions = count * per_window;
        Ok(HeldoutLoss { windows: count, predictions, mean_loss: total / predictions as f64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnrl_matches_a_hand_computed_case() {
        // Orthogonal unit vectors: cos = 1 with the own positive, 0 with the other.
        let a = vec![vec![1.0, 0.0], vec![0.0, 2.0]];
        let p = vec![vec![3.0, 0.0], vec![0.0, 0.5]];
        let expected = ((20f64).exp() + 1.0).ln() - 20.0; // -log softmax of the right logit
        assert!((mnrl_loss(&a, &p, 20.0).unwrap() - expected).abs() < 1e-12);
        // Swapped positives: every anchor's own positive is the wrong one.
        let swapped = vec![p[1].clone(), p[0].clone()];
        let expected = ((20f64).exp() + 1.0).ln();
        assert!((mnrl_loss(&a, &swapped, 20.0).unwrap() - expected).abs() < 1e-9);
        // One pair: the only candidate is the right one, loss 0.
        assert_eq!(mnrl_loss(&a[..1], &p[..1], 20.0).unwrap(), 0.0);
    }

    #[test]
    fn retrieval_ranks_and_counts_ties_against_the_anchor() {
        let a = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 1.0]];
        let p = vec![vec![1.0, 0.1], vec![1.0, 0.0], vec![1.0, 1.0]];
        let m = retrieval(&a, &p).unwrap();
        // Anchor 0 ranks its positive second (after p1 = [1, 0]); anchor 1 ranks p2 first and
        // its own p1 last (third); anchor 2 finds its own first.
        assert_eq!(m.pairs, 3);
        assert!((m.recall_at_1 - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.recall_at_10, 1.0);
        assert!((m.mrr - (0.5 + 1.0 / 3.0 + 1.0) / 3.0).abs() < 1e-12);
        let same = vec![vec![1.0, 0.0]; 3];
        let collapsed = retrieval(&same, &same).unwrap();
        assert!((collapsed.mrr - 1.0 / 3.0).abs() < 1e-12, "everything tied ranks last");
    }

    #[test]
    fn mismatched_inputs_are_refused() {
        assert!(mnrl_loss(&[vec![1.0]], &[], 20.0).is_err());
        assert!(retrieval(&[vec![1.0, 0.0]], &[vec![1.0]]).is_err());
        assert!(retrieval(&[], &[]).is_err());
    }
}
