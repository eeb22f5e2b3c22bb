//! `accelrt bench --scenario training` as a user runs it: real training steps of MiniLM (MNRL on
//! the Shakespeare pairs) and SmolLM2 (cross-entropy on corpus windows) on the CPU, beside a
//! stand-in training peer (a small Python script speaking the training-runner protocol, so the
//! test needs no PyTorch), with results checked against what the steps must have been.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn accelrt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_accelrt"))
        .args(args)
        .env("ACCELRT_CACHE", common::cache_root())
        .env_remove("ACCELRT_INSTANCE_TYPE")
        .output()
        .unwrap()
}

fn results_in(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files.iter().map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()).collect()
}

/// A training runner that trains nothing: it answers each batch with numbers computed from the
/// batch (tokens = characters of the texts, or ids of the windows; loss = rows), so the test knows
/// exactly what the harness must record for the peer.
const STAND_IN: &str = r#"
import json, sys
args = sys.argv[1:]
assert args[args.index("--lr") + 1] == "0.0001", args
assert args[args.index("--weight-decay") + 1] == "0.01", args
assert args[args.index("--dropout") + 1] == "0", args
print(json.dumps({"ready": True, "system": "standin", "versions": {"standin": "1"}, "dtype": "f32",
                  "device": "cpu", "task": "any", "parameters": 1}), flush=True)
for line in sys.stdin:
    batch = json.loads(line)["train"]
    if "windows" in batch:
        rows = batch["windows"]
        tokens = sum(len(r) for r in rows)
    else:
        rows = batch["pairs"]
        tokens = sum(len(p["anchor"]) + len(p["positive"]) for p in rows)
    print(json.dumps({"n": len(rows), "loss": float(len(rows)), "tokens": tokens, "step_ms": 1.0,
                      "peak_memory_bytes": 123456789}), flush=True)
"#;

