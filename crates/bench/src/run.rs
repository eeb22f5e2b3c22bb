//! One `accelrt bench` invocation: the model on one backend (and, optionally, its peers) through
//! every requested scenario.

use crate::catalog::{Catalog, Price};
use crate::clock::RealClock;
use crate::environment::Environment;
use crate::limits::{check_flag, Limit};
use crate::peers::{ExternalRunner, PeerOptions};
use crate::progress::Progress;
use crate::result::{usd_per_million, BenchResult, GenerationMetrics, Pricing};
use crate::scenario::{self, Measurement, RunRules, ScenarioKind};
use crate::workload::{EmbeddingWorkload, GenerationWorkload, RequestStats, Workload};
use crate::{BenchError, Result};
use accelrt_core::{Backend, PrepareOptions};
use accelrt_models::{ChatMessage, ModelKind, ModelStore, SentenceEmbedder, TextGenerator};
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
    /// Text generation: new tokens per request.
    pub max_tokens: usize,
    /// Text generation: positions each sequence's cache holds.
    pub context: usize,
    /// `--url`: clients with a request out at once in the offline scenario over HTTP.
    pub concurrency: usize,
}

/// What a benchmark run produced. A failing peer does not discard what was measured.
pub struct Outcome {
    /// One result per (system, scenario).
    pub results: Vec<BenchResult>,
    /// Peers that could not be measured, with why.
    pub peer_failures: Vec<BenchError>,
}

/// Runs the benchmark on accelrt, then on each peer. Sentence-embedding models run the embedding
/// workload; GGUF decoders the generation workload (TTFT, TPOT, output tokens/s, $/1M tokens).
pub fn run(config: &BenchConfig, backend: &dyn Backend, store: &ModelStore) -> Result<Outcome> {
    validate(config)?;
    let (path, kind) = resolve_model(&config.model, store)?;
    let model_name = accelrt_models::lookup(&config.model).map(|s| s.id.to_string()).unwrap_or_else(|_| {
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| config.model.clone())
    });
    match kind {
        ModelKind::SentenceEmbedding => run_embedding(config, backend, &path, &model_name),
        ModelKind::TextGeneration => run_generation(config, backend, &path, &model_name),
    }
}

/// The model's files (a directory, or a GGUF file) and what kind of model it is.
fn resolve_model(model: &str, store: &ModelStore) -> Result<(PathBuf, ModelKind)> {
    let path = Path::new(model);
    if path.exists() {
        let is_gguf = accelrt_models::generator::is_gguf_model(path);
        let kind = if is_gguf { ModelKind::TextGeneration } else { ModelKind::SentenceEmbedding };
        let path = if is_gguf { accelrt_models::generator::find_gguf(path)? } else { path.to_path_buf() };
        return Ok((path, kind));
    }
    let spec = accelrt_models::lookup(model)?;
    let dir = store.ensure(spec)?;
    Ok(match spec.kind {
        ModelKind::TextGeneration => (accelrt_models::generator::find_gguf(&dir)?, ModelKind::TextGeneration),
        ModelKind::SentenceEmbedding => (dir, ModelKind::SentenceEmbedding),
    })
}

fn device_bytes(backend: &dyn Backend) -> Option<u64> {
    backend.device_info().ok().and_then(|d| match (d.memory_total_bytes, d.memory_free_bytes) {
        (Some(t), Some(f)) if d.kind != accelrt_core::DeviceKind::Cpu => Some(t.saturating_sub(f)),
        _ => None,
    })
}

fn run_embedding(config: &BenchConfig, backend: &dyn Backend, dir: &Path, model_name: &str) -> Result<Outcome> {
    let embedder = SentenceEmbedder::load(dir, backend, &config.options)?;
    let device = backend.device_info()?;
    let mut results = Vec::new();
    {
        let mut workload = EmbeddingWorkload::new(&embedder, config.texts.clone())?;
        for (m, sweep, _) in run_scenarios(config, &mut workload, "accelrt")? {
            let env = Environment::capture(backend.name(), &device);
            results.push(BenchResult::new(
                &m,
                model_name,
                "accelrt",
                &config.pricing,
                &sweep,
                env,
                device_bytes(backend),
            ));
        }
    }
    drop(embedder);
    let mut peer_failures = Vec::new();
    for (name, script) in &config.peers {
        match run_peer(config, name, script, dir, model_name, &device, config.texts.clone(), None) {
            Ok(r) => results.extend(r),
            Err(e) => peer_failures.push(e),
        }
    }
    Ok(Outcome { results, peer_failures })
}

