//! One `accelrt bench` invocation: the model on one backend (and, optionally, its peers) through
//! every requested scenario.

use crate::catalog::{Catalog, Price};
use crate::clock::RealClock;
use crate::environment::Environment;
use crate::peers::{ExternalRunner, PeerOptions};
use crate::progress::Progress;
use crate::result::{usd_per_million, BenchResult, Pricing};
use crate::scenario::{self, Measurement, RunRules, ScenarioKind};
use crate::workload::{EmbeddingWorkload, Workload};
use crate::{BenchError, Result};
use accelrt_core::{Backend, PrepareOptions};
use accelrt_models::{ModelStore, SentenceEmbedder};
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// A known model name or a model directory.
    pub model: String,
    pub scenarios: Vec<ScenarioKind>,
    /// Samples per query offline; the largest dynamic batch in the server scenario.
    pub batch_size: usize,
    /// Rules for every scenario; `None` uses MLPerf's per-scenario minimums.
    pub rules: Option<RunRules>,
    pub qps: Option<f64>,
    pub p99_ms: Option<f64>,
    pub find_max_qps: bool,
    pub search_steps: usize,
    pub texts: Vec<String>,
    /// Peer runners: (name, script path), and how they run.
    pub peers: Vec<(String, PathBuf)>,
    pub peer_device: String,
    pub peer_dtype: String,
    pub pricing: Pricing,
    pub options: PrepareOptions,
    pub progress: bool,
    pub seed: u64,
}

/// What a benchmark run produced. A failing peer does not discard what was measured.
pub struct Outcome {
    /// One result per (system, scenario).
    pub results: Vec<BenchResult>,
    /// Peers that could not be measured, with why.
    pub peer_failures: Vec<BenchError>,
}

/// Runs the benchmark on accelrt, then on each peer.
pub fn run(config: &BenchConfig, backend: &dyn Backend, store: &ModelStore) -> Result<Outcome> {
    validate(config)?;
    let dir = accelrt_models::resolve_model_dir(&config.model, store)?;
    let model_name = accelrt_models::lookup(&config.model).map(|s| s.id.to_string()).unwrap_or_else(|_| {
        dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| config.model.clone())
    });
    let embedder = SentenceEmbedder::load(&dir, backend, &config.options)?;
    let device = backend.device_info()?;
    let mut results = Vec::new();
    {
        let mut workload = EmbeddingWorkload::new(&embedder, config.texts.clone())?;
        for (m, sweep) in run_scenarios(config, &mut workload, "accelrt")? {
            let env = Environment::capture(backend.name(), &device);
            let device_bytes =
                backend.device_info().ok().and_then(|d| match (d.memory_total_bytes, d.memory_free_bytes) {
                    (Some(t), Some(f)) if d.kind != accelrt_core::DeviceKind::Cpu => Some(t.saturating_sub(f)),
                    _ => None,
                });
            results.push(BenchResult::new(&m, &model_name, "accelrt", &config.pricing, &sweep, env, device_bytes));
        }
    }
    drop(embedder);
    let mut peer_failures = Vec::new();
    for (name, script) in &config.peers {
        match run_peer(config, name, script, &dir, &model_name, &device) {
            Ok(r) => results.extend(r),
            Err(e) => peer_failures.push(e),
        }
    }
    Ok(Outcome { results, peer_failures })
}

fn run_peer(
    config: &BenchConfig,
    name: &str,
    script: &Path,
    dir: &Path,
    model_name: &str,
    device: &accelrt_core::DeviceInfo,
) -> Result<Vec<BenchResult>> {
    let mut results = Vec::new();
    {
        let options = PeerOptions {
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            device: config.peer_device.clone(),
            dtype: config.peer_dtype.clone(),
        };
        let mut runner = ExternalRunner::spawn(name, script, dir, &options, config.texts.clone())?;
        let info = runner.info.clone();
        for (m, sweep) in run_scenarios(config, &mut runner, name)? {
            let mut env = Environment::capture(&info.system, device);
            env.device = info.device.clone().unwrap_or_else(|| config.peer_device.clone());
            env.details = info
                .versions
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect();
            if let Some(d) = &info.dtype {
                env.details.push(("dtype".into(), d.clone()));
            }
            // A peer's own memory is not this process's; leave it out rather than misreport it.
            let mut r = BenchResult::new(&m, model_name, &info.system, &config.pricing, &sweep, env, None);
            r.memory.peak_host_bytes = None;
            results.push(r);
        }
    }
    Ok(results)
}

