//! `accelrt serve`: one model behind the OpenAI API on one device, until SIGTERM or Ctrl-C.

use crate::{compute_override, resolve_gguf};
use accelrt::models::{self, ModelKind, ModelStore};
use accelrt::{DType, PrepareOptions};
use accelrt_serve::{
    AppState, BatchLimits, ChatLimits, ChatScheduler, EmbeddingBatcher, Engine, Metrics, ServerInfo, Task,
};
use anyhow::{bail, Context, Result};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Model name (fetched on first use), a sentence-transformers directory, or a GGUF file
    #[arg(long, default_value = "all-minilm-l6-v2")]
    model: String,
    /// Device to run on: cpu, cuda:N, neuron:N
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Embeddings: largest model batch (inputs), 1 to 4096
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Embeddings: largest model batch in padded tokens (inputs × longest input), 1 to 16777216
    #[arg(long, default_value_t = 8192)]
    max_batch_tokens: usize,
    /// Chat: sequences decoding together (each holds --context positions of KV cache), 1 to 1024
    #[arg(long, default_value_t = 8)]
    max_sequences: usize,
    /// Chat: positions per sequence, prompt and answer together
    #[arg(long, default_value_t = models::generator::DEFAULT_CONTEXT)]
    context: usize,
    /// Requests that may wait for the model; beyond this they get 429 at once (1 to 65536)
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Seconds a request may take before it is cut off (504) and its work cancelled
    #[arg(long, default_value_t = 300.0)]
    request_timeout: f64,
    /// Largest request body in bytes (413 beyond), 1 to 1073741824 (1 GiB)
    #[arg(long, default_value_t = 8 << 20)]
    max_body_bytes: usize,
    /// Embeddings: most inputs per request (400 beyond), 1 to 65536
    #[arg(long, default_value_t = 2048)]
    max_inputs: usize,
    /// Seconds health reports 503 before the listener closes on shutdown
    #[arg(long, default_value_t = 5.0)]
    drain_seconds: f64,
    /// Seconds a client has to send a request's headers (also how long an idle kept-alive
    /// connection stays open); past it the connection is closed
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a client has to send a request's whole body after its headers (408 beyond)
    #[arg(long, default_value_t = 60.0)]
    body_timeout: f64,
    /// Connections served at once; more wait in the listen backlog until one closes (1 to 65536)
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// The model id clients use (/v1/models, `model` in requests); default: the registry name, or
    /// the model file's name without its extension, or the directory's name (never the path)
    #[arg(long)]
    served_model_name: Option<String>,
    /// Compute dtype: f32 (default), bf16 or f16
    #[arg(long)]
    dtype: Option<DType>,
}

fn is_generation_model(model: &str) -> bool {
    match models::lookup(model) {
        Ok(spec) => spec.kind == ModelKind::TextGeneration,
        Err(_) => models::generator::is_gguf_model(std::path::Path::new(model)),
    }
}

/// The model id clients see and send: `--served-model-name`, else the registry name, else (a model
/// given by path) the name of the file (without its extension) or directory that `--model` names,
/// made an id by `accelrt_serve::model_id`. The path itself never reaches clients.
fn served_name(a: &ServeArgs) -> Result<String> {
    if let Some(name) = &a.served_model_name {
        if name.trim().is_empty() || name.len() > 256 {
            bail!("--served-model-name must be 1 to 256 characters");
        }
        return Ok(name.clone());
    }
    if let Ok(spec) = models::lookup(&a.model) {
        return Ok(spec.id.to_string());
    }
    let path = std::path::Path::new(&a.model);
    let name = if path.is_dir() { path.file_name() } else { path.file_stem() };
    name.and_then(|n| accelrt_serve::model_id(&n.to_string_lossy()))
        .context("cannot make a model id from the --model path; give --served-model-name")
}

/// The range of each count flag: at least 1, and at most a bound far above any useful setting, so a
/// mistyped value is refused at startup rather than overflowing an allocation in the model thread.
const COUNT_LIMITS: [(&str, usize); 7] = [
    ("max-batch", 4096),
    ("max-batch-tokens", 1 << 24),
    ("max-sequences", 1024),
    ("queue", 65536),
    ("max-inputs", 65536),
    ("max-connections", 65536),
    ("max-body-bytes", 1 << 30),
];

fn check_limits(a: &ServeArgs) -> Result<()> {
    let values =
        [a.max_batch, a.max_batch_tokens, a.max_sequences, a.queue, a.max_inputs, a.max_connections, a.max_body_bytes];
    for ((flag, max), v) in COUNT_LIMITS.iter().zip(values) {
        if !(1..=*max).contains(&v) {
            bail!("--{flag} must be 1 to {max}, got {v}");
        }
    }
    if !(a.drain_seconds.is_finite() && (0.0..=1e6).contains(&a.drain_seconds)) {
        bail!("--drain-seconds must be 0 to 1e6, got {}", a.drain_seconds);
    }
    Ok(())
}