fn run_generation(config: &BenchConfig, backend: &dyn Backend, gguf: &Path, model_name: &str) -> Result<Outcome> {
    if config.scenarios.contains(&ScenarioKind::Server) {
        return Err(BenchError::Invalid(
            "the in-process server scenario is not available for text generation (it would need the harness \
             to batch continuously); measure it against `accelrt serve` with `--url`, or use offline and single-stream"
                .into(),
        ));
    }
    let generator = TextGenerator::load(gguf, backend, &config.options, config.context)?;
    // Instruct models get each text as a user message in their own chat template (tokenised as the
    // server does: the text is text, only the template's markers are control).
    let chat = generator.tokenizer().chat_template().is_some();
    let prompts = config
        .texts
        .iter()
        .map(|t| if chat { generator.chat_prompt(&[ChatMessage::new("user", t)]) } else { generator.text_prompt(t) })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // Peers are given the same prompts as text.
    let prompts_text: Vec<String> = config
        .texts
        .iter()
        .map(|t| {
            if chat {
                generator.tokenizer().apply_chat_template(&[ChatMessage::new("user", t)])
            } else {
                Ok(t.clone())
            }
        })
        .collect::<std::result::Result<_, _>>()?;
    if let Some(p) = prompts.iter().find(|p| p.len() + config.max_tokens > generator.context()) {
        return Err(BenchError::Invalid(format!(
            "a prompt of {} tokens plus {} new tokens does not fit the context of {} (raise --context)",
            p.len(),
            config.max_tokens,
            generator.context()
        )));
    }
    let device = backend.device_info()?;
    let mut results = Vec::new();
    {
        let mut workload = GenerationWorkload::new(&generator, prompts, config.max_tokens)?;
        for (m, sweep, requests) in run_scenarios(config, &mut workload, "accelrt")? {
            let env = Environment::capture(backend.name(), &device);
            let mut r =
                BenchResult::new(&m, model_name, "accelrt", &config.pricing, &sweep, env, device_bytes(backend));
            r.generation =
                Some(GenerationMetrics::new(&requests, config.max_tokens, m.duration_s, r.price_usd_per_hour));
            results.push(r);
        }
    }
    drop(generator);
    let mut peer_failures = Vec::new();
    for (name, script) in &config.peers {
        match run_peer(config, name, script, gguf, model_name, &device, prompts_text.clone(), Some(config.max_tokens)) {
            Ok(r) => results.extend(r),
            Err(e) => peer_failures.push(e),
        }
    }
    Ok(Outcome { results, peer_failures })
}

#[allow(clippy::too_many_arguments)]
fn run_peer(
    config: &BenchConfig,
    name: &str,
    script: &Path,
    dir: &Path,
    model_name: &str,
    device: &accelrt_core::DeviceInfo,
    inputs: Vec<String>,
    max_tokens: Option<usize>,
) -> Result<Vec<BenchResult>> {
    let mut results = Vec::new();
    {
        let options = PeerOptions {
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            device: config.peer_device.clone(),
            dtype: config.peer_dtype.clone(),
            max_tokens,
        };
        let mut runner = ExternalRunner::spawn(name, script, dir, &options, inputs)?;
        let info = runner.info.clone();
        for (m, sweep, requests) in run_scenarios(config, &mut runner, name)? {
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
            if let Some(n) = max_tokens {
                r.generation = Some(GenerationMetrics::new(&requests, n, m.duration_s, r.price_usd_per_hour));
            }
            results.push(r);
        }
    }
    Ok(results)
}

