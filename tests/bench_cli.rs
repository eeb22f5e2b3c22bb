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

/// A catalog whose one instance type, `test.local`, is this machine (its threads, its memory, no
/// accelerator), so a run here is a legitimate measurement of it.
fn local_catalog(dir: &Path) -> std::path::PathBuf {
    let threads = std::thread::available_parallelism().unwrap().get();
    let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let catalog = serde_json::json!({
        "schema_version": 1,
        "instances": [{
            "instance_type": "test.local", "family": "test", "category": "cpu",
            "vcpus": threads, "memory_gib": mem_kib / (1u64 << 20) as f64, "accelerator": null,
            "prices": [{"basis": "on-demand", "usd_per_hour": 0.1785, "region": "here",
                        "source": "the test", "date_read": "2026-11-01"}]
        }]
    });
    let path = dir.join("catalog.json");
    std::fs::write(&path, catalog.to_string()).unwrap();
    path
}

#[test]
fn a_short_real_benchmark_writes_results_with_cost() {
    let out = tempfile::tempdir().unwrap();
    let catalog_dir = tempfile::tempdir().unwrap();
    let catalog = local_catalog(catalog_dir.path());
    let catalog = catalog.to_str().unwrap();
    let mut args = vec![
        "bench",
        "--batch-size",
        "8",
        "--catalog",
        catalog,
        "--instance-type",
        "test.local",
        "--out",
        out.path().to_str().unwrap(),
    ];
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
        assert_eq!(r["instance_type"], "test.local");
        assert_eq!(r["price_usd_per_hour"], 0.1785);
        assert_eq!(r["hardware"]["matches"], true, "{r}");
        assert_eq!(r["hardware"]["measures"], "cpu");
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
    args.extend(["--catalog".into(), catalog.into()]);
    let o = accelrt(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(report.path().join("report.md")).unwrap();
    assert!(md.contains("| test.local | accelrt | cpu | offline | 8 | yes |"), "{md}");
    assert!(md.contains("Cheapest measured setup"), "{md}");
    assert!(md.contains("- cpu: measured on test.local"), "{md}");
    assert!(report.path().join("report.html").is_file());
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
        (vec!["bench", "--scenario", "server", "--p99-ms", "10", "--qps=-2"], "--qps must be a number from"),
        (
            vec!["bench", "--url", "http://127.0.0.1:9", "--scenario", "server", "--p99-ms", "10", "--qps", "0"],
            "--qps must be a number from",
        ),
        (vec!["bench", "--url", "http://127.0.0.1:9", "--concurrency", "0"], "--concurrency must be a number from 1"),
        (vec!["bench", "--url", "http://127.0.0.1:9", "--peers", "pytorch"], "cannot be used with"),
        (vec!["bench", "--scenario", "warp"], "unknown scenario `warp`"),
        (vec!["bench", "--batch-size", "0"], "--batch-size must be a number from 1"),
        (vec!["bench", "--peers", "tensorflow"], "unknown peer `tensorflow`"),
        (vec!["bench", "--price-per-hour=-3"], "--price-per-hour must be a number from 0.0001"),
        (vec!["bench", "--backend", "cuda:0"], "not available"),
        (vec!["report", "/nonexistent/result.json"], "/nonexistent/result.json"),
        (vec!["report", "/nonexistent/result.json", "--cache-dir", "/tmp"], "unexpected argument '--cache-dir'"),
        (vec!["conformance", "--cache-dir", "/tmp"], "unexpected argument '--cache-dir'"),
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
    let catalog_dir = tempfile::tempdir().unwrap();
    let catalog = local_catalog(catalog_dir.path());
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
        "--catalog",
        catalog.to_str().unwrap(),
        "--instance-type",
        "test.local",
        "--out",
        out.path().to_str().unwrap(),
    ];
    args.extend_from_slice(SHORT);
    let o = accelrt(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results = results_in(out.path());
    assert_eq!(results.len(), 3);
    // Whether a run at 20 queries/s meets its bound depends on how busy this machine is: the test
    // checks what the harness guarantees, not the verdict.
    for r in &results {
        assert_eq!(r["system"], "accelrt-serve", "{r}");
        assert_eq!(r["model"], "all-minilm-l6-v2");
        assert_measurement_is_well_formed(r, 4, 0.1785);
        let details = r["environment"]["details"].to_string();
        assert!(details.contains(&server.url), "{details}");
    }
    let mut scenarios: Vec<&str> = results.iter().map(|r| r["scenario"].as_str().unwrap()).collect();
    scenarios.sort();
    assert_eq!(scenarios, ["offline", "server", "single-stream"]);
    let server_run = results.iter().find(|r| r["scenario"] == "server").unwrap();
    assert_eq!(server_run["target_qps"], 20.0);
    assert_eq!(server_run["p99_bound_ms"], 5000.0);
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
    assert_measurement_is_well_formed(r, 4, f64::NAN);
    let g = &r["generation"];
    let requests = g["requests"].as_u64().unwrap();
    assert_eq!(requests, r["queries"].as_u64().unwrap(), "{r}");
    assert_eq!(g["output_tokens"].as_u64().unwrap(), requests * 8, "every request yields exactly --max-tokens");
    if requests > 0 {
        assert!(g["ttft_ms"]["p50"].as_f64().unwrap() > 0.0 && g["tpot_ms"]["p50"].as_f64().unwrap() >= 0.0, "{g}");
    }
}

/// What a measurement over HTTP guarantees whatever the machine's speed: counts that agree (one
/// sample per request), finite non-negative numbers, a verdict that is a bool with reasons exactly when it is false (a valid run
/// met the minimum query count), and a cost that follows from the throughput when a price is known
/// (`price` NaN: no price).
fn assert_measurement_is_well_formed(r: &serde_json::Value, min_queries: u64, price: f64) {
    let queries = r["queries"].as_u64().unwrap_or_else(|| panic!("queries: {r}"));
    assert_eq!(r["samples"].as_u64(), Some(queries * r["batch_size"].as_u64().unwrap()), "{r}");
    let valid = r["valid"].as_bool().unwrap_or_else(|| panic!("valid is a bool: {r}"));
    let reasons = r["invalid_reasons"].as_array().unwrap();
    assert_eq!(valid, reasons.is_empty(), "reasons exactly when invalid: {r}");
    if valid {
        assert!(queries >= min_queries, "{r}");
    }
    let number = |v: &serde_json::Value| v.as_f64().filter(|x| x.is_finite() && *x >= 0.0);
    let throughput = number(&r["throughput_per_s"]).unwrap_or_else(|| panic!("throughput: {r}"));
    assert!(number(&r["duration_s"]).is_some(), "{r}");
    for p in ["p50", "p90", "p95", "p99", "p99.9", "max", "mean"] {
        assert!(number(&r["latency_ms"][p]).is_some(), "latency {p}: {r}");
    }
    assert!(r["latency_ms"]["p50"].as_f64() <= r["latency_ms"]["max"].as_f64(), "{r}");
    assert_eq!(queries == 0, throughput == 0.0, "{r}");
    match r["usd_per_million_inferences"].as_f64() {
        Some(cost) => assert!((cost - price * 1e6 / (3600.0 * throughput)).abs() <= 1e-9 * cost, "{r}"),
        None => assert!(price.is_nan() || throughput == 0.0, "no cost: {r}"),
    }
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

/// Every numeric flag of `bench` and `report` is checked by its kind before anything runs; the
/// error names the flag (1e-320 used to be accepted as a price).
#[test]
fn numeric_flags_out_of_range_are_refused_naming_the_flag() {
    let mut cases: Vec<(Vec<String>, &str)> = Vec::new();
    let mut bench = |flag: &'static str, values: &[&str], extra: &[&str]| {
        for v in values {
            let mut args = vec!["bench".to_string(), format!("{flag}={v}")];
            args.extend(extra.iter().map(|s| s.to_string()));
            cases.push((args, flag));
        }
    };
    let server = ["--scenario", "server", "--p99-ms", "100", "--qps", "10"];
    bench("--price-per-hour", &["1e-320", "0", "-1", "NaN", "inf", "-inf", "1e9"], &[]);
    bench("--qps", &["0", "-2", "NaN", "inf", "1e300"], &["--scenario", "server", "--p99-ms", "100"]);
    bench("--qps", &["NaN"], &[]);
    bench("--p99-ms", &["0", "-1", "NaN", "inf", "1e300"], &["--scenario", "server", "--qps", "10"]);
    bench("--warmup", &["-1", "NaN", "inf", "1e300"], &[]);
    bench("--min-duration", &["-1", "NaN", "inf", "1e300"], &server);
    bench("--min-queries", &["100000000000", "0"], &[]);
    bench("--batch-size", &["0", "100000000"], &[]);
    bench("--search-steps", &["0", "100000"], &["--find-max-qps"]);
    bench("--concurrency", &["0", "10000000"], &["--url", "http://127.0.0.1:9"]);
    bench("--max-tokens", &["0"], &[]);
    bench("--context", &["0"], &[]);
    for v in ["-1", "0", "NaN", "inf", "1e300"] {
        cases.push((vec!["report".into(), "/nonexistent/result.json".into(), format!("--p99-ms={v}")], "--p99-ms"));
    }
    for (args, flag) in cases {
        let o = accelrt(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.contains(&format!("{flag} must be a number from")), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// A result as `accelrt bench` writes it, built through the library (no benchmark run).
fn result_file(dir: &Path, system: &str, throughput: f64) -> std::path::PathBuf {
    use accelrt::bench::environment::Environment;
    use accelrt::bench::stats::Latency;
    use accelrt::bench::{BenchResult, Measurement, Pricing, ScenarioKind};
    let latency = Latency { p50: 5.0, p90: 6.0, p95: 7.0, p99: 8.0, p999: 9.0, max: 10.0, mean: 5.5 };
    let m = Measurement {
        scenario: ScenarioKind::Offline,
        batch_size: 8,
        queries: 10,
        samples: 80,
        duration_s: 1.0,
        throughput_per_s: 80.0,
        latency_ms: latency,
        valid: true,
        invalid_reasons: vec![],
        target_qps: None,
        p99_bound_ms: None,
    };
    let pricing = Pricing {
        instance_type: Some("c7i.xlarge".into()),
        instance_type_source: "test".into(),
        price: None,
        instance: None,
    };
    let device = accelrt::DeviceInfo {
        kind: accelrt::DeviceKind::Cpu,
        spec: "cpu".into(),
        name: "Test CPU".into(),
        memory_total_bytes: None,
        memory_free_bytes: None,
        details: vec![],
    };
    let env = Environment::capture("candle", &device);
    let mut r = BenchResult::new(&m, "all-minilm-l6-v2", system, &pricing, &[], env, None);
    r.throughput_per_s = throughput;
    let path = dir.join(format!("{}.json", dir.read_dir().unwrap().count()));
    std::fs::write(&path, serde_json::to_string(&r).unwrap()).unwrap();
    path
}

/// `accelrt`, killed (and the test failed) if it has not finished after a minute: a report takes
/// milliseconds, so this only turns a hang into a failure.
fn accelrt_or_hang(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_accelrt"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("accelrt {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `accelrt report` on a result whose throughput is 1.7e308 used to hang drawing the chart; it is
/// now refused when loaded, naming the file and the field. Strings with newlines and pipes go into
/// the report escaped.
#[test]
fn report_refuses_absurd_numbers_and_escapes_strings() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let good = result_file(dir.path(), "accelrt", 80.0);
    let bad = result_file(dir.path(), "accelrt", 1.7e308);
    let o = accelrt_or_hang(&[
        "report",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains(bad.to_str().unwrap()) && err.contains("`throughput_per_s`"), "{err}");

    let injected = result_file(dir.path(), "evil\n## injected | x", 80.0);
    let o = accelrt_or_hang(&[
        "report",
        good.to_str().unwrap(),
        injected.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(!md.lines().any(|l| l.starts_with("## injected")), "{md}");
    // This machine is not a c7i.xlarge: the row says so.
    assert!(
        md.contains(r"| c7i.xlarge (hardware does not match) | evil \#\# injected \| x | cpu | offline | 8 | yes |"),
        "{md}"
    );
}

/// Item (issue 16): a CPU run on this machine cannot be priced as a GPU or Inferentia instance; a
/// made-up type is refused with close names; with an explicit price it runs but is not counted for
/// the instance type; the metadata service wins over the flag, and disagreement is an error.
#[test]
fn a_cpu_run_cannot_be_priced_as_a_gpu_or_inferentia_instance() {
    for t in ["g5.xlarge", "inf2.xlarge"] {
        let o = accelrt(&["bench", "--backend", "cpu", "--instance-type", t, "--no-progress"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{t}: {err}");
        assert!(err.contains(&format!("{t} (--instance-type) does not match what this run uses")), "{err}");
        assert!(err.contains("--price-per-hour"), "{err}");
    }
    let o = accelrt(&["bench", "--instance-type", "g5.xlarg", "--no-progress"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown instance type `g5.xlarg`") && err.contains("did you mean g5.xlarge"), "{err}");
    let o = accelrt(&["bench", "--instance-type", "foo.bar", "--no-progress"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown instance type `foo.bar`"));

    // With the user's own price it runs, and says plainly it is not a g5.xlarge measurement.
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "bench",
        "--instance-type",
        "g5.xlarge",
        "--price-per-hour",
        "1.0",
        "--scenario",
        "offline",
        "--batch-size",
        "4",
        "--out",
        out.path().to_str().unwrap(),
    ];
    args.extend_from_slice(SHORT);
    let o = accelrt(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("NOT a g5.xlarge measurement"), "{stdout}");
    let results = results_in(out.path());
    assert_eq!(results[0]["hardware"]["matches"], false);
    assert_eq!(results[0]["hardware"]["measures"], serde_json::Value::Null);
    let report = tempfile::tempdir().unwrap();
    let file = std::fs::read_dir(out.path()).unwrap().next().unwrap().unwrap().path();
    let o = accelrt(&["report", file.to_str().unwrap(), "--out", report.path().to_str().unwrap(), "--p99-ms", "1e6"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(report.path().join("report.md")).unwrap();
    assert!(md.contains("- gpu-g: not measured"), "{md}");
    assert!(md.contains("Nothing measured meets"), "{md}");

    // --imds wins over --instance-type; a disagreement is an error.
    let (base, _mock) = imds_mock("c7i.2xlarge");
    let o = accelrt(&["bench", "--imds", "--imds-endpoint", &base, "--instance-type", "c7i.xlarge", "--no-progress"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("metadata service says this is a c7i.2xlarge, but --instance-type says c7i.xlarge"), "{err}");
}

/// A metadata service on 127.0.0.1 that answers every token request and the instance type.
fn imds_mock(instance: &'static str) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
            }
            let body = if request.starts_with("PUT") { "TOKEN" } else { instance };
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                .unwrap();
        }
    });
    (base, handle)
}

/// Item (issue 16): without a terminal, progress is one line per interval on stderr; each result is
/// written as its scenario completes, and Ctrl-C keeps the completed ones (exit status 130).
#[test]
fn ctrl_c_keeps_the_completed_scenarios_and_progress_is_printed_off_a_terminal() {
    let out = tempfile::tempdir().unwrap();
    // Offline is short; the server scenario (2 queries/s, 600 queries) would take 5 minutes.
    let child = Command::new(env!("CARGO_BIN_EXE_accelrt"))
        .args([
            "bench",
            "--scenario",
            "offline,server",
            "--qps",
            "2",
            "--p99-ms",
            "60000",
            "--batch-size",
            "4",
            "--min-queries",
            "600",
            "--min-duration",
            "1",
            "--warmup",
            "0.2",
            "--price-per-hour",
            "1",
            "--out",
            out.path().to_str().unwrap(),
        ])
        .env("ACCELRT_CACHE", common::cache_root())
        .env_remove("ACCELRT_INSTANCE_TYPE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while std::fs::read_dir(out.path()).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "the offline result never appeared");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted: 1 completed scenario(s) kept"), "{stderr}");
    assert!(stderr.contains("[accelrt offline] started: warm-up 0.2 s, then at least 1 s and 600 queries"), "{stderr}");
    assert!(stderr.contains("[accelrt offline] done: "), "{stderr}");
    assert!(stderr.contains("[accelrt server 2.0/s] started"), "{stderr}");
    assert!(stdout.contains("wrote "), "{stdout}");
    let files: Vec<String> =
        std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let results = results_in(out.path());
    assert_eq!(results[0]["scenario"], "offline");
    assert!(results[0]["environment"]["host_load"]["steal_share"].is_number(), "{}", results[0]);
}

/// Item (issue 16): the smaller frictions.
#[test]
fn smaller_frictions_are_gone() {
    let o = accelrt(&["embed", "--model", "smollm2-135m-instruct"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("is a text-generation model"), "{err}");
    let help = String::from_utf8_lossy(&accelrt(&["bench", "--help"]).stdout).into_owned();
    assert!(help.contains("[default: offline,single-stream]"), "{help}");
    assert!(help.contains("about a minute"), "{help}");
    assert!(help.contains("--context <CONTEXT>") && help.contains("[default: 2048]"), "{help}");
    let devices = String::from_utf8_lossy(&accelrt(&["devices"]).stdout).into_owned();
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if flags.contains(" avx512_vnni") {
        assert!(devices.contains("avx512_vnni"), "{devices}");
    }
    // The cache directory is still accepted where models are used, before or after the command.
    assert!(accelrt(&["fetch", "all-minilm-l6-v2", "--cache-dir", common::cache_root().to_str().unwrap()])
        .status
        .success());
}

/// `result_file`, then `edit` applied to its JSON.
fn edited_result_file(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    let path = result_file(dir, "accelrt", 80.0);
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

/// Red-team item: `bench --min-duration 0 --min-queries 0 --warmup 0` wrote a result of 0 queries
/// marked valid (throughput 0, p99 0 ms) that `report` showed as valid. `--min-queries 0` is
/// refused, and a result file of zero answered queries is shown invalid, with the reason.
#[test]
fn an_empty_measurement_is_refused_or_invalid() {
    let o = accelrt(&[
        "bench",
        "--scenario",
        "single-stream",
        "--min-duration",
        "0",
        "--min-queries",
        "0",
        "--warmup",
        "0",
        "--no-progress",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--min-queries must be a number from 1"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let good = result_file(dir.path(), "accelrt", 80.0);
    let empty = edited_result_file(dir.path(), |v| {
        v["system"] = "empty".into();
        v["queries"] = 0.into();
        v["samples"] = 0.into();
        v["duration_s"] = 0.0.into();
        v["throughput_per_s"] = 0.0.into();
        v["valid"] = true.into();
    });
    let o = accelrt_or_hang(&[
        "report",
        good.to_str().unwrap(),
        empty.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("| empty | cpu | offline | 8 | **no** |"), "{md}");
    assert!(md.contains("empty measurement: 0 queries answered"), "{md}");
}

/// Red-team item: the harness read its files without a bound (`--texts /dev/zero`, `--catalog`,
/// `--prices`, a result file that is a link to /dev/zero) until memory ran out. Each is now read
/// through one bounded reader: an error naming the file and the limit.
#[test]
fn files_the_harness_reads_are_bounded() {
    let zero = Path::new("/dev/zero");
    if !zero.exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("zero.json");
    std::os::unix::fs::symlink(zero, &link).unwrap();
    let link = link.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["bench", "--texts", "/dev/zero", "--no-progress"],
        vec!["bench", "--catalog", "/dev/zero", "--no-progress"],
        vec!["bench", "--prices", "/dev/zero", "--no-progress"],
        vec!["report", link, "--out", dir.path().to_str().unwrap()],
        vec!["report", "a.json", "--catalog", "/dev/zero", "--out", dir.path().to_str().unwrap()],
    ];
    for args in cases {
        let o = accelrt_or_hang(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.contains("larger than the limit of 67108864 bytes (64 MiB)"), "{args:?}: {err}");
        assert!(err.contains("zero"), "{args:?}: {err}");
    }
}

/// Red-team item: a result whose model (or system, backend) name is hundreds of characters long
/// made `report` fail with "File name too long" and write nothing. Chart names are bounded now.
#[test]
fn report_survives_very_long_names_in_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let long = edited_result_file(dir.path(), |v| {
        v["model"] = "m".repeat(300).into();
        v["system"] = "s".repeat(300).into();
        v["backend"] = "b".repeat(300).into();
    });
    let o = accelrt_or_hang(&["report", long.to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.path().join("report.md").is_file() && out.path().join("report.html").is_file());
    for e in std::fs::read_dir(out.path()).unwrap() {
        let name = e.unwrap().file_name();
        assert!(name.len() <= 130, "{name:?}");
    }
}
