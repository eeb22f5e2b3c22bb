//! One `accelrt bench` invocation: the model on one backend (and, optionally, its peers) through
//! every requested scenario.

mod inference;
mod model;
mod scenarios;
pub mod training;

pub use model::model_kind;
pub use training::TrainingOptions;

use crate::environment::Environment;
use crate::limits::{check_flag, Limit};
use crate::result::{BenchResult, Pricing};
use crate::scenario::{RunRules, ScenarioKind};
use crate::{BenchError, Result};
use accelrt_core::{Backend, PrepareOptions};
use accelrt_models::{ModelKind, ModelStore};
use inference::{device_bytes, run_embedding, run_generation};
use model::resolve_model;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything one `accelrt bench` run needs, as the command line gives it; [`validate`] checks it
/// before anything runs.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// A known model name or a model directory.
    pub model: String,
    /// The scenarios to run, in this order; training must be alone.
    pub scenarios: Vec<ScenarioKind>,
    /// Samples per query offline; the largest dynamic batch in the server scenario; rows (pairs
    /// or windows) per step in training. 1 to 10⁶.
    pub batch_size: usize,
    /// Rules for every scenario; `None` uses MLPerf's per-scenario minimums.
    pub rules: Option<RunRules>,
    /// Server scenario: the offered load in queries/s (`--qps`); required unless `find_max_qps`.
    pub qps: Option<f64>,
    /// Server scenario: the p99 latency bound in ms (`--p99-ms`); required for the server.
    pub p99_ms: Option<f64>,
    /// Server scenario: search for the highest valid load instead of running at `qps`.
    pub find_max_qps: bool,
    /// Server runs in that search, 1 to 100.
    pub search_steps: usize,
    /// The inference input set, one sample per entry (prompts for generation); queries take
    /// them in order, wrapping. Unused by training.
    pub texts: Vec<String>,
    /// Peer runners: (name, script path), and how they run.
    pub peers: Vec<(String, PathBuf)>,
    /// The device string passed to every peer runner (`cpu`, `cuda`).
    pub peer_device: String,
    /// The dtype passed to every peer runner (`f32`, `bf16`, `f16`); training requires the same
    /// as accelrt's (`f32`, or `bf16` for mixed precision).
    pub peer_dtype: String,
    /// The instance type and price every result is priced with.
    pub pricing: Pricing,
    /// How accelrt prepares the model (compute dtype); training requires f32.
    pub options: PrepareOptions,
    /// Whether to show progress on stderr (a bar on a terminal, else a line every 5 s).
    pub progress: bool,
    /// Seed of the server scenario's Poisson arrival times (the same seed, the same schedule).
    pub seed: u64,
    /// Text generation: new tokens per request.
    pub max_tokens: usize,
    /// Text generation: positions each sequence's cache holds.
    pub context: usize,
    /// `--url`: clients with a request out at once in the offline scenario over HTTP.
    pub concurrency: usize,
    /// Where each result is written as soon as its scenario completes (`None`: kept in memory only).
    pub out: Option<PathBuf>,
    /// The training scenario: data and optimiser settings.
    pub training: TrainingOptions,
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
    /// A result whose numbers break their limits, or whose file would replace another result of
    /// this run (a peer calling itself `accelrt`), is refused, so the run never writes a file that
    /// `accelrt report` refuses or loses what it measured.
    pub(crate) fn keep(&mut self, config: &BenchConfig, r: BenchResult) -> Result<()> {
        r.check().map_err(|why| BenchError::Invalid(format!("{} {}: {why}", r.system, r.scenario)))?;
        if self
            .results
            .iter()
            .any(|k| (&k.system, k.scenario) == (&r.system, r.scenario) || k.file_name() == r.file_name())
        {
            return Err(BenchError::Invalid(format!(
                "{} {}: a second result under the same name (system `{}`) would pass for the first",
                r.system, r.scenario, r.system
            )));
        }
        if let Some(dir) = &config.out {
            self.written.push(r.save(dir)?);
        }
        self.results.push(r);
        Ok(())
    }
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

    /// Training a sentence-embedding model: 8 pairs a step, one warm-up step, ≥ 10 s and ≥ 8
    /// measured steps.
    pub const TRAINING_EMBEDDING: Defaults = Defaults {
        batch_size: 8,
        rules: RunRules { warmup: Duration::ZERO, min_duration: Duration::from_secs(10), min_queries: 8 },
    };
    /// Training a decoder: 4 windows a step, one warm-up step, ≥ 10 s and ≥ 4 measured steps (a
    /// step of SmolLM2-135M on 4 × 128 tokens takes seconds on a 2-vCPU machine).
    pub const TRAINING_GENERATION: Defaults = Defaults {
        batch_size: 4,
        rules: RunRules { warmup: Duration::ZERO, min_duration: Duration::from_secs(10), min_queries: 4 },
    };

    /// The defaults for a kind of model's inference workload.
    pub fn for_kind(kind: ModelKind) -> Defaults {
        match kind {
            ModelKind::SentenceEmbedding => Defaults::EMBEDDING,
            ModelKind::TextGeneration => Defaults::GENERATION,
        }
    }

    /// The defaults for a kind of model and the scenarios asked for (training has its own).
    pub fn for_run(kind: ModelKind, scenarios: &[ScenarioKind]) -> Defaults {
        match (kind, scenarios.contains(&ScenarioKind::Training)) {
            (ModelKind::SentenceEmbedding, true) => Defaults::TRAINING_EMBEDDING,
            (ModelKind::TextGeneration, true) => Defaults::TRAINING_GENERATION,
            (kind, false) => Defaults::for_kind(kind),
        }
    }
}

