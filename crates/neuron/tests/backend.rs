//! The Neuron backend through the real FFI path against the simulator (a TEST DOUBLE of libnrt
//! that runs the exported HLO on XLA CPU): the conformance suite, buckets with padding, sessions
//! with KV caches on the "device" and prompts run in chunks, the compile cache's checks, and
//! several cores.

mod common;

use accelrt_conformance::{cases, run_case, Case};
use accelrt_core::{
    reference, Backend, DType, DeviceSpec, Dim, Graph, GraphBuilder, HostTensor, HostWeights, Op, PrepareOptions, Shape,
};
use accelrt_neuron::{CompilerVersion, NeffManifest, NeuronBackend, NeuronOptions};
use common::{compile_bucket, compile_with, decoder_step, last_position_decoder};
use std::collections::BTreeSet;
use std::path::Path;

fn options(cache: &Path) -> NeuronOptions {
    NeuronOptions { cache_dir: cache.to_path_buf(), target: "inf2".into(), flags: None }
}

fn backend_with(device: &str, options: NeuronOptions) -> NeuronBackend {
    common::use_simulator();
    NeuronBackend::with_options(&device.parse::<DeviceSpec>().unwrap(), options).unwrap()
}

fn backend(device: &str, cache: &Path) -> NeuronBackend {
    backend_with(device, options(cache))
}

/// The exact bucket of every step of a case (with the spare cache slot for sessions).
fn case_buckets(case: &Case) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for step in std::iter::once(&case.inputs).chain(&case.later_steps) {
        let feed: Vec<(&str, &HostTensor)> = step.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let bindings = case.graph.bind_inputs(&feed).unwrap();
        let mut bucket = accelrt_stablehlo::Bucket::from_bindings(&bindings);
        if case.slots > 0 {
            // A cache's length is its capacity in the exported program.
            bucket.dims.retain(|s, _| s != accelrt_core::KV_LEN);
        }
        if case.slots > 0 {
            bucket = bucket.with_slots(case.slots + 1);
        }
        out.insert(bucket.to_string());
    }
    out
}

