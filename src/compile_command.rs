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
use accelrt::neuron::compile::{command_line, neff_path_beside, shell_quote, Compiler};
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
    /// and `compile.sh`); created if missing [Neuron targets: default a temporary directory, removed when the command ends unless it holds the compile.sh to run]
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
    write_file(&mlir, module.mlir.as_bytes())?;
    write_file(&manifest, module.manifest.to_json().as_bytes())?;
    Ok(vec![mlir, manifest])
}

/// Writes through a temporary file renamed over `path`: a symlink planted at `path` is replaced,
/// never followed, and a reader sees the old file or the whole new one.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing into {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes).with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The bucket a Neuron program is exported at: a session of `slots=N` sequences keeps one more
/// cache row, the spare slot padded batch rows write to (the Neuron backend's sessions do).
fn neuron_bucket(graph: &Graph, bucket: &Bucket) -> Result<Bucket> {
    let has_caches = graph.nodes().iter().any(|n| matches!(n.op, accelrt::Op::KvCache { .. }));
    let mut b = bucket.clone();
    match (has_caches, b.slots) {
        (false, Some(_)) => bail!("--bucket {bucket}: `slots` is for generation models (this graph keeps no KV cache)"),
        (true, None) => bail!("--bucket {bucket}: a generation model's bucket needs slots=N (sequences per session)"),
        (true, Some(0)) => bail!("--bucket {bucket}: slots must be at least 1"),
        (true, Some(n)) => {
            if let Some(rows) = b.get("batch").filter(|&rows| rows > n) {
                bail!("--bucket {bucket}: a step of {rows} rows cannot fit a session of {n} sequences");
            }
            b.slots = Some(n.checked_add(1).context("slots is too large")?);
        }
        (false, None) => {}
    }
    Ok(b)
}

/// The most bytes one argument or result of a program may take: a Trainium2 chip's 96 GiB of
/// device memory. Beyond it the bucket cannot run anywhere (and a typo such as an extra zero
/// would otherwise compile, then fail to allocate at every load).
const MAX_TENSOR_BYTES: u128 = 96 << 30;

fn check_sizes(bucket: &Bucket, manifest: &Manifest) -> Result<()> {
    let shapes = manifest.arguments.iter().map(|a| (&a.name, a.dtype, &a.shape));
    for (name, dtype, shape) in shapes.chain(manifest.outputs.iter().map(|o| (&o.name, o.dtype, &o.shape))) {
        let elements = shape.iter().try_fold(1u128, |n, &d| n.checked_mul(d as u128));
        let bytes = elements.and_then(|n| n.checked_mul(dtype.storage_bytes(1).unwrap_or(1) as u128));
        if bytes.is_none_or(|b| b > MAX_TENSOR_BYTES) {
            bail!("--bucket {bucket}: `{name}` ({dtype}{shape:?}) would need more than 96 GiB of device memory");
        }
    }
    Ok(())
}

/// What a `compile.sh` in an output directory was written for: the NEFFs it makes may be
/// installed only for exactly this (another target, other flags or another export would file
/// them under a key they do not match).
#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct ScriptPlan {
    target: String,
    flags: Vec<String>,
    /// (bucket as given, module SHA-256) per bucket.
    modules: Vec<(String, String)>,
}

const PLAN_FILE: &str = "compile.json";
const VERSION_FILE: &str = "compiler-version.txt";