fn peers_dir(dir: &Path) -> String {
    let peers = dir.join("peers");
    std::fs::create_dir_all(&peers).unwrap();
    std::fs::write(peers.join("standin_train_runner.py"), STAND_IN).unwrap();
    peers.to_str().unwrap().to_string()
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn minilm_training_steps_match_pytorch_first_losses_and_are_priced_per_training_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let peers = peers_dir(dir.path());
    // The reference fixture's settings: batches of 8 Shakespeare pairs in file order, AdamW lr 1e-4,
    // weight decay 0.01, dropout 0. One warm-up step, then two measured steps.
    let o = accelrt(&[
        "bench",
        "--scenario",
        "training",
        "--model",
        "all-minilm-l6-v2",
        "--data",
        "shakespeare",
        "--batch-size",
        "8",
        "--lr",
        "1e-4",
        "--weight-decay",
        "0.01",
        "--warmup",
        "0",
        "--min-duration",
        "0",
        "--min-queries",
        "2",
        "--peers",
        "standin",
        "--peers-dir",
        &peers,
        "--price-per-hour",
        "3.6",
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("training (mnrl"), "{stdout}");
    assert!(stdout.contains("accelrt / standin:"), "{stdout}");
    assert!(stdout.contains("per 1M training tokens"), "{stdout}");

    let results = results_in(&out);
    assert_eq!(results.len(), 2, "accelrt and the peer");
    let ours = results.iter().find(|r| r["system"] == "accelrt").unwrap();
    let theirs = results.iter().find(|r| r["system"] == "standin").unwrap();
    assert_eq!(ours["valid"], true, "{ours}");
    // The stand-in's "loss" (8, the rows) is not accelrt's first loss: not the same step, so its
    // result is kept but marked invalid.
    assert_eq!(theirs["valid"], false);
    assert!(theirs["invalid_reasons"][0].as_str().unwrap().contains("not the same step"), "{theirs}");
    for r in [ours, theirs] {
        assert_eq!(r["scenario"], "training");
        assert_eq!(r["queries"], 2);
        assert_eq!(r["samples"], 16);
        assert!(r["usd_per_million_inferences"].is_null(), "training samples are not inferences");
        let t = &r["training"];
        assert_eq!(t["task"], "mnrl");
        assert_eq!(t["data"], "pairs-train.jsonl");
        assert_eq!(t["warmup_steps"], 1);
        assert_eq!(t["losses"].as_array().unwrap().len(), 3);
        // $3.60/h = $0.001/s spread over the tokens trained per second.
        let cost = f(&t["usd_per_million_tokens"]);
        assert!((cost - 1e3 / f(&t["tokens_per_s"])).abs() <= 1e-9 * cost, "{t}");
        assert!((f(&t["tokens_per_s"]) - f(&t["tokens"]) / f(&r["duration_s"])).abs() < 1e-6 * f(&t["tokens_per_s"]));
        assert!((f(&r["throughput_per_s"]) - 16.0 / f(&r["duration_s"])).abs() < 1e-6 * f(&r["throughput_per_s"]));
    }
    // accelrt's steps are the real ones: PyTorch's losses on these batches (the fixture of
    // crates/train/tests/training_step.rs, sentence-transformers in f32) within 1e-5 relative.
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/train/tests/fixtures/minilm-mnrl-reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let want = fixture["results"]["float32"]["losses"].as_array().unwrap();
    let got = ours["training"]["losses"].as_array().unwrap();
    for (step, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((f(g) - f(w)).abs() <= 1e-5 * f(w), "step {} loss {g} vs PyTorch {w}", step + 1);
    }
    // The measured steps' tokens are the fixture's non-padding tokens of batches 2 and 3.
    let counts = &fixture["token_counts"];
    let tokens: u64 = (1..3)
        .flat_map(|b| ["anchor_tokens", "positive_tokens"].map(|side| counts[b][side].as_array().unwrap().clone()))
        .flatten()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(ours["training"]["tokens"], tokens);
    // The peer got the same batches: its stand-in counts their characters, batch 2 and 3 of the file.
    let pairs: Vec<serde_json::Value> =
        fixture["pairs"].as_array().unwrap()[1..3].iter().flat_map(|b| b.as_array().unwrap().clone()).collect();
    let chars: usize = pairs
        .iter()
        .map(|p| p["anchor"].as_str().unwrap().chars().count() + p["positive"].as_str().unwrap().chars().count())
        .sum();
    assert_eq!(theirs["training"]["tokens"], chars as u64);
    assert_eq!(theirs["training"]["losses"], serde_json::json!([8.0, 8.0, 8.0]));
    assert_eq!(theirs["memory"]["peak_host_bytes"], 123456789, "the peer's own peak, not the harness's");

    // `accelrt report` lists the training rows with their cost per training token, and refuses a
    // result whose cost does not follow from its price and throughput.
    let edited = dir.path().join("edited");
    std::fs::create_dir_all(&edited).unwrap();
    let mut doctored = ours.clone();
    doctored["training"]["usd_per_million_tokens"] = serde_json::json!(1e-6);
    std::fs::write(edited.join("r.json"), doctored.to_string()).unwrap();
    let o = accelrt(&["report", edited.to_str().unwrap(), "--out", dir.path().join("r2").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("usd_per_million_tokens"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report_dir = dir.path().join("report");
    let o = accelrt(&["report", out.to_str().unwrap(), "--out", report_dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(md.contains("$/1M training tokens"), "{md}");
    assert!(md.contains("mnrl"), "{md}");
    let charts: Vec<String> =
        report_dir.read_dir().unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(charts.iter().any(|c| c.ends_with("training-tokens-per-s.svg")), "{charts:?}");
    assert!(charts.iter().any(|c| c.ends_with("training-cost.svg")), "{charts:?}");
    assert!(
        !charts.iter().any(|c| c.ends_with("-throughput.svg")),
        "no inference chart from training rows: {charts:?}"
    );
}

#[test]
fn smollm2_training_steps_on_corpus_windows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let peers = peers_dir(dir.path());
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, "To be, or not to be, that is the question: ".repeat(40)).unwrap();
    let o = accelrt(&[
        "bench",
        "--scenario",
        "training",
        "--model",
        "smollm2-135m-instruct",
        "--data",
        corpus.to_str().unwrap(),
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--lr",
        "1e-4",
        "--warmup",
        "0",
        "--min-duration",
        "0",
        "--min-queries",
        "2",
        "--peers",
        "standin",
        "--peers-dir",
        &peers,
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results = results_in(&out);
    assert_eq!(results.len(), 2);
    for r in &results {
        let t = &r["training"];
        assert_eq!(t["task"], "causal-lm");
        assert_eq!(t["seq_len"], 16);
        // Every window is full: 2 steps × 2 windows × 16 tokens.
        assert_eq!(t["tokens"], 64, "{r}");
        assert!(t["usd_per_million_tokens"].is_null(), "no price, no cost");
    }
    let ours = results.iter().find(|r| r["system"] == "accelrt").unwrap();
    let losses: Vec<f64> = ours["training"]["losses"].as_array().unwrap().iter().map(f).collect();
    assert_eq!(losses.len(), 3);
    // The same short phrase over and over: three AdamW steps at 1e-4 lower the loss.
    assert!(losses[2] < losses[0], "{losses:?}");
}

#[test]
fn training_refusals_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let cases: &[(&[&str], &str)] = &[
        (&["--scenario", "training,offline"], "runs on its own"),
        (&["--scenario", "training", "--peers", "onnxruntime"], "training peers: pytorch"),
        (&["--scenario", "training", "--dtype", "f16"], "not f16"),
        (&["--scenario", "training", "--dtype", "bf16", "--peer-dtype", "f32"], "--peer-dtype f32 with --dtype bf16"),
        (&["--scenario", "training", "--lr", "20"], "--lr"),
        (&["--scenario", "training", "--data", "no-such-data"], "no-such-data"),
        (&["--scenario", "training", "--url", "http://127.0.0.1:9"], "does not train"),
        (&["--scenario", "training", "--seq-len", "64"], "--seq-len is for decoders"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["bench", "--out", out.to_str().unwrap(), "--no-progress"];
        all.extend_from_slice(args);
        let o = accelrt(&all);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// Runners that misbehave: each run must end (no hang), keep accelrt's own result intact, and name
/// the peer's fault.
#[test]
fn misbehaving_training_peers_end_as_peer_failures() {
    let dir = tempfile::tempdir().unwrap();
    let peers = dir.path().join("peers");
    std::fs::create_dir_all(&peers).unwrap();
    let ready = |system: &str| {
        format!(
            "import json, sys\nprint(json.dumps({{'ready': True, 'system': '{system}', 'task': 'mnrl'}}), flush=True)\n"
        )
    };
    let reply = "print(json.dumps({'n': len(json.loads(l)['train']['pairs']), 'loss': 1.0, 'tokens': 10, 'step_ms': STEP}), flush=True)";
    let cases = [
        // Calls itself accelrt: its result would have replaced accelrt's file.
        ("impostor", format!("{}for l in sys.stdin:\n    {}\n", ready("accelrt"), reply.replace("STEP", "1"))),
        // A step time no Duration holds (this panicked).
        ("eternal", format!("{}for l in sys.stdin:\n    {}\n", ready("eternal"), reply.replace("STEP", "1e300"))),
        // A reply line of 3 MiB, then the runner blocks writing more (this hung).
        (
            "flood",
            format!(
                "{}for l in sys.stdin:\n    sys.stdout.write('x' * (3 << 20)); sys.stdout.flush()\n",
                ready("flood")
            ),
        ),
        // Ignores the end of its input (this hung after the results were written).
        (
            "stubborn",
            format!(
                "{}import time\nfor l in sys.stdin:\n    {}\nwhile True:\n    time.sleep(1)\n",
                ready("stubborn"),
                reply.replace("STEP", "1")
            ),
        ),
    ];
    for (name, body) in &cases {
        std::fs::write(peers.join(format!("{name}_train_runner.py")), body).unwrap();
    }
    for (name, needle) in
        [("impostor", "same name"), ("eternal", "step time"), ("flood", "longer than"), ("stubborn", "")]
    {
        let out = dir.path().join(format!("results-{name}"));
        let start = std::time::Instant::now();
        let o = accelrt(&[
            "bench",
            "--scenario",
            "training",
            "--batch-size",
            "2",
            "--warmup",
            "0",
            "--min-duration",
            "0",
            "--min-queries",
            "1",
            "--peers",
            name,
            "--peers-dir",
            peers.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(start.elapsed() < std::time::Duration::from_secs(240), "{name}: took {:?}", start.elapsed());
        let results = results_in(&out);
        let ours: Vec<_> = results.iter().filter(|r| r["system"] == "accelrt").collect();
        assert_eq!(ours.len(), 1, "{name}: accelrt's result kept once");
        assert_eq!(ours[0]["environment"]["device"], "cpu");
        assert!(ours[0]["training"]["losses"][0].as_f64().unwrap() > 0.0);
        if name == "stubborn" {
            // Its steps were fine; it is killed after the grace period once its input is closed.
            assert!(o.status.success(), "{name}: {stderr}");
            assert_eq!(results.len(), 2);
        } else {
            assert!(!o.status.success(), "{name} succeeded");
            assert!(stderr.contains(needle), "{name}: {stderr}");
            assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        }
    }
}

/// `--dtype bf16` trains in bf16 mixed precision on accelrt's side (recorded in its result) and
/// asks the peer for the same (`--dtype bf16`, which the stand-in checks); accelrt's first loss is
/// PyTorch f32's on that batch within bf16's 2 %.
#[test]
fn training_in_bf16_is_mixed_precision_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let peers = dir.path().join("peers");
    std::fs::create_dir_all(&peers).unwrap();
    let checks_dtype = STAND_IN.replacen(
        "import json, sys\n",
        "import json, sys\nassert sys.argv[sys.argv.index('--dtype') + 1] == 'bf16', sys.argv\n",
        1,
    );
    assert_ne!(checks_dtype, STAND_IN);
    std::fs::write(peers.join("standin_train_runner.py"), checks_dtype).unwrap();
    let o = accelrt(&[
        "bench",
        "--scenario",
        "training",
        "--dtype",
        "bf16",
        "--data",
        "shakespeare",
        "--batch-size",
        "8",
        "--lr",
        "1e-4",
        "--weight-decay",
        "0.01",
        "--warmup",
        "0",
        "--min-duration",
        "0",
        "--min-queries",
        "1",
        "--peers",
        "standin",
        "--peers-dir",
        peers.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results = results_in(&out);
    let ours = results.iter().find(|r| r["system"] == "accelrt").unwrap();
    // Both sides' results say the precision; so do the summary and the report's labels.
    for r in &results {
        assert_eq!(r["training"]["precision"], "bf16-mixed", "{r}");
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("bf16-mixed precision"), "{stdout}");
    let report_dir = dir.path().join("report");
    let report = accelrt(&["report", out.to_str().unwrap(), "--out", report_dir.to_str().unwrap()]);
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(md.contains("AdamW lr 1e-4, bf16-mixed"), "{md}");
    // The stand-in ran (its assertion on --dtype held) and produced a result.
    assert!(results.iter().any(|r| r["system"] == "standin"), "{results:?}");
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/train/tests/fixtures/minilm-mnrl-reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let want = f(&fixture["results"]["float32"]["losses"][0]);
    let first = f(&ours["training"]["losses"][0]);
    assert!((first - want).abs() <= 0.02 * want && first != want, "{first} vs PyTorch f32 {want}");
}
