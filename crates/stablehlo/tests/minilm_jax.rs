//! all-MiniLM-L6-v2 exported to StableHLO and run in jax/jaxlib on the CPU, its weights fed by the
//! manifest from model.safetensors, on a padded bucket: the embeddings match the candle CPU
//! backend, the reference evaluator and sentence-transformers (the fixture of tests/minilm.rs).
//!
//! Needs the model in the cache (fetched on first use, as the other MiniLM tests do) and
//! `python3 -m pip install -r tests/jax/requirements.txt`.

mod common;

use accelrt_candle::CandleBackend;
use accelrt_core::{reference, HostTensor, PrepareOptions};
use accelrt_models::bert::{self, BertConfig, SentenceHead};
use accelrt_models::{registry, ModelStore, SafetensorsWeights, SentenceEmbedder};
use accelrt_stablehlo::{export, Bucket, ExportOptions};
use common::*;

#[derive(serde::Deserialize)]
struct Fixture {
    texts: Vec<String>,
    embeddings: Vec<Vec<f64>>,
}

/// `t` [batch, len] padded with zeros to [batch, seq] (padding ids, mask 0, type 0).
fn pad(t: &HostTensor, seq: usize) -> HostTensor {
    let (batch, len) = (t.shape()[0], t.shape()[1]);
    let values = t.to_i64_vec().unwrap();
    let mut out = vec![0u32; batch * seq];
    for r in 0..batch {
        for c in 0..len {
            out[r * seq + c] = values[r * len + c] as u32;
        }
    }
    HostTensor::u32(vec![batch, seq], out).unwrap()
}

fn max_abs(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max)
}

#[test]
fn minilm_module_runs_in_jax_like_the_cpu_backend() {
    require_jax();
    let dir = ModelStore::from_env()
        .ensure(&registry::ALL_MINILM_L6_V2)
        .unwrap_or_else(|e| panic!("all-MiniLM-L6-v2 is needed by this test: {e}"));
    let fixture: Fixture = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("models/tests/fixtures/all-minilm-l6-v2.json")).unwrap(),
    )
    .unwrap();
    // Four texts of different lengths (one empty: only the special tokens).
    let picks = [0, 2, 3, 5];
    let texts: Vec<&str> = picks.iter().map(|&i| fixture.texts[i].as_str()).collect();

    let cfg = BertConfig::from_file(&dir.join("config.json")).unwrap();
    let head = SentenceHead::from_dir(&dir).unwrap();
    let weights = SafetensorsWeights::open(&dir.join("model.safetensors")).unwrap();
    let prefix = if weights.contains("embeddings.word_embeddings.weight") { "" } else { "bert." };
    let graph = bert::build_graph(&cfg, head, prefix).unwrap();

    let embedder = SentenceEmbedder::load(&dir, &CandleBackend::cpu(), &PrepareOptions::default()).unwrap();
    let batch = embedder.tokenize(&texts).unwrap();
    let cpu = embedder.run(&batch).unwrap();

    // A bucket longer than the longest text: padding must not change the embeddings.
    let seq = 32;
    assert!(batch.input_ids.shape()[1] < seq);
    let (ids, mask, types) =
        (pad(&batch.input_ids, seq), pad(&batch.attention_mask, seq), pad(&batch.token_type_ids, seq));
    let inputs = [(bert::INPUT_IDS, &ids), (bert::ATTENTION_MASK, &mask), (bert::TOKEN_TYPE_IDS, &types)];
    let bucket = Bucket::new([("batch", texts.len()), ("seq", seq)]);
    let module = export(&graph, &bucket, &ExportOptions::default()).unwrap();
    assert_eq!(module.manifest.arguments.len(), 3 + graph.weights().count());

    let mut job = JaxJob::default();
    let step = job.add_step("minilm", module, &inputs, &weights);
    job.run();
    let outputs = job.outputs(step).unwrap_or_else(|e| panic!("jax: {e}"));
    let (name, got) = &outputs[0];
    assert_eq!(name, bert::EMBEDDINGS);
    assert_eq!(got.shape(), [texts.len(), 384]);
    let got: Vec<&[f32]> = got.as_f32().unwrap().chunks(384).collect();

    let unpadded = [
        (bert::INPUT_IDS, &batch.input_ids),
        (bert::ATTENTION_MASK, &batch.attention_mask),
        (bert::TOKEN_TYPE_IDS, &batch.token_type_ids),
    ];
    let want = reference::evaluate(&graph, &weights, &unpadded).unwrap();
    let want = want.get(bert::EMBEDDINGS).unwrap().to_f64_vec();
    for (i, g) in got.iter().enumerate() {
        let vs_cpu = max_abs(g, &cpu[i].iter().map(|&x| x as f64).collect::<Vec<_>>());
        let vs_reference = max_abs(g, &want[i * 384..(i + 1) * 384]);
        let vs_st = max_abs(g, &fixture.embeddings[picks[i]]);
        eprintln!("text {i}: max |jax − cpu| {vs_cpu:.2e}, − reference {vs_reference:.2e}, − sentence-transformers {vs_st:.2e}");
        assert!(vs_cpu <= 1e-5, "text {i} ({:?}): jax differs from the CPU backend by {vs_cpu}", texts[i]);
        assert!(vs_reference <= 1e-5, "text {i}: jax differs from the reference by {vs_reference}");
        assert!(vs_st <= 1e-4, "text {i}: jax differs from sentence-transformers by {vs_st}");
    }
}
