//! One `accelrt bench` invocation: the model on one backend (and, optionally, its peers) through
//! every requested scenario.

use crate::catalog::{Catalog, Price};
use crate::clock::RealClock;
use crate::environment::{Environment, HostLoad, LoadProbe};
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
use std::time::Duration;

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
    /// Where each result is written as soon as its scenario completes (`None`: kept in memory only).
    pub out: Option<PathBuf>,
}

/// What a benchmark run produced. A failing peer does not discard what was measured, and Ctrl-C
/// keeps the scenarios completed before it.
#[derive(Default)]
pub struct Outcome {
    /// One result per (system, scenario), in the order they completed.
    pub results: Vec<BenchResult>,
    /// The files written (with [`BenchConfig::out`] set), one per result, each as soon as its
    /// scenario completed.
    pub written: Vec<PathBuf>,
    /// Peers that could not be measured, with why.
    pub peer_failures: Vec<BenchError>,
    /// The run was stopped by Ctrl-C; `results` holds what completed before.
    pub interrupted: bool,
}

impl Outcome {
    /// Keeps a result, writing it at once when the configuration names an output directory.
    pub(crate) fn keep(&mut self, config: &BenchConfig, r: BenchResult) -> Result<()> {
        if let Some(dir) = &config.out {
            self.written.push(r.save(dir)?);
        }
        self.results.push(r);
        Ok(())
    }
}

/// Which workload a model runs: GGUF decoders generate text, everything else embeds. Does not
/// fetch anything.
pub fn model_kind(model: &str) -> Result<ModelKind> {
    let path = Path::new(model);
    if path.exists() {
        return Ok(if accelrt_models::generator::is_gguf_model(path) {
            ModelKind::TextGeneration
        } else {
            ModelKind::SentenceEmbedding
        });
    }
    Ok(accelrt_models::lookup(model)?.kind)
}

/// The run rules and batch size `accelrt bench` uses when not told otherwise, per kind of model:
/// sized so the default run (offline and single-stream) takes about a minute on a 2-vCPU machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    /// Samples (prompts) per offline query.
    pub batch_size: usize,
    /// Warm-up and minimum measured time, per scenario.
    pub rules: RunRules,
}

impl Defaults {
    /// Embeddings: batches of 32, 2 s warm-up, ≥ 10 s and ≥ 64 queries per scenario.
    pub const EMBEDDING: Defaults = Defaults {
        batch_size: 32,
        rules: RunRules { warmup: Duration::from_secs(2), min_duration: Duration::from_secs(10), min_queries: 64 },
    };
    /// Text generation: batches of 4 prompts, 1 s warm-up, ≥ 10 s and ≥ 4 queries per scenario
    /// (each query decodes `--max-tokens` tokens per prompt).
    pub const GENERATION: Defaults = Defaults {
        batch_size: 4,
        rules: RunRules { warmup: Duration::from_secs(1), min_duration: Duration::from_secs(10), min_queries: 4 },
    };

    /// The defaults for a kind of model.
    pub fn for_kind(kind: ModelKind) -> Defaults {
        match kind {
            ModelKind::SentenceEmbedding => Defaults::EMBEDDING,
            ModelKind::TextGeneration => Defaults::GENERATION,
        }
    }
}