/// Runs the benchmark on accelrt, then on each peer. Sentence-embedding models run the embedding
/// workload; GGUF decoders the generation workload (TTFT, TPOT, output tokens/s, $/1M tokens);
/// the training scenario trains either ([`training`]: samples/s, tokens/s, step time, $/1M
/// training tokens). The instance type is checked against this machine first
/// ([`Pricing::preflight`]).
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
    if config.scenarios.contains(&ScenarioKind::Training) {
        return training::run_training(config, backend, store, &path, kind, &model_name);
    }
    match kind {
        ModelKind::SentenceEmbedding => run_embedding(config, backend, &path, &model_name),
        ModelKind::TextGeneration => run_generation(config, backend, &path, &model_name),
    }
}

/// The environment of a peer's result: the device it says it ran on (else `--peer-device`), its
/// library versions and dtype as details. Inference and training peers alike.
pub(super) fn peer_environment(
    info: &crate::peers::PeerInfo,
    device: &accelrt_core::DeviceInfo,
    config: &BenchConfig,
) -> Environment {
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
    env
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
    if config.scenarios.contains(&ScenarioKind::Training) {
        if config.scenarios.len() > 1 {
            return Err(BenchError::Invalid(
                "the training scenario runs on its own (it loads another program, with optimiser state); \
                 run the inference scenarios in another `accelrt bench`"
                    .into(),
            ));
        }
        check_flag("--lr", config.training.lr, Limit::HYPER)?;
        check_flag("--weight-decay", config.training.weight_decay, Limit::HYPER)?;
        if let Some(n) = config.training.seq_len {
            check_flag("--seq-len", n as f64, Limit::TOKENS)?;
        }
        // Training: --dtype bf16 is mixed precision (products in bf16, f32 master weights), and
        // the peer trains the same way, so the two sides are one comparison.
        let dtype = config.options.compute_dtype.unwrap_or(accelrt_core::DType::F32);
        if !matches!(dtype, accelrt_core::DType::F32 | accelrt_core::DType::BF16) {
            return Err(BenchError::Invalid(format!(
                "training runs in f32 or bf16 mixed precision, not {dtype} (f16 would need loss scaling)"
            )));
        }
        if config.peer_dtype != dtype.to_string() {
            return Err(BenchError::Invalid(format!(
                "training peers train as accelrt does: --peer-dtype {} with --dtype {dtype}",
                config.peer_dtype
            )));
        }
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

/// Reads an input set: one text per line (empty lines are samples too).
///
/// # Errors
/// [`BenchError::Io`] when it cannot be read; [`BenchError::File`] when it is over
/// `limits::MAX_FILE_BYTES`, not UTF-8, or has no line.
pub fn read_texts(path: &Path) -> Result<Vec<String>> {
    let text = crate::limits::read_bounded(path, crate::limits::MAX_FILE_BYTES, "input set")?;
    let texts: Vec<String> = text.lines().map(str::to_string).collect();
    if texts.is_empty() {
        return Err(BenchError::File { path: path.into(), message: "no texts in the input set".into() });
    }
    Ok(texts)
}
