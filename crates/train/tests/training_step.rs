//! accelrt's training step against PyTorch's (scripts/make_training_reference.py): the same first
//! three batches in file order, dropout 0, AdamW lr 1e-4 / weight decay 0.01 on every parameter,
//! constant rate, no clipping. Runs on the candle CPU backend.

use accelrt_core::optim::AdamW;
use accelrt_core::training::{Optimizer, TrainingConfig};
use accelrt_train::dataset::{self, DataStore, SHAKESPEARE};
use accelrt_train::step::MnrlTrainer;
use accelrt_train::{Order, PairsFile, Sampler};
use serde_json::Value;
use std::path::PathBuf;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn model_dir(name: &str) -> PathBuf {
    let store = accelrt_models::ModelStore::from_env();
    store.ensure(accelrt_models::lookup(name).unwrap()).expect("fetch the model: accelrt fetch <name>")
}

/// The fixture's optimiser, as accelrt's.
fn reference_config(f: &Value) -> TrainingConfig {
    let o = &f["optimizer"];
    assert!(o["grad_clipping"].is_null() && o["schedule"] == "constant");
    let adamw = AdamW {
        beta1: o["betas"][0].as_f64().unwrap(),
        beta2: o["betas"][1].as_f64().unwrap(),
        eps: o["eps"].as_f64().unwrap(),
        weight_decay: o["weight_decay"].as_f64().unwrap(),
    };
    TrainingConfig { optimizer: Optimizer::AdamW(adamw), clip_norm: None, mixed_precision: None }
}

/// Compares a tensor with a fixture's view of it (norm of the whole tensor, 8 values of listed
/// rows or of the flattened tensor); returns the largest absolute difference of the values.
fn compare_view(name: &str, t: &[f64], shape: &[usize], view: &Value) -> f64 {
    let norm = t.iter().map(|x| x * x).sum::<f64>().sqrt();
    let want = view["norm"].as_f64().unwrap();
    assert!((norm - want).abs() <= 1e-5 * want, "{name}: norm {norm} vs PyTorch {want}");
    let row_len: usize = shape[1..].iter().product();
    // With `rows`: 8 values of each listed row; without: the first 8 of the flattened tensor.
    let (rows, values): (Vec<usize>, Vec<Vec<f64>>) = match view.get("rows") {
        Some(rows) => {
            (serde_json::from_value(rows.clone()).unwrap(), serde_json::from_value(view["values"].clone()).unwrap())
        }
        None => (vec![0], vec![serde_json::from_value(view["values"].clone()).unwrap()]),
    };
    let stride = if view.get("rows").is_some() { row_len } else { 0 };
    let mut worst = 0.0f64;
    for (r, want) in rows.iter().zip(&values) {
        for (i, w) in want.iter().enumerate() {
            worst = worst.max((t[r * stride + i] - w).abs());
        }
    }
    worst
}

