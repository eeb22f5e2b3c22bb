//! MiniLM + MultipleNegativesRankingLoss trained on `neuron:0` against the test doubles built in
//! this workspace (`crates/nrt-sim`: a TEST DOUBLE of libnrt that runs the exported HLO on XLA
//! CPU; nothing here has run on Neuron hardware or through AWS's neuronx-cc). The training step's
//! NEFFs are made as `accelrt compile` makes inference NEFFs — export per bucket, XLA's StableHLO
//! → HLO converter, the compiler double — since `accelrt compile` has no training route yet.
//! Checked: the first two losses against the PyTorch fixture (as tests/xla_cpu_training.rs does
//! for `xla:cpu`), and `accelrt train --backend neuron:0` with and without the NEFFs it needs.
#![cfg(feature = "neuron")]

mod common;

use accelrt::core::optim::AdamW;
use accelrt::core::training::{Optimizer, TrainingConfig};
use accelrt::core::{DeviceSpec, Graph, PrepareOptions};
use accelrt::models::{bert, SentenceEmbedder};
use accelrt::neuron::{Compiler, NeuronBackend, NeuronOptions};
use accelrt::stablehlo::{export, hlo_proto, ExportOptions};
use accelrt::train::dataset::{self, DataStore, SHAKESPEARE};
use accelrt::train::step::{mnrl_graph, DropoutChoice, MnrlTrainer, TrainerOptions};
use accelrt::train::{Order, Pair, PairsFile, Sampler};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

const BATCH: usize = 8;
const STEPS: usize = 2;

/// A file cargo builds next to the test binaries (crates/nrt-sim).
fn built(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    [deps.join(name), deps.parent().unwrap().join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is built by `cargo build --release --workspace` (crates/nrt-sim)"))
}

fn simulator() -> PathBuf {
    built(&format!("{}nrt_sim{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX))
}

fn fixture_losses() -> Vec<f64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/train/tests/fixtures/minilm-mnrl-reference.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["results"]["float32"]["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

/// The fixture's first batches: 8 Shakespeare training pairs each, in file order.
fn batches() -> Vec<Vec<Pair>> {
    let data = DataStore::new(common::cache_root()).fetch(&SHAKESPEARE).unwrap();
    let mut pairs = PairsFile::open(data.join(dataset::PAIRS_TRAIN)).unwrap();
    let mut sampler = Sampler::new(pairs.len(), BATCH, Order::FileOrder).unwrap();
    (0..STEPS).map(|_| pairs.batch(&sampler.next_batch()).unwrap()).collect()
}

/// The fixture's settings, which are also what `accelrt train --lr 1e-4 --weight-decay 0.01
/// --dropout 0` builds: AdamW with decay 0.01, no clipping, f32, no dropout, no accumulation.
fn config() -> TrainingConfig {
    TrainingConfig {
        optimizer: Optimizer::AdamW(AdamW { weight_decay: 0.01, ..AdamW::default() }),
        clip_norm: None,
        mixed_precision: None,
    }
}

fn trainer_options() -> TrainerOptions {
    TrainerOptions { dropout: DropoutChoice::Probability(0.0), ..TrainerOptions::default() }
}

/// Exports `graph` at `bucket`, converts it to HLO and compiles it into `cache` with the compiler
/// double (`neuronx-cc-sim`, which checks the HLO on XLA CPU), as `accelrt compile --target inf2`
/// does for an inference graph.
fn compile(cache: &Path, work: &Path, graph: &Graph, bucket: &str) {
    let module = export(graph, &bucket.parse().unwrap(), &ExportOptions::default()).unwrap();
    let hlo = hlo_proto(&module.mlir).unwrap_or_else(|e| panic!("HLO of bucket {bucket}: {e}"));
    let stem: String = format!("{}-{bucket}", graph.name())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    let path = work.join(format!("{stem}.hlo.pb"));
    std::fs::write(&path, hlo).unwrap();
    std::fs::write(path.with_extension("").with_extension("json"), module.manifest.to_json()).unwrap();
    Compiler::at(&built("neuronx-cc-sim"))
        .unwrap()
        .compile_into_cache(&path, &module.manifest, "inf2", &[], cache)
        .unwrap_or_else(|e| panic!("compiling bucket {bucket}: {e}"));
}

/// A NEFF cache holding what MNRL training of MiniLM on the fixture's first batches needs: the
/// training step at each batch's exact shape (16 texts — anchors and positives — by the batch's
/// longest text), and one bucket of the embedding graph (the trainer loads the inference
/// pipeline for its tokenizer). Made once per test process.
fn neff_cache() -> &'static Path {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            let cache = tempfile::tempdir().unwrap();
            let work = tempfile::tempdir().unwrap();
            let dir = common::minilm_dir();
            let cpu = accelrt::candle::CandleBackend::cpu();
            let embedder = SentenceEmbedder::load(&dir, &cpu, &PrepareOptions::default()).unwrap();
            compile(cache.path(), work.path(), embedder.executable().graph(), "batch=1,seq=8");

            let cfg = bert::BertConfig::from_file(&dir.join("config.json")).unwrap();
            let head = bert::SentenceHead::from_dir(&dir).unwrap();
            let training = mnrl_graph(&cfg, head, "", BATCH, &config(), 1, bert::BertDropout::uniform(0.0)).unwrap();
            let mut seqs: Vec<usize> = batches()
                .iter()
                .map(|pairs| {
                    let texts: Vec<&str> = pairs
                        .iter()
                        .map(|p| p.anchor.as_str())
                        .chain(pairs.iter().map(|p| p.positive.as_str()))
                        .collect();
                    let ids = embedder.encode(&texts).unwrap();
                    let batch = embedder.batch_from_ids(&ids.iter().map(Vec::as_slice).collect::<Vec<_>>()).unwrap();
                    batch.input_ids.shape()[1]
                })
                .collect();
            seqs.dedup();
            // Nothing of the step may be padded (the embeddings' scatter-add, the loss's sums):
            // each batch's shape has its NEFF.
            assert!(accelrt::core::padding::paddable_symbols(&training.graph).is_empty());
            for seq in seqs {
                compile(cache.path(), work.path(), &training.graph, &format!("batch={},seq={seq}", 2 * BATCH));
            }
            cache
        })
        .path()
}

/// The tests take turns: each holds a MiniLM training session (about 1 GB) and the machine may
/// have 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn minilm_trains_on_the_neuron_double_like_pytorch() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cache = neff_cache();
    std::env::set_var(accelrt::neuron::LIBRARY_ENV, simulator());
    let options = NeuronOptions { cache_dir: cache.to_path_buf(), target: "inf2".into(), flags: None };
    let neuron = NeuronBackend::with_options(&"neuron:0".parse::<DeviceSpec>().unwrap(), options).unwrap();
    let dir = common::minilm_dir();
    let mut trainer =
        MnrlTrainer::with_options(&dir, &neuron, &PrepareOptions::default(), BATCH, &config(), &trainer_options())
            .unwrap();
    let want = fixture_losses();
    let mut losses = Vec::new();
    for (step, batch) in batches().iter().enumerate() {
        let loss = trainer.step(batch, 1e-4).unwrap().loss;
        let w = want[step];
        assert!((loss - w).abs() <= 1e-5 * w, "step {}: neuron {loss} vs PyTorch {w}", step + 1);
        losses.push(loss);
    }
    eprintln!("neuron (double) losses {losses:?}, PyTorch {:?}", &want[..STEPS]);
}

