//! `accelrt compile`: a model's graph exported ahead of time, one module per shape bucket.
//!
//! `--target xla` writes StableHLO MLIR (`<bucket>.mlir`) and its manifest (`<bucket>.json`), the
//! form every PJRT plugin and jax compile. The Neuron targets (`inf2`, `trn1`, `trn2`) are named
//! here so that the command's shape does not change when they come: they will take the same
//! modules through `neuronx-cc` into `<bucket>.neff` files in the layout the Neuron backend's
//! compile cache reads. Until then they are refused with that reason.

use crate::resolve_gguf;
use accelrt::models::{self, bert, llama, ModelKind, ModelStore};
use accelrt::stablehlo::{export, Bucket, ExportOptions};
use accelrt::{DType, Graph};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// What `--target` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// StableHLO MLIR + JSON manifest, for any PJRT plugin (xla:cpu, pjrt:PATH) or jax
    Xla,
    /// AWS Inferentia2 NEFFs (not implemented yet)
    Inf2,
    /// AWS Trainium1 NEFFs (not implemented yet)
    Trn1,
    /// AWS Trainium2 NEFFs (not implemented yet)
    Trn2,
}

#[derive(clap::Args)]
pub struct CompileArgs {
    /// Model name (fetched on first use), a sentence-transformers directory, or a GGUF file
    #[arg(long)]
    model: String,
    /// What to compile for: xla (StableHLO for PJRT plugins and jax); inf2, trn1 and trn2 are
    /// reserved for Neuron NEFFs and not implemented yet
    #[arg(long, value_enum)]
    target: Target,
    /// A shape bucket, e.g. `batch=4,seq=128`; generation models also need `slots=N` (sequences
    /// per session). Repeat for several buckets
    #[arg(long = "bucket", required = true)]
    buckets: Vec<String>,
    /// Directory to write `<bucket>.mlir` and `<bucket>.json` into (created if missing)
    #[arg(long)]
    out: PathBuf,
    /// Compute dtype of the module: f32 (default), bf16 or f16
    #[arg(long)]
    dtype: Option<DType>,
    /// Generation models: positions each sequence's KV cache holds (the caches' capacity)
    #[arg(long, default_value_t = models::generator::DEFAULT_CONTEXT)]
    context: usize,
}

pub fn compile(store: &ModelStore, args: CompileArgs) -> Result<()> {
    if args.target != Target::Xla {
        let name = format!("{:?}", args.target).to_lowercase();
        bail!(
            "--target {name} is not implemented yet: Neuron NEFFs will be compiled from these StableHLO modules \
             with neuronx-cc (--target {name}) in a follow-up; today `--target xla` writes the modules"
        );
    }
    let buckets: Vec<Bucket> = args
        .buckets
        .iter()
        .map(|b| b.parse::<Bucket>().with_context(|| format!("--bucket {b}")))
        .collect::<Result<_>>()?;
    let graph = model_graph(store, &args.model, args.context)?;
    let options = ExportOptions { compute_dtype: args.dtype };
    // Export every bucket before writing any file: one bad bucket writes nothing.
    let modules = buckets
        .iter()
        .map(|b| export(&graph, b, &options).with_context(|| format!("exporting `{}` at bucket {b}", args.model)))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    for (bucket, module) in buckets.iter().zip(modules) {
        let mlir = args.out.join(format!("{bucket}.mlir"));
        let manifest = args.out.join(format!("{bucket}.json"));
        std::fs::write(&mlir, &module.mlir).with_context(|| format!("writing {}", mlir.display()))?;
        std::fs::write(&manifest, module.manifest.to_json())
            .with_context(|| format!("writing {}", manifest.display()))?;
        println!("{}", mlir.display());
        println!("{}", manifest.display());
    }
    Ok(())
}

/// The graph a model runs, built from its files as the pipelines build it (weights are not read:
/// they are arguments of the exported modules).
fn model_graph(store: &ModelStore, model: &str, context: usize) -> Result<Graph> {
    let path = std::path::Path::new(model);
    let generation = match path.exists() {
        true => path.is_file() || models::generator::find_gguf(path).is_ok(),
        false => models::lookup(model)?.kind == ModelKind::TextGeneration,
    };
    if generation {
        let gguf = resolve_gguf(store, model)?;
        let file = models::GgufFile::open(&gguf)?;
        let config = llama::LlamaConfig::from_gguf(&file)?;
        if context == 0 || context > config.context_length {
            bail!("--context {context} must be between 1 and the model's context length {}", config.context_length);
        }
        let dtype_of = |name: &str| -> models::Result<DType> {
            let config = |message: String| models::ModelError::Config { path: gguf.clone(), message };
            let info = file.tensor(name).ok_or_else(|| config(format!("no tensor `{name}`")))?;
            info.dtype().map_err(|m| config(format!("tensor `{name}`: {m}")))
        };
        return Ok(llama::build_graph(&config, context, &dtype_of)?);
    }
    let dir = models::resolve_model_dir(model, store)?;
    let cfg = bert::BertConfig::from_file(&dir.join("config.json"))?;
    let head = bert::SentenceHead::from_dir(&dir)?;
    let weights = models::SafetensorsWeights::open(&dir.join("model.safetensors"))?;
    let prefix = if weights.contains("embeddings.word_embeddings.weight") {
        ""
    } else if weights.contains("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        bail!("{}: no BERT embedding weights (embeddings.word_embeddings.weight)", dir.display());
    };
    Ok(bert::build_graph(&cfg, head, prefix)?)
}
