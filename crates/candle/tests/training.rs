//! Training on the candle CPU backend: a tiny causal LM's AdamW steps through a `TrainingSession`
//! (parameters and moments held in the session) against the reference evaluator's session, step by
//! step; checkpoints restore exactly.

use accelrt_candle::CandleBackend;
use accelrt_core::optim::{AdamW, Sgd};
use accelrt_core::training::{training_graph, Optimizer, TrainingConfig, TrainingSession, LR_INPUT, STEP_INPUT};
use accelrt_core::{
    loss, reference, DType, Dim, Graph, GraphBuilder, HostTensor, HostWeights, Op, PrepareOptions, Shape, UnaryOp,
};

const VOCAB: usize = 13;
const HIDDEN: usize = 8;

/// Embedding → RMSNorm → SiLU MLP → LM head, next-token cross-entropy.
fn tiny_lm() -> (Graph, HostWeights) {
    let mut b = GraphBuilder::new("tiny_lm");
    let ids = b.input("ids", DType::U32, Shape(vec![Dim::sym("batch"), Dim::sym("seq")])).unwrap();
    let mut weights = HostWeights::new();
    let mut weight = |b: &mut GraphBuilder, name: &str, shape: &[usize], seed: f32| {
        let n: usize = shape.iter().product();
        let data = (0..n).map(|i| ((i as f32 + seed) * 0.618).sin() * 0.5).collect();
        weights.insert(name, HostTensor::f32(shape.to_vec(), data).unwrap());
        b.weight(name, DType::F32, Shape::new(shape.iter().copied())).unwrap()
    };
    let table = weight(&mut b, "embed", &[VOCAB, HIDDEN], 1.0);
    let gamma = weight(&mut b, "norm", &[HIDDEN], 2.0);
    let up = weight(&mut b, "up", &[16, HIDDEN], 3.0);
    let head = weight(&mut b, "head", &[VOCAB, HIDDEN], 4.0);
    let down = weight(&mut b, "down", &[HIDDEN, 16], 5.0);
    let x = b.add("emb", Op::Embedding { table, ids }).unwrap();
    let h = b.add("rms", Op::RmsNorm { x, gamma, eps: 1e-5 }).unwrap();
    let u = b.add("up_out", Op::Linear { x: h, weight: up, bias: None }).unwrap();
    let u = b.add("act", Op::Unary { op: UnaryOp::Silu, x: u }).unwrap();
    let d = b.add("down_out", Op::Linear { x: u, weight: down, bias: None }).unwrap();
    let r = b.add("res", Op::Binary { op: accelrt_core::BinaryOp::Add, a: d, b: x }).unwrap();
    let logits = b.add("logits", Op::Linear { x: r, weight: head, bias: None }).unwrap();
    let ce = loss::causal_lm_loss(&mut b, "ce", logits, ids).unwrap();
    b.output("ce", ce);
    (b.build().unwrap(), weights)
}

fn ids(step: u32) -> HostTensor {
    HostTensor::u32(vec![2, 6], (0..12).map(|i| (i * 7 + step * 3) % VOCAB as u32).collect()).unwrap()
}

#[test]
fn adamw_steps_match_the_reference_and_checkpoints_resume_exactly() {
    let (forward, weights) = tiny_lm();
    let params = ["embed", "norm", "up", "down", "head"];
    let config =
        TrainingConfig { optimizer: Optimizer::AdamW(AdamW::default()), clip_norm: Some(1.0), mixed_precision: None };
    let training = training_graph(&forward, "ce", &params, &config).unwrap();
    let backend = CandleBackend::cpu();
    let mut session = TrainingSession::new(&backend, &training, &weights, &PrepareOptions::default()).unwrap();
    let mut want_state = reference::new_state(0);
    let lr = 0.02;
    let mut losses = vec![];
    for step in 1..=12u32 {
        let batch = ids(step % 3);
        let got = session.step(&[("ids", &batch)], lr).unwrap();
        let lr_t = HostTensor::f32(vec![], vec![lr as f32]).unwrap();
        let step_t = HostTensor::f32(vec![], vec![step as f32]).unwrap();
        let inputs = [("ids", &batch), (LR_INPUT, &lr_t), (STEP_INPUT, &step_t)];
        let want = reference::evaluate_with_state(&training.graph, &weights, &inputs, &mut want_state).unwrap();
        let want_loss = want.get("loss").unwrap().to_f64_vec()[0];
        assert!(
            (got.loss - want_loss).abs() < 1e-4 * (1.0 + want_loss.abs()),
            "step {step}: {} vs {want_loss}",
            got.loss
        );
        let want_norm = want.get("grad_norm").unwrap().to_f64_vec()[0];
        assert!((got.grad_norm.unwrap() - want_norm).abs() < 1e-4 * (1.0 + want_norm), "step {step} grad norm");
        losses.push(got.loss);
    }
    assert!(losses[11] < losses[0] - 0.1, "training did not lower the loss: {losses:?}");
    for name in params {
        let got = session.parameter(name).unwrap().to_f64_vec();
        let want = reference::read_variable(&training.graph, &weights, &want_state, name).unwrap().to_f64_vec();
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-4, "parameter {name} differs by {worst}");
    }

    // Save, take two steps, restore, take the same two steps: the same losses.
    let saved = session.save().unwrap();
    assert_eq!(saved.steps, 12);
    assert_eq!(saved.variables.len(), params.len() * 3);
    let first: Vec<f64> = (0..2).map(|s| session.step(&[("ids", &ids(s))], lr).unwrap().loss).collect();
    session.restore(&saved).unwrap();
    let again: Vec<f64> = (0..2).map(|s| session.step(&[("ids", &ids(s))], lr).unwrap().loss).collect();
    assert_eq!(first, again);
    // A fresh session restored from the checkpoint continues identically too.
    let mut other = TrainingSession::new(&backend, &training, &weights, &PrepareOptions::default()).unwrap();
    other.restore(&saved).unwrap();
    let resumed: Vec<f64> = (0..2).map(|s| other.step(&[("ids", &ids(s))], lr).unwrap().loss).collect();
    assert_eq!(first, resumed);
}

#[test]
fn sgd_steps_match_the_reference() {
    let (forward, weights) = tiny_lm();
    let sgd = Sgd { momentum: 0.9, weight_decay: 0.0, nesterov: false };
    let config = TrainingConfig { optimizer: Optimizer::Sgd(sgd), clip_norm: None, mixed_precision: None };
    let training = training_graph(&forward, "ce", &["head", "up"], &config).unwrap();
    let backend = CandleBackend::cpu();
    let mut session = TrainingSession::new(&backend, &training, &weights, &PrepareOptions::default()).unwrap();
    let mut want_state = reference::new_state(0);
    for step in 1..=5u32 {
        let batch = ids(step);
        let got = session.step(&[("ids", &batch)], 0.5).unwrap();
        assert_eq!(got.grad_norm, None);
        let lr_t = HostTensor::f32(vec![], vec![0.5]).unwrap();
        let step_t = HostTensor::f32(vec![], vec![step as f32]).unwrap();
        let inputs = [("ids", &batch), (LR_INPUT, &lr_t), (STEP_INPUT, &step_t)];
        let want = reference::evaluate_with_state(&training.graph, &weights, &inputs, &mut want_state).unwrap();
        let want_loss = want.get("loss").unwrap().to_f64_vec()[0];
        assert!((got.loss - want_loss).abs() < 1e-4 * (1.0 + want_loss.abs()), "step {step}");
    }
    // Frozen weights stay weights: only the trained ones are variables.
    assert!(session.parameter("embed").is_err());
}
