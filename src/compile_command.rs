//! `accelrt compile`: a model's graph exported ahead of time, one module per shape bucket.
//!
//! `--target xla` writes StableHLO MLIR (`<bucket>.mlir`) and its manifest (`<bucket>.json`), the
//! form every PJRT plugin and jax compile. The Neuron targets (`inf2`, `trn1`, `trn2`) take the
//! same modules on: each becomes a serialized XLA `HloModuleProto` (`<bucket>.hlo.pb`, XLA's own
//! converter in jaxlib), checked by compiling it with XLA CPU where this build has the PJRT
//! backend, then compiled by `neuronx-cc` into a NEFF that goes into the NEFF cache with its
//! manifest. Where `neuronx-cc` is not installed (it comes only from AWS's package repository),
//! the command writes `compile.sh` with the exact compiler commands; run it on any host with the
//! Neuron SDK and run this command again to install the NEFFs it made. `--check` lists what the
//! cache holds and lacks for the buckets asked, changing nothing.

use crate::resolve_gguf;
use accelrt::models::{self, bert, llama, ModelKind, ModelStore};
use accelrt::neuron::cache::{bucket_key, scan, CachedNeff, CompilerVersion, NeffKey};
use accelrt::neuron::compile::{command_line, neff_path_beside, Compiler};
use accelrt::stablehlo::{export, hlo_proto, Bucket, ExportOptions, Manifest, Module};
use accelrt::{DType, Graph};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// What `--target` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// StableHLO MLIR + JSON manifest, for any PJRT plugin (xla:cpu, pjrt:PATH) or jax
    Xla,
    /// AWS Inferentia2 NEFFs (neuronx-cc --target inf2)
    Inf2,
    /// AWS Trainium1 NEFFs (neuronx-cc --target trn1)
    Trn1,
    /// AWS Trainium2 NEFFs (neuronx-cc --target trn2)
    Trn2,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Xla => "xla",
            Target::Inf2 => "inf2",
            Target::Trn1 => "trn1",
            Target::Trn2 => "trn2",
        }
    }
}

#[derive(clap::Args)]
pub struct CompileArgs {
    /// Model name (fetched on first use), a sentence-transformers directory, or a GGUF file
    #[arg(long)]
    model: String,
    /// What to compile for: xla (StableHLO for PJRT plugins and jax), or inf2, trn1, trn2 (Neuron
    /// NEFFs through neuronx-cc, into the NEFF cache)
    #[arg(long, value_enum)]
    target: Target,
    /// A shape bucket, e.g. `batch=4,seq=128`; generation models also need `slots=N` (sequences
    /// per session). Repeat for several buckets
    #[arg(long = "bucket", required = true)]
    buckets: Vec<String>,
    /// Directory for the modules (`<bucket>.mlir`, `.json`; Neuron targets also `.hlo.pb`, `.neff`
    /// and `compile.sh`); created if missing [Neuron targets: default a temporary directory]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compute dtype of the module: f32 (default), bf16 or f16
    #[arg(long)]
    dtype: Option<DType>,
    /// Generation models: positions each sequence's KV cache holds (the caches' capacity)
    #[arg(long, default_value_t = models::generator::DEFAULT_CONTEXT)]
    context: usize,
    /// Neuron targets: extra neuronx-cc flags, as one string (e.g. "--model-type transformer
    /// --auto-cast matmult --optlevel 2"); they are part of the NEFF's cache key
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    compiler_flags: String,
    /// Neuron targets: the NEFF cache to fill [default: $ACCELRT_NEFF_CACHE, else `neff/` in
    /// accelrt's cache directory]; any directory, e.g. on a shared EFS mount
    #[arg(long)]
    neff_cache: Option<PathBuf>,
    /// Neuron targets: only list which buckets the cache holds NEFFs for and which are missing
    /// (exit status 1 if any is), compiling nothing
    #[arg(long)]
    check: bool,
}

pub fn compile(store: &ModelStore, args: CompileArgs) -> Result<()> {
    let buckets: Vec<Bucket> = args
        .buckets
        .iter()
        .map(|b| b.parse::<Bucket>().with_context(|| format!("--bucket {b}")))
        .collect::<Result<_>>()?;
    let graph = model_graph(store, &args.model, args.context)?;
    let options = ExportOptions { compute_dtype: args.dtype };
    if args.target == Target::Xla {
        if args.check {
            bail!("--check applies to the Neuron targets (inf2, trn1, trn2): `xla` modules are compiled by the PJRT plugin at run time");
        }
        let out = args.out.clone().context("--target xla needs --out DIR")?;
        let modules = export_all(&graph, &buckets, &options, &args.model)?;
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        for (bucket, module) in buckets.iter().zip(modules) {
            for path in write_module(&out, &bucket.to_string(), &module)? {
                println!("{}", path.display());
            }
        }
        return Ok(());
    }
    compile_neuron(&graph, &buckets, &options, &args)
}

