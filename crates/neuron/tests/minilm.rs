//! all-MiniLM-L6-v2 end to end on the Neuron backend through the FFI, against the simulator (a TEST
//! DOUBLE of libnrt that runs the reference evaluator): the same embeddings as the CPU backend,
//! with inputs padded to a bucket; and a runtime failure mid-run surfaces as a typed error.

mod common;

use accelrt_core::{Backend, DeviceSpec, HostTensor, PrepareOptions, WeightSource};
use accelrt_models::{registry, ModelStore, SafetensorsWeights, SentenceEmbedder};
use accelrt_neuron::{weights_hash, NeffKey, NeuronBackend, NeuronOptions};
use std::collections::BTreeMap;

#[test]
fn minilm_embeds_like_the_cpu_backend_through_the_ffi() {
    common::use_simulator();
    let dir = ModelStore::from_env()
        .ensure(&registry::ALL_MINILM_L6_V2)
        .unwrap_or_else(|e| panic!("all-MiniLM-L6-v2 is needed by this test: {e}"));
    let cpu = accelrt_candle::CandleBackend::cpu();
    let on_cpu = SentenceEmbedder::load(&dir, &cpu, &PrepareOptions::default()).unwrap();
    let graph = on_cpu.executable().graph().clone();

    // "Compile" the one bucket (batch 2, 16 tokens) for the simulator, as neuronx-cc would for hardware.
    let cache = tempfile::tempdir().unwrap();
    let (batch, seq) = (2usize, 16usize);
    let zeros = HostTensor::u32(vec![batch, seq], vec![0; batch * seq]).unwrap();
    let ones = HostTensor::u32(vec![batch, seq], vec![1; batch * seq]).unwrap();
    let weights = SafetensorsWeights::open(&dir.join("model.safetensors")).unwrap();
    let bucket = BTreeMap::from([("batch".to_string(), batch), ("seq".to_string(), seq)]);
    let inputs = [("input_ids", &zeros), ("attention_mask", &ones), ("token_type_ids", &zeros)];
    let neff = nrt_sim::pack(&graph, &weights, &inputs).unwrap();
    // The weights hash is part of the key (the NEFF embeds the weights); time it, as prepare pays it.
    let started = std::time::Instant::now();
    let hash = weights_hash(&graph, &weights).unwrap();
    let took = started.elapsed();
    let bytes: usize = graph.weights().map(|(_, n)| weights.get(&n.name).unwrap().bytes.len()).sum();
    eprintln!(
        "weights hash of all-MiniLM-L6-v2: {} weights, {:.1} MB in {:.1} ms ({:.2} GB/s, {} threads available)",
        graph.weights().count(),
        bytes as f64 / 1e6,
        took.as_secs_f64() * 1e3,
        bytes as f64 / took.as_secs_f64() / 1e9,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    NeffKey::new(&graph, &hash, "inf2", &bucket).install(cache.path(), graph.name(), &neff).unwrap();

    let options = NeuronOptions {
        cache_dir: cache.path().into(),
        target: "inf2".into(),
        buckets: BTreeMap::from([("batch".to_string(), vec![batch]), ("seq".to_string(), vec![seq])]),
    };
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
    assert!(err.contains("larger than every prepared bucket"), "{err}");
    // A runtime fault during a run is a typed error naming the status, and the next run works.
    common::inject("nrt_execute", 1202, 1);
    let err = on_neuron.embed(&["again"]).unwrap_err().to_string();
    assert!(err.contains("NRT_EXEC_HW_ERR_NC_UE"), "{err}");
    assert_eq!(on_neuron.embed(&["again"]).unwrap(), on_neuron.embed(&["again"]).unwrap());
    let _ = neuron.device_info().unwrap();
}