pub fn serve(store: &ModelStore, a: ServeArgs) -> Result<()> {
    // Logs go to stderr, plain unless a terminal is watching (they are read by log collectors).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    check_limits(&a)?;
    let seconds = |flag: &str, v: f64| -> Result<Duration> {
        if !(v.is_finite() && v > 0.0 && v <= 1e6) {
            bail!("--{flag} must be a positive number of seconds (at most 1e6), got {v}");
        }
        Ok(Duration::from_secs_f64(v))
    };
    let request_timeout = seconds("request-timeout", a.request_timeout)?;
    let header_timeout = seconds("header-timeout", a.header_timeout)?;
    let body_timeout = seconds("body-timeout", a.body_timeout)?;
    accelrt_serve::ensure_open_files(a.max_connections).map_err(anyhow::Error::msg)?;
    let backend = accelrt::open_backend(&a.backend)?;
    let options = PrepareOptions { compute_dtype: compute_override(a.dtype) };
    let metrics = Arc::new(Metrics::default());
    let chat = is_generation_model(&a.model);
    let mut info = ServerInfo {
        model: String::new(),
        task: if chat { Task::Chat } else { Task::Embeddings },
        backend: backend.name().into(),
        device: backend.device().to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
        dimensions: None,
        max_input_tokens: 0,
    };
    let engine: Engine = if chat {
        let path = resolve_gguf(store, &a.model)?;
        let generator = models::TextGenerator::load(&path, backend.as_ref(), &options, a.context)
            .with_context(|| format!("loading {}", path.display()))?;
        info.model = served_name(&a)?;
        info.max_input_tokens = generator.context();
        let limits = ChatLimits { max_sequences: a.max_sequences, queue: a.queue };
        ChatScheduler::start(generator, limits, metrics.clone())
            .with_context(|| format!("allocating caches for {} sequences × {} positions", a.max_sequences, a.context))?
            .into()
    } else {
        let dir = models::resolve_model_dir(&a.model, store)?;
        let embedder = models::SentenceEmbedder::load(&dir, backend.as_ref(), &options)
            .with_context(|| format!("loading {}", dir.display()))?;
        info.model = served_name(&a)?;
        info.dimensions = Some(embedder.dimension());
        info.max_input_tokens = embedder.max_tokens();
        // Any request's inputs are split into batches within these limits, so one input of the
        // longest length must fit: that bounds the memory of a batch, whatever the request.
        let limits = BatchLimits { max_batch: a.max_batch, max_batch_tokens: a.max_batch_tokens, queue: a.queue }
            .fitting(embedder.max_tokens())
            .map_err(|(_, why)| anyhow::anyhow!("--{}", why.replacen("max_batch_tokens", "max-batch-tokens", 1)))?;
        EmbeddingBatcher::start(embedder, limits, metrics.clone())?.into()
    };
    let mut state = AppState::new(engine, metrics, info);
    state.request_timeout = request_timeout;
    state.header_timeout = header_timeout;
    state.body_timeout = body_timeout;
    state.max_connections = a.max_connections;
    state.max_body_bytes = a.max_body_bytes;
    state.max_inputs = a.max_inputs;
    let state = Arc::new(state);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (host, port, drain) = (a.host, a.port, Duration::from_secs_f64(a.drain_seconds.max(0.0)));
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .with_context(|| format!("binding {host}:{port}"))?;
        tracing::info!(
            address = %listener.local_addr()?, model = %state.info.model, task = %state.info.task,
            device = %state.info.device, "serving"
        );
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        accelrt_serve::serve(listener, state, shutdown, drain).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::{check_limits, ServeArgs};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn check(flags: &[&str]) -> Result<(), String> {
        let cli =
            Cli::try_parse_from(std::iter::once("serve").chain(flags.iter().copied())).map_err(|e| e.to_string())?;
        check_limits(&cli.serve).map_err(|e| e.to_string())
    }

    #[test]
    fn count_flags_are_range_checked_before_anything_is_allocated() {
        assert!(check(&[]).is_ok(), "the defaults are in range");
        assert!(check(&["--max-sequences", "1024"]).is_ok());
        for flag in [
            "--max-sequences",
            "--max-batch",
            "--max-batch-tokens",
            "--queue",
            "--max-inputs",
            "--max-connections",
            "--max-body-bytes",
        ] {
            for bad in ["0", "18446744073709551615"] {
                let e = check(&[flag, bad]).unwrap_err();
                assert!(e.contains(flag), "{flag} {bad}: {e}");
            }
        }
        assert!(check(&["--max-sequences", "1025"]).unwrap_err().contains("1 to 1024"));
    }
}
