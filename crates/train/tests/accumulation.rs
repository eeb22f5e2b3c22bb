//! Gradient accumulation and the held-out loss on a small random Llama (the SmolLM2 architecture
//! at toy size, so it runs in seconds and needs no download), on the candle CPU backend:
//!
//! - two accumulated micro-batches of 2 windows update the weights as one batch of 4 does (the
//!   causal-LM loss is a mean over equally many predictions per window), step after step;
//! - the held-out evaluator's loss is the training step's loss on the same windows.

use accelrt_core::optim::AdamW;
use accelrt_core::training::{Optimizer, TrainingConfig, TrainingSession};
use accelrt_core::{HostTensor, HostWeights, Op};
use accelrt_models::llama::{self, LlamaConfig};
use accelrt_train::eval::CausalLmEvaluator;
use accelrt_train::rng::SplitMix64;
use accelrt_train::step::{causal_lm_graph, causal_lm_loss_graph};
use accelrt_train::TokenWindows;

const SEQ: usize = 8;

fn tiny() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 40,
        hidden_size: 16,
        intermediate_size: 24,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 4,
        rms_norm_eps: 1e-5,
        rope_base: 10000.0,
        context_length: 64,
        tied_embeddings: true,
    }
}

/// Every weight the graph reads, uniform in ±0.3 (norm weights around 1), from a fixed seed.
fn weights(cfg: &LlamaConfig) -> HostWeights {
    let graph = causal_lm_loss_graph(cfg).unwrap();
    let mut rng = SplitMix64::new(11);
    let mut w = HostWeights::new();
    for node in graph.nodes() {
        if let Op::Weight { shape, .. } = &node.op {
            let shape = shape.concrete().unwrap();
            let n: usize = shape.iter().product();
            let norm = node.name.contains("norm");
            let values = (0..n)
                .map(|_| {
                    let u = (rng.next_u64() >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0;
                    if norm {
                        1.0 + 0.1 * u
                    } else {
                        0.3 * u
                    }
                })
                .collect();
            w.insert(node.name.clone(), HostTensor::f32(shape, values).unwrap());
        }
    }
    w
}

fn tokens(rows: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    (0..rows * SEQ).map(|_| rng.below(40) as u32).collect()
}

fn session(cfg: &LlamaConfig, w: &HostWeights, grad_accum: usize) -> TrainingSession {
    let config = TrainingConfig {
        optimizer: Optimizer::AdamW(AdamW { weight_decay: 0.01, ..AdamW::default() }),
        clip_norm: Some(1.0),
        mixed_precision: None,
    };
    let training = causal_lm_graph(cfg, &config, grad_accum, 0.0).unwrap();
    let backend = accelrt_candle::CandleBackend::new(&"cpu".parse().unwrap()).unwrap();
    TrainingSession::new(&backend, &training, w, &Default::default()).unwrap()
}

#[test]
fn two_micro_batches_of_two_windows_update_like_one_batch_of_four() {
    let cfg = tiny();
    let w = weights(&cfg);
    let (mut big, mut acc) = (session(&cfg, &w, 1), session(&cfg, &w, 2));
    assert_eq!(acc.micro_batches(), 2);
    let lr = 3e-3;
    for step in 1..=3u64 {
        let ids = tokens(4, step);
        let all = HostTensor::u32(vec![4, SEQ], ids.clone()).unwrap();
        let first = HostTensor::u32(vec![2, SEQ], ids[..2 * SEQ].to_vec()).unwrap();
        let second = HostTensor::u32(vec![2, SEQ], ids[2 * SEQ..].to_vec()).unwrap();
        let b = big.step(&[(llama::TOKENS, &all)], lr).unwrap();
        let a = acc.accumulated_step(&[&[(llama::TOKENS, &first)], &[(llama::TOKENS, &second)]], lr).unwrap();
        assert_eq!(acc.steps(), step, "optimiser steps are counted, not micro-batches");
        assert!((a.loss - b.loss).abs() <= 1e-5 * b.loss, "step {step}: loss {} vs {}", a.loss, b.loss);
        let (na, nb) = (a.grad_norm.unwrap(), b.grad_norm.unwrap());
        assert!((na - nb).abs() <= 1e-4 * nb, "step {step}: gradient norm {na} vs {nb}");
        assert!(nb > 1.0, "clipping is active, so it must see the accumulated gradient");
        // Every parameter and both moments agree: f32 sums in another order, far below the
        // lr-sized change of a step (a gradient doubled or lost would move m by its own size).
        let (sa, sb) = (acc.save().unwrap(), big.save().unwrap());
        assert_eq!(sa.variables.len(), sb.variables.len());
        for ((name, x), (_, y)) in sa.variables.iter().zip(&sb.variables) {
            let scale = y.to_f64_vec().iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (p, q) in x.to_f64_vec().iter().zip(y.to_f64_vec()) {
                assert!((p - q).abs() <= 1e-4 * scale + 1e-7, "step {step} `{name}`: {p} vs {q}");
            }
        }
    }
    // The weights moved (the comparison above is not of two untouched copies).
    let before = w.get_tensor("blk.0.attn_q.weight").unwrap().to_f64_vec();
    assert_ne!(acc.parameter("blk.0.attn_q.weight").unwrap().to_f64_vec(), before);
    // A step given the wrong number of micro-batches is refused, not run.
    let one = HostTensor::u32(vec![2, SEQ], tokens(2, 9)).unwrap();
    assert!(acc.accumulated_step(&[&[(llama::TOKENS, &one)]], lr).is_err());
    assert_eq!(acc.steps(), 3);
}

#[test]
fn the_heldout_loss_is_the_training_loss_of_the_same_windows() {
    let cfg = tiny();
    let w = weights(&cfg);
    let ids = tokens(5, 21);
    let windows = TokenWindows::from_tokens(ids.clone(), SEQ, "tiny").unwrap();
    let backend = accelrt_candle::CandleBackend::new(&"cpu".parse().unwrap()).unwrap();
    let evaluator = CausalLmEvaluator::new(&cfg, &w, &backend, &Default::default()).unwrap();
    // 4 windows in batches of 3 (a full and a partial batch, weighted by predictions).
    let held = evaluator.loss(&windows, 4, 3).unwrap();
    assert_eq!((held.windows, held.predictions), (4, 4 * (SEQ - 1)));
    let mut s = session(&cfg, &w, 1);
    let t = HostTensor::u32(vec![4, SEQ], ids[..4 * SEQ].to_vec()).unwrap();
    let train = s.step(&[(llama::TOKENS, &t)], 0.0).unwrap().loss;
    assert!((held.mean_loss - train).abs() <= 1e-5 * train, "{} vs {train}", held.mean_loss);
    // Asking for more windows than there are evaluates all of them.
    assert_eq!(evaluator.loss(&windows, 100, 2).unwrap().windows, 5);
    assert!(evaluator.loss(&windows, 0, 2).is_err());
}
