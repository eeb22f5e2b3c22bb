//! all-MiniLM-L6-v2 end to end on the Neuron backend through the FFI, against the simulator (a TEST
//! DOUBLE of libnrt that runs the exported HLO on XLA CPU): the same embeddings as the CPU backend,
//! with inputs padded to a bucket; and a runtime failure mid-run surfaces as a typed error.

mod common;

use accelrt_core::{Backend, DeviceSpec, PrepareOptions};
use accelrt_models::{registry, ModelStore, SentenceEmbedder};
use accelrt_neuron::{NeuronBackend, NeuronOptions};

#[test]
fn minilm_embeds_like_the_cpu_backend_through_the_ffi() {
    common::use_simulator();
    let dir = ModelStore::from_env()
        .ensure(&registry::ALL_MINILM_L6_V2)
        .unwrap_or_else(|e| panic!("all-MiniLM-L6-v2 is needed by this test: {e}"));
    let cpu = accelrt_candle::CandleBackend::cpu();
    let on_cpu = SentenceEmbedder::load(&dir, &cpu, &PrepareOptions::default()).unwrap();
    let graph = on_cpu.executable().graph().clone();

    // Compile the one bucket (batch 2, 16 tokens) as `accelrt compile --target inf2` would, the
    // test double standing in for neuronx-cc.
    let cache = tempfile::tempdir().unwrap();
    common::compile_bucket(cache.path(), &graph, "batch=2,seq=16", &[]);
    let options = NeuronOptions { cache_dir: cache.path().into(), target: "inf2".into(), flags: None };
    let neuron = NeuronBackend::with_options(&"neuron:0".parse::<DeviceSpec>().unwrap(), options).unwrap();
    let on_neuron = SentenceEmbedder::load(&dir, &neuron, &PrepareOptions::default()).unwrap();
    // Two short texts (padded to 16 tokens) and one alone (padded to a batch of 2).
    for texts in [&["A cat sits on the mat.", "GPUs multiply matrices quickly."][..], &["Hello, Neuron!"][..]] {
        let want = on_cpu.embed(texts).unwrap();
        let got = on_neuron.embed(texts).unwrap();
        for (w, g) in want.iter().zip(&got) {
            let diff = w.iter().zip(g).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-5, "max abs diff {diff}");
        }
    }
    // Longer than the bucket: refused, not truncated.
    let long = "word ".repeat(40);
    let err = on_neuron.embed(&[long.as_str()]).unwrap_err().to_string();
    assert!(err.contains("without a compiled bucket that holds it"), "{err}");
    // A runtime fault during a run is a typed error naming the status, and the next run works.
    common::inject("nrt_execute", 1202, 1);
    let err = on_neuron.embed(&["again"]).unwrap_err().to_string();
    assert!(err.contains("NRT_EXEC_HW_ERR_NC_UE"), "{err}");
    assert_eq!(on_neuron.embed(&["again"]).unwrap(), on_neuron.embed(&["again"]).unwrap());
    let _ = neuron.device_info().unwrap();
}