/// Refuses a configuration before anything runs: every number by its kind (each error names its
/// flag), then the combinations the scenarios need.
pub fn validate(config: &BenchConfig) -> Result<()> {
    check_flag("--batch-size", config.batch_size as f64, Limit::BATCH)?;
    if let Some(rules) = &config.rules {
        check_flag("--warmup", rules.warmup.as_secs_f64(), Limit::SECONDS)?;
        check_flag("--min-duration", rules.min_duration.as_secs_f64(), Limit::SECONDS)?;
        check_flag("--min-queries", rules.min_queries as f64, Limit::MIN_QUERIES)?;
    }
    if let Some(qps) = config.qps {
        check_flag("--qps", qps, Limit::LOAD)?;
    }
    if let Some(bound) = config.p99_ms {
        check_flag("--p99-ms", bound, Limit::LATENCY_BOUND_MS)?;
    }
    check_flag("--search-steps", config.search_steps as f64, Limit::STEPS)?;
    check_flag("--concurrency", config.concurrency as f64, Limit::CLIENTS)?;
    check_flag("--max-tokens", config.max_tokens as f64, Limit::TOKENS)?;
    check_flag("--context", config.context as f64, Limit::TOKENS)?;
    if let Some(price) = &config.pricing.price {
        let name = match price.source.as_str() {
            "--price-per-hour" => "--price-per-hour".to_string(),
            source => format!("the price per hour from {source}"),
        };
        check_flag(&name, price.usd_per_hour, Limit::PRICE_PER_HOUR)?;
    }
    if config.scenarios.is_empty() {
        return Err(BenchError::Invalid("no scenario to run".into()));
    }
    if config.scenarios.contains(&ScenarioKind::Server) {
        if config.p99_ms.is_none() {
            return Err(BenchError::Invalid("the server scenario needs --p99-ms".into()));
        }
        if config.qps.is_none() && !config.find_max_qps {
            return Err(BenchError::Invalid("the server scenario needs --qps or --find-max-qps".into()));
        }
    }
    Ok(())
}

fn rules_for(config: &BenchConfig, kind: ScenarioKind) -> RunRules {
    config.rules.unwrap_or_else(|| RunRules::mlperf(kind))
}

/// What one scenario produced: its measurement, the server's sweep, and (generation) the requests.
type ScenarioOutput = (Measurement, Vec<Measurement>, Vec<RequestStats>);

/// Every requested scenario on one workload.
fn run_scenarios(config: &BenchConfig, w: &mut dyn Workload, system: &str) -> Result<Vec<ScenarioOutput>> {
    let clock = RealClock::new();
    let mut out: Vec<ScenarioOutput> = Vec::new();
    for &kind in &config.scenarios {
        let rules = rules_for(config, kind);
        let progress = Progress::new(&format!("{system} {kind}"), rules.warmup + rules.min_duration, config.progress);
        match kind {
            ScenarioKind::Offline => {
                let m = scenario::offline(w, &clock, &rules, config.batch_size, &progress)?;
                out.push((m, vec![], w.take_requests()));
            }
            ScenarioKind::SingleStream => {
                let m = scenario::single_stream(w, &clock, &rules, &progress)?;
                out.push((m, vec![], w.take_requests()));
            }
            ScenarioKind::Server => {
                let bound = config.p99_ms.expect("validated");
                if config.find_max_qps {
                    // Start from the offline rate: no arrival rate above it can be sustained for long.
                    let upper = match out.iter().find(|(m, ..)| m.scenario == ScenarioKind::Offline) {
                        Some((m, ..)) => m.throughput_per_s,
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
                    out.push((shown, sweep, w.take_requests()));
                } else {
                    let qps = config.qps.expect("validated");
                    let m = scenario::server(w, &clock, &rules, config.batch_size, qps, bound, config.seed, &progress)?;
                    out.push((m, vec![], w.take_requests()));
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
    let generation: Vec<&BenchResult> = results.iter().filter(|r| r.generation.is_some()).collect();
    if !generation.is_empty() {
        writeln!(
            s,
            "\ntext generation ({} new tokens per request; inferences above are requests):",
            generation[0].generation.as_ref().map_or(0, |g| g.max_tokens)
        )
        .unwrap();
        writeln!(
            s,
            "{:<12} {:<14} {:>5} {:>9} {:>11} {:>11} {:>11} {:>11} {:>12}",
            "system", "scenario", "batch", "tokens/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "$/1M tokens"
        )
        .unwrap();
        for r in generation {
            let g = r.generation.as_ref().expect("filtered");
            let cost = g.usd_per_million_output_tokens.map(|c| format!("{c:.4}")).unwrap_or_else(|| "—".into());
            writeln!(
                s,
                "{:<12} {:<14} {:>5} {:>9.1} {:>8.1} ms {:>8.1} ms {:>8.2} ms {:>8.2} ms {:>12}",
                r.system,
                r.scenario.to_string(),
                r.batch_size,
                g.output_tokens_per_s,
                g.ttft_ms.p50,
                g.ttft_ms.p99,
                g.tpot_ms.p50,
                g.tpot_ms.p99,
                cost
            )
            .unwrap();
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
