//! Result files and the merged report, from fixture results.

use accelrt_bench::catalog::Catalog;
use accelrt_bench::environment::Environment;
use accelrt_bench::hardware::HostAccelerator;
use accelrt_bench::report::{write_report, write_report_with, ReportOptions};
use accelrt_bench::result::{BenchResult, Pricing};
use accelrt_bench::scenario::{Measurement, ScenarioKind};
use accelrt_bench::stats::Latency;
use accelrt_core::{DeviceInfo, DeviceKind};

fn result(
    instance: &str,
    scenario: ScenarioKind,
    throughput: f64,
    p99: f64,
    valid: bool,
    sweep: Vec<(f64, f64, bool)>,
) -> BenchResult {
    let latency =
        |p: f64| Latency { p50: p / 2.0, p90: p * 0.9, p95: p * 0.95, p99: p, p999: p, max: p, mean: p / 2.0 };
    let m = Measurement {
        scenario,
        batch_size: 8,
        queries: 100,
        samples: 800,
        duration_s: 10.0,
        throughput_per_s: throughput,
        latency_ms: latency(p99),
        valid,
        invalid_reasons: if valid { vec![] } else { vec!["p99 latency exceeds the bound".into()] },
        target_qps: (scenario == ScenarioKind::Server).then_some(throughput),
        p99_bound_ms: (scenario == ScenarioKind::Server).then_some(50.0),
    };
    let sweep: Vec<Measurement> = sweep
        .into_iter()
        .map(|(q, p, v)| Measurement {
            target_qps: Some(q),
            throughput_per_s: q,
            latency_ms: latency(p),
            valid: v,
            ..m.clone()
        })
        .collect();
    let catalog = Catalog::builtin();
    let price = catalog.get(instance).and_then(|i| i.prices.first().cloned());
    let pricing = Pricing {
        instance_type: Some(instance.into()),
        instance_type_source: "--instance-type".into(),
        price,
        instance: catalog.get(instance).cloned(),
    };
    let env = matching_env(instance, "cpu", "Test CPU");
    BenchResult::new(&m, "all-minilm-l6-v2", "accelrt", &pricing, &sweep, env, None)
}

/// An environment that is the catalog's `instance` (threads = vCPUs, its memory, its accelerator
/// on the host), running on `device`.
fn matching_env(instance: &str, device: &str, device_name: &str) -> Environment {
    let i = Catalog::builtin().get(instance).cloned().unwrap();
    let info = DeviceInfo {
        kind: if device == "cpu" { DeviceKind::Cpu } else { DeviceKind::Cuda },
        spec: device.into(),
        name: device_name.into(),
        memory_total_bytes: None,
        memory_free_bytes: None,
        details: vec![],
    };
    let mut env = Environment::capture("candle", &info);
    env.cpu_threads = i.vcpus as usize;
    env.host_memory_bytes = Some((i.memory_gib * 0.95 * (1u64 << 30) as f64) as u64);
    env.host_accelerators =
        i.accelerator.iter().map(|a| HostAccelerator { kind: a.kind.clone(), name: a.model.clone() }).collect();
    env
}

fn fixtures() -> Vec<BenchResult> {
    vec![
        result("c7i.xlarge", ScenarioKind::Offline, 200.0, 400.0, true, vec![]),
        result(
            "c7i.2xlarge",
            ScenarioKind::Server,
            300.0,
            40.0,
            true,
            vec![(150.0, 20.0, true), (300.0, 40.0, true), (600.0, 900.0, false)],
        ),
        result("inf2.xlarge", ScenarioKind::Server, 900.0, 80.0, false, vec![]),
    ]
}

