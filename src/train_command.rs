//! `accelrt train`: fine-tune a sentence-embedding model with MultipleNegativesRankingLoss on
//! (anchor, positive) pairs, or a Llama GGUF with next-token cross-entropy on a text corpus; one
//! graph per step (forward, loss, backward, AdamW) whose parameters and moments stay on the device.
//! docs/training.md describes the formats, the checkpoints and what matches PyTorch.

use accelrt::core::optim::AdamW;
use accelrt::core::training::{Optimizer, TrainingConfig};
use accelrt::core::DType;
use accelrt::models::{self, ModelStore};
use accelrt::train::checkpoint::{self, TrainerState, MAX_GRAD_ACCUM, MAX_STEPS};
use accelrt::train::step::{
    self, CausalLmTrainer, DropoutChoice, DropoutRates, MnrlTrainer, StepOutcome, TrainerOptions,
};
use accelrt::train::{
    dataset, DataIdentity, DataStore, LrSchedule, Order, Pair, PairsFile, Sampler, StepLog, StepRecord, TokenWindows,
};
use accelrt::PrepareOptions;
use anyhow::{bail, Context, Result};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The flags of `accelrt train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Model name (fetched on first use) or directory: a sentence-transformers directory trains
    /// with MNRL on pairs; a GGUF decoder (Llama architecture) with next-token cross-entropy
    #[arg(long)]
    model: String,
    /// Training data: a pairs JSON-lines file ({"anchor": …, "positive": …} per line) for an
    /// embedding model, a UTF-8 text file for a decoder, or `shakespeare` (the fetched data set's
    /// training pairs or corpus)
    #[arg(long)]
    data: String,
    /// Optimiser steps to run in all (a resumed run continues up to this many)
    #[arg(long, default_value_t = 100)]
    steps: u64,
    /// Examples per micro-batch: pairs (MNRL) or windows of --seq-len tokens (decoders)
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Gradient accumulation: micro-batches of --batch-size per optimiser step. For the causal-LM
    /// loss the update is that of one batch N times as large; for MNRL each micro-batch keeps its
    /// own in-batch negatives (--batch-size - 1 per anchor), so it is NOT a bigger MNRL batch
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Decoders only: tokens per window (the corpus is cut into consecutive windows of this
    /// length; default 128). Refused for MNRL, whose texts are cut at the model's max_seq_length
    #[arg(long)]
    seq_len: Option<usize>,
    /// Peak learning rate (AdamW)
    #[arg(long, default_value_t = 2e-5)]
    lr: f64,
    /// AdamW's decoupled weight decay, applied to every parameter
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Linear warm-up from 0 over this many steps
    #[arg(long, default_value_t = 0)]
    warmup_steps: u64,
    /// After warm-up: `constant`, or `cosine` (half a cosine down to 0 at --steps)
    #[arg(long, default_value = "constant")]
    schedule: String,
    /// Clip gradients to this global norm (torch's clip_grad_norm_); off by default
    #[arg(long)]
    clip_norm: Option<f64>,
    /// Seed of the shuffled batch order and of the dropout masks
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Batches in file order (batch k is examples k*B .. (k+1)*B), no shuffling
    #[arg(long)]
    no_shuffle: bool,
    /// Dropout probability, everywhere the model applies dropout in training (BERT: embeddings,
    /// attention weights, layer outputs; Llama: attention weights). Default: the model's config
    /// (MiniLM: 0.1; SmolLM2: 0). 0 turns it off. Masks derive from --seed and the step, so
    /// --resume draws the same ones
    #[arg(long)]
    dropout: Option<f64>,
    /// Write one JSON line per step here (step, loss, lr, tokens, seconds)
    #[arg(long)]
    log: Option<PathBuf>,
    /// Output directory: the trained model (loadable by `embed`/`generate --model DIR`) and
    /// DIR/checkpoint (to --resume from)
    #[arg(long)]
    out: PathBuf,
    /// Also write a checkpoint every this many steps (one is always written at the end)
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Continue from DIR/checkpoint exactly (weights, optimiser moments, step, data position)
    #[arg(long)]
    resume: bool,
    /// Mixed precision: `bf16` runs the matrix products (linear layers, matmuls, attention) of
    /// the forward and backward passes in bf16, and norms, softmax, the loss and the optimiser in
    /// f32 on f32 master weights (torch.autocast's policy). Off by default (all f32)
    #[arg(long, value_parser = parse_mixed_precision)]
    mixed_precision: Option<DType>,
    /// Device to train on: cpu (candle), cuda:N, xla:cpu
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// No progress bar
    #[arg(long)]
    no_progress: bool,
}

/// `--mixed-precision`: only bf16 (f16 would need loss scaling, which accelrt does not do).
fn parse_mixed_precision(s: &str) -> std::result::Result<DType, String> {
    match s {
        "bf16" => Ok(DType::BF16),
        "f16" => {
            Err("f16 mixed precision needs loss scaling (its gradients underflow), which accelrt does not do; use bf16"
                .into())
        }
        other => Err(format!("`{other}` is not a mixed-precision dtype; use bf16")),
    }
}

/// Tokens per window for decoders when --seq-len is not given.
const DEFAULT_SEQ_LEN: usize = 128;

/// The task a model directory implies.
enum Task {
    Mnrl { dir: PathBuf },
    CausalLm { path: PathBuf },
}

fn resolve_model(store: &ModelStore, model: &str) -> Result<Task> {
    let path = Path::new(model);
    let dir = if path.exists() { path.to_path_buf() } else { store.ensure(models::lookup(model)?)? };
    if models::generator::is_gguf_model(&dir) {
        Ok(Task::CausalLm { path: dir })
    } else if dir.join("config.json").is_file() && dir.join("modules.json").is_file() {
        Ok(Task::Mnrl { dir })
    } else {
        bail!("{}: neither a sentence-transformers directory nor a GGUF model", dir.display())
    }
}

/// What training writes (`--out`, `--log`) must never be what it reads: a log opened over the
/// data file empties it, and an `--out` on the model's own directory overwrites the model being
/// trained. A first run also needs an empty (or new) `--out`, so nothing there is replaced
/// unnoticed; `--resume` continues in one that holds a checkpoint.
fn check_outputs_spare_inputs(a: &TrainArgs, model: &Path, data: &Path) -> Result<()> {
    let canonical = |p: &Path| std::fs::canonicalize(p).ok();
    let (model, data) = (canonical(model), canonical(data));
    let model_dir = model.as_ref().map(|m| if m.is_file() { m.parent().unwrap_or(m).to_path_buf() } else { m.clone() });
    if let Some(log) = a.log.as_deref().and_then(canonical) {
        if Some(&log) == data.as_ref() || model_dir.as_ref().is_some_and(|m| log.starts_with(m)) {
            bail!("--log {} is an input of this run (the data or the model); choose another file", log.display());
        }
    }
    if let Some(out) = canonical(&a.out) {
        if model_dir.as_ref().is_some_and(|m| out == *m || m.starts_with(&out)) {
            bail!("--out {} holds the model being trained; write the trained model elsewhere", a.out.display());
        }
        if data.as_ref().is_some_and(|d| d.starts_with(&out)) && !a.resume {
            bail!("--out {} holds the training data; write the trained model elsewhere", a.out.display());
        }
        let empty = std::fs::read_dir(&out).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !a.resume && !empty {
            bail!(
                "--out {} is not empty: training writes the model there; use a new directory (or --resume to continue \
                 the checkpoint in it)",
                a.out.display()
            );
        }
    }
    Ok(())
}

/// `--data shakespeare` names the fetched data set's training file for the task.
fn resolve_data(store: &ModelStore, data: &str, file: &str) -> Result<PathBuf> {
    if Path::new(data).exists() {
        return Ok(PathBuf::from(data));
    }
    let spec = dataset::lookup(data).with_context(|| format!("--data {data}: no such file or data set"))?;
    Ok(DataStore::new(store.root()).fetch(spec)?.join(file))
}

/// One trainer for both tasks, so the loop is written once.
enum Trainer {
    Mnrl { trainer: Box<MnrlTrainer>, pairs: PairsFile },
    CausalLm { trainer: Box<CausalLmTrainer>, windows: TokenWindows },
}

impl Trainer {
    fn examples(&self) -> usize {
        match self {
            Trainer::Mnrl { pairs, .. } => pairs.len(),
            Trainer::CausalLm { windows, .. } => windows.len(),
        }
    }

    fn dropout(&self) -> DropoutRates {
        match self {
            Trainer::Mnrl { trainer, .. } => trainer.dropout(),
            Trainer::CausalLm { trainer, .. } => trainer.dropout(),
        }
    }

    fn identity(&self) -> &DataIdentity {
        match self {
            Trainer::Mnrl { pairs, .. } => pairs.identity(),
            Trainer::CausalLm { windows, .. } => windows.identity().expect("windows read from a file"),
        }
    }

    /// One optimiser step on `batch`: the examples of all its micro-batches, in order.
    fn step(&mut self, batch: &[usize], lr: f64) -> Result<StepOutcome> {
        Ok(match self {
            Trainer::Mnrl { trainer, pairs } => {
                let b: Vec<Pair> = pairs.batch(batch)?;
                trainer.step(&b, lr)?
            }
            Trainer::CausalLm { trainer, windows } => trainer.step(&windows.batch(batch)?, lr)?,
        })
    }

    fn session(&mut self) -> &mut accelrt::core::training::TrainingSession {
        match self {
            Trainer::Mnrl { trainer, .. } => trainer.session_mut(),
            Trainer::CausalLm { trainer, .. } => trainer.session_mut(),
        }
    }

    fn save_model(&self, out: &Path) -> Result<()> {
        match self {
            Trainer::Mnrl { trainer, .. } => trainer.save_model(out)?,
            Trainer::CausalLm { trainer, .. } => {
                trainer.save_model(out)?;
            }
        }
        Ok(())
    }
}

/// The progress display: a bar on a terminal, a line every 10 s otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
    enabled: bool,
}

impl Progress {
    fn new(total: u64, done: u64, enabled: bool) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            // The bench's style (crates/bench/src/progress.rs), with the step count.
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_prefix("train");
            bar.set_position(done);
            bar
        });
        Progress { bar, last_line: Instant::now(), enabled }
    }

    fn update(&mut self, step: u64, total: u64, loss: f64, tokens_per_s: f64, left: Duration) {
        let msg = format!("loss {loss:.4} · {tokens_per_s:.0} tokens/s · {} left", human(left));
        if let Some(bar) = &self.bar {
            bar.set_position(step);
            bar.set_message(msg);
        } else if self.enabled && (self.last_line.elapsed() >= Duration::from_secs(10) || step == total) {
            eprintln!("train: step {step}/{total} {msg}");
            self.last_line = Instant::now();
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 90.0 {
        format!("{:.0} min {:02.0} s", (s / 60.0).floor(), (s % 60.0).floor())
    } else {
        format!("{s:.0} s")
    }
}

/// Runs `accelrt train`.
pub fn train(store: &ModelStore, a: TrainArgs) -> Result<()> {
    let dropout = match a.dropout {
        None => DropoutChoice::ModelConfig,
        Some(p) if (0.0..1.0).contains(&p) => DropoutChoice::Probability(p),
        Some(p) => bail!("--dropout {p} must be in [0, 1)"),
    };
    if a.steps == 0 || a.steps > MAX_STEPS {
        bail!("--steps must be between 1 and {MAX_STEPS}");
    }
    if a.grad_accum == 0 || a.grad_accum as u64 > MAX_GRAD_ACCUM {
        bail!("--grad-accum must be between 1 and {MAX_GRAD_ACCUM}");
    }
    if a.checkpoint_every == Some(0) {
        bail!("--checkpoint-every must be at least 1");
    }
    let schedule = match a.schedule.as_str() {
        "constant" => LrSchedule::Constant { lr: a.lr, warmup_steps: a.warmup_steps },
        "cosine" => LrSchedule::WarmupCosine { lr: a.lr, warmup_steps: a.warmup_steps, total_steps: a.steps },
        other => bail!("--schedule {other}: expected constant or cosine"),
    };
    schedule.validate()?;
    if !(a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
        bail!("--weight-decay must be a finite non-negative number");
    }
    if a.clip_norm.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        bail!("--clip-norm must be a positive number");
    }
    let config = TrainingConfig {
        optimizer: Optimizer::AdamW(AdamW { weight_decay: a.weight_decay, ..AdamW::default() }),
        clip_norm: a.clip_norm,
        mixed_precision: a.mixed_precision,
    };
    let trainer_options = TrainerOptions { grad_accum: a.grad_accum, dropout, seed: a.seed };
    let backend = accelrt::open_backend(&a.backend)?;
    let options = PrepareOptions::default();
    let model = resolve_model(store, &a.model)?;
    if matches!(model, Task::Mnrl { .. }) {
        if let Some(n) = a.seq_len {
            bail!(
                "--seq-len {n}: windows of tokens are for decoders; an embedding model's texts are cut at its own \
                 max_seq_length (sentence_bert_config.json), as `accelrt embed` cuts them"
            );
        }
    }
    let source = match &model {
        Task::Mnrl { dir } => dir.clone(),
        Task::CausalLm { path } => path.clone(),
    };
    let data = resolve_data(
        store,
        &a.data,
        if matches!(model, Task::Mnrl { .. }) { dataset::PAIRS_TRAIN } else { dataset::CORPUS_TRAIN },
    )?;
    check_outputs_spare_inputs(&a, &source, &data)?;
    let (mut trainer, task, data_path, seq_len) = match model {
        Task::Mnrl { dir } => {
            let pairs = PairsFile::open(&data)?;
            let trainer =
                MnrlTrainer::with_options(&dir, backend.as_ref(), &options, a.batch_size, &config, &trainer_options)
                    .with_context(|| format!("preparing the training step of {}", dir.display()))?;
            (Trainer::Mnrl { trainer: Box::new(trainer), pairs }, "mnrl", data, None)
        }
        Task::CausalLm { path } => {
            let seq_len = a.seq_len.unwrap_or(DEFAULT_SEQ_LEN);
            let trainer =
                CausalLmTrainer::with_options(&path, backend.as_ref(), &options, seq_len, &config, &trainer_options)
                    .with_context(|| format!("preparing the training step of {}", path.display()))?;
            let windows =
                TokenWindows::from_file(&data, seq_len, accelrt::train::corpus::DEFAULT_MAX_CORPUS_BYTES, |text| {
                    trainer.tokenizer().encode(text)
                })?;
            (Trainer::CausalLm { trainer: Box::new(trainer), windows }, "causal-lm", data, Some(seq_len))
        }
    };
    let order = if a.no_shuffle { Order::FileOrder } else { Order::Shuffled { seed: a.seed } };
    let checkpoint_dir = a.out.join("checkpoint");
    // The sampler hands out micro-batches; an optimiser step takes `grad_accum` of them.
    let mut sampler = Sampler::new(trainer.examples(), a.batch_size, order)?;
    let identity = trainer.identity().clone();
    let rates = trainer.dropout();
    let describe = |steps: u64, sampler: &Sampler| TrainerState {
        steps,
        grad_accum: a.grad_accum as u64,
        sampler: sampler.state(),
        task: task.to_string(),
        model: a.model.clone(),
        data: data_path.clone(),
        data_identity: identity.clone(),
        seq_len,
        dropout: rates,
        dropout_seed: rates.any().then_some(a.seed),
        mixed_precision: config.mixed_precision,
    };

    let mut log = if a.resume {
        let saved = TrainerState::read(&checkpoint_dir).context("--resume")?;
        let differences = saved.differences(&describe(saved.steps, &sampler));
        if !differences.is_empty() {
            bail!(
                "--resume: the checkpoint in {} was made for another training:\n  {}",
                checkpoint_dir.display(),
                differences.join("\n  ")
            );
        }
        step::restore_state(trainer.session(), &checkpoint_dir.join(checkpoint::STATE_FILE), saved.steps)
            .context("--resume")?;
        sampler = Sampler::restore(saved.sampler, trainer.examples())?;
        eprintln!("resumed at step {} from {}", saved.steps, checkpoint_dir.display());
        a.log.as_ref().map(|p| StepLog::resume(p, saved.steps)).transpose()?
    } else {
        a.log.as_ref().map(StepLog::create).transpose()?
    };

    let save_checkpoint = |trainer: &mut Trainer, sampler: &Sampler| -> Result<()> {
        std::fs::create_dir_all(&checkpoint_dir).with_context(|| format!("creating {}", checkpoint_dir.display()))?;
        let steps = step::save_state(trainer.session(), &checkpoint_dir.join(checkpoint::STATE_FILE))?;
        describe(steps, sampler).write(&checkpoint_dir)?;
        Ok(())
    };

    let start = trainer.session().steps();
    if start >= a.steps {
        bail!("the checkpoint is at step {start}; --steps {} leaves nothing to do", a.steps);
    }
    let mut progress = Progress::new(a.steps, start, !a.no_progress);
    let (mut tokens_total, mut seconds_total) = (0u64, 0.0f64);
    for k in start..a.steps {
        let t0 = Instant::now();
        let lr = schedule.lr_at(k);
        let batch: Vec<usize> = (0..a.grad_accum).flat_map(|_| sampler.next_batch()).collect();
        let out = trainer.step(&batch, lr).with_context(|| format!("step {}", k + 1))?;
        let seconds = t0.elapsed().as_secs_f64();
        tokens_total += out.tokens as u64;
        seconds_total += seconds;
        if let Some(log) = &mut log {
            log.write(&StepRecord { step: k + 1, loss: out.loss, lr, tokens: out.tokens as u64, seconds })?;
        }
        let done = k + 1 - start;
        let left = Duration::from_secs_f64(seconds_total / done as f64 * (a.steps - k - 1) as f64);
        progress.update(k + 1, a.steps, out.loss, tokens_total as f64 / seconds_total, left);
        if a.checkpoint_every.is_some_and(|n| (k + 1) % n == 0) && k + 1 < a.steps {
            save_checkpoint(&mut trainer, &sampler)?;
        }
    }
    progress.finish();
    // A loss is checked before each update, so the last update (or a blown-up moment) could
    // still leave NaN or infinite weights: those are never saved as a model or a checkpoint.
    for (name, value) in trainer.session().parameters()? {
        let finite = match value.as_f32() {
            Some(v) => v.iter().all(|x| x.is_finite()),
            None => value.to_f64_vec().iter().all(|x| x.is_finite()),
        };
        if !finite {
            bail!(
                "after step {} parameter `{name}` holds NaN or infinite values (a learning rate too high?); nothing \
                 was written to {}",
                a.steps,
                a.out.display()
            );
        }
    }
    save_checkpoint(&mut trainer, &sampler)?;
    trainer.save_model(&a.out)?;
    eprintln!(
        "trained {} steps ({} tokens in {:.1} s); model in {}",
        a.steps - start,
        tokens_total,
        seconds_total,
        a.out.display()
    );
    Ok(())
}
