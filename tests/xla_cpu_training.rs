//! Training on `xla:cpu`: the training step (forward, MNRL, backward, AdamW) exported as one
//! StableHLO program whose parameters and optimiser moments are arguments aliased to their
//! updates, held on the device between steps — the route a Trainium compile takes. Checked against
//! PyTorch's losses (the fixture of crates/train/tests/training_step.rs), against the candle CPU
//! backend's parameters after the same steps, and through a checkpoint restored into a new session.

mod common;

use accelrt::core::optim::AdamW;
use accelrt::core::training::{Optimizer, TrainingConfig};
use accelrt::train::dataset::{self, DataStore, SHAKESPEARE};
use accelrt::train::step::MnrlTrainer;
use accelrt::train::{Order, Pair, PairsFile, Sampler};
use std::path::{Path, PathBuf};

fn fixture() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/train/tests/fixtures/minilm-mnrl-reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn minilm() -> PathBuf {
    accelrt::models::ModelStore::new(common::cache_root())
        .ensure(accelrt::models::lookup("all-minilm-l6-v2").unwrap())
        .unwrap()
}

/// The fixture's first three batches: 8 Shakespeare training pairs each, in file order.
fn batches() -> Vec<Vec<Pair>> {
    let data = DataStore::new(common::cache_root()).fetch(&SHAKESPEARE).unwrap();
    let mut pairs = PairsFile::open(data.join(dataset::PAIRS_TRAIN)).unwrap();
    let mut sampler = Sampler::new(pairs.len(), 8, Order::FileOrder).unwrap();
    (0..3).map(|_| pairs.batch(&sampler.next_batch()).unwrap()).collect()
}

fn trainer(backend: &str) -> MnrlTrainer {
    trainer_in(backend, None)
}

fn trainer_in(backend: &str, mixed_precision: Option<accelrt::DType>) -> MnrlTrainer {
    let backend = accelrt::open_backend(backend).unwrap_or_else(|e| panic!("{backend}: {e}"));
    let config = TrainingConfig {
        optimizer: Optimizer::AdamW(AdamW { weight_decay: 0.01, ..AdamW::default() }),
        clip_norm: None,
        mixed_precision,
    };
    MnrlTrainer::new(&minilm(), backend.as_ref(), &Default::default(), 8, &config).unwrap()
}

#[test]
fn minilm_trains_on_xla_cpu_like_pytorch_and_like_candle() {
    let batches = batches();
    let want: Vec<f64> =
        fixture()["results"]["float32"]["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let (mut xla, mut cpu) = (trainer("xla:cpu"), trainer("cpu"));
    let initial = cpu.session().parameters().unwrap();
    for (step, batch) in batches.iter().enumerate() {
        let ours = xla.step(batch, 1e-4).unwrap();
        let theirs = cpu.step(batch, 1e-4).unwrap();
        let w = want[step];
        assert!((ours.loss - w).abs() <= 1e-5 * w, "step {}: xla:cpu {} vs PyTorch {w}", step + 1, ours.loss);
        assert!(
            (ours.loss - theirs.loss).abs() <= 1e-5 * w,
            "step {}: {} vs candle {}",
            step + 1,
            ours.loss,
            theirs.loss
        );
        assert_eq!(ours.tokens, theirs.tokens);
    }
    // Every parameter's update over three steps, on both backends. Compared as whole updates:
    // Adam divides by √v, so an element whose gradient is rounding noise (an embedding row no
    // token used, but for float error) moves by up to ±lr on either backend, whatever the sign
    // its noise had; such elements are few, and the update as a whole must agree.
    let (a, b) = (xla.session().parameters().unwrap(), cpu.session().parameters().unwrap());
    assert_eq!(a.len(), b.len());
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    for (((name, x), (other, y)), (_, p0)) in a.iter().zip(&b).zip(&initial) {
        assert_eq!(name, other);
        assert_eq!(x.shape(), y.shape(), "{name}");
        let p0 = p0.to_f64_vec();
        let dx: Vec<f64> = x.to_f64_vec().iter().zip(&p0).map(|(p, q)| p - q).collect();
        let dy: Vec<f64> = y.to_f64_vec().iter().zip(&p0).map(|(p, q)| p - q).collect();
        let diff: Vec<f64> = dx.iter().zip(&dy).map(|(p, q)| p - q).collect();
        if name.ends_with("attention.self.key.bias") {
            // Its gradient is zero in exact arithmetic (softmax over the keys ignores a shift that
            // every key shares), so both updates are decay plus noise, each at most 3 Adam steps.
            let bound = 3.0 * 1e-4 * (dx.len() as f64).sqrt();
            assert!(norm(&dx) <= bound && norm(&dy) <= bound, "{name}: {} / {}", norm(&dx), norm(&dy));
            continue;
        }
        let rel = norm(&diff) / norm(&dy);
        assert!(rel <= 1e-2, "{name}: the xla:cpu update differs from candle's by {rel:.2e} of its norm");
    }
}

#[test]
fn an_xla_cpu_training_session_restores_from_its_saved_state() {
    let batches = batches();
    let mut straight = trainer("xla:cpu");
    straight.step(&batches[0], 1e-4).unwrap();
    let saved = straight.session().save().unwrap();
    let second = straight.step(&batches[1], 1e-4).unwrap();

    // A new session (its variables at their initial values) given the saved parameters and
    // moments continues exactly where the first left off.
    let mut resumed = trainer("xla:cpu");
    resumed.session_mut().restore(&saved).unwrap();
    let again = resumed.step(&batches[1], 1e-4).unwrap();
    assert_eq!(again.loss.to_bits(), second.loss.to_bits(), "{} vs {}", again.loss, second.loss);
    let name = "encoder.layer.0.attention.self.query.weight";
    let (x, y) = (straight.session().parameter(name).unwrap(), resumed.session().parameter(name).unwrap());
    assert_eq!(x.to_f64_vec(), y.to_f64_vec());
}

/// bf16 mixed precision compiles and runs as one program on xla:cpu too (the casts are in the
/// exported module, as a Trainium compile would see them): the first loss is within bf16's reach
/// of PyTorch's f32 loss and is not the f32 loss, and the parameters stay f32.
#[test]
fn bf16_mixed_precision_runs_on_xla_cpu() {
    let batches = batches();
    let want = fixture()["results"]["float32"]["losses"][0].as_f64().unwrap();
    let mut xla = trainer_in("xla:cpu", Some(accelrt::DType::BF16));
    let loss = xla.step(&batches[0], 1e-4).unwrap().loss;
    assert!((loss - want).abs() <= 0.02 * want && (loss - want).abs() > 1e-6, "{loss} vs PyTorch f32 {want}");
    for (name, p) in xla.session().parameters().unwrap() {
        assert_eq!(p.dtype(), accelrt::DType::F32, "{name}");
    }
}
