//! The PJRT backend on `xla:cpu` end to end: MiniLM against sentence-transformers, SmolLM2 greedy
//! decoding against the candle CPU backend with the same dequantised f32 weights and its logits
//! against the f64 reference evaluator, and the CLI commands with `--backend xla:cpu`.
#![cfg(feature = "pjrt")]

mod common;

use accelrt::core::reference;
use accelrt::models::gguf::GgufFile;
use accelrt::models::llama::{self, LlamaConfig};
use accelrt::models::{ChatTokenizer, SentenceEmbedder};
use accelrt::{DType, Executable, HostTensor, PrepareOptions};
use common::*;
use std::process::{Command, Output};

fn xla_embedder() -> SentenceEmbedder {
    let backend = accelrt::open_backend("xla:cpu").unwrap_or_else(|e| panic!("xla:cpu: {e}"));
    SentenceEmbedder::load(&minilm_dir(), backend.as_ref(), &PrepareOptions::default()).unwrap()
}

#[test]
fn minilm_on_xla_cpu_matches_sentence_transformers() {
    let reference = minilm_reference();
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    let model = xla_embedder();
    let got = model.embed(&texts).unwrap();
    let (mut worst_cos, mut worst_diff) = (1.0f64, 0.0f64);
    for (i, (g, want)) in got.iter().zip(&reference.embeddings).enumerate() {
        let (cos, diff) = (cosine(g, want), max_abs_diff(g, want));
        assert!(cos >= 0.99999 && diff <= 1e-4, "text {i}: cosine {cos}, max abs diff {diff}");
        worst_cos = worst_cos.min(cos);
        worst_diff = worst_diff.max(diff);
    }
    eprintln!("xla:cpu vs sentence-transformers: worst cosine {worst_cos:.9}, worst max abs diff {worst_diff:.3e}");
    // Batches padded to other buckets (batch and seq) give the same vectors.
    for batch_size in [1, 3, 8] {
        let batched = model.embed_batched(&texts, batch_size).unwrap();
        for (i, (a, b)) in got.iter().zip(&batched).enumerate() {
            let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(diff <= 1e-6, "text {i} differs by {diff} at batch size {batch_size}");
        }
    }
}

fn step_inputs(rows: &[(u32, u32, &[u32])]) -> [HostTensor; 3] {
    let n = rows[0].2.len();
    let tokens = rows.iter().flat_map(|r| r.2.iter().copied()).collect();
    let positions = rows.iter().flat_map(|r| (r.1..r.1 + n as u32).collect::<Vec<_>>()).collect();
    let slots = rows.iter().map(|r| r.0).collect();
    [
        HostTensor::u32(vec![rows.len(), n], tokens).unwrap(),
        HostTensor::u32(vec![rows.len(), n], positions).unwrap(),
        HostTensor::u32(vec![rows.len()], slots).unwrap(),
    ]
}

fn step(exe: &dyn Executable, state: &mut accelrt::core::SessionState, rows: &[(u32, u32, &[u32])]) -> Vec<Vec<f32>> {
    let [t, p, s] = step_inputs(rows);
    let inputs = [(llama::TOKENS, &t), (llama::POSITIONS, &p), (llama::SLOTS, &s)];
    let logits = exe.run_with_state(state, &inputs).unwrap().take(llama::LOGITS).unwrap();
    let vocab = logits.shape()[1];
    logits.as_f32().unwrap().chunks_exact(vocab).map(<[f32]>::to_vec).collect()
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap()
}

/// Greedy decoding of several prompts at once (one slot each, decoded as one batch: 3 rows run in
/// the batch-4 bucket, the padded row writing to the spare slot).
fn greedy_batch(exe: &dyn Executable, prompts: &[Vec<u32>], n: usize) -> Vec<Vec<u32>> {
    let mut state = exe.new_state(prompts.len()).unwrap();
    let mut next: Vec<u32> =
        prompts.iter().enumerate().map(|(slot, p)| argmax(&step(exe, &mut state, &[(slot as u32, 0, p)])[0])).collect();
    let mut out: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
    for i in 1..n {
        let toks: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let rows: Vec<(u32, u32, &[u32])> =
            prompts.iter().enumerate().map(|(s, p)| (s as u32, (p.len() + i - 1) as u32, &toks[s][..])).collect();
        next = step(exe, &mut state, &rows).iter().map(|l| argmax(l)).collect();
        for (o, &t) in out.iter_mut().zip(&next) {
            o.push(t);
        }
    }
    out
}