#[test]
fn results_round_trip_with_the_required_keys() {
    let dir = tempfile::tempdir().unwrap();
    let r = &fixtures()[0];
    let path = r.save(dir.path()).unwrap();
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for key in [
        "schema_version",
        "scenario",
        "model",
        "backend",
        "batch_size",
        "valid",
        "throughput_per_s",
        "latency_ms",
        "instance_type",
        "price_usd_per_hour",
        "usd_per_million_inferences",
        "environment",
    ] {
        assert!(value.get(key).is_some(), "missing {key}");
    }
    for p in ["p50", "p90", "p99"] {
        assert!(value["latency_ms"][p].is_number());
    }
    assert_eq!(value["scenario"], "offline");
    // $0.1785/h at 200/s.
    let cost = value["usd_per_million_inferences"].as_f64().unwrap();
    assert!((cost - 0.1785e6 / 720_000.0).abs() < 1e-12);
    assert_eq!(&BenchResult::load(&path).unwrap(), r);

    let newer = std::fs::read_to_string(&path).unwrap().replace("\"schema_version\": 1", "\"schema_version\": 9");
    std::fs::write(&path, newer).unwrap();
    assert!(BenchResult::load(&path).unwrap_err().to_string().contains("schema 9 is not supported"));
    std::fs::write(&path, "[1, 2]").unwrap();
    assert!(BenchResult::load(&path).unwrap_err().to_string().contains("not an accelrt result"));
}

#[test]
fn report_tables_charts_and_the_cheapest_setup() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_report(&fixtures(), dir.path(), Some(50.0)).unwrap();
    let md = std::fs::read_to_string(path).unwrap();
    assert!(md.contains("| c7i.xlarge | accelrt | cpu | offline | 8 | yes | — | 200.0 | 400.00 | 0.1785 (on-demand, read 2026-11) | 0.2479 (on-demand, read 2026-11) | offline throughput |"), "{md}");
    // A CPU run on an Inferentia host: that host's CPU.
    assert!(md.contains("| inf2.xlarge (host CPU) | accelrt | cpu | server | 8 | **no** |"), "{md}");
    assert!(md.contains("Invalid runs"), "{md}");
    // Only the c7i.2xlarge server run is valid with p99 ≤ 50 ms.
    assert!(
        md.contains(
            "**Cheapest measured setup with p99 ≤ 50 ms:** c7i.2xlarge (accelrt, cpu, server at batch 8) at \\$0.3306 per 1M inferences (on-demand, read 2026-11)."
        ),
        "{md}"
    );
    assert!(md.contains("- gpu-g: not measured"), "{md}");
    assert!(md.contains("- inferentia2: not measured"), "{md}");
    assert!(md.contains("- cpu: measured on c7i.2xlarge, c7i.xlarge, inf2.xlarge (host CPU)"), "{md}");
    for svg in ["all-minilm-l6-v2-throughput.svg", "all-minilm-l6-v2-cost.svg", "all-minilm-l6-v2-latency-vs-load.svg"]
    {
        let text = std::fs::read_to_string(dir.path().join(svg)).unwrap_or_else(|e| panic!("{svg}: {e}"));
        let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{svg} is not valid XML: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        assert!(md.contains(svg));
    }
}

#[test]
fn nothing_meeting_the_objective_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let md = std::fs::read_to_string(write_report(&fixtures(), dir.path(), Some(1.0)).unwrap()).unwrap();
    assert!(md.contains("**Nothing measured meets p99 ≤ 1 ms** for all-minilm-l6-v2"), "{md}");
    assert!(write_report(&[], dir.path(), None).is_err());
}

