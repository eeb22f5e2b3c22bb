//! The Neuron backend through the real FFI path against the simulator (a TEST DOUBLE of libnrt):
//! the conformance suite, buckets with padding, missing NEFFs, multi-core use, and MiniLM.

mod common;

use accelrt_conformance::{cases, run_case, Case};
use accelrt_core::{
    reference, Backend, DType, DeviceSpec, Dim, Graph, GraphBuilder, HostTensor, HostWeights, Op, PrepareOptions,
    Shape, WeightSource,
};
use accelrt_neuron::cache::Bucket;
use accelrt_neuron::{weights_hash, NeffKey, NeuronBackend, NeuronOptions};
use std::collections::BTreeMap;
use std::path::Path;

fn backend(device: &str, cache: &Path, buckets: BTreeMap<String, Vec<usize>>) -> NeuronBackend {
    common::use_simulator();
    let options = NeuronOptions { cache_dir: cache.to_path_buf(), target: "inf2".into(), buckets };
    NeuronBackend::with_options(&device.parse::<DeviceSpec>().unwrap(), options).unwrap()
}

/// The symbols' sizes in these inputs.
fn sizes(graph: &Graph, inputs: &[(&str, &HostTensor)]) -> Bucket {
    let bindings = graph.bind_inputs(inputs).unwrap();
    let mut bucket = Bucket::new();
    for (_, n) in graph.inputs() {
        for d in &n.shape.0 {
            if let Dim::Sym(s) = d {
                bucket.insert(s.clone(), bindings.get(s).unwrap());
            }
        }
    }
    bucket
}

/// The cache key of `graph` with `weights` at `bucket` on inf2.
fn key(graph: &Graph, weights: &dyn WeightSource, bucket: &Bucket) -> NeffKey {
    NeffKey::new(graph, &weights_hash(graph, weights).unwrap(), "inf2", bucket)
}

/// "Compiles" a graph with its weights for the simulator into the cache (NEFF + manifest), for the
/// shapes of `inputs`.
fn compile(cache: &Path, graph: &Graph, weights: &dyn WeightSource, inputs: &[(&str, &HostTensor)]) -> Bucket {
    let bucket = sizes(graph, inputs);
    let neff = nrt_sim::pack(graph, weights, inputs).unwrap();
    key(graph, weights, &bucket).install(cache, graph.name(), &neff).unwrap();
    bucket
}

fn feed(case: &Case) -> Vec<(&str, &HostTensor)> {
    case.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect()
}

