//! Result files and the merged report, from fixture results.

use accelrt_bench::catalog::Catalog;
use accelrt_bench::environment::Environment;
use accelrt_bench::report::write_report;
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
    let pricing =
        Pricing { instance_type: Some(instance.into()), instance_type_source: "--instance-type".into(), price };
    let device = DeviceInfo {
        kind: DeviceKind::Cpu,
        spec: "cpu".into(),
        name: "Test CPU".into(),
        memory_total_bytes: None,
        memory_free_bytes: None,
        details: vec![],
    };
    BenchResult::new(&m, "all-minilm-l6-v2", "accelrt", &pricing, &sweep, Environment::capture("candle", &device), None)
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
    assert!(md.contains("| c7i.xlarge | accelrt | cpu | offline | 8 | yes | 200.0 | 400.00 | 0.1785 (on-demand) | 0.2479 | offline throughput |"), "{md}");
    assert!(md.contains("| inf2.xlarge | accelrt | cpu | server | 8 | **no** |"), "{md}");
    assert!(md.contains("Invalid runs"), "{md}");
    // Only the c7i.2xlarge server run is valid with p99 ≤ 50 ms.
    assert!(
        md.contains(
            "**Cheapest measured setup with p99 ≤ 50 ms:** c7i.2xlarge (accelrt, cpu, server at batch 8) at $0.3306"
        ),
        "{md}"
    );
    assert!(md.contains("- gpu-g: not measured"), "{md}");
    assert!(md.contains("- cpu: measured on c7i.xlarge, c7i.2xlarge"), "{md}");
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
    assert_eq!(headings, ["# accelrt benchmark report", r"## m\|x \# heading \<b\>", "## Environments"], "{md}");
    let unescaped_pipes = |line: &str| line.match_indices('|').filter(|(i, _)| !line[..*i].ends_with('\\')).count();
    for line in md.lines().filter(|l| l.starts_with('|')) {
        let n = unescaped_pipes(line);
        assert!(n == 12 || n == 11, "a table row with {n} cell borders: {line}\n{md}");
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