/// Item: a result file whose numbers are absurd (1.7e308 throughput made `accelrt report` hang in
/// the chart's axis arithmetic) is refused when it is loaded, naming the file and the field.
#[test]
fn result_files_with_absurd_numbers_are_refused_naming_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let saved = fixtures()[1].save(dir.path()).unwrap(); // a server result with a sweep and a price
    let original: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    for (pointer, bad, field) in [
        ("/throughput_per_s", serde_json::json!(1.7e308), "`throughput_per_s`"),
        ("/throughput_per_s", serde_json::json!(-5.0), "`throughput_per_s`"),
        ("/latency_ms/p99", serde_json::json!(-1.0), "`latency_ms.p99`"),
        ("/latency_ms/p99.9", serde_json::json!(1e300), "`latency_ms.p99.9`"),
        ("/duration_s", serde_json::json!(1e300), "`duration_s`"),
        ("/price_usd_per_hour", serde_json::json!(1e-320), "`price_usd_per_hour`"),
        ("/price/usd_per_hour", serde_json::json!(-0.5), "`price.usd_per_hour`"),
        ("/usd_per_million_inferences", serde_json::json!(-0.5), "`usd_per_million_inferences`"),
        ("/target_qps", serde_json::json!(1.7e308), "`target_qps`"),
        ("/sweep/2/p99_ms", serde_json::json!(1.7e308), "`sweep[2].p99_ms`"),
        ("/sweep/0/target_qps", serde_json::json!(-1.0), "`sweep[0].target_qps`"),
        ("/batch_size", serde_json::json!(0), "`batch_size`"),
    ] {
        let mut value = original.clone();
        *value.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer} in the fixture")) = bad.clone();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, value.to_string()).unwrap();
        let err = BenchResult::load(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains(field), "{pointer}={bad}: {err}");
    }
    // JSON numbers beyond f64 are a parse error, also naming the file.
    let text = std::fs::read_to_string(&saved).unwrap();
    let huge = text.replacen("\"throughput_per_s\": 300.0", "\"throughput_per_s\": 1e999", 1);
    assert_ne!(huge, text);
    let path = dir.path().join("huge.json");
    std::fs::write(&path, huge).unwrap();
    assert!(BenchResult::load(&path).unwrap_err().to_string().contains("huge.json"));

    // Results built in memory are checked by the report too (nothing reaches the charts unchecked).
    let mut results = fixtures();
    results[2].throughput_per_s = 1.7e308;
    let err = write_report(&results, dir.path(), None).unwrap_err().to_string();
    assert!(err.contains("result 3") && err.contains("`throughput_per_s`"), "{err}");
    results[2].throughput_per_s = f64::NAN;
    assert!(write_report(&results, dir.path(), None).is_err());
}

/// Item: every string a result holds goes into the markdown escaped, on one line; the p99 bound
/// must be a positive, finite number.
#[test]
fn strings_from_results_cannot_inject_markdown_and_the_p99_bound_is_checked() {
    let mut results = fixtures();
    results.push(result("c7i.xlarge", ScenarioKind::Server, 100.0, 10.0, false, vec![(50.0, 5.0, true)]));
    for r in &mut results {
        r.system = "1. evil\n## injected | col\r\n- item".into();
        r.model = "m|x\n# heading <b>".into();
        r.backend = "cpu | `code` [link](http://x) *em*".into();
        r.cost_basis = "a|b\u{2028}c".into();
        r.invalid_reasons = vec!["line one\n\n# two | three".into()];
        r.environment.device_name = "dev\n\n1. list".into();
        r.environment.git_commit = "<script>alert(1)</script>".into();
        if let Some(p) = &mut r.price {
            p.basis = "on-demand\n| x | y |".into();
        }
    }
    results[0].instance_type = Some("c7i.xlarge|fake\ncolumn".into());
    let dir = tempfile::tempdir().unwrap();
    let md = std::fs::read_to_string(write_report(&results, dir.path(), Some(50.0)).unwrap()).unwrap();

    let headings: Vec<&str> = md.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(
        headings,
        ["# accelrt benchmark report", r"## m\|x \# heading \<b\>", "## Prices", "## Environments"],
        "{md}"
    );
    let unescaped_pipes = |line: &str| line.match_indices('|').filter(|(i, _)| !line[..*i].ends_with('\\')).count();
    for line in md.lines().filter(|l| l.starts_with('|')) {
        let n = unescaped_pipes(line);
        assert!(n == 13 || n == 11, "a table row with {n} cell borders: {line}\n{md}");
    }
    for line in md.lines().filter(|l| l.starts_with("- ")) {
        for marker in ["- ", "+ ", "# ", "1. ", "> "] {
            assert!(!line[2..].starts_with(marker), "a nested block: {line}");
        }
    }
    assert!(!md.contains("<script>") && !md.contains("<b>") && !md.contains("[link]("), "{md}");
    assert!(md.contains(r"| 1\. evil \#\# injected \| col - item |"), "{md}");
    assert!(md.contains(r"- 1\. evil \#\# injected"), "{md}");
    assert!(md.contains("accelrt 0.1.0"), "versions stay readable: {md}");
    assert!(md.contains(r"c7i.xlarge\|fake column"), "{md}");
    // Chart labels are single lines of escaped XML.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "svg") {
            let text = std::fs::read_to_string(&path).unwrap();
            roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }

    for bad in [-1.0, 0.0, f64::NAN, f64::INFINITY, 1e300] {
        let err = write_report(&fixtures(), dir.path(), Some(bad)).unwrap_err().to_string();
        assert!(err.contains("--p99-ms"), "{bad}: {err}");
    }
}