/// Runs the benchmark on accelrt, then on each peer. Sentence-embedding models run the embedding
/// workload; GGUF decoders the generation workload (TTFT, TPOT, output tokens/s, $/1M tokens).
/// The instance type is checked against this machine first ([`Pricing::preflight`]).
pub fn run(config: &BenchConfig, backend: &dyn Backend, store: &ModelStore) -> Result<Outcome> {
    validate(config)?;
    let device = backend.device_info()?;
    config.pricing.preflight(&Environment::capture(backend.name(), &device))?;
    if !config.peers.is_empty() {
        let mut env = Environment::capture(&config.peer_device, &device);
        env.device = config.peer_device.clone();
        config.pricing.preflight(&env)?;
    }
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
    let mut outcome = Outcome::default();
    {
        let mut workload = EmbeddingWorkload::new(&embedder, config.texts.clone())?;
        outcome.interrupted = run_scenarios(config, &mut workload, "accelrt", &[], &mut |o| {
            let mut env = Environment::capture(backend.name(), &device);
            env.host_load = o.load;
            let r =
                BenchResult::new(&o.m, model_name, "accelrt", &config.pricing, &o.sweep, env, device_bytes(backend));
            outcome.keep(config, r)
        })?;
    }
    drop(embedder);
    for (name, script) in &config.peers {
        if outcome.interrupted {
            break;
        }
        if let Err(e) =
            run_peer(config, name, script, dir, model_name, &device, config.texts.clone(), None, &mut outcome)
        {
            outcome.peer_failures.push(e);
        }
    }
    Ok(outcome)
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
    let mut outcome = Outcome::default();
    {
        let mut workload = GenerationWorkload::new(&generator, prompts, config.max_tokens)?;
        outcome.interrupted = run_scenarios(config, &mut workload, "accelrt", &[], &mut |o| {
            let mut env = Environment::capture(backend.name(), &device);
            env.host_load = o.load;
            let mut r =
                BenchResult::new(&o.m, model_name, "accelrt", &config.pricing, &o.sweep, env, device_bytes(backend));
            r.generation =
                Some(GenerationMetrics::new(&o.requests, config.max_tokens, o.m.duration_s, r.price_usd_per_hour));
            outcome.keep(config, r)
        })?;
    }
    drop(generator);
    for (name, script) in &config.peers {
        if outcome.interrupted {
            break;
        }
        if let Err(e) = run_peer(
            config,
            name,
            script,
            gguf,
            model_name,
            &device,
            prompts_text.clone(),
            Some(config.max_tokens),
            &mut outcome,
        ) {
            outcome.peer_failures.push(e);
        }
    }
    Ok(outcome)
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
    outcome: &mut Outcome,
) -> Result<()> {
    let options = PeerOptions {
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        device: config.peer_device.clone(),
        dtype: config.peer_dtype.clone(),
        max_tokens,
    };
    let mut runner = ExternalRunner::spawn(name, script, dir, &options, inputs)?;
    let info = runner.info.clone();
    let pid = runner.pid();
    outcome.interrupted = run_scenarios(config, &mut runner, name, &[pid], &mut |o| {
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
        env.host_load = o.load;
        // A peer's own memory is not this process's; leave it out rather than misreport it.
        let mut r = BenchResult::new(&o.m, model_name, &info.system, &config.pricing, &o.sweep, env, None);
        r.memory.peak_host_bytes = None;
        if let Some(n) = max_tokens {
            r.generation = Some(GenerationMetrics::new(&o.requests, n, o.m.duration_s, r.price_usd_per_hour));
        }
        outcome.keep(config, r)
    })?;
    Ok(())
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

/// What one scenario produced: its measurement, the server's sweep, (generation) the requests, and
/// the host's load while it ran.
pub(crate) struct ScenarioOutput {
    pub m: Measurement,
    pub sweep: Vec<Measurement>,
    pub requests: Vec<RequestStats>,
    pub load: Option<HostLoad>,
}

/// Every requested scenario on one workload; `emit` gets each as soon as it completes. Returns
/// whether Ctrl-C stopped the run (the scenario in flight is then dropped).
fn run_scenarios(
    config: &BenchConfig,
    w: &mut dyn Workload,
    system: &str,
    pids: &[u32],
    emit: &mut dyn FnMut(ScenarioOutput) -> Result<()>,
) -> Result<bool> {
    let clock = RealClock::new();
    let mut offline_rate = None;
    for &kind in &config.scenarios {
        let probe = LoadProbe::start(pids.to_vec());
        match run_scenario(config, w, system, kind, &clock, offline_rate) {
            Ok((m, sweep)) => {
                if m.scenario == ScenarioKind::Offline {
                    offline_rate = Some(m.throughput_per_s);
                }
                let requests = w.take_requests();
                emit(ScenarioOutput { m, sweep, requests, load: probe.finish(true) })?;
            }
            Err(BenchError::Interrupted) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

fn run_scenario(
    config: &BenchConfig,
    w: &mut dyn Workload,
    system: &str,
    kind: ScenarioKind,
    clock: &RealClock,
    offline_rate: Option<f64>,
) -> Result<(Measurement, Vec<Measurement>)> {
    let rules = rules_for(config, kind);
    let label = format!("{system} {kind}");
    match kind {
        ScenarioKind::Offline => {
            let progress = Progress::new(&label, &rules, config.progress);
            Ok((scenario::offline(w, clock, &rules, config.batch_size, &progress)?, vec![]))
        }
        ScenarioKind::SingleStream => {
            let progress = Progress::new(&label, &rules, config.progress);
            Ok((scenario::single_stream(w, clock, &rules, &progress)?, vec![]))
        }
        ScenarioKind::Server => {
            let bound = config.p99_ms.expect("validated");
            if !config.find_max_qps {
                let qps = config.qps.expect("validated");
                let progress = Progress::new(&format!("{label} {qps:.1}/s"), &rules, config.progress);
                let m = scenario::server(w, clock, &rules, config.batch_size, qps, bound, config.seed, &progress)?;
                return Ok((m, vec![]));
            }
            // Start from the offline rate: no arrival rate above it can be sustained for long.
            let upper = match offline_rate {
                Some(rate) => rate,
                None => {
                    let quick = RunRules {
                        min_queries: 8,
                        min_duration: rules.min_duration.min(std::time::Duration::from_secs(3)),
                        ..rules
                    };
                    let progress = Progress::new(&format!("{label} (offline rate)"), &quick, config.progress);
                    scenario::offline(w, clock, &quick, config.batch_size, &progress)?.throughput_per_s
                }
            };
            let mut step = 0;
            let (best, sweep) = scenario::search_max_qps(upper, config.search_steps, |qps| {
                step += 1;
                let label = format!("{label} {step}/{} {qps:.1}/s", config.search_steps);
                let progress = Progress::new(&label, &rules, config.progress);
                scenario::server(w, clock, &rules, config.batch_size, qps, bound, config.seed, &progress)
            })?;
            // With no valid load, report the lowest one tried (invalid) so the failure is visible.
            let shown = best.or_else(|| sweep.first().cloned()).expect("at least one step");
            Ok((shown, sweep))
        }
    }
}

/// The table `accelrt bench` prints.
pub fn summary(results: &[BenchResult], catalog: &Catalog) -> String {
    let mut s = String::new();
    let Some(first) = results.first() else { return s };
    let e = &first.environment;
    let on = if e.device_name.starts_with(&first.backend) {
        e.device_name.clone()
    } else {
        format!("{} ({})", first.backend, e.device_name)
    };
    writeln!(s, "model {} on {on}, {} threads", first.model, e.cpu_threads).unwrap();
    let today = chrono::Utc::now().date_naive();
    let dated = |p: &Price| {
        let stale = if crate::catalog::price_is_stale(p, today) { "; MORE THAN A YEAR OLD" } else { "" };
        format!("${:.4}/h {} — {}, read {}{stale}", p.usd_per_hour, p.basis, p.source, p.date_read)
    };
    match (&first.instance_type, &first.price) {
        (Some(t), Some(p)) => writeln!(s, "instance {t} (from {}): {}", first.instance_type_source, dated(p)).unwrap(),
        (Some(t), None) => writeln!(s, "instance {t} (from {}): no price known; pass --price-per-hour or --prices FILE", first.instance_type_source).unwrap(),
        (None, Some(p)) => writeln!(s, "instance type unknown; {}", dated(p)).unwrap(),
        (None, None) => writeln!(s, "instance type unknown: pass --instance-type (or set ACCELRT_INSTANCE_TYPE, or --imds on EC2) or --price-per-hour for $/1M").unwrap(),
    }
    for r in results.iter().filter(|r| r.system == first.system).take(1) {
        if let Some(h) = &r.hardware {
            if h.matches {
                if let Some(note) = &h.note {
                    writeln!(s, "note: {note}").unwrap();
                }
            } else {
                writeln!(
                    s,
                    "NOT a {} measurement: {}. The cost uses your --price-per-hour for this machine.",
                    h.instance_type,
                    h.mismatches.join("; ")
                )
                .unwrap();
            }
        }
    }
    for r in results {
        if let Some(load) = r.environment.host_load.as_ref().filter(|l| l.noisy) {
            writeln!(s, "noisy: {} {}: {}", r.system, r.scenario, load.noisy_reasons.join("; ")).unwrap();
        }
    }
    writeln!(s).unwrap();
    writeln!(
        s,
        "{:<14} {:<14} {:>5} {:>6} {:>12} {:>9} {:>9} {:>9} {:>10}",
        "system", "scenario", "batch", "valid", "inferences/s", "p50 ms", "p90 ms", "p99 ms", "$/1M"
    )
    .unwrap();
    for r in results {
        let cost = r.usd_per_million_inferences.map(|c| format!("{c:.4}")).unwrap_or_else(|| "—".into());
        writeln!(
            s,
            "{:<14} {:<14} {:>5} {:>6} {:>12.1} {:>9.2} {:>9.2} {:>9.2} {:>10}",
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
            writeln!(s, "{:<14}   invalid: {reason}", "").unwrap();
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
            "{:<14} {:<14} {:>5} {:>9} {:>11} {:>11} {:>11} {:>11} {:>12}",
            "system", "scenario", "batch", "tokens/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "$/1M tokens"
        )
        .unwrap();
        for r in generation {
            let g = r.generation.as_ref().expect("filtered");
            let cost = g.usd_per_million_output_tokens.map(|c| format!("{c:.4}")).unwrap_or_else(|| "—".into());
            writeln!(
                s,
                "{:<14} {:<14} {:>5} {:>9.1} {:>8.1} ms {:>8.1} ms {:>8.2} ms {:>8.2} ms {:>12}",
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
    let text = crate::limits::read_bounded(path, crate::limits::MAX_FILE_BYTES, "input set")?;
    let texts: Vec<String> = text.lines().map(str::to_string).collect();
    if texts.is_empty() {
        return Err(BenchError::File { path: path.into(), message: "no texts in the input set".into() });
    }
    Ok(texts)
}