fn validate(config: &BenchConfig) -> Result<()> {
    if config.batch_size == 0 {
        return Err(BenchError::Invalid("--batch-size must be at least 1".into()));
    }
    if config.scenarios.is_empty() {
        return Err(BenchError::Invalid("no scenario to run".into()));
    }
    if config.scenarios.contains(&ScenarioKind::Server) {
        match (config.p99_ms, config.qps, config.find_max_qps) {
            (None, _, _) => return Err(BenchError::Invalid("the server scenario needs --p99-ms".into())),
            (Some(_), None, false) => {
                return Err(BenchError::Invalid("the server scenario needs --qps or --find-max-qps".into()))
            }
            (Some(b), _, _) if !(b.is_finite() && b > 0.0) => {
                return Err(BenchError::Invalid("--p99-ms must be positive".into()))
            }
            _ => {}
        }
    }
    Ok(())
}

fn rules_for(config: &BenchConfig, kind: ScenarioKind) -> RunRules {
    config.rules.unwrap_or_else(|| RunRules::mlperf(kind))
}

/// Every requested scenario on one workload; the server's sweep comes with its result.
fn run_scenarios(
    config: &BenchConfig,
    w: &mut dyn Workload,
    system: &str,
) -> Result<Vec<(Measurement, Vec<Measurement>)>> {
    let clock = RealClock::new();
    let mut out: Vec<(Measurement, Vec<Measurement>)> = Vec::new();
    for &kind in &config.scenarios {
        let rules = rules_for(config, kind);
        let progress = Progress::new(&format!("{system} {kind}"), rules.warmup + rules.min_duration, config.progress);
        match kind {
            ScenarioKind::Offline => {
                out.push((scenario::offline(w, &clock, &rules, config.batch_size, &progress)?, vec![]));
            }
            ScenarioKind::SingleStream => out.push((scenario::single_stream(w, &clock, &rules, &progress)?, vec![])),
            ScenarioKind::Server => {
                let bound = config.p99_ms.expect("validated");
                if config.find_max_qps {
                    // Start from the offline rate: no arrival rate above it can be sustained for long.
                    let upper = match out.iter().find(|(m, _)| m.scenario == ScenarioKind::Offline) {
                        Some((m, _)) => m.throughput_per_s,
                        None => {
                            let quick = RunRules {
                                min_queries: 8,
                                min_duration: rules.min_duration.min(std::time::Duration::from_secs(3)),
                                ..rules
                            };
                            scenario::offline(w, &clock, &quick, config.batch_size, &Progress::hidden())?
                                .throughput_per_s
                        }
                    };
                    let (best, sweep) = scenario::find_max_qps(
                        w,
                        &clock,
                        &rules,
                        config.batch_size,
                        upper,
                        bound,
                        config.search_steps,
                        config.seed,
                    )?;
                    // With no valid load, report the lowest one tried (invalid) so the failure is visible.
                    let shown = best.or_else(|| sweep.first().cloned()).expect("at least one step");
                    out.push((shown, sweep));
                } else {
                    let qps = config.qps.expect("validated");
                    out.push((
                        scenario::server(w, &clock, &rules, config.batch_size, qps, bound, config.seed, &progress)?,
                        vec![],
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// The table `accelrt bench` prints.
pub fn summary(results: &[BenchResult], catalog: &Catalog) -> String {
    let mut s = String::new();
    let Some(first) = results.first() else { return s };
    writeln!(
        s,
        "model {} on {} ({}), {} threads",
        first.model, first.backend, first.environment.device_name, first.environment.cpu_threads
    )
    .unwrap();
    match (&first.instance_type, &first.price) {
        (Some(t), Some(p)) => writeln!(s, "instance {t} (from {}): ${:.4}/h {} — {}, read {}", first.instance_type_source, p.usd_per_hour, p.basis, p.source, p.date_read).unwrap(),
        (Some(t), None) => writeln!(s, "instance {t} (from {}): no price known; pass --price-per-hour or --prices FILE", first.instance_type_source).unwrap(),
        (None, Some(p)) => writeln!(s, "instance type unknown; price ${:.4}/h from {}", p.usd_per_hour, p.source).unwrap(),
        (None, None) => writeln!(s, "instance type unknown: pass --instance-type (or set ACCELRT_INSTANCE_TYPE, or --imds on EC2) or --price-per-hour for $/1M").unwrap(),
    }
    writeln!(s).unwrap();
    writeln!(
        s,
        "{:<12} {:<14} {:>5} {:>6} {:>12} {:>9} {:>9} {:>9} {:>10}",
        "system", "scenario", "batch", "valid", "inferences/s", "p50 ms", "p90 ms", "p99 ms", "$/1M"
    )
    .unwrap();
    for r in results {
        let cost = r.usd_per_million_inferences.map(|c| format!("{c:.4}")).unwrap_or_else(|| "—".into());
        writeln!(
            s,
            "{:<12} {:<14} {:>5} {:>6} {:>12.1} {:>9.2} {:>9.2} {:>9.2} {:>10}",
            r.system,
            r.scenario.to_string(),
            r.batch_size,
            if r.valid { "yes" } else { "NO" },
            r.throughput_per_s,
            r.latency_ms.p50,
            r.latency_ms.p90,
            r.latency_ms.p99,
            cost
        )
        .unwrap();
        for reason in &r.invalid_reasons {
            writeln!(s, "{:<12}   invalid: {reason}", "").unwrap();
        }
    }
    // The same measured throughput priced at the catalog's instances of this device kind. These are
    // prices applied to this machine's measurement, not measurements on those instances.
    let kind = if first.backend.starts_with("cuda") {
        "cuda"
    } else if first.backend.starts_with("neuron") {
        "neuron"
    } else {
        "cpu"
    };
    let best = results
        .iter()
        .filter(|r| r.system == "accelrt" && r.valid && r.scenario != ScenarioKind::SingleStream)
        .max_by(|a, b| a.throughput_per_s.total_cmp(&b.throughput_per_s));
    if let Some(best) = best {
        let rows: Vec<(&str, &Price)> = catalog
            .instances
            .iter()
            .filter(|i| i.accelerator.as_ref().map_or("cpu", |a| a.kind.as_str()) == kind)
            .filter_map(|i| i.prices.iter().find(|p| p.basis == "on-demand").map(|p| (i.instance_type.as_str(), p)))
            .collect();
        if !rows.is_empty() {
            writeln!(s, "\nWhat-if, NOT measured there: catalog on-demand prices applied to this run's {} throughput ({:.1}/s).", best.scenario, best.throughput_per_s).unwrap();
            writeln!(s, "Only a run on the instance itself measures it (`accelrt report` uses measured runs only).")
                .unwrap();
            for (t, p) in rows {
                let c = usd_per_million(p.usd_per_hour, best.throughput_per_s).unwrap_or(f64::NAN);
                writeln!(s, "  {t:<14} ${:.4}/h → ${c:.4} per 1M if it matched this throughput", p.usd_per_hour)
                    .unwrap();
            }
        }
    }
    s
}

/// Reads an input set: one text per line.
pub fn read_texts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
    let texts: Vec<String> = text.lines().map(str::to_string).collect();
    if texts.is_empty() {
        return Err(BenchError::File { path: path.into(), message: "no texts in the input set".into() });
    }
    Ok(texts)
}