#[test]
fn markdown_text_escapes_syntax_and_keeps_plain_names_readable() {
    use accelrt_bench::report::markdown_text;
    assert_eq!(markdown_text("c7i.xlarge"), "c7i.xlarge");
    assert_eq!(markdown_text("all-minilm-l6-v2"), "all-minilm-l6-v2");
    assert_eq!(markdown_text(" a\n\tb\r\nc \u{202e}d "), "a b c d");
    assert_eq!(markdown_text("a|b"), r"a\|b");
    assert_eq!(markdown_text("- x"), r"\- x");
    assert_eq!(markdown_text("-O3"), "-O3");
    assert_eq!(markdown_text("12. x"), r"12\. x");
    assert_eq!(markdown_text("3)"), r"3\)");
    assert_eq!(markdown_text("1.5 x"), "1.5 x");
    assert_eq!(markdown_text(r"\|"), r"\\\|");
    assert_eq!(
        markdown_text("![i](u) <a> &amp; $x$ ~~s~~ _e_ `c`"),
        r"!\[i\](u) \<a\> \&amp; \$x\$ \~\~s\~\~ \_e\_ \`c\`"
    );
}

/// A result tagged `instance`, measured in `env`, priced from the catalog.
fn tagged(instance: &str, env: Environment, throughput: f64) -> BenchResult {
    let mut r = result(instance, ScenarioKind::Offline, throughput, 10.0, true, vec![]);
    r.backend = env.device.clone();
    r.environment = env;
    r.hardware = accelrt_bench::report::hardware_of(&r, &Catalog::builtin());
    r
}

fn today() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 29).unwrap()
}

fn report_of(results: &[BenchResult], p99: Option<f64>) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let options = ReportOptions { p99_ms: p99, catalog: Catalog::builtin(), today: today() };
    let path = write_report_with(results, dir.path(), &options).unwrap();
    let md = std::fs::read_to_string(path).unwrap();
    (dir, md)
}

/// Item (issue 16): a CPU run on a 2-vCPU machine tagged g5.xlarge or inf2.xlarge is not a GPU or
/// Inferentia measurement: not counted for the family, its cost not comparable, never the cheapest.
#[test]
fn a_cpu_run_is_never_reported_as_a_gpu_or_inferentia_measurement() {
    let mut small = matching_env("c7i.xlarge", "cpu", "Test CPU");
    small.cpu_threads = 2;
    small.host_accelerators.clear();
    // The right vCPUs and memory, but no Neuron device on the host.
    let mut no_neuron = matching_env("inf2.xlarge", "cpu", "Test CPU");
    no_neuron.host_accelerators.clear();
    let results = vec![tagged("g5.xlarge", small, 5000.0), tagged("inf2.xlarge", no_neuron, 9000.0)];
    for r in &results {
        let h = r.hardware.as_ref().unwrap();
        assert!(!h.matches && h.measures.is_none(), "{h:?}");
    }
    let g5 = results[0].hardware.as_ref().unwrap();
    assert!(g5.mismatches.iter().any(|m| m.contains("ran with 2 threads; g5.xlarge has 4 vCPUs")), "{g5:?}");
    assert!(g5.mismatches.iter().any(|m| m.contains("no NVIDIA A10G on this host")), "{g5:?}");
    let (_dir, md) = report_of(&results, Some(1000.0));
    assert!(md.contains("- gpu-g: not measured"), "{md}");
    assert!(md.contains("- inferentia2: not measured"), "{md}");
    assert!(!md.contains("measured on g5") && !md.contains("measured on inf2"), "{md}");
    assert!(md.contains("**Nothing measured meets p99 ≤ 1000 ms**"), "{md}");
    assert!(md.contains("| g5.xlarge (hardware does not match) |"), "{md}");
    assert!(md.contains("not comparable"), "{md}");
    assert!(md.contains("not a inf2.xlarge measurement: no AWS Inferentia2"), "{md}");
    // A result file's own verdict is not trusted: the report checks the environment again.
    let mut forged = results[0].clone();
    forged.hardware.as_mut().unwrap().matches = true;
    forged.hardware.as_mut().unwrap().measures = Some("gpu-g".into());
    let (_dir, md) = report_of(&[forged], None);
    assert!(md.contains("- gpu-g: not measured"), "{md}");
}