/// Exports every bucket before anything is written: one bad bucket writes nothing.
fn export_all(graph: &Graph, buckets: &[Bucket], options: &ExportOptions, model: &str) -> Result<Vec<Module>> {
    buckets
        .iter()
        .map(|b| export(graph, b, options).with_context(|| format!("exporting `{model}` at bucket {b}")))
        .collect()
}

/// `<stem>.mlir` and `<stem>.json` in `dir`.
fn write_module(dir: &Path, stem: &str, module: &Module) -> Result<Vec<PathBuf>> {
    let mlir = dir.join(format!("{stem}.mlir"));
    let manifest = dir.join(format!("{stem}.json"));
    std::fs::write(&mlir, &module.mlir).with_context(|| format!("writing {}", mlir.display()))?;
    std::fs::write(&manifest, module.manifest.to_json()).with_context(|| format!("writing {}", manifest.display()))?;
    Ok(vec![mlir, manifest])
}

/// The bucket a Neuron program is exported at: a session of `slots=N` sequences keeps one more
/// cache row, the spare slot padded batch rows write to (the Neuron backend's sessions do).
fn neuron_bucket(graph: &Graph, bucket: &Bucket) -> Bucket {
    let mut b = bucket.clone();
    let has_caches = graph.nodes().iter().any(|n| matches!(n.op, accelrt::Op::KvCache { .. }));
    if has_caches {
        b.slots = b.slots.map(|s| s + 1);
    }
    b
}

fn compile_neuron(graph: &Graph, buckets: &[Bucket], options: &ExportOptions, args: &CompileArgs) -> Result<()> {
    let target = args.target.name();
    let flags: Vec<String> = args.compiler_flags.split_whitespace().map(str::to_string).collect();
    let cache_dir = match &args.neff_cache {
        Some(dir) => dir.clone(),
        None => {
            accelrt::neuron::NeuronOptions::from_env()
                .map_err(anyhow::Error::msg)
                .context("reading the Neuron settings from the environment")?
                .cache_dir
        }
    };
    let exported: Vec<Bucket> = buckets.iter().map(|b| neuron_bucket(graph, b)).collect();
    let modules = export_all(graph, &exported, options, &args.model)?;
    let (cached, _) = scan(&cache_dir, &graph.content_hash(), target);
    let present = |m: &Manifest| -> Vec<&CachedNeff> {
        cached.iter().filter(|c| c.manifest.key.mlir_sha256 == m.mlir_sha256 && c.manifest.key.flags == flags).collect()
    };

    if args.check {
        let mut missing = 0;
        println!(
            "NEFF cache {} ({target}, flags {flags:?}):",
            NeffKey::dir_for(&cache_dir, &graph.content_hash(), target).display()
        );
        for (bucket, module) in buckets.iter().zip(&modules) {
            let found = present(&module.manifest);
            if found.is_empty() {
                missing += 1;
                println!("  missing  {bucket}");
            } else {
                let versions: Vec<String> = found.iter().map(|c| c.manifest.key.compiler.to_string()).collect();
                println!("  present  {bucket}  (neuronx-cc {})", versions.join(", "));
            }
        }
        if missing > 0 {
            bail!(
                "{missing} of {} bucket(s) have no NEFF; compile them with the same command without --check",
                buckets.len()
            );
        }
        return Ok(());
    }

    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("accelrt-compile-{}-{target}", &graph.content_hash()[..12])),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // HLO for every bucket, checked by XLA itself where this build can.
    let mut hlo_paths = Vec::new();
    for (bucket, module) in buckets.iter().zip(&modules) {
        let stem = bucket_key(bucket);
        write_module(&out, &stem, module)?;
        let hlo = hlo_proto(&module.mlir).with_context(|| format!("bucket {bucket}: StableHLO → HLO"))?;
        validate_hlo(&hlo, &module.manifest)
            .with_context(|| format!("bucket {bucket}: the HLO module does not check"))?;
        let path = out.join(format!("{stem}.hlo.pb"));
        std::fs::write(&path, &hlo).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bucket {bucket}: {} ({} bytes of HLO)", path.display(), hlo.len());
        hlo_paths.push(path);
    }

    match Compiler::find().context("looking for neuronx-cc")? {
        Some(compiler) => {
            eprintln!("compiling with {} (neuronx-cc {})", compiler.program.display(), compiler.version);
            for ((bucket, module), hlo) in buckets.iter().zip(&modules).zip(&hlo_paths) {
                if let Some(have) =
                    present(&module.manifest).iter().find(|c| c.manifest.key.compiler == compiler.version)
                {
                    println!("{}", have.neff.display());
                    eprintln!("bucket {bucket}: already in the cache");
                    continue;
                }
                let started = std::time::Instant::now();
                let (_, path) = compiler
                    .compile_into_cache(hlo, &module.manifest, target, &flags, &cache_dir)
                    .with_context(|| format!("bucket {bucket}"))?;
                eprintln!("bucket {bucket}: compiled in {:.1} s", started.elapsed().as_secs_f64());
                println!("{}", path.display());
            }
            Ok(())
        }
        None => install_or_script(buckets, &modules, &hlo_paths, target, &flags, &cache_dir, &out),
    }
}

