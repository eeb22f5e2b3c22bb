//! SmolLM2-135M-Instruct (GGUF Q4_1) exported with its KV caches as state and run in jax/jaxlib on
//! the CPU: a prefill bucket and a decode bucket hand the caches to each other, the quantised
//! weights are dequantised into f32 arguments, and the logits of every step match the reference
//! evaluator (f64, same dequantised weights) with the same greedy token.
//!
//! Needs the model in the cache (fetched on first use) and
//! `python3 -m pip install -r tests/jax/requirements.txt`.

mod common;

use accelrt_core::{reference, HostTensor};
use accelrt_models::generator::find_gguf;
use accelrt_models::llama::{self, LlamaConfig};
use accelrt_models::{registry, GgufFile, ModelStore};
use accelrt_stablehlo::{export, Bucket, ExportOptions};
use common::*;

fn argmax(values: &[f64]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, v)| if *v > values[best] { i } else { best })
}

#[test]
fn smollm2_prefill_and_decode_run_in_jax_like_the_reference() {
    require_jax();
    let dir = ModelStore::from_env()
        .ensure(&registry::SMOLLM2_135M_INSTRUCT)
        .unwrap_or_else(|e| panic!("SmolLM2-135M-Instruct is needed by this test: {e}"));
    let file = GgufFile::open(&find_gguf(&dir).unwrap()).unwrap();
    let cfg = LlamaConfig::from_gguf(&file).unwrap();
    let dtype_of = |name: &str| -> accelrt_models::Result<accelrt_core::DType> {
        Ok(file.tensor(name).expect("tensor in the file").dtype().expect("known type"))
    };
    let capacity = 32;
    let graph = llama::build_graph(&cfg, capacity, &dtype_of).unwrap();

    // One sequence in slot 0: an 8-token prefill, then two greedy decode steps.
    let prompt: Vec<u32> = vec![1, 504, 3458, 314, 4649, 282, 5018, 314];
    let mut reference_state = reference::new_state(1);
    let mut job = JaxJob::default();
    let mut steps = Vec::new();
    let mut tokens = prompt.clone();
    let mut start = 0u32;
    for step in 0..3 {
        let new: Vec<u32> = tokens[start as usize..].to_vec();
        let n = new.len();
        let inputs_owned = [
            (llama::TOKENS, HostTensor::u32(vec![1, n], new).unwrap()),
            (llama::POSITIONS, HostTensor::u32(vec![1, n], (start..start + n as u32).collect()).unwrap()),
            (llama::SLOTS, HostTensor::u32(vec![1], vec![0]).unwrap()),
        ];
        let inputs: Vec<(&str, &HostTensor)> = inputs_owned.iter().map(|(n, t)| (*n, t)).collect();
        let want = reference::evaluate_with_state(&graph, &file, &inputs, &mut reference_state).unwrap();
        let logits = want.get(llama::LOGITS).unwrap().to_f64_vec();
        let bucket = Bucket::new([("batch", 1), ("seq", n)]).with_slots(1);
        let module = export(&graph, &bucket, &ExportOptions::default()).unwrap();
        if step == 0 {
            assert_eq!(module.manifest.state_pairs().len(), 2 * cfg.num_layers);
        }
        steps.push((job.add_step("smollm2", module, &inputs, &file), logits.clone()));
        start = tokens.len() as u32;
        tokens.push(argmax(&logits) as u32);
    }
    job.run();
    for (i, (id, want)) in steps.iter().enumerate() {
        let outputs = job.outputs(*id).unwrap_or_else(|e| panic!("step {i}: jax: {e}"));
        let got = outputs[0].1.to_f64_vec();
        assert_eq!(got.len(), want.len());
        let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        eprintln!("step {i}: max |jax − reference| logit {diff:.2e} (largest |logit| {scale:.1})");
        assert_eq!(argmax(&got), argmax(want), "step {i}: greedy tokens differ");
        assert!(diff <= 5e-4, "step {i}: logits differ by {diff}");
    }
}