fn accelrt_train(neff: &Path, out: &Path, log: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_accelrt"))
        .args(["train", "--model", "all-minilm-l6-v2", "--data", "shakespeare", "--backend", "neuron:0"])
        .args(["--steps", "2", "--batch-size", "8", "--no-shuffle", "--lr", "1e-4", "--weight-decay", "0.01"])
        .args(["--dropout", "0", "--no-progress", "--out"])
        .arg(out)
        .arg("--log")
        .arg(log)
        .env("ACCELRT_CACHE", common::cache_root())
        .env("ACCELRT_NEURON_LIB", simulator())
        .env("ACCELRT_NEFF_CACHE", neff)
        .env_remove("ACCELRT_NEURON_TARGET")
        .env_remove("ACCELRT_NEURON_FLAGS")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn accelrt_train_on_neuron_runs_from_the_cache_or_says_what_is_missing() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();

    // Nothing compiled: refused before any step, saying it is the training step that has no
    // NEFFs and that `accelrt compile` does not make them.
    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = accelrt_train(&empty, &root.path().join("out0"), &root.path().join("log0.jsonl"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("no NEFF for training graph"), "{err}");
    assert!(err.contains("`accelrt compile` compiles inference graphs only"), "{err}");

    // With the NEFFs: two steps, the losses of the fixture, the trained model written.
    let out = root.path().join("out");
    let log = root.path().join("log.jsonl");
    let o = accelrt_train(neff_cache(), &out, &log);
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let want = fixture_losses();
    let lines = std::fs::read_to_string(&log).unwrap();
    let losses: Vec<f64> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), STEPS, "{lines}");
    for (step, (loss, w)) in losses.iter().zip(&want).enumerate() {
        assert!((loss - w).abs() <= 1e-5 * w, "step {}: {loss} vs PyTorch {w}", step + 1);
    }
    assert!(out.join("model.safetensors").is_file());
    assert!(out.join("checkpoint").join("state.safetensors").is_file());
}