/// Item (issue 16), the other way: runs on the hardware they are priced as still count.
#[test]
fn runs_on_their_own_hardware_still_count_for_their_family() {
    let gpu = tagged("g5.xlarge", matching_env("g5.xlarge", "cuda:0", "NVIDIA A10G"), 3000.0);
    let host_cpu = tagged("g5.xlarge", matching_env("g5.xlarge", "cpu", "AMD EPYC 7R32"), 300.0);
    let mut neuron_env = matching_env("inf2.xlarge", "neuron:0", "AWS Inferentia2 NeuronCore-v2");
    neuron_env.device = "neuron:0".into();
    let neuron = tagged("inf2.xlarge", neuron_env, 4000.0);
    for r in [&gpu, &host_cpu, &neuron] {
        assert!(r.hardware.as_ref().unwrap().matches, "{:?}", r.hardware);
    }
    assert_eq!(gpu.hardware.as_ref().unwrap().measures.as_deref(), Some("gpu-g"));
    assert_eq!(host_cpu.hardware.as_ref().unwrap().measures.as_deref(), Some("cpu"));
    assert!(host_cpu.hardware.as_ref().unwrap().note.as_ref().unwrap().contains("host's CPU, not its NVIDIA A10G"));
    let (_dir, md) = report_of(&[gpu, host_cpu, neuron], Some(1000.0));
    assert!(md.contains("- gpu-g: measured on g5.xlarge\n"), "{md}");
    assert!(md.contains("- inferentia2: measured on inf2.xlarge\n"), "{md}");
    assert!(md.contains("- cpu: measured on g5.xlarge (host CPU)\n"), "{md}");
    assert!(md.contains("**Cheapest measured setup with p99 ≤ 1000 ms:** inf2.xlarge"), "{md}");

    // The wrong GPU model for the instance type (an L4 is not an L40S, nor a T4 an A10G).
    let t4 = tagged("g5.xlarge", matching_env("g5.xlarge", "cuda:0", "Tesla T4"), 1.0);
    assert!(!t4.hardware.as_ref().unwrap().matches);
    assert!(!accelrt_bench::hardware::same_accelerator_model("NVIDIA L4", "NVIDIA L40S"));
    assert!(accelrt_bench::hardware::same_accelerator_model("NVIDIA A100 40GB", "NVIDIA A100-SXM4-40GB"));
    // A GPU run priced as a CPU instance.
    let on_c7i = tagged("c7i.xlarge", matching_env("c7i.xlarge", "cuda:0", "NVIDIA A10G"), 1.0);
    assert!(on_c7i.hardware.as_ref().unwrap().mismatches.iter().any(|m| m.contains("has no accelerator")));
}