/// Every stateless case of the suite, compiled for its own shapes, against the reference; the
/// stateful case (KV caches) is refused as unsupported, by name.
#[test]
fn the_conformance_suite_passes_through_the_ffi() {
    let mut ran = 0;
    for case in cases::all() {
        let cache = tempfile::tempdir().unwrap();
        let inputs = feed(&case);
        if case.graph.nodes().iter().any(|n| matches!(n.op, Op::KvCache { .. })) {
            let b = backend("neuron:0", cache.path(), BTreeMap::new());
            let err = b.prepare(&case.graph, &case.weights, &PrepareOptions::default()).err().unwrap().to_string();
            assert!(err.contains("session state"), "{}: {err}", case.name);
            continue;
        }
        let bucket = compile(cache.path(), &case.graph, &case.weights, &inputs);
        let buckets = bucket.into_iter().map(|(k, v)| (k, vec![v])).collect();
        let b = backend("neuron:0", cache.path(), buckets);
        run_case(&b, &case, &PrepareOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        ran += 1;
    }
    assert_eq!(ran, cases::all().len() - 1);
}

/// Masked mean pooling over a linear layer: padding rows and positions must not change the result.
fn pooled_graph() -> (Graph, HostWeights) {
    let mut b = GraphBuilder::new("pooled");
    let x = b.input("x", DType::F32, Shape(vec![Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(4)])).unwrap();
    let mask = b.input("mask", DType::U32, Shape(vec![Dim::sym("batch"), Dim::sym("seq")])).unwrap();
    let w = b.weight("w", DType::F32, Shape::new([3, 4])).unwrap();
    let y = b.add("lin", Op::Linear { x, weight: w, bias: None }).unwrap();
    let p = b.add("pool", Op::MeanPool { x: y, mask }).unwrap();
    b.output("pooled", p);
    b.output("tokens", y);
    let mut weights = HostWeights::new();
    weights.insert("w", HostTensor::f32(vec![3, 4], (0..12).map(|i| (i as f32 - 6.0) / 7.0).collect()).unwrap());
    (b.build().unwrap(), weights)
}

fn pooled_inputs(batch: usize, seq: usize) -> (HostTensor, HostTensor) {
    let x = HostTensor::f32(vec![batch, seq, 4], (0..batch * seq * 4).map(|i| (i % 11) as f32 * 0.3 - 1.0).collect())
        .unwrap();
    let mask =
        HostTensor::u32(vec![batch, seq], (0..batch * seq).map(|i| (i % seq < seq - i / seq % 2) as u32).collect())
            .unwrap();
    (x, mask)
}

#[test]
fn inputs_are_padded_to_the_nearest_bucket_and_outputs_cut_back() {
    let cache = tempfile::tempdir().unwrap();
    let (graph, weights) = pooled_graph();
    for (batch, seq) in [(2, 4), (4, 8)] {
        let (x, mask) = pooled_inputs(batch, seq);
        compile(cache.path(), &graph, &weights, &[("x", &x), ("mask", &mask)]);
    }
    let buckets = BTreeMap::from([("batch".to_string(), vec![2, 4]), ("seq".to_string(), vec![4, 8])]);
    // Only (2,4) and (4,8) were compiled: the other two combinations are missing, and prepare says so.
    let b = backend("neuron:0", cache.path(), buckets);
    let err = b.prepare(&graph, &weights, &PrepareOptions::default()).err().unwrap().to_string();
    assert!(err.contains("batch=2,seq=8") && err.contains("neuronx-cc compile") && err.contains(".neff"), "{err}");
    for (batch, seq) in [(2, 8), (4, 4)] {
        let (x, mask) = pooled_inputs(batch, seq);
        compile(cache.path(), &graph, &weights, &[("x", &x), ("mask", &mask)]);
    }
    let buckets = BTreeMap::from([("batch".to_string(), vec![2, 4]), ("seq".to_string(), vec![4, 8])]);
    let b = backend("neuron:0", cache.path(), buckets);
    let exe = b.prepare(&graph, &weights, &PrepareOptions::default()).unwrap();
    for (batch, seq) in [(1, 3), (3, 5), (4, 8), (2, 2)] {
        let (x, mask) = pooled_inputs(batch, seq);
        let inputs = [("x", &x), ("mask", &mask)];
        let got = exe.run(&inputs).unwrap();
        let want = reference::evaluate(&graph, &weights, &inputs).unwrap();
        for name in ["pooled", "tokens"] {
            let (g, w) = (got.get(name).unwrap(), want.get(name).unwrap());
            assert_eq!(g.shape(), w.shape(), "{name} at {batch}×{seq}");
            let diff = g.to_f64_vec().iter().zip(w.to_f64_vec()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(diff < 1e-6, "{name} at {batch}×{seq}: {diff}");
        }
    }
    let (x, mask) = pooled_inputs(5, 2);
    let err = exe.run(&[("x", &x), ("mask", &mask)]).err().unwrap().to_string();
    assert!(err.contains("larger than every prepared bucket"), "{err}");
}

/// neuron:0-1: the program is loaded on both cores and concurrent callers are spread over them.
#[test]
fn a_core_range_serves_concurrent_callers() {
    let cache = tempfile::tempdir().unwrap();
    let (graph, weights) = pooled_graph();
    let (x, mask) = pooled_inputs(2, 4);
    let buckets = compile(cache.path(), &graph, &weights, &[("x", &x), ("mask", &mask)]);
    let b = backend("neuron:0-1", cache.path(), buckets.into_iter().map(|(k, v)| (k, vec![v])).collect());
    let exe = b.prepare(&graph, &weights, &PrepareOptions::default()).unwrap();
    let want = reference::evaluate(&graph, &weights, &[("x", &x), ("mask", &mask)]).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..100 {
                    let got = exe.run(&[("x", &x), ("mask", &mask)]).unwrap();
                    assert_eq!(got.get("pooled"), want.get("pooled"));
                }
            });
        }
    });
    // More cores than the machine has: refused with the count.
    common::use_simulator();
    let options = NeuronOptions { cache_dir: cache.path().into(), target: "inf2".into(), buckets: BTreeMap::new() };
    let err = NeuronBackend::with_options(&"neuron:1-2".parse().unwrap(), options).err().unwrap().to_string();
    assert!(err.contains("2 NeuronCore"), "{err}");
}