/// Every case of the suite, compiled at its steps' shapes, against the reference evaluator —
/// the session case with its caches held on the device between steps.
#[test]
fn the_conformance_suite_passes_through_the_ffi() {
    let cache = tempfile::tempdir().unwrap();
    let b = backend("neuron:0", cache.path());
    let mut ran = 0;
    for case in cases::all() {
        for bucket in case_buckets(&case) {
            compile_bucket(cache.path(), &case.graph, &bucket, &[]);
        }
        run_case(&b, &case, &PrepareOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        ran += 1;
    }
    assert_eq!(ran, cases::all().len());
}

/// A session state runs only with the executable that made it (another executable of the same
/// graph is refused before the state records anything), with caches and without.
#[test]
fn a_session_state_runs_only_with_the_executable_that_made_it() {
    let cache = tempfile::tempdir().unwrap();
    for case in accelrt_conformance::session_owner_cases() {
        let first = Case { later_steps: vec![], ..case };
        for bucket in case_buckets(&first) {
            compile_bucket(cache.path(), &first.graph, &bucket, &[]);
        }
    }
    let b = backend("neuron:0", cache.path());
    accelrt_conformance::check_session_owner(&b, &PrepareOptions::default()).unwrap();
}

/// A step whose second cache's write is refused after the first's was accepted leaves the
/// session as it was (the shared check; the refused steps have the sizes of the valid ones).
#[test]
fn a_refused_step_leaves_the_session_as_it_was() {
    let cache = tempfile::tempdir().unwrap();
    for case in accelrt_conformance::refused_step_cases() {
        for bucket in case_buckets(&case) {
            compile_bucket(cache.path(), &case.graph, &bucket, &[]);
        }
    }
    let b = backend("neuron:0", cache.path());
    accelrt_conformance::check_refused_steps(&b, &PrepareOptions::default()).unwrap();
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
    (b.build().unwrap(), scaled(1.0))
}

/// The pooled graph's weights scaled by `k`: another checkpoint of the same architecture.
fn scaled(k: f32) -> HostWeights {
    let mut weights = HostWeights::new();
    weights.insert("w", HostTensor::f32(vec![3, 4], (0..12).map(|i| k * (i as f32 - 6.0) / 7.0).collect()).unwrap());
    weights
}

fn pooled_inputs(batch: usize, seq: usize) -> (HostTensor, HostTensor) {
    let x = HostTensor::f32(vec![batch, seq, 4], (0..batch * seq * 4).map(|i| (i % 11) as f32 * 0.3 - 1.0).collect())
        .unwrap();
    let mask =
        HostTensor::u32(vec![batch, seq], (0..batch * seq).map(|i| (i % seq < seq - i / seq % 2) as u32).collect())
            .unwrap();
    (x, mask)
}

fn assert_matches_reference(
    exe: &dyn accelrt_core::Executable,
    graph: &Graph,
    weights: &HostWeights,
    batch: usize,
    seq: usize,
) {
    let (x, mask) = pooled_inputs(batch, seq);
    let inputs = [("x", &x), ("mask", &mask)];
    let got = exe.run(&inputs).unwrap();
    let want = reference::evaluate(graph, weights, &inputs).unwrap();
    for name in ["pooled", "tokens"] {
        let (g, w) = (got.get(name).unwrap(), want.get(name).unwrap());
        assert_eq!(g.shape(), w.shape(), "{name} at {batch}×{seq}");
        let diff = g.to_f64_vec().iter().zip(w.to_f64_vec()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-5, "{name} at {batch}×{seq}: {diff}");
    }
}

#[test]
fn inputs_are_padded_to_the_nearest_bucket_and_outputs_cut_back() {
    let cache = tempfile::tempdir().unwrap();
    let (graph, weights) = pooled_graph();
    let b = backend("neuron:0", cache.path());
    // Nothing compiled: the error names the cache directory and the command that fills it.
    let err = b.prepare(&graph, &weights, &PrepareOptions::default()).err().unwrap().to_string();
    assert!(
        err.contains("no NEFF for graph `pooled`")
            && err.contains("accelrt compile --model MODEL --target inf2 --bucket batch=N,seq=N"),
        "{err}"
    );
    assert!(err.contains(&cache.path().display().to_string()), "{err}");
    for bucket in ["batch=2,seq=4", "batch=4,seq=8"] {
        compile_bucket(cache.path(), &graph, bucket, &[]);
    }
    let exe = b.prepare(&graph, &weights, &PrepareOptions::default()).unwrap();
    for (batch, seq) in [(1, 3), (3, 5), (4, 8), (2, 2), (2, 4)] {
        assert_matches_reference(exe.as_ref(), &graph, &weights, batch, seq);
    }
    let (x, mask) = pooled_inputs(5, 2);
    let err = exe.run(&[("x", &x), ("mask", &mask)]).err().unwrap().to_string();
    assert!(err.contains("without a compiled bucket that holds it") && err.contains("batch=4,seq=8"), "{err}");
}

/// Weights are program inputs: one NEFF serves every checkpoint of an architecture, each running
/// its own weights.
#[test]
fn one_neff_serves_every_checkpoint_with_its_own_weights() {
    let cache = tempfile::tempdir().unwrap();
    let (graph, first) = pooled_graph();
    compile_bucket(cache.path(), &graph, "batch=2,seq=4", &[]);
    let second = scaled(-2.5);
    let b = backend("neuron:0", cache.path());
    let exe1 = b.prepare(&graph, &first, &PrepareOptions::default()).unwrap();
    let exe2 = b.prepare(&graph, &second, &PrepareOptions::default()).unwrap();
    assert_matches_reference(exe1.as_ref(), &graph, &first, 2, 4);
    assert_matches_reference(exe2.as_ref(), &graph, &second, 2, 4);
    let (x, mask) = pooled_inputs(2, 4);
    let a = exe1.run(&[("x", &x), ("mask", &mask)]).unwrap();
    let c = exe2.run(&[("x", &x), ("mask", &mask)]).unwrap();
    assert_ne!(a.get("pooled"), c.get("pooled"), "two checkpoints gave the same output");
}

fn neff_dir(cache: &Path, graph: &Graph) -> std::path::PathBuf {
    accelrt_neuron::NeffKey::dir_for(cache, &graph.content_hash(), "inf2")
}

fn manifest_of(neff: &Path) -> (std::path::PathBuf, NeffManifest) {
    let path = neff.with_extension("json");
    let m: NeffManifest = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (path, m)
}

/// What the cache refuses, and how it says so: another compiler major version than the
/// runtime's, a NEFF whose bytes differ from its manifest's record, a NEFF compiled from another
/// export, a malformed manifest, and two flag sets for one bucket without a choice.
#[test]
fn the_cache_refuses_foreign_altered_and_ambiguous_neffs() {
    let (graph, weights) = pooled_graph();
    let prepare_err =
        |b: &NeuronBackend| b.prepare(&graph, &weights, &PrepareOptions::default()).err().unwrap().to_string();

    // A NEFF from neuronx-cc 3.x: the simulated runtime is 2.x.
    let cache = tempfile::tempdir().unwrap();
    let v3 = CompilerVersion::find("3.0.1.0").unwrap();
    compile_with(cache.path(), &graph, "batch=2,seq=4", &[], &v3);
    let err = prepare_err(&backend("neuron:0", cache.path()));
    assert!(
        err.contains("compiled by neuronx-cc 3.0.1.0 (major version 3)") && err.contains("major version 2"),
        "{err}"
    );
    // Beside a 2.x NEFF of the same bucket, the 2.x one is used.
    compile_bucket(cache.path(), &graph, "batch=2,seq=4", &[]);
    let exe = backend("neuron:0", cache.path()).prepare(&graph, &weights, &PrepareOptions::default()).unwrap();
    assert_matches_reference(exe.as_ref(), &graph, &weights, 2, 4);
    // Junk beside them: a FIFO (reading it would block forever) and a link to /dev/zero (reading
    // it would never end) are passed over, not read.
    let dir = neff_dir(cache.path(), &graph);
    assert!(std::process::Command::new("mkfifo").arg(dir.join("fifo.json")).status().unwrap().success());
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.json")).unwrap();
    let exe = backend("neuron:0", cache.path()).prepare(&graph, &weights, &PrepareOptions::default()).unwrap();
    assert_matches_reference(exe.as_ref(), &graph, &weights, 2, 4);

    // Altered bytes.
    let cache = tempfile::tempdir().unwrap();
    let neff = compile_bucket(cache.path(), &graph, "batch=2,seq=4", &[]);
    let mut bytes = std::fs::read(&neff).unwrap();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&neff, &bytes).unwrap();
    let err = prepare_err(&backend("neuron:0", cache.path()));
    assert!(err.contains("has SHA-256") && err.contains("a truncated or altered copy"), "{err}");

    // Compiled from another export (the manifest records another module).
    let cache = tempfile::tempdir().unwrap();
    let neff = compile_bucket(cache.path(), &graph, "batch=2,seq=4", &[]);
    let (path, mut m) = manifest_of(&neff);
    m.key.mlir_sha256 = "0".repeat(64);
    std::fs::write(&path, m.to_json()).unwrap();
    let err = prepare_err(&backend("neuron:0", cache.path()));
    assert!(err.contains("was compiled from another export of this graph"), "{err}");

    // A malformed manifest is listed with its reason.
    std::fs::write(&path, "{not json").unwrap();
    let err = prepare_err(&backend("neuron:0", cache.path()));
    assert!(err.contains("not a NEFF manifest"), "{err}");

    // Two flag sets for one bucket: ambiguous until chosen.
    let cache = tempfile::tempdir().unwrap();
    let o1 = vec!["--optlevel".to_string(), "1".to_string()];
    compile_bucket(cache.path(), &graph, "batch=2,seq=4", &[]);
    compile_bucket(cache.path(), &graph, "batch=2,seq=4", &o1);
    let err = prepare_err(&backend("neuron:0", cache.path()));
    assert!(err.contains("NEFFs compiled with different flags") && err.contains("ACCELRT_NEURON_FLAGS"), "{err}");
    let chosen = backend_with("neuron:0", NeuronOptions { flags: Some(o1), ..options(cache.path()) });
    let exe = chosen.prepare(&graph, &weights, &PrepareOptions::default()).unwrap();
    assert_matches_reference(exe.as_ref(), &graph, &weights, 2, 4);
    // Another target's NEFFs are not this target's.
    let trn1 = backend_with("neuron:0", NeuronOptions { target: "trn1".into(), ..options(cache.path()) });
    assert!(prepare_err(&trn1).contains("for target trn1"));
}

