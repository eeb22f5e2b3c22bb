//! Dropout in the training graphs, on toy-size BERT and Llama models with random weights (seconds,
//! no download), on the candle CPU backend:
//!
//! - inference graphs never contain dropout, and a training graph with every probability 0 is the
//!   inference graph itself (same content hash);
//! - dropout sits where the reference implementations put it, one stream per node;
//! - the explicit attention that dropout needs (`AttentionProbs`, dropout, product with the
//!   values; grouped query heads for Llama) computes the fused attention's loss and update when
//!   the probability is negligible;
//! - the masks follow the seed: the same seed gives the same loss, another seed another one.

use accelrt_core::optim::{AdamW, Sgd};
use accelrt_core::training::{Optimizer, TrainingConfig, TrainingGraph, TrainingSession};
use accelrt_core::{Graph, HostTensor, HostWeights, Op};
use accelrt_models::bert::{self, BertConfig, BertDropout, Pooling, SentenceHead};
use accelrt_models::llama::{self, LlamaConfig};
use accelrt_train::rng::SplitMix64;
use accelrt_train::step::{causal_lm_graph, dropout_seed, mnrl_graph};

const SEQ: usize = 8;

fn tiny_llama() -> LlamaConfig {
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

fn tiny_bert() -> BertConfig {
    BertConfig {
        vocab_size: 30,
        hidden_size: 8,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 12,
        hidden_act: "gelu".into(),
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        position_embedding_type: "absolute".into(),
        model_type: None,
    }
}

const HEAD: SentenceHead = SentenceHead { pooling: Pooling::Mean, normalize: true };

/// Random weights for every weight node of `graph` (norm gains around 1).
fn weights(graph: &Graph) -> HostWeights {
    let mut rng = SplitMix64::new(5);
    let mut w = HostWeights::new();
    for node in graph.nodes() {
        if let Op::Weight { shape, .. } = &node.op {
            let shape = shape.concrete().unwrap();
            let n: usize = shape.iter().product();
            let gain = node.name.contains("norm") || node.name.contains("LayerNorm.weight");
            let values = (0..n)
                .map(|_| {
                    let u = (rng.next_u64() >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0;
                    if gain {
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

fn dropouts(graph: &Graph) -> Vec<(String, f64, u32)> {
    graph
        .nodes()
        .iter()
        .filter_map(|n| match n.op {
            Op::Dropout { p, stream, .. } => Some((n.name.clone(), p, stream)),
            _ => None,
        })
        .collect()
}

fn adamw() -> TrainingConfig {
    TrainingConfig { optimizer: Optimizer::AdamW(AdamW::default()), clip_norm: None, mixed_precision: None }
}

/// Plain SGD: the update is lr × the gradient, so two gradients' rounding differences stay that
/// small. (Adam's first update is ±lr for any gradient far above eps, so a gradient that is zero
/// in exact arithmetic — a key bias's, softmax does not see it — gets a random sign from rounding.)
fn sgd() -> TrainingConfig {
    TrainingConfig { optimizer: Optimizer::Sgd(Sgd::default()), clip_norm: None, mixed_precision: None }
}

fn session(training: &TrainingGraph, w: &HostWeights) -> TrainingSession {
    let backend = accelrt_candle::CandleBackend::new(&"cpu".parse().unwrap()).unwrap();
    TrainingSession::new(&backend, training, w, &Default::default()).unwrap()
}

#[test]
fn inference_graphs_never_contain_dropout_and_training_graphs_put_it_where_the_reference_does() {
    let cfg = tiny_bert();
    let inference = bert::build_graph(&cfg, HEAD, "").unwrap();
    assert!(dropouts(&inference).is_empty());
    let off = bert::build_training_graph(&cfg, HEAD, "", BertDropout::NONE).unwrap();
    assert_eq!(off.content_hash(), inference.content_hash(), "dropout 0 is the inference graph");
    let on = bert::build_training_graph(
        &cfg,
        HEAD,
        "",
        BertDropout { hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.2 },
    )
    .unwrap();
    let d = dropouts(&on);
    // BertModel: after the embeddings, then per layer the attention weights, the attention output
    // and the FFN output.
    let names: Vec<&str> = d.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "embeddings.dropout",
            "encoder.layer.0.attention.probs.dropout",
            "encoder.layer.0.attention.output.dropout",
            "encoder.layer.0.output.dropout",
            "encoder.layer.1.attention.probs.dropout",
            "encoder.layer.1.attention.output.dropout",
            "encoder.layer.1.output.dropout",
        ]
    );
    let ps: Vec<f64> = d.iter().map(|x| x.1).collect();
    assert_eq!(ps, [0.1, 0.2, 0.1, 0.1, 0.2, 0.1, 0.1]);
    let streams: Vec<u32> = d.iter().map(|x| x.2).collect();
    assert_eq!(streams, (0..7).collect::<Vec<u32>>(), "one stream per dropout node");
    assert!(on.inputs().any(|(_, n)| n.name == bert::DROPOUT_SEED));
    assert!(!inference.inputs().any(|(_, n)| n.name == bert::DROPOUT_SEED));
    assert!(bert::build_training_graph(&cfg, HEAD, "", BertDropout::uniform(1.0)).is_err());

    let cfg = tiny_llama();
    let f32s = |_: &str| Ok(accelrt_core::DType::F32);
    assert!(dropouts(&llama::build_graph(&cfg, 32, &f32s).unwrap()).is_empty());
    let plain = llama::build_training_graph(&cfg, &f32s).unwrap();
    assert!(dropouts(&plain).is_empty());
    let zero = llama::build_training_graph_with_dropout(&cfg, &f32s, 0.0).unwrap();
    assert_eq!(zero.content_hash(), plain.content_hash());
    let on = llama::build_training_graph_with_dropout(&cfg, &f32s, 0.25).unwrap();
    let d = dropouts(&on);
    assert_eq!(d.len(), cfg.num_layers, "LlamaAttention's attention_dropout, once per layer");
    assert!(d.iter().all(|(n, p, _)| n.ends_with("attention.probs.dropout") && *p == 0.25));
    assert!(llama::build_training_graph_with_dropout(&cfg, &f32s, -0.1).is_err());
}

/// With a negligible probability (⌊1e-9 · 2³²⌋ = 4 of 2³² hash values drop) the explicit
/// attention path gives the fused attention's loss and first (SGD) update: the grouped-query
/// product (Llama) and the padded-key mask (BERT) and their gradients are right. The two paths sum
/// in different orders (the CPU backend's attention kernel against a softmax and two matmuls), so
/// they agree to f32 rounding over these sums, 1e-5, not bit for bit.
#[test]
fn explicit_attention_matches_the_fused_one() {
    let seed = HostTensor::u32(vec![], vec![dropout_seed(1, 1, 0)]).unwrap();
    let compare = |fused: &TrainingSession, explicit: &TrainingSession, what: &str| {
        for ((name, x), (_, y)) in fused.parameters().unwrap().iter().zip(explicit.parameters().unwrap()) {
            for (p, q) in x.to_f64_vec().iter().zip(y.to_f64_vec()) {
                assert!((p - q).abs() <= 1e-5, "{what} `{name}`: {p} vs {q}");
            }
        }
    };

    let cfg = tiny_llama();
    let w = weights(&accelrt_train::step::causal_lm_loss_graph(&cfg).unwrap());
    let (fused_g, explicit_g) =
        (causal_lm_graph(&cfg, &sgd(), 1, 0.0).unwrap(), causal_lm_graph(&cfg, &sgd(), 1, 1e-9).unwrap());
    let (mut fused, mut explicit) = (session(&fused_g, &w), session(&explicit_g, &w));
    let mut rng = SplitMix64::new(3);
    let ids = HostTensor::u32(vec![3, SEQ], (0..3 * SEQ).map(|_| rng.below(40) as u32).collect()).unwrap();
    let a = fused.step(&[(llama::TOKENS, &ids)], 0.1).unwrap().loss;
    let b = explicit.step(&[(llama::TOKENS, &ids), (llama::DROPOUT_SEED, &seed)], 0.1).unwrap().loss;
    assert!((a - b).abs() <= 1e-5 * a, "llama loss {a} vs {b}");
    compare(&fused, &explicit, "llama");

    let cfg = tiny_bert();
    let w = weights(&bert::build_graph(&cfg, HEAD, "").unwrap());
    let (fused_g, explicit_g) = (
        mnrl_graph(&cfg, HEAD, "", 2, &sgd(), 1, BertDropout::NONE).unwrap(),
        mnrl_graph(&cfg, HEAD, "", 2, &sgd(), 1, BertDropout::uniform(1e-9)).unwrap(),
    );
    let (mut fused, mut explicit) = (session(&fused_g, &w), session(&explicit_g, &w));
    // 2 anchors + 2 positives, the last rows padded.
    let ids = HostTensor::u32(vec![4, 5], vec![1, 5, 7, 9, 2, 1, 6, 2, 0, 0, 1, 8, 8, 3, 2, 1, 4, 2, 0, 0]).unwrap();
    let mask = HostTensor::u32(vec![4, 5], vec![1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]).unwrap();
    let types = HostTensor::u32(vec![4, 5], vec![0; 20]).unwrap();
    let inputs = [(bert::INPUT_IDS, &ids), (bert::ATTENTION_MASK, &mask), (bert::TOKEN_TYPE_IDS, &types)];
    let a = fused.step(&inputs, 0.1).unwrap().loss;
    let mut with_seed = inputs.to_vec();
    with_seed.push((bert::DROPOUT_SEED, &seed));
    let b = explicit.step(&with_seed, 0.1).unwrap().loss;
    assert!((a - b).abs() <= 1e-5 * a, "bert loss {a} vs {b}");
    compare(&fused, &explicit, "bert");
}

/// The masks are a function of the seed: the same seed, the same loss (bit for bit); another seed
/// or no dropout, another loss.
#[test]
fn the_masks_follow_the_seed() {
    let cfg = tiny_llama();
    let w = weights(&accelrt_train::step::causal_lm_loss_graph(&cfg).unwrap());
    let graph = causal_lm_graph(&cfg, &adamw(), 1, 0.3).unwrap();
    let ids = HostTensor::u32(vec![2, SEQ], (0..2 * SEQ as u32).map(|i| (i * 7) % 40).collect()).unwrap();
    let loss = |seed: u32| {
        let s = HostTensor::u32(vec![], vec![seed]).unwrap();
        session(&graph, &w).step(&[(llama::TOKENS, &ids), (llama::DROPOUT_SEED, &s)], 1e-3).unwrap().loss
    };
    let (a, again, other) = (loss(dropout_seed(0, 1, 0)), loss(dropout_seed(0, 1, 0)), loss(dropout_seed(0, 2, 0)));
    assert_eq!(a.to_bits(), again.to_bits());
    assert_ne!(a, other);
    let off = causal_lm_graph(&cfg, &adamw(), 1, 0.0).unwrap();
    let plain = session(&off, &w).step(&[(llama::TOKENS, &ids)], 1e-3).unwrap().loss;
    assert_ne!(a, plain);

    // The seed function: pure, and different for each run seed, step and micro-batch.
    let s = dropout_seed(7, 3, 1);
    assert_eq!(s, dropout_seed(7, 3, 1));
    let others = [dropout_seed(8, 3, 1), dropout_seed(7, 4, 1), dropout_seed(7, 3, 0), dropout_seed(7, 1, 3)];
    assert!(others.iter().all(|&o| o != s), "{s} vs {others:?}");
}