/// The pooled graph's weights scaled by `k`: another checkpoint of the same architecture.
fn scaled(weights: &HostWeights, k: f32) -> HostWeights {
    let w = weights.get("w").unwrap().to_host().unwrap();
    let values = w.to_f64_vec().iter().map(|&v| v as f32 * k).collect();
    let mut out = HostWeights::new();
    out.insert("w", HostTensor::f32(w.shape().to_vec(), values).unwrap());
    out
}

/// Two checkpoints of one graph: different NEFF paths, each prepare runs its own weights, and a NEFF
/// (with its manifest) placed under the other weights' key is refused, naming the weights.
#[test]
fn checkpoints_of_one_graph_get_their_own_neffs() {
    let cache = tempfile::tempdir().unwrap();
    let (graph, first) = pooled_graph();
    let second = scaled(&first, -2.0);
    let (x, mask) = pooled_inputs(2, 4);
    let inputs = [("x", &x), ("mask", &mask)];
    let bucket = sizes(&graph, &inputs);
    let (key1, key2) = (key(&graph, &first, &bucket), key(&graph, &second, &bucket));
    assert_eq!(key1.graph, key2.graph, "one architecture, one graph hash");
    assert_ne!(key1.weights, key2.weights);
    assert_ne!(key1.neff_path(cache.path()), key2.neff_path(cache.path()));
    assert_ne!(key1.manifest_path(cache.path()), key2.manifest_path(cache.path()));
    assert_eq!(key1.neff_path(cache.path()).parent(), key1.manifest_path(cache.path()).parent());
    // The hash is of the bytes: the same values again give the same key, one changed value does not.
    assert_eq!(key(&graph, &scaled(&first, 1.0), &bucket), key1);
    let buckets: BTreeMap<String, Vec<usize>> = bucket.iter().map(|(k, v)| (k.clone(), vec![*v])).collect();

    // Only the first checkpoint is compiled: the second finds no NEFF at its own path.
    compile(cache.path(), &graph, &first, &inputs);
    let b = backend("neuron:0", cache.path(), buckets.clone());
    let err = b.prepare(&graph, &second, &PrepareOptions::default()).err().unwrap().to_string();
    let want_path = key2.neff_path(cache.path()).display().to_string();
    let want_manifest = key2.manifest_path(cache.path()).display().to_string();
    assert!(err.contains("no NEFF for bucket") && err.contains(&want_path), "{err}");
    assert!(err.contains(&want_manifest) && err.contains(&key2.weights), "the message says what to write: {err}");

    // Both compiled: each prepare runs its own weights.
    compile(cache.path(), &graph, &second, &inputs);
    for weights in [&first, &second] {
        let exe = b.prepare(&graph, weights, &PrepareOptions::default()).unwrap();
        let got = exe.run(&inputs).unwrap();
        let want = reference::evaluate(&graph, weights, &inputs).unwrap();
        assert_eq!(got.get("pooled"), want.get("pooled"));
    }

    // The first checkpoint's NEFF and manifest copied under the second's key: refused, naming the weights.
    std::fs::copy(key1.neff_path(cache.path()), key2.neff_path(cache.path())).unwrap();
    std::fs::copy(key1.manifest_path(cache.path()), key2.manifest_path(cache.path())).unwrap();
    let err = b.prepare(&graph, &second, &PrepareOptions::default()).err().unwrap().to_string();
    assert!(err.contains("is refused") && err.contains("weights (manifest"), "{err}");
    assert!(err.contains(&key1.weights) && err.contains(&key2.weights) && !err.contains("graph ("), "{err}");
    assert!(err.contains(&want_path), "{err}");

    // A NEFF without its manifest is refused too, and the message gives the manifest to write.
    std::fs::remove_file(key2.manifest_path(cache.path())).unwrap();
    let err = b.prepare(&graph, &second, &PrepareOptions::default()).err().unwrap().to_string();
    assert!(err.contains("no readable manifest") && err.contains(&want_manifest), "{err}");
    assert!(err.contains(&key2.manifest_json("<graph name>")), "{err}");

    // A manifest recording another target and bucket: each differing part is named.
    let mut other = key2.clone();
    other.target = "trn1".into();
    other.bucket.insert("batch".into(), 8);
    std::fs::write(key2.manifest_path(cache.path()), other.manifest_json(graph.name())).unwrap();
    let err = b.prepare(&graph, &second, &PrepareOptions::default()).err().unwrap().to_string();
    assert!(err.contains("target (manifest trn1, expected inf2)"), "{err}");
    assert!(
        err.contains("bucket (manifest batch=8,seq=4, expected batch=2,seq=4)") && !err.contains("weights ("),
        "{err}"
    );

    // Not a manifest at all: refused, naming the file.
    std::fs::write(key2.manifest_path(cache.path()), "{\"format\": 3}").unwrap();
    let err = b.prepare(&graph, &second, &PrepareOptions::default()).err().unwrap().to_string();
    assert!(err.contains("not a valid manifest") && err.contains(&want_manifest), "{err}");

    // Rewritten with the right key, the second checkpoint runs again.
    key2.install(cache.path(), graph.name(), &nrt_sim::pack(&graph, &second, &inputs).unwrap()).unwrap();
    let exe = b.prepare(&graph, &second, &PrepareOptions::default()).unwrap();
    assert_eq!(
        exe.run(&inputs).unwrap().get("pooled"),
        reference::evaluate(&graph, &second, &inputs).unwrap().get("pooled")
    );
}

