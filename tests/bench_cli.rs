//! `accelrt bench` and `accelrt report` as a user runs them: a real, short MiniLM benchmark on the CPU.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn accelrt(args: &[&str]) -> Output {
    let cache = common::cache_root();
    Command::new(env!("CARGO_BIN_EXE_accelrt"))
        .args(args)
        .env("ACCELRT_CACHE", cache)
        .env_remove("ACCELRT_INSTANCE_TYPE")
        .output()
        .unwrap()
}

fn results_in(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()).collect()
}

const SHORT: &[&str] = &["--min-duration", "1", "--warmup", "0.2", "--min-queries", "4", "--no-progress"];

#[test]
fn a_short_real_benchmark_writes_results_with_cost() {
    let out = tempfile::tempdir().unwrap();
    let mut args =
        vec!["bench", "--batch-size", "8", "--instance-type", "c7i.xlarge", "--out", out.path().to_str().unwrap()];
    args.extend_from_slice(SHORT);
    let o = accelrt(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("inferences/s") && stdout.contains("offline") && stdout.contains("single-stream"),
        "{stdout}"
    );
    assert!(stdout.contains("What-if, NOT measured there"), "{stdout}");

    let results = results_in(out.path());
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r["schema_version"], 1);
        assert_eq!(r["model"], "all-minilm-l6-v2");
        assert_eq!(r["backend"], "cpu");
        assert_eq!(r["instance_type"], "c7i.xlarge");
        assert_eq!(r["price_usd_per_hour"], 0.1785);
        assert_eq!(r["valid"], true);
        let t = r["throughput_per_s"].as_f64().unwrap();
        assert!(t > 0.0);
        let cost = r["usd_per_million_inferences"].as_f64().unwrap();
        assert!((cost - 0.1785e6 / (3600.0 * t)).abs() < 1e-9);
        assert!(r["latency_ms"]["p99"].as_f64().unwrap() >= r["latency_ms"]["p50"].as_f64().unwrap());
        assert!(r["environment"]["cpu_model"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(r["environment"]["git_commit"].as_str().is_some());
        assert!(r["memory"]["peak_host_bytes"].as_u64().unwrap() > 10 << 20);
    }
    let scenarios: Vec<&str> = results.iter().map(|r| r["scenario"].as_str().unwrap()).collect();
    assert!(scenarios.contains(&"offline") && scenarios.contains(&"single-stream"));

    // The report merges them.
    let report = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec!["report".into()];
    for e in std::fs::read_dir(out.path()).unwrap() {
        args.push(e.unwrap().path().to_string_lossy().into_owned());
    }
    args.extend(["--out".into(), report.path().to_string_lossy().into_owned(), "--p99-ms".into(), "100000".into()]);
    let o = accelrt(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(report.path().join("report.md")).unwrap();
    assert!(md.contains("| c7i.xlarge | accelrt | cpu | offline | 8 | yes |"), "{md}");
    assert!(md.contains("Cheapest measured setup"), "{md}");
}

#[test]
fn a_server_run_at_a_fixed_load() {
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "bench",
        "--scenario",
        "server",
        "--qps",
        "10",
        "--p99-ms",
        "60000",
        "--batch-size",
        "4",
        "--price-per-hour",
        "1.0",
        "--out",
        out.path().to_str().unwrap(),
    ];
    args.extend_from_slice(SHORT);
    let o = accelrt(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = &results_in(out.path())[0];
    assert_eq!(r["scenario"], "server");
    assert_eq!(r["target_qps"], 10.0);
    assert_eq!(r["instance_type"], serde_json::Value::Null);
    assert_eq!(r["price"]["source"], "--price-per-hour");
}

#[test]
fn bad_bench_arguments_are_clear_errors() {
    for (args, needle) in [
        (vec!["bench", "--scenario", "server"], "needs --p99-ms"),
        (vec!["bench", "--scenario", "server", "--p99-ms", "10"], "needs --qps or --find-max-qps"),
        (vec!["bench", "--scenario", "server", "--p99-ms", "10", "--qps=-2"], "--qps must be positive"),
        (
            vec!["bench", "--url", "http://127.0.0.1:9", "--scenario", "server", "--p99-ms", "10", "--qps", "0"],
            "--qps must be positive",
        ),
        (vec!["bench", "--url", "http://127.0.0.1:9", "--concurrency", "0"], "--concurrency must be at least 1"),
        (vec!["bench", "--url", "http://127.0.0.1:9", "--peers", "pytorch"], "cannot be used with"),
        (vec!["bench", "--scenario", "warp"], "unknown scenario `warp`"),
        (vec!["bench", "--batch-size", "0"], "at least 1"),
        (vec!["bench", "--peers", "tensorflow"], "unknown peer `tensorflow`"),
        (vec!["bench", "--price-per-hour=-3"], "positive"),
        (vec!["bench", "--backend", "cuda:0"], "not available"),
        (vec!["report", "/nonexistent/result.json"], "/nonexistent/result.json"),
    ] {
        let o = accelrt(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `--url`: the same scenarios against `accelrt serve` over loopback HTTP.
#[test]
fn the_harness_measures_a_running_server_over_http() {
    let server = common::ServeProcess::start(&["--model", "all-minilm-l6-v2"]);
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "bench",
        "--url",
        &server.url,
        "--scenario",
        "offline,single-stream,server",
        "--concurrency",
        "8",
        "--qps",
        "20",
        "--p99-ms",
        "5000",
        "--instance-type",
        "c7i.xlarge",
        "--out",
        out.path().to_str().unwrap(),
    ];
    args.extend_from_slice(SHORT);
    let o = accelrt(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results = results_in(out.path());
    assert_eq!(results.len(), 3);
    for r in &results {
        assert_eq!(r["system"], "accelrt-serve", "{r}");
        assert_eq!(r["model"], "all-minilm-l6-v2");
        assert_eq!(r["valid"], true, "{r}");
        assert!(r["throughput_per_s"].as_f64().unwrap() > 0.0);
        assert!(r["usd_per_million_inferences"].as_f64().unwrap() > 0.0);
        let details = r["environment"]["details"].to_string();
        assert!(details.contains(&server.url), "{details}");
    }
    let server_run = results.iter().find(|r| r["scenario"] == "server").unwrap();
    assert_eq!(server_run["target_qps"], 20.0);
    // The server saw the requests.
    let metrics = ureq::get(&format!("{}/metrics", server.url)).call().unwrap().into_string().unwrap();
    assert!(metrics.contains("accelrt_requests_total{route=\"/v1/embeddings\",status=\"200\"}"), "{metrics}");
    let (status, _) = server.stop();
    assert!(status.success());
}

/// `--url` with a chat server: streamed requests, TTFT/TPOT and tokens/s in the result.
#[test]
fn the_harness_measures_a_chat_server_over_http() {
    let server = common::ServeProcess::start(&["--model", "smollm2-135m-instruct", "--context", "256"]);
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "bench",
        "--url",
        &server.url,
        "--scenario",
        "offline",
        "--concurrency",
        "4",
        "--max-tokens",
        "8",
        "--out",
        out.path().to_str().unwrap(),
    ];
    args.extend_from_slice(SHORT);
    let o = accelrt(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("tokens/s") && stdout.contains("TTFT"), "{stdout}");
    let r = &results_in(out.path())[0];
    let g = &r["generation"];
    let requests = g["requests"].as_u64().unwrap();
    assert!(requests >= 4, "{g}");
    assert_eq!(g["output_tokens"].as_u64().unwrap(), requests * 8, "every request yields exactly --max-tokens");
    assert!(g["ttft_ms"]["p50"].as_f64().unwrap() > 0.0 && g["tpot_ms"]["p50"].as_f64().unwrap() > 0.0, "{g}");
}

#[test]
fn a_server_that_is_not_there_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let o = accelrt(&["bench", "--url", &url, "--no-progress"]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("cannot reach the server") && stderr.contains(&url), "{stderr}");
}