/// Item (issue 16): every $ figure states its price's basis and date, with a warning past a year;
/// the HTML report is one self-contained file with the charts inline and the price on hover.
#[test]
fn every_dollar_figure_states_its_price_date_and_the_html_report_is_self_contained() {
    let results = vec![
        tagged("g5.xlarge", matching_env("g5.xlarge", "cuda:0", "NVIDIA A10G"), 3000.0),
        result("c7i.xlarge", ScenarioKind::Offline, 200.0, 400.0, true, vec![]),
        result(
            "c7i.2xlarge",
            ScenarioKind::Server,
            300.0,
            40.0,
            true,
            vec![(150.0, 20.0, true), (300.0, 40.0, true), (600.0, 900.0, false)],
        ),
    ];
    let (dir, md) = report_of(&results, Some(50.0));
    assert!(md.contains("1.0060 (on-demand, read 2025-06, more than a year old)"), "{md}");
    assert!(md.contains("0.0931 (on-demand, read 2025-06, more than a year old)"), "{md}");
    assert!(md.contains("0.2479 (on-demand, read 2026-11) |"), "{md}");
    assert!(md.contains("## Prices"), "{md}");
    assert!(md.contains(r"g5.xlarge: on-demand price \$1.006/h in us-east-1, read 2025-06, 546 days old, more than a year old; source:"), "{md}");
    assert!(md.contains("WARNING: more than a year old"), "{md}");
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        !html.contains("<script") && !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no network, no scripts"
    );
    assert!(html.contains("<svg"), "charts inline");
    assert!(!html.contains("<?xml"), "no XML declaration inside HTML");
    assert!(
        html.contains(
            "title=\"on-demand price $1.006/h in us-east-1, read 2025-06, 546 days old, more than a year old; source: "
        ),
        "{html}"
    );
    assert!(html.contains("<li id=\"price-1\">"), "footnotes");
    // The latency-vs-load chart marks valid and invalid loads, the bound and the chosen load.
    let svg = std::fs::read_to_string(dir.path().join("all-minilm-l6-v2-latency-vs-load.svg")).unwrap();
    roxmltree::Document::parse(&svg).unwrap();
    assert!(svg.contains("p99 bound 50 ms") && svg.contains("chosen 300 /s"), "{svg}");
}

/// Item (issue 16): text generation gets its own charts; offline and single-stream are not on one axis.
#[test]
fn generation_and_single_stream_get_their_own_charts() {
    use accelrt_bench::result::GenerationMetrics;
    use accelrt_bench::workload::RequestStats;
    use std::time::Duration;
    let mut offline = result("c7i.xlarge", ScenarioKind::Offline, 20.0, 400.0, true, vec![]);
    let mut single = result("c7i.xlarge", ScenarioKind::SingleStream, 5.0, 200.0, true, vec![]);
    let requests = vec![
        RequestStats {
            prompt_tokens: 20,
            output_tokens: 64,
            time_to_first_token: Duration::from_millis(40),
            time_per_output_token: Some(Duration::from_millis(12)),
        };
        8
    ];
    offline.generation = Some(GenerationMetrics::new(&requests, 64, 10.0, Some(0.1785)));
    single.generation = Some(GenerationMetrics::new(&requests, 64, 10.0, Some(0.1785)));
    let (dir, md) = report_of(&[offline, single], None);
    for chart in ["throughput", "single-stream-latency", "tokens-per-s", "ttft", "tpot"] {
        let file = format!("all-minilm-l6-v2-{chart}.svg");
        assert!(md.contains(&file), "{chart}: {md}");
        let svg = std::fs::read_to_string(dir.path().join(&file)).unwrap();
        roxmltree::Document::parse(&svg).unwrap();
    }
    let throughput = std::fs::read_to_string(dir.path().join("all-minilm-l6-v2-throughput.svg")).unwrap();
    assert!(throughput.contains("offline") && !throughput.contains("single-stream"), "{throughput}");
}

/// Item (issue 16): a busy host flags a run as noisy (not invalid).
#[test]
fn noisy_runs_are_flagged_not_invalidated() {
    use accelrt_bench::environment::{host_load, CpuTimes};
    let mut r = result("c7i.xlarge", ScenarioKind::Offline, 200.0, 400.0, true, vec![]);
    let before = CpuTimes { total: 0, busy: 0, steal: 0, ours: 0 };
    let after = CpuTimes { total: 1000, busy: 900, steal: 0, ours: 500 };
    r.environment.host_load = Some(host_load(before, after, Some(3.0), true));
    assert!(r.environment.host_load.as_ref().unwrap().noisy);
    let (_dir, md) = report_of(&[r], None);
    assert!(md.contains("| c7i.xlarge | accelrt | cpu | offline | 8 | yes | noisy |"), "{md}");
    assert!(md.contains("other processes used 40 % of the host's CPU time (bound 10 %)"), "{md}");
}

