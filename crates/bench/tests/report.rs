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