/// neuron:0-1: the programs are loaded on both cores and concurrent callers are spread over them.
#[test]
fn a_core_range_serves_concurrent_callers() {
    let cache = tempfile::tempdir().unwrap();
    let (graph, weights) = pooled_graph();
    compile_bucket(cache.path(), &graph, "batch=2,seq=4", &[]);
    let exe = backend("neuron:0-1", cache.path()).prepare(&graph, &weights, &PrepareOptions::default()).unwrap();
    let (x, mask) = pooled_inputs(2, 4);
    let want = exe.run(&[("x", &x), ("mask", &mask)]).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..50 {
                    let got = exe.run(&[("x", &x), ("mask", &mask)]).unwrap();
                    assert_eq!(got.get("pooled"), want.get("pooled"));
                }
            });
        }
    });
    // More cores than the machine has: refused with the count.
    common::use_simulator();
    let err =
        NeuronBackend::with_options(&"neuron:1-2".parse().unwrap(), options(cache.path())).err().unwrap().to_string();
    assert!(err.contains("2 NeuronCore"), "{err}");
}

/// A decoder-like session graph whose output is the last position's (as an LM's logits are):
/// steps longer than any compiled `seq` run as consecutive chunks of compiled sizes, and equal the
/// reference run in one piece.
#[test]
fn long_steps_of_a_session_run_as_chunks_of_compiled_sizes() {
    let (graph, weights) = last_position_decoder();
    assert_eq!(accelrt_core::padding::chunkable_symbol(&graph).as_deref(), Some("seq"));
    let cache = tempfile::tempdir().unwrap();
    for bucket in ["batch=1,seq=1,slots=3", "batch=1,seq=2,slots=3", "batch=1,seq=4,slots=3", "batch=2,seq=1,slots=3"] {
        compile_bucket(cache.path(), &graph, bucket, &[]);
    }
    let exe = backend("neuron:0", cache.path()).prepare(&graph, &weights, &PrepareOptions::default()).unwrap();
    let mut state = exe.new_state(2).unwrap();
    let mut oracle = reference::new_state(2);
    // (slot, first position, tokens): prompts of 7 (4+2+1) and 3 (2+1) tokens, then a batched step.
    let steps: [&[(u32, u32, usize)]; 3] = [&[(0, 0, 7)], &[(1, 0, 3)], &[(0, 7, 1), (1, 3, 1)]];
    for (i, rows) in steps.iter().enumerate() {
        let inputs = decoder_step(rows, i);
        let feed: Vec<(&str, &HostTensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let got = exe.run_with_state(&mut state, &feed).unwrap();
        let want = reference::evaluate_with_state(&graph, &weights, &feed, &mut oracle).unwrap();
        let (g, w) = (got.get("last").unwrap(), want.get("last").unwrap());
        assert_eq!(g.shape(), w.shape());
        let diff = g.to_f64_vec().iter().zip(w.to_f64_vec()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-4, "step {i}: {diff}");
    }
    // A session of another slot count has no program.
    let err = exe.new_state(3).err().unwrap().to_string();
    assert!(err.contains("a session of 3 sequence(s)") && err.contains("slots=3"), "{err}");
}