#[test]
fn minilm_mnrl_steps_match_pytorch() {
    let f = fixture("minilm-mnrl-reference.json");
    assert_eq!(f["dropout"].as_f64(), Some(0.0));
    let dir = model_dir("all-minilm-l6-v2");
    let data = DataStore::from_env().fetch(&SHAKESPEARE).unwrap();
    let mut pairs = PairsFile::open(data.join(dataset::PAIRS_TRAIN)).unwrap();
    let b = f["batch_size"].as_u64().unwrap() as usize;
    let mut sampler = Sampler::new(pairs.len(), b, Order::FileOrder).unwrap();
    let backend = accelrt_candle::CandleBackend::new(&"cpu".parse().unwrap()).unwrap();
    let mut trainer = MnrlTrainer::new(&dir, &backend, &Default::default(), b, &reference_config(&f)).unwrap();
    let lr = f["optimizer"]["lr"].as_f64().unwrap();
    let r32 = &f["results"]["float32"];
    let want: Vec<f64> = serde_json::from_value(r32["losses"].clone()).unwrap();

    // The weights before the first step are the checkpoint's.
    let before: Vec<(String, Vec<f64>)> = r32["before"]
        .as_object()
        .unwrap()
        .keys()
        .map(|name| (name.clone(), trainer.session().parameter(name).unwrap().to_f64_vec()))
        .collect();
    for (name, t) in &before {
        let shape = trainer.session().parameter(name).unwrap().shape().to_vec();
        // The fixture's values are the checkpoint's f32 values through JSON: equal up to printing.
        let worst = compare_view(name, t, &shape, &r32["before"][name]);
        assert!(worst <= 1e-12, "{name} before the first step differs by {worst}");
    }

    let mut losses = vec![];
    for step in 0..3 {
        let batch = pairs.batch(&sampler.next_batch()).unwrap();
        losses.push(trainer.step(&batch, lr).unwrap().loss);
        if step == 0 {
            // Weights after one AdamW step: almost every weight moves by ±lr, so 1e-6 absolute
            // (1 % of an update) checks each gradient's sign and the update rule.
            for (name, old) in &before {
                let p = trainer.session().parameter(name).unwrap();
                let new = p.to_f64_vec();
                let view = &r32["after"][name];
                let worst = compare_view(name, &new, p.shape(), view);
                eprintln!("{name}: max |accelrt - PyTorch| after step 1 = {worst:.3e}");
                assert!(worst <= 1e-6, "{name}: weights after step 1 differ by {worst}");
                let delta = new.iter().zip(old).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
                let want = view["delta_norm"].as_f64().unwrap();
                eprintln!("{name}: update norm {delta:.6e} vs PyTorch {want:.6e}");
                assert!((delta - want).abs() <= 1e-3 * want, "{name}: update norm {delta} vs PyTorch {want}");
            }
        }
    }
    for (k, (ours, theirs)) in losses.iter().zip(&want).enumerate() {
        let rel = (ours - theirs).abs() / theirs.abs();
        eprintln!("step {}: accelrt {ours:.9} PyTorch f32 {theirs:.9} (relative {rel:.2e})", k + 1);
        assert!(rel <= 1e-5, "step {}: loss {ours} vs PyTorch {theirs}", k + 1);
    }
}

/// transformers' LlamaForCausalLM parameter names → the GGUF's.
fn gguf_name(hf: &str) -> String {
    let hf = hf.strip_prefix("model.").unwrap_or(hf);
    if hf == "embed_tokens.weight" {
        return "token_embd.weight".into();
    }
    if hf == "norm.weight" {
        return "output_norm.weight".into();
    }
    let rest = hf.strip_prefix("layers.").expect("a layer parameter");
    let (layer, part) = rest.split_once('.').unwrap();
    let part = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("unmapped parameter {other}"),
    };
    format!("blk.{layer}.{part}")
}

/// SmolLM2-135M (the Q4_1 GGUF dequantised to f32) with next-token cross-entropy: 3 steps of
/// 4 windows × 128 tokens. About a minute and 5 GB on 2 CPU cores.
#[test]
fn smollm2_causal_lm_steps_match_pytorch() {
    let f = fixture("smollm2-ce-reference.json");
    assert_eq!(f["dropout"].as_f64(), Some(0.0));
    let dir = model_dir("smollm2-135m-instruct");
    let seq_len = f["seq_len"].as_u64().unwrap() as usize;
    let backend = accelrt_candle::CandleBackend::new(&"cpu".parse().unwrap()).unwrap();
    let mut trainer =
        accelrt_train::step::CausalLmTrainer::new(&dir, &backend, &Default::default(), seq_len, &reference_config(&f))
            .unwrap();
    let lr = f["optimizer"]["lr"].as_f64().unwrap();
    let r32 = &f["results"]["float32"];
    let want: Vec<f64> = serde_json::from_value(r32["losses"].clone()).unwrap();
    let batches: Vec<Vec<Vec<u32>>> = serde_json::from_value(f["batches"].clone()).unwrap();
    // q_proj/k_proj rows are permuted between the GGUF and transformers: only their norms compare.
    let permuted = |hf: &str| hf.contains("q_proj") || hf.contains("k_proj");
    let names: Vec<String> = r32["after"].as_object().unwrap().keys().cloned().collect();
    let before: Vec<Vec<f64>> =
        names.iter().map(|n| trainer.session().parameter(&gguf_name(n)).unwrap().to_f64_vec()).collect();
    let mut losses = vec![];
    for (step, batch) in batches.iter().enumerate() {
        losses.push(trainer.step(&batch.concat(), lr).unwrap().loss);
        if step == 0 {
            for (name, old) in names.iter().zip(&before) {
                let p = trainer.session().parameter(&gguf_name(name)).unwrap();
                let new = p.to_f64_vec();
                let view = &r32["after"][name];
                if permuted(name) {
                    let norm = new.iter().map(|x| x * x).sum::<f64>().sqrt();
                    let want = view["norm"].as_f64().unwrap();
                    assert!((norm - want).abs() <= 1e-5 * want, "{name}: norm {norm} vs PyTorch {want}");
                } else {
                    let worst = compare_view(name, &new, p.shape(), view);
                    eprintln!("{name}: max |accelrt - PyTorch| after step 1 = {worst:.3e}");
                    assert!(worst <= 1e-6, "{name}: weights after step 1 differ by {worst}");
                }
                let delta = new.iter().zip(old).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
                let want = view["delta_norm"].as_f64().unwrap();
                eprintln!("{name}: update norm {delta:.6e} vs PyTorch {want:.6e}");
                assert!((delta - want).abs() <= 1e-3 * want, "{name}: update norm {delta} vs PyTorch {want}");
            }
        }
    }
    for (k, (ours, theirs)) in losses.iter().zip(&want).enumerate() {
        let rel = (ours - theirs).abs() / theirs.abs();
        eprintln!("step {}: accelrt {ours:.9} PyTorch f32 {theirs:.9} (relative {rel:.2e})", k + 1);
        assert!(rel <= 1e-5, "step {}: loss {ours} vs PyTorch {theirs}", k + 1);
    }
}

