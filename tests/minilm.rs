//! all-MiniLM-L6-v2 end to end on every test device, against sentence-transformers (PyTorch, fp32).
//! The reference vectors come from scripts/make_minilm_reference.py.

mod common;

use accelrt::models::SentenceEmbedder;
use accelrt::PrepareOptions;
use common::*;

fn embedder(device: &str) -> SentenceEmbedder {
    let backend = accelrt::open_backend(device).unwrap_or_else(|e| panic!("{device}: {e}"));
    SentenceEmbedder::load(&minilm_dir(), backend.as_ref(), &PrepareOptions::default()).unwrap()
}

#[test]
fn embeddings_match_sentence_transformers() {
    let reference = minilm_reference();
    assert!(reference.texts.len() >= 16);
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    for device in test_devices() {
        let model = embedder(&device);
        let got = model.embed(&texts).unwrap();
        assert_eq!(got.len(), texts.len());
        let (mut worst_cos, mut worst_diff) = (1.0f64, 0.0f64);
        for (i, (g, want)) in got.iter().zip(&reference.embeddings).enumerate() {
            assert_eq!(g.len(), 384);
            let (cos, diff) = (cosine(g, want), max_abs_diff(g, want));
            assert!(
                cos >= 0.99999 && diff <= 1e-4,
                "{device}: text {i} ({:?}): cosine {cos}, max abs diff {diff}",
                texts[i].chars().take(40).collect::<String>()
            );
            worst_cos = worst_cos.min(cos);
            worst_diff = worst_diff.max(diff);
        }
        eprintln!("{device}: worst cosine {worst_cos:.9}, worst max abs diff {worst_diff:.3e}");
    }
}

#[test]
fn truncation_and_tokenization_match_the_reference() {
    let reference = minilm_reference();
    let model = embedder("cpu");
    assert_eq!(model.max_tokens(), 256);
    for (text, &count) in reference.texts.iter().zip(&reference.token_counts) {
        let batch = model.tokenize(&[text.as_str()]).unwrap();
        assert_eq!(batch.tokens, count, "token count of {text:?}");
    }
}

#[test]
fn results_do_not_depend_on_batch_size() {
    let reference = minilm_reference();
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    for device in test_devices() {
        let model = embedder(&device);
        let whole = model.embed(&texts).unwrap();
        for batch_size in [1, 3, 8] {
            let batched = model.embed_batched(&texts, batch_size).unwrap();
            for (i, (a, b)) in whole.iter().zip(&batched).enumerate() {
                let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                assert!(diff <= 1e-6, "{device}: text {i} differs by {diff} at batch size {batch_size}");
            }
        }
    }
}

#[test]
fn empty_batch_is_an_error() {
    let err = embedder("cpu").embed(&[]).expect_err("an empty batch must fail");
    assert!(err.to_string().contains("empty batch"), "{err}");
}
