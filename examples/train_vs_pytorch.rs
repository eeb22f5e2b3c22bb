//! accelrt's MiniLM + MNRL training step beside PyTorch's (benches/peers/pytorch_train_runner.py,
//! sentence-transformers) in one run, on the same batches, steps interleaved so both see the same
//! machine load: samples/s, tokens/s and step-time percentiles of each, and the throughput ratio.
//! A stand-in for the `accelrt bench` training workload, which does not exist yet.
//!
//!     cargo run --release --example train_vs_pytorch -- [--steps 12] [--warmup 2] [--batch-size 8] [--threads 2]
//!
//! Batches are the Shakespeare training pairs in file order; f32, dropout 0, AdamW lr 1e-4,
//! weight decay 0.01 on both sides. Prints one JSON object.

use accelrt::bench::peers::PeerOptions;
use accelrt::bench::train_peer::{TrainBatch, TrainHyper, TrainingPeer};
use accelrt::bench::training::{summarize, StepSample};
use accelrt::core::optim::AdamW;
use accelrt::core::training::{Optimizer, TrainingConfig};
use accelrt::train::dataset::{self, DataStore, SHAKESPEARE};
use accelrt::train::step::MnrlTrainer;
use accelrt::train::{Order, PairsFile, Sampler};
use anyhow::Result;
use clap::Parser;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Steps on each side (the first --warmup are not measured)
    #[arg(long, default_value_t = 12)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Pairs per step
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// PyTorch's intra-op threads
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Folder of the peer runner scripts
    #[arg(long, default_value = "benches/peers")]
    peers_dir: std::path::PathBuf,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let dir = accelrt::models::ModelStore::from_env().ensure(accelrt::models::lookup("all-minilm-l6-v2")?)?;
    let data = DataStore::from_env().ensure(&SHAKESPEARE)?;
    let mut pairs = PairsFile::open(data.join(dataset::PAIRS_TRAIN))?;
    let mut sampler = Sampler::new(pairs.len(), a.batch_size, Order::FileOrder)?;
    let (lr, weight_decay) = (1e-4, 0.01);
    let backend = accelrt::open_backend("cpu")?;
    let config =
        TrainingConfig { optimizer: Optimizer::AdamW(AdamW { weight_decay, ..AdamW::default() }), clip_norm: None };
    let mut ours = MnrlTrainer::new(&dir, backend.as_ref(), &Default::default(), a.batch_size, &config)?;
    let options = PeerOptions { threads: a.threads, device: "cpu".into(), dtype: "f32".into(), max_tokens: None };
    let hyper = TrainHyper { lr, weight_decay, dropout: 0.0 };
    let mut peer =
        TrainingPeer::spawn("pytorch", &a.peers_dir.join("pytorch_train_runner.py"), &dir, &options, &hyper)?;
    let (mut accelrt_samples, mut torch_samples, mut peak) = (vec![], vec![], None);
    let mut losses = vec![];
    for _ in 0..a.steps {
        let batch = pairs.batch(&sampler.next_batch())?;
        let t0 = Instant::now();
        let out = ours.step(&batch, lr)?;
        accelrt_samples.push(StepSample { rows: batch.len(), tokens: out.tokens as u64, time: t0.elapsed() });
        let texts: Vec<(&str, &str)> = batch.iter().map(|p| (p.anchor.as_str(), p.positive.as_str())).collect();
        let theirs = peer.step(TrainBatch::Pairs(&texts))?;
        torch_samples.push(StepSample { rows: theirs.rows, tokens: theirs.tokens, time: theirs.step });
        peak = theirs.peak_memory_bytes.or(peak);
        losses.push((out.loss, theirs.loss));
    }
    let accelrt_summary = summarize(&accelrt_samples, a.warmup, peak_resident_bytes(), None)?;
    let torch_summary = summarize(&torch_samples, a.warmup, peak, None)?;
    let report = serde_json::json!({
        "model": "all-minilm-l6-v2",
        "task": "mnrl",
        "batch_size": a.batch_size,
        "steps": a.steps,
        "warmup": a.warmup,
        "accelrt": accelrt_summary,
        "pytorch": torch_summary,
        "pytorch_versions": peer.info.versions,
        "losses_accelrt_pytorch": losses,
        "ratio_tokens_per_s": accelrt_summary.tokens_per_s / torch_summary.tokens_per_s,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// This process's peak resident memory (Linux `VmHWM`): accelrt's side of the run (the peer is
/// another process and reports its own).
fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