/// Without a compiler here: installs NEFFs that `compile.sh` made elsewhere (beside their HLO,
/// with `compiler-version.txt`), else writes `compile.sh` and says what to do.
fn install_or_script(
    buckets: &[Bucket],
    modules: &[Module],
    hlo_paths: &[PathBuf],
    target: &str,
    flags: &[String],
    cache_dir: &Path,
    out: &Path,
) -> Result<()> {
    let version_file = out.join("compiler-version.txt");
    let neffs: Vec<PathBuf> = hlo_paths.iter().map(|h| neff_path_beside(h)).collect();
    if version_file.is_file() && neffs.iter().all(|n| n.is_file()) {
        let text =
            std::fs::read_to_string(&version_file).with_context(|| format!("reading {}", version_file.display()))?;
        let version = CompilerVersion::find(&text)
            .with_context(|| format!("{} holds no compiler version ({text:?})", version_file.display()))?;
        for ((bucket, module), neff) in buckets.iter().zip(modules).zip(&neffs) {
            let bytes = std::fs::read(neff).with_context(|| format!("reading {}", neff.display()))?;
            let key = NeffKey::new(&module.manifest, target, &version, flags);
            let path = key
                .install(cache_dir, &bytes, &module.manifest)
                .with_context(|| format!("installing {} into {}", neff.display(), cache_dir.display()))?;
            eprintln!("bucket {bucket}: installed the NEFF compiled by neuronx-cc {version}");
            println!("{}", path.display());
        }
        return Ok(());
    }
    let script = out.join("compile.sh");
    // Paths in the script are relative to its own directory, so it runs wherever it is copied.
    let mut text = String::from(concat!(
        "#!/usr/bin/env bash\n",
        "# Written by `accelrt compile`: run on any host where neuronx-cc is installed (the AWS Neuron\n",
        "# SDK's compiler; no Neuron device needed), then run the same `accelrt compile` again.\n",
        "set -euo pipefail\n",
        "cd \"$(dirname \"$0\")\"\n",
        "neuronx-cc --version > compiler-version.txt\n",
    ));
    for hlo in hlo_paths {
        let name = Path::new(hlo.file_name().expect("a file"));
        text.push_str(&command_line(name, target, flags, &neff_path_beside(name)));
        text.push('\n');
    }
    std::fs::write(&script, &text).with_context(|| format!("writing {}", script.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755));
    }
    eprintln!(
        "neuronx-cc is not installed here (set {} or put it on PATH). The HLO modules are in {}; compile them with:\n\n{}\nthen run this command again with --out {} to install the NEFFs into {}",
        accelrt::neuron::compile::COMPILER_ENV,
        out.display(),
        text.lines().filter(|l| l.starts_with("neuronx-cc")).map(|l| format!("  {l}\n")).collect::<String>(),
        out.display(),
        cache_dir.display()
    );
    println!("{}", script.display());
    Ok(())
}

/// XLA itself must accept the HLO and agree with the manifest on the results (count, element
/// types, shapes): checked with the XLA CPU plugin when this build has the PJRT backend and the
/// plugin is in the cache (the check never downloads it).
#[cfg(feature = "pjrt")]
fn validate_hlo(hlo: &[u8], manifest: &Manifest) -> Result<()> {
    use accelrt::pjrt::pjrt::{Client, CompileOptions, Plugin, PluginStore, ProgramFormat, PLUGIN_ENV, XLA_CPU};
    let store = PluginStore::from_env();
    let path = match std::env::var_os(PLUGIN_ENV) {
        Some(p) => PathBuf::from(p),
        None => store.install_dir(&XLA_CPU).join("xla_cpu_pjrt.so"),
    };
    if !path.is_file() {
        eprintln!("(the XLA CPU plugin is not in the cache, so the HLO is not checked here; `accelrt conformance --backend xla:cpu` fetches it)");
        return Ok(());
    }
    let plugin = Plugin::load(&path)?;
    let client = Client::new(&plugin)?;
    let exe = client.compile(hlo, ProgramFormat::Hlo, &CompileOptions::default())?;
    if exe.num_outputs() != manifest.outputs.len() {
        bail!("XLA sees {} results, the manifest lists {}", exe.num_outputs(), manifest.outputs.len());
    }
    if let Some(dims) = exe.output_dims() {
        for (i, (d, out)) in dims.iter().zip(&manifest.outputs).enumerate() {
            let want: Vec<i64> = out.shape.iter().map(|&n| n as i64).collect();
            if *d != want {
                bail!("result {i} (`{}`) has dimensions {d:?} in XLA, {want:?} in the manifest", out.name);
            }
        }
    }
    Ok(())
}

#[cfg(not(feature = "pjrt"))]
fn validate_hlo(_hlo: &[u8], _manifest: &Manifest) -> Result<()> {
    eprintln!("(this build has no PJRT backend, so the HLO is not checked by XLA here)");
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