#[test]
fn smollm2_on_xla_cpu_decodes_like_candle_with_the_same_dequantised_weights() {
    let path = smollm2_gguf();
    let file = GgufFile::open(&path).unwrap();
    let config = LlamaConfig::from_gguf(&file).unwrap();
    let stored = |name: &str| Ok(file.tensor(name).unwrap().dtype().unwrap());
    let widened = |name: &str| {
        Ok(match file.tensor(name).unwrap().dtype().unwrap() {
            DType::Quant(_) => DType::F32,
            d => d,
        })
    };
    let quantised = llama::build_graph(&config, 64, &stored).unwrap();
    let f32_graph = llama::build_graph(&config, 64, &widened).unwrap();
    let tok = ChatTokenizer::from_gguf(&file).unwrap();
    // xla:cpu takes the quantised graph and dequantises at upload; candle gets the f32 graph and
    // the dequantised weights (its quantised kernels would quantise activations too).
    let xla = accelrt::open_backend("xla:cpu").unwrap();
    let cpu = accelrt::open_backend("cpu").unwrap();
    let exe_x = xla.prepare(&quantised, &file, &PrepareOptions::default()).unwrap();
    let exe_c = cpu.prepare(&f32_graph, &accelrt::core::quant::Dequantized(&file), &PrepareOptions::default()).unwrap();

    // Prefill logits against the f64 reference evaluator (weights dequantised exactly).
    let mut worst = 0.0f64;
    for text in ["The capital of France is", "def add(a, b):", "<|im_start|>user\nHi<|im_end|>\n"] {
        let ids = tok.encode(text).unwrap();
        let [t, p, s] = step_inputs(&[(0, 0, &ids)]);
        let inputs = [(llama::TOKENS, &t), (llama::POSITIONS, &p), (llama::SLOTS, &s)];
        let want = reference::evaluate(&quantised, &file, &inputs).unwrap().get(llama::LOGITS).unwrap().to_f64_vec();
        let got = exe_x.run(&inputs).unwrap().get(llama::LOGITS).unwrap().to_f64_vec();
        let max = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        eprintln!("xla:cpu {text:?}: max |Δlogit| vs the f64 reference {max:.2e}");
        assert!(max <= 5e-4, "{text:?}: max |Δlogit| {max} (bound 5e-4)");
        worst = worst.max(max);
    }
    eprintln!("xla:cpu worst max |Δlogit| vs the f64 reference: {worst:.2e}");

    let prompts: Vec<Vec<u32>> = ["The capital of France is", "def fibonacci(n):", "Once upon a time"]
        .iter()
        .map(|t| tok.encode(t).unwrap())
        .collect();
    let got = greedy_batch(exe_x.as_ref(), &prompts, 16);
    let want = greedy_batch(exe_c.as_ref(), &prompts, 16);
    assert_eq!(got, want, "greedy tokens on xla:cpu and on candle (same f32 weights)");
    // One sequence at a time gives the same tokens as the batch.
    for (p, w) in prompts.iter().zip(&want) {
        assert_eq!(&greedy_batch(exe_x.as_ref(), std::slice::from_ref(p), 16)[0], w);
    }
    eprintln!("greedy continuations: {:?}", got.iter().map(|ids| tok.decode(ids).unwrap()).collect::<Vec<_>>());
}

#[test]
fn cache_writes_past_the_capacity_and_bad_ids_are_refused() {
    let path = smollm2_gguf();
    let file = GgufFile::open(&path).unwrap();
    let config = LlamaConfig::from_gguf(&file).unwrap();
    let stored = |name: &str| Ok(file.tensor(name).unwrap().dtype().unwrap());
    let graph = llama::build_graph(&config, 8, &stored).unwrap();
    let exe = accelrt::open_backend("xla:cpu").unwrap().prepare(&graph, &file, &PrepareOptions::default()).unwrap();
    let mut state = exe.new_state(1).unwrap();
    let run = |state: &mut accelrt::core::SessionState, rows: &[(u32, u32, &[u32])]| {
        let [t, p, s] = step_inputs(rows);
        exe.run_with_state(state, &[(llama::TOKENS, &t), (llama::POSITIONS, &p), (llama::SLOTS, &s)])
    };
    let err = run(&mut state, &[(0, 0, &[1; 9])]).unwrap_err().to_string();
    assert!(err.contains("exceed the cache capacity of 8"), "{err}");
    let err = run(&mut state, &[(0, 2, &[1])]).unwrap_err().to_string();
    assert!(err.contains("positions would be skipped"), "{err}");
    let err = run(&mut state, &[(1, 0, &[1])]).unwrap_err().to_string();
    assert!(err.contains("outside this session's 1 slots"), "{err}");
    let err = run(&mut state, &[(0, 0, &[config.vocab_size as u32])]).unwrap_err().to_string();
    assert!(err.contains("out of range for an embedding table"), "{err}");
    // The refusals left the session usable.
    run(&mut state, &[(0, 0, &[1, 2])]).unwrap();
    run(&mut state, &[(0, 2, &[3])]).unwrap();
}

