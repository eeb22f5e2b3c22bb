//! `accelrt generate` and the generation benchmark as a user runs them, with SmolLM2 on the CPU.

mod common;

use std::process::{Command, Output};

fn accelrt(args: &[&str]) -> Output {
    common::smollm2_gguf(); // fetched (and verified) into the cache before the binary uses it
    Command::new(env!("CARGO_BIN_EXE_accelrt"))
        .args(args)
        .env("ACCELRT_CACHE", common::cache_root())
        .env_remove("ACCELRT_INSTANCE_TYPE")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn greedy_generation_streams_the_expected_continuation() {
    let o = accelrt(&["generate", "--prompt", "The capital of France is", "--max-tokens", "8", "--greedy"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with(" Paris."), "{text:?}");
    let err = stderr(&o);
    assert!(err.contains("5 prompt tokens, 8 generated") && err.contains("tokens/s"), "{err}");
    // Same command, same output.
    let again = accelrt(&["generate", "--prompt", "The capital of France is", "--max-tokens", "8", "--greedy"]);
    assert_eq!(again.stdout, o.stdout);
}

#[test]
fn chat_mode_uses_the_template_and_stops_at_the_end_of_turn() {
    let o = accelrt(&["generate", "--chat", "--prompt", "What is 2 + 2?", "--max-tokens", "64"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("prompt tokens"), "{err}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("<|im_end|>"));
}

#[test]
fn seeded_sampling_is_reproducible() {
    let args = [
        "generate",
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "16",
        "--temperature",
        "0.9",
        "--top-p",
        "0.9",
        "--seed",
        "7",
    ];
    let (a, b) = (accelrt(&args), accelrt(&args));
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn bad_generate_requests_fail_with_a_reason() {
    for (args, needle) in [
        (vec!["generate", "--prompt", "Hi", "--max-tokens", "0"], "--max-tokens must be at least 1"),
        (vec!["generate", "--prompt", "Hi", "--temperature=-1"], "--temperature must be > 0"),
        (vec!["generate", "--prompt", "Hi", "--top-p", "0.5"], "need --temperature"),
        (vec!["generate", "--prompt", &"many words here ".repeat(20), "--context", "16"], "context holds 16 positions"),
        (vec!["generate", "--prompt", "Hi", "--backend", "cuda:0"], "cuda:0"),
        (vec!["generate", "--prompt", "Hi", "--model", "all-minilm-l6-v2"], "not a text-generation model"),
    ] {
        let o = accelrt(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?} printed output");
    }
}

#[test]
fn the_generation_benchmark_reports_tokens_ttft_tpot_and_cost() {
    let out = tempfile::tempdir().unwrap();
    let o = accelrt(&[
        "bench",
        "--model",
        "smollm2-135m-instruct",
        "--scenario",
        "single-stream,offline",
        "--batch-size",
        "2",
        "--max-tokens",
        "4",
        "--warmup",
        "0",
        "--min-duration",
        "0.5",
        "--min-queries",
        "2",
        // An explicit price: this machine is no c7i.xlarge, and the harness refuses to say it is.
        "--price-per-hour",
        "0.2",
        "--no-progress",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("TTFT p50") && stdout.contains("$/1M tokens"), "{stdout}");
    let mut files: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 2);
    for f in files {
        let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let g = &r["generation"];
        let requests = g["requests"].as_u64().unwrap();
        assert!(requests >= 2, "{g}");
        assert_eq!(g["output_tokens"].as_u64().unwrap(), 4 * requests, "every request makes exactly 4 tokens");
        let tps = g["output_tokens_per_s"].as_f64().unwrap();
        let cost = g["usd_per_million_output_tokens"].as_f64().unwrap();
        let price = r["price_usd_per_hour"].as_f64().unwrap();
        assert!((cost - price * 1e6 / (3600.0 * tps)).abs() < 1e-9 * cost.max(1.0));
        assert!(g["ttft_ms"]["p50"].as_f64().unwrap() > 0.0 && g["tpot_ms"]["p50"].as_f64().unwrap() > 0.0);
    }
    // The server scenario needs continuous batching: refused for generation, with the reason.
    let o = accelrt(&[
        "bench",
        "--model",
        "smollm2-135m-instruct",
        "--scenario",
        "server",
        "--qps",
        "1",
        "--p99-ms",
        "1000",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("accelrt serve` with `--url`"), "{}", stderr(&o));
}