/// The global gradient norm of step 1 (over every trained tensor), from the clipping node with a
/// bound far above it (so clipping multiplies by exactly 1).
#[test]
fn minilm_step1_gradient_norm_matches_pytorch() {
    let f = fixture("minilm-mnrl-reference.json");
    let dir = model_dir("all-minilm-l6-v2");
    let data = DataStore::from_env().fetch(&SHAKESPEARE).unwrap();
    let mut pairs = PairsFile::open(data.join(dataset::PAIRS_TRAIN)).unwrap();
    let b = f["batch_size"].as_u64().unwrap() as usize;
    let mut sampler = Sampler::new(pairs.len(), b, Order::FileOrder).unwrap();
    let backend = accelrt_candle::CandleBackend::new(&"cpu".parse().unwrap()).unwrap();
    let config = TrainingConfig { clip_norm: Some(1e9), ..reference_config(&f) };
    let mut trainer = MnrlTrainer::new(&dir, &backend, &Default::default(), b, &config).unwrap();
    let out = trainer.step(&pairs.batch(&sampler.next_batch()).unwrap(), 1e-4).unwrap();
    let ours = out.grad_norm.expect("clipping outputs the norm");
    let theirs = f["results"]["float32"]["grad_global_norm"].as_f64().unwrap();
    eprintln!("step-1 gradient norm: accelrt {ours:.7} PyTorch {theirs:.7}");
    assert!((ours - theirs).abs() <= 1e-4 * theirs, "gradient norm {ours} vs PyTorch {theirs}");
}

/// accelrt's held-out loss of the original SmolLM2 (`eval::CausalLmEvaluator`: the training
/// step's forward graph and loss, no update) on the first 64 windows of 128 tokens of the held-out
/// corpus is PyTorch's for the same windows (`heldout_before`, f32), within the losses' 1e-5.
#[test]
fn smollm2_heldout_loss_matches_pytorch() {
    let f = fixture("smollm2-ce-reference.json");
    let want = &f["heldout_before"];
    let (seq_len, windows) = (want["seq_len"].as_u64().unwrap() as usize, want["windows"].as_u64().unwrap() as usize);
    let backend = accelrt_candle::CandleBackend::new(&"cpu".parse().unwrap()).unwrap();
    let dir = model_dir("smollm2-135m-instruct");
    let evaluator = accelrt_train::eval::CausalLmEvaluator::from_gguf(&dir, &backend, &Default::default()).unwrap();
    let data = DataStore::from_env().fetch(&SHAKESPEARE).unwrap().join(dataset::CORPUS_HELDOUT);
    let tokenizer = evaluator.tokenizer().unwrap();
    let corpus = accelrt_train::TokenWindows::from_file(&data, seq_len, 1 << 30, |t| tokenizer.encode(t)).unwrap();
    assert_eq!(corpus.tokens().len() as u64, want["stream_tokens"].as_u64().unwrap());
    assert_eq!(corpus.identity().unwrap().sha256, want["data_sha256"].as_str().unwrap());
    let got = evaluator.loss(&corpus, windows, 4).unwrap();
    assert_eq!(got.predictions as u64, want["predictions"].as_u64().unwrap());
    let reference = want["mean_loss"].as_f64().unwrap();
    assert!((got.mean_loss - reference).abs() <= 1e-5 * reference, "accelrt {} vs PyTorch {reference}", got.mean_loss);
}