fn accelrt(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_accelrt"))
        .args(args)
        .env("ACCELRT_CACHE", cache_root())
        .env_remove("ACCELRT_INSTANCE_TYPE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn cli_embed_on_xla_cpu_matches_the_cpu_backend() {
    minilm_dir();
    let input = "hello world\nsecond text here\n\n";
    let run = |backend: &str| {
        let o = accelrt(&["embed", "--model", "all-minilm-l6-v2", "--backend", backend], Some(input));
        assert!(o.status.success(), "{backend}: {}", text(&o.stderr));
        text(&o.stdout).lines().map(|l| serde_json::from_str::<Vec<f32>>(l).unwrap()).collect::<Vec<_>>()
    };
    let (x, c) = (run("xla:cpu"), run("cpu"));
    assert_eq!(x.len(), 3);
    for (a, b) in x.iter().zip(&c) {
        let diff = a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-5, "xla:cpu and cpu differ by {diff}");
    }
}

#[test]
fn cli_generate_and_conformance_run_on_xla_cpu() {
    smollm2_gguf();
    let prompt = "The capital of France is";
    let o = accelrt(
        &["generate", "--backend", "xla:cpu", "--prompt", prompt, "--max-tokens", "8", "--greedy", "--context", "64"],
        None,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with(" Paris"), "{:?}", text(&o.stdout));
    assert!(text(&o.stderr).contains("8 generated"), "{}", text(&o.stderr));

    let o = accelrt(&["conformance", "--backend", "xla:cpu"], None);
    assert!(o.status.success(), "{}\n{}", text(&o.stdout), text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("conformance on xla:cpu") && !out.contains("FAIL"), "{out}");
}

#[test]
fn cli_compile_writes_a_module_and_manifest_per_bucket_for_xla_and_hlo_for_neuron() {
    minilm_dir();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let o = accelrt(
        &[
            "compile",
            "--model",
            "all-minilm-l6-v2",
            "--target",
            "xla",
            "--bucket",
            "batch=2,seq=16",
            "--bucket",
            "batch=1,seq=32",
            "--out",
            out,
        ],
        None,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    for bucket in ["batch=2,seq=16", "batch=1,seq=32"] {
        let mlir = std::fs::read_to_string(dir.path().join(format!("{bucket}.mlir"))).unwrap();
        assert!(mlir.contains("func.func public @main"), "{bucket}");
        let manifest = accelrt::stablehlo::Manifest::from_json(
            &std::fs::read_to_string(dir.path().join(format!("{bucket}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(manifest.bucket.to_string(), bucket);
    }
    // The Neuron targets write the HLO and, with no neuronx-cc here, the script to run where it is
    // (tests/neuron_cli.rs runs the whole route with the compiler double).
    for target in ["inf2", "trn1", "trn2"] {
        let neuron_out = dir.path().join(target);
        let o = accelrt(
            &[
                "compile",
                "--model",
                "all-minilm-l6-v2",
                "--target",
                target,
                "--bucket",
                "batch=1,seq=8",
                "--out",
                neuron_out.to_str().unwrap(),
            ],
            None,
        );
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(neuron_out.join("batch=1,seq=8.hlo.pb").is_file() && neuron_out.join("compile.sh").is_file());
    }
    let o = accelrt(
        &["compile", "--model", "smollm2-135m-instruct", "--target", "xla", "--bucket", "batch=1,seq=4", "--out", out],
        None,
    );
    assert!(!o.status.success() && text(&o.stderr).contains("slots=N"), "{}", text(&o.stderr));
}

#[test]
fn devices_lists_xla_cpu_and_bad_pjrt_paths_say_why() {
    accelrt::open_backend("xla:cpu").unwrap(); // fetched, so `devices` probes it
    let o = accelrt(&["devices"], None);
    assert!(o.status.success());
    let out = text(&o.stdout);
    assert!(out.lines().any(|l| l.starts_with("xla:cpu") && l.contains("available")), "{out}");
    let err = accelrt::open_backend("pjrt:/nonexistent/plugin.so").err().unwrap().to_string();
    assert!(err.contains("no PJRT plugin library at /nonexistent/plugin.so"), "{err}");
    let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if let Some(libm) = libm {
        let err = accelrt::open_backend(&format!("pjrt:{libm}")).err().unwrap().to_string();
        assert!(err.contains("GetPjrtApi"), "{err}");
    }
    let plugin = accelrt::pjrt::pjrt::locate_xla_cpu(&accelrt::pjrt::pjrt::PluginStore::from_env()).unwrap();
    let err = accelrt::open_backend(&format!("pjrt:{}:99", plugin.display())).err().unwrap().to_string();
    assert!(err.contains("has 4 device(s)") || err.contains("device(s)"), "{err}");
    // Another device of the plugin runs the suite's programs too.
    let backend = accelrt::open_backend(&format!("pjrt:{}:2", plugin.display())).unwrap();
    accelrt_conformance::assert_case(
        backend.as_ref(),
        &accelrt_conformance::cases::kv_cache_session(),
        &PrepareOptions::default(),
    );
    accelrt_conformance::assert_case(
        backend.as_ref(),
        &accelrt_conformance::cases::encoder_block(),
        &PrepareOptions::default(),
    );
}