fn compile_neuron(graph: &Graph, buckets: &[Bucket], options: &ExportOptions, args: &CompileArgs) -> Result<()> {
    use accelrt::neuron::cache::read_checked;
    use accelrt::neuron::compile::parse_flags;
    let target = args.target.name();
    let flags = parse_flags(&args.compiler_flags)?;
    let cache_dir = match &args.neff_cache {
        Some(dir) => dir.clone(),
        None => match std::env::var_os(accelrt::neuron::backend::NEFF_CACHE_ENV).filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => accelrt::neuron::default_cache_dir(),
        },
    };
    let mut seen = std::collections::BTreeSet::new();
    let buckets: Vec<Bucket> = buckets.iter().filter(|b| seen.insert(b.to_string())).cloned().collect();
    let exported: Vec<Bucket> = buckets.iter().map(|b| neuron_bucket(graph, b)).collect::<Result<_>>()?;
    let modules = export_all(graph, &exported, options, &args.model)?;
    for (bucket, module) in buckets.iter().zip(&modules) {
        check_sizes(bucket, &module.manifest)?;
    }
    let (cached, _) = scan(&cache_dir, &graph.content_hash(), target);
    // A cached NEFF counts only if its bytes are what its manifest records.
    let present = |m: &Manifest| -> Vec<&CachedNeff> {
        cached
            .iter()
            .filter(|c| c.manifest.key.mlir_sha256 == m.mlir_sha256 && c.manifest.key.flags == flags)
            .filter(|c| read_checked(c).is_ok())
            .collect()
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
                let others: Vec<String> = cached
                    .iter()
                    .filter(|c| {
                        c.manifest.key.mlir_sha256 == module.manifest.mlir_sha256 && c.manifest.key.flags != flags
                    })
                    .map(|c| format!("{:?}", c.manifest.key.flags))
                    .collect();
                let also = if others.is_empty() {
                    String::new()
                } else {
                    format!("  (present with other flags: {})", others.join(", "))
                };
                println!("  missing  {bucket}{also}");
            } else {
                let versions: Vec<String> = found.iter().map(|c| c.manifest.key.compiler.to_string()).collect();
                println!("  present  {bucket}  (neuronx-cc {})", versions.join(", "));
            }
        }
        if missing > 0 {
            bail!(
                "{missing} of {} bucket(s) have no NEFF with these flags; compile them with the same command (the same \
                 --compiler-flags) without --check",
                buckets.len()
            );
        }
        return Ok(());
    }

    // The cache must be writable before minutes of compiling are spent.
    std::fs::create_dir_all(&cache_dir).with_context(|| format!("creating the NEFF cache {}", cache_dir.display()))?;
    tempfile::NamedTempFile::new_in(&cache_dir)
        .with_context(|| format!("the NEFF cache {} is not writable", cache_dir.display()))?;
    // Without --out: a private new directory (a fixed name under /tmp could be prepared by another
    // user), removed when the command ends unless compile.sh was written there for the user to run.
    let (out, scratch) = match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let tmp = tempfile::Builder::new()
                .prefix(&format!("accelrt-compile-{target}-"))
                .tempdir()
                .context("creating a directory for the modules")?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    // HLO for every bucket, checked by XLA itself where this build can.
    let mut hlo_paths = Vec::new();
    for (bucket, module) in buckets.iter().zip(&modules) {
        let stem = bucket_key(bucket);
        write_module(&out, &stem, module)?;
        let hlo = hlo_proto(&module.mlir).with_context(|| format!("bucket {bucket}: StableHLO → HLO"))?;
        validate_hlo(&hlo, &module.manifest)
            .with_context(|| format!("bucket {bucket}: the HLO module does not check"))?;
        let path = out.join(format!("{stem}.hlo.pb"));
        write_file(&path, &hlo)?;
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
        None => {
            let plan = ScriptPlan {
                target: target.into(),
                flags: flags.clone(),
                modules: buckets
                    .iter()
                    .zip(&modules)
                    .map(|(b, m)| (b.to_string(), m.manifest.mlir_sha256.clone()))
                    .collect(),
            };
            install_or_script(&plan, &buckets, &modules, &hlo_paths, &cache_dir, &out)?;
            // The script and its modules are what the user runs next: kept.
            if let Some(tmp) = scratch {
                let _ = tmp.keep();
            }
            Ok(())
        }
    }
}