/// The weights hash covers every byte, each weight's name, dtype and shape, and reads weights as
/// prepare does (a missing or mis-shaped weight is an error, not a hash).
#[test]
fn the_weights_hash_covers_bytes_names_and_types() {
    let (graph, weights) = pooled_graph();
    let base = weights_hash(&graph, &weights).unwrap();
    assert_eq!(base.len(), 64);
    assert_eq!(weights_hash(&graph, &weights).unwrap(), base);
    let w = weights.get("w").unwrap().to_host().unwrap();
    let mut values: Vec<f32> = w.to_f64_vec().iter().map(|&v| v as f32).collect();
    values[11] = f32::from_bits(values[11].to_bits() ^ 1); // one bit of the last value
    let mut flipped = HostWeights::new();
    flipped.insert("w", HostTensor::f32(vec![3, 4], values).unwrap());
    assert_ne!(weights_hash(&graph, &flipped).unwrap(), base);
    let err = weights_hash(&graph, &HostWeights::new()).unwrap_err().to_string();
    assert!(err.contains('w'), "{err}");
    let mut reshaped = HostWeights::new();
    reshaped.insert("w", HostTensor::f32(vec![4, 3], w.to_f64_vec().iter().map(|&v| v as f32).collect()).unwrap());
    assert!(weights_hash(&graph, &reshaped).is_err());
}