/// Red-team item: an empty measurement (0 queries, 0 s: throughput 0, p99 0 ms) is not a valid
/// zero. Made in-process, built by hand or loaded from a file, it is invalid with a reason, its
/// cost is not comparable and it is never the cheapest.
#[test]
fn an_empty_measurement_is_invalid_and_never_the_cheapest() {
    let catalog = Catalog::builtin();
    let pricing = Pricing {
        instance_type: Some("c7i.xlarge".into()),
        instance_type_source: "--instance-type".into(),
        price: catalog.get("c7i.xlarge").and_then(|i| i.prices.first().cloned()),
        instance: catalog.get("c7i.xlarge").cloned(),
    };
    let m = Measurement {
        scenario: ScenarioKind::SingleStream,
        batch_size: 1,
        queries: 0,
        samples: 0,
        duration_s: 0.0,
        throughput_per_s: 0.0,
        latency_ms: Latency { p50: 0.0, p90: 0.0, p95: 0.0, p99: 0.0, p999: 0.0, max: 0.0, mean: 0.0 },
        valid: true,
        invalid_reasons: vec![],
        target_qps: None,
        p99_bound_ms: None,
    };
    let env = matching_env("c7i.xlarge", "cpu", "Test CPU");
    let empty = BenchResult::new(&m, "all-minilm-l6-v2", "accelrt", &pricing, &[], env, None);
    assert!(!empty.valid);
    assert!(empty.invalid_reasons.iter().any(|r| r.contains("empty measurement")), "{:?}", empty.invalid_reasons);
    assert_eq!(empty.usd_per_million_inferences, None);

    // A file claiming the empty run is valid (and even priced) is marked invalid on load.
    let dir = tempfile::tempdir().unwrap();
    let mut forged = empty.clone();
    forged.valid = true;
    forged.invalid_reasons.clear();
    forged.usd_per_million_inferences = Some(0.0001);
    let path = forged.save(dir.path()).unwrap();
    let loaded = BenchResult::load(&path).unwrap();
    assert!(!loaded.valid);
    assert_eq!(loaded.invalid_reasons.len(), 1, "{:?}", loaded.invalid_reasons);

    // Handed to the report directly (not loaded), it is still invalid and not the cheapest.
    let mut results = fixtures();
    results.push(forged);
    let (_dir, md) = report_of(&results, Some(50.0));
    assert!(md.contains("| c7i.xlarge | accelrt | cpu | single-stream | 1 | **no** |"), "{md}");
    assert!(md.contains("empty measurement: 0 queries answered"), "{md}");
    assert!(md.contains("**Cheapest measured setup with p99 ≤ 50 ms:** c7i.2xlarge"), "{md}");
}

/// Red-team item: a model, system or backend name of hundreds of characters made `accelrt report`
/// fail with "File name too long" (a chart named after the model) and `save` likewise; every file
/// name derived from a result's strings is bounded, and cut names stay distinct.
#[test]
fn file_names_from_long_result_strings_are_bounded_and_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = fixtures()[0].clone();
    a.model = format!("{}a", "m".repeat(400));
    a.system = "s/".repeat(200);
    a.backend = "b".repeat(300);
    a.instance_type = Some("i".repeat(300));
    let mut b = a.clone();
    b.model = format!("{}b", "m".repeat(400));
    let (na, nb) = (a.file_name(), b.file_name());
    assert!(na.len() <= 200 && nb.len() <= 200, "{} {}", na.len(), nb.len());
    assert_ne!(na, nb);
    assert!(na.ends_with(".json") && na.bytes().all(|c| c.is_ascii_alphanumeric() || b".-".contains(&c)), "{na}");
    let path = a.save(dir.path()).unwrap();
    assert_eq!(BenchResult::load(&path).unwrap().model, a.model);

    let mut long = fixtures();
    for r in &mut long {
        r.model = "x".repeat(300);
    }
    let mut other = long[0].clone();
    other.model = format!("{}y", "x".repeat(300));
    long.push(other);
    let (out, md) = report_of(&long, None);
    let svgs: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".svg"))
        .collect();
    assert!(svgs.len() >= 2, "{svgs:?}");
    for n in &svgs {
        assert!(n.len() <= 130, "{n}");
        assert!(md.contains(n.as_str()), "{n} not in the report");
    }
}
