//! The PyTorch reference fixtures (scripts/make_training_reference.py) against this crate's data
//! pipeline and accelrt's tokenizers: the batches PyTorch trained on must be the batches accelrt
//! builds from the same files, or comparing losses would compare different inputs.

use accelrt_train::dataset::{self, DataStore, SHAKESPEARE};
use accelrt_train::{Order, Pair, PairsFile, Sampler, TokenWindows};
use serde_json::Value;
use std::path::PathBuf;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn pinned(file: &str) -> &'static str {
    SHAKESPEARE.files.iter().find(|f| f.path == file).unwrap().sha256
}

fn model_dir(name: &str) -> PathBuf {
    let store = accelrt_models::ModelStore::from_env();
    store.ensure(accelrt_models::lookup(name).unwrap()).expect("fetch the model: accelrt fetch <name>")
}

/// float32 and float64 runs of the same steps agree to about f32 rounding; a fixture edited by
/// hand or written by a broken run would not.
fn check_precisions_agree(results: &Value, rel: f64) {
    let l32: Vec<f64> = serde_json::from_value(results["float32"]["losses"].clone()).unwrap();
    let l64: Vec<f64> = serde_json::from_value(results["float64"]["losses"].clone()).unwrap();
    assert_eq!(l32.len(), 3);
    for (a, b) in l32.iter().zip(&l64) {
        assert!((a - b).abs() <= rel * b.abs(), "float32 {a} vs float64 {b}");
    }
}

#[test]
fn minilm_reference_batches_are_the_pipelines_file_order_batches() {
    let f = fixture("minilm-mnrl-reference.json");
    assert_eq!(f["data_sha256"], pinned(dataset::PAIRS_TRAIN), "the fixture was made from other pairs");
    let dir = DataStore::from_env().fetch(&SHAKESPEARE).unwrap();
    let mut pairs = PairsFile::open(dir.join(dataset::PAIRS_TRAIN)).unwrap();
    let b = f["batch_size"].as_u64().unwrap() as usize;
    let mut sampler = Sampler::new(pairs.len(), b, Order::FileOrder).unwrap();
    let reference: Vec<Vec<Pair>> = serde_json::from_value(f["pairs"].clone()).unwrap();
    assert_eq!(reference.len(), 3);
    for (k, want) in reference.iter().enumerate() {
        assert_eq!(&pairs.batch(&sampler.next_batch()).unwrap(), want, "batch {k}");
    }

    // accelrt's BERT tokenizer gives the token counts sentence-transformers trained on.
    let backend = accelrt_candle::CandleBackend::new(&"cpu".parse().unwrap()).unwrap();
    let embedder =
        accelrt_models::SentenceEmbedder::load(&model_dir("all-minilm-l6-v2"), &backend, &Default::default()).unwrap();
    for (k, batch) in reference.iter().enumerate() {
        for (side, key) in [("anchor_tokens", 0), ("positive_tokens", 1)] {
            let texts: Vec<&str> =
                batch.iter().map(|p| if key == 0 { p.anchor.as_str() } else { p.positive.as_str() }).collect();
            let ours: Vec<u64> = embedder.encode(&texts).unwrap().iter().map(|ids| ids.len() as u64).collect();
            let theirs: Vec<u64> = serde_json::from_value(f["token_counts"][k][side].clone()).unwrap();
            assert_eq!(ours, theirs, "batch {k} {side}");
        }
    }
    check_precisions_agree(&f["results"], 1e-5);

    // The step-1 loss is the loss of the untrained model, so accelrt's forward pass (inference
    // today) and this crate's MNRL must already give PyTorch's number.
    let first = &reference[0];
    let anchors = embedder.embed(&first.iter().map(|p| p.anchor.as_str()).collect::<Vec<_>>()).unwrap();
    let positives = embedder.embed(&first.iter().map(|p| p.positive.as_str()).collect::<Vec<_>>()).unwrap();
    let ours = accelrt_train::eval::mnrl_loss(&anchors, &positives, f["loss"]["scale"].as_f64().unwrap()).unwrap();
    let theirs = f["results"]["float64"]["losses"][0].as_f64().unwrap();
    assert!((ours - theirs).abs() <= 1e-5 * theirs, "accelrt forward + MNRL {ours} vs PyTorch f64 {theirs}");
}

#[test]
fn smollm2_reference_windows_are_accelrts_token_stream() {
    let f = fixture("smollm2-ce-reference.json");
    assert_eq!(f["data_sha256"], pinned(dataset::CORPUS_TRAIN), "the fixture was made from another corpus");
    let dir = DataStore::from_env().fetch(&SHAKESPEARE).unwrap();
    let gguf = accelrt_models::generator::find_gguf(&model_dir("smollm2-135m-instruct")).unwrap();
    let tokenizer = accelrt_models::ChatTokenizer::from_gguf(&accelrt_models::GgufFile::open(&gguf).unwrap()).unwrap();
    let seq_len = f["seq_len"].as_u64().unwrap() as usize;
    let windows = TokenWindows::from_file(
        dir.join(dataset::CORPUS_TRAIN),
        seq_len,
        accelrt_train::corpus::DEFAULT_MAX_CORPUS_BYTES,
        |text| tokenizer.encode(text),
    )
    .unwrap();
    // The whole stream, not only the first windows: one differing merge anywhere shifts every
    // later window.
    assert_eq!(windows.tokens().len() as u64, f["stream_tokens"].as_u64().unwrap());
    let bytes: Vec<u8> = windows.tokens().iter().flat_map(|t| t.to_le_bytes()).collect();
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), f["stream_sha256"].as_str().unwrap());

    let b = f["batch_size"].as_u64().unwrap() as usize;
    let mut sampler = Sampler::new(windows.len(), b, Order::FileOrder).unwrap();
    let reference: Vec<Vec<Vec<u32>>> = serde_json::from_value(f["batches"].clone()).unwrap();
    for (k, want) in reference.iter().enumerate() {
        assert_eq!(windows.batch(&sampler.next_batch()).unwrap(), want.concat(), "batch {k}");
    }
    check_precisions_agree(&f["results"], 1e-5);
}