/// Without a compiler here: installs the NEFFs a finished `compile.sh` made for exactly this
/// command (same target, flags and modules), else writes `compile.sh` and says what to do.
fn install_or_script(
    plan: &ScriptPlan,
    buckets: &[Bucket],
    modules: &[Module],
    hlo_paths: &[PathBuf],
    cache_dir: &Path,
    out: &Path,
) -> Result<()> {
    let version_file = out.join(VERSION_FILE);
    let plan_file = out.join(PLAN_FILE);
    let neffs: Vec<PathBuf> = hlo_paths.iter().map(|h| neff_path_beside(h)).collect();
    // The script writes the version file last, after every compile succeeded.
    if version_file.is_file() {
        let recorded: Option<ScriptPlan> =
            std::fs::read_to_string(&plan_file).ok().and_then(|t| serde_json::from_str(&t).ok());
        if recorded.as_ref() != Some(plan) {
            bail!(
                "{} holds NEFFs compiled for another command (target, --compiler-flags, buckets or model differ from \
                 {}); use a new --out directory, or remove {} to write the script again",
                out.display(),
                plan_file.display(),
                version_file.display()
            );
        }
        let missing: Vec<String> = neffs.iter().filter(|n| !n.is_file()).map(|n| n.display().to_string()).collect();
        if !missing.is_empty() {
            bail!("compile.sh finished but these NEFFs are missing: {}", missing.join(", "));
        }
        let text =
            std::fs::read_to_string(&version_file).with_context(|| format!("reading {}", version_file.display()))?;
        let version = CompilerVersion::find(&text)
            .with_context(|| format!("{} holds no compiler version ({text:?})", version_file.display()))?;
        for ((bucket, module), neff) in buckets.iter().zip(modules).zip(&neffs) {
            let bytes = std::fs::read(neff).with_context(|| format!("reading {}", neff.display()))?;
            let key = NeffKey::new(&module.manifest, &plan.target, &version, &plan.flags);
            let path = key
                .install(cache_dir, &bytes, &module.manifest)
                .with_context(|| format!("installing {} into {}", neff.display(), cache_dir.display()))?;
            eprintln!("bucket {bucket}: installed the NEFF compiled by neuronx-cc {version}");
            println!("{}", path.display());
        }
        return Ok(());
    }
    let script = out.join("compile.sh");
    // Paths are relative to the script's directory, so it runs wherever the directory is copied.
    // Old NEFFs and the version file go first; the version is written only once every compile
    // has succeeded (set -e), so a failed run can never be installed as a finished one.
    let mut text = String::from(concat!(
        "#!/usr/bin/env bash\n",
        "# Written by `accelrt compile`: run with bash on any host where neuronx-cc is installed (the\n",
        "# AWS Neuron SDK's compiler; no Neuron device needed), then run the same `accelrt compile` again.\n",
        "set -euo pipefail\n",
        "cd \"$(dirname \"$0\")\"\n",
        "rm -f compiler-version.txt\n",
    ));
    for (hlo, neff) in hlo_paths.iter().zip(&neffs) {
        let name = Path::new(hlo.file_name().expect("a file"));
        let neff_name = Path::new(neff.file_name().expect("a file"));
        text.push_str(&format!("rm -f {}\n", shell_quote(&neff_name.display().to_string())));
        text.push_str(&command_line(name, &plan.target, &plan.flags, neff_name));
        text.push('\n');
    }
    text.push_str("neuronx-cc --version > compiler-version.txt\n");
    write_file(&out.join(PLAN_FILE), serde_json::to_string_pretty(plan).expect("serialisable").as_bytes())?;
    write_file(&script, text.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755));
    }
    let found = neffs.iter().filter(|n| n.is_file()).count();
    let partial = if found > 0 {
        format!(" ({found} NEFF(s) there are from an unfinished run of compile.sh and will be made again)")
    } else {
        String::new()
    };
    eprintln!(
        "neuronx-cc is not installed here (set {} or put it on PATH). The HLO modules are in {}{partial}; compile them \
         where neuronx-cc is with `bash {}`, which runs:\n\n{}\nthen run this command again with --out {} to install the \
         NEFFs into {}",
        accelrt::neuron::compile::COMPILER_ENV,
        out.display(),
        script.display(),
        text.lines().filter(|l| l.starts_with("neuronx-cc compile")).map(|l| format!("  {l}\n")).collect::<String>(),
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
