//! The training scenario: training steps of the model — forward, loss, backward, AdamW — back to
//! back on batches of its training data, on accelrt and then on each training peer, the same
//! batches in the same order on both sides, so their samples/s, tokens/s and $ per 1M training
//! tokens compare like for like.
//!
//! The task follows the model, as in `accelrt train`: a sentence-transformers model trains with
//! MultipleNegativesRankingLoss on (anchor, positive) pairs, a GGUF decoder with next-token
//! cross-entropy on windows of `seq_len` tokens of a corpus. Batches come from the data in file
//! order (no shuffling: the first steps' losses are then PyTorch's too, a check that both sides
//! ran the same step), and dropout is 0 on both sides.

use super::{device_bytes, BenchConfig, Outcome};
use crate::environment::{Environment, HostLoad, LoadProbe};
use crate::peers::PeerOptions;
use crate::progress::Progress;
use crate::result::BenchResult;
use crate::scenario::{check_rules, Measurement, RunRules, ScenarioKind};
use crate::stats::Latency;
use crate::train_peer::{TrainBatch, TrainHyper, TrainingPeer};
use crate::training::{TrainingMetrics, PRECISION_BF16_MIXED, PRECISION_F32};
use crate::{BenchError, Result};
use accelrt_core::optim::AdamW;
use accelrt_core::training::{Optimizer, TrainingConfig};
use accelrt_core::Backend;
use accelrt_core::PrepareOptions;
use accelrt_models::{ModelKind, ModelStore};
use accelrt_train::step::{CausalLmTrainer, MnrlTrainer};
use accelrt_train::{dataset, DataStore, Order, Pair, PairsFile, Sampler, TokenWindows};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the training scenario trains on and with.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingOptions {
    /// A pairs file (JSON lines `{"anchor": …, "positive": …}`) for sentence-embedding models, a
    /// UTF-8 text corpus for decoders, or the name of a data set (`shakespeare`) whose training
    /// file for the task is used (fetched into the cache when missing).
    pub data: String,
    /// Decoders: tokens per window (the corpus is cut into consecutive windows of this length);
    /// `None`: [`DEFAULT_SEQ_LEN`]. Refused for sentence-embedding models (pairs are not cut).
    pub seq_len: Option<usize>,
    /// AdamW's learning rate (constant; the throughput does not depend on it).
    pub lr: f64,
    /// AdamW's decoupled weight decay, on every parameter.
    pub weight_decay: f64,
}

impl Default for TrainingOptions {
    /// The Shakespeare data set, windows of 128 tokens, AdamW at 5e-5 with weight decay 0.01.
    fn default() -> TrainingOptions {
        TrainingOptions { data: "shakespeare".into(), seq_len: None, lr: 5e-5, weight_decay: 0.01 }
    }
}

/// Tokens per window when `--seq-len` is not given.
pub const DEFAULT_SEQ_LEN: usize = 128;

/// How far a peer's first loss may be from accelrt's (relative) and still count as the same step
/// on the same batch: f32 runs agree to about 1e-6 (docs/training.md).
const SAME_STEP_LOSS: f64 = 1e-3;
/// The same in bf16 mixed precision, where each side rounds its products its own way: MiniLM's
/// first loss is within 0.6 % of f32's on either side (docs/training.md), so 3 % still tells the
/// same step from another batch or model (MNRL losses of other batches differ by tens of %).
const SAME_STEP_LOSS_BF16: f64 = 3e-2;

/// One training step as measured, on either side of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Step {
    rows: usize,
    /// Non-padding input tokens of the batch.
    tokens: u64,
    loss: f64,
    time: Duration,
    /// A peer's peak memory as it reported it after the step (its process, not the harness's).
    peak_memory: Option<u64>,
}

/// The steps of one system's run: warm-up, then measured.
struct Run {
    warmup: Vec<Step>,
    measured: Vec<Step>,
}

/// The batches of a run, in file order: pairs for MNRL, rows of token ids for the causal LM.
enum Data {
    Pairs(PairsFile),
    Windows(TokenWindows),
}

/// One batch, as both sides take it.
enum Batch {
    Pairs(Vec<Pair>),
    /// `rows` windows of `seq_len` tokens, concatenated.
    Windows {
        tokens: Vec<u32>,
        seq_len: usize,
    },
}

impl Data {
    fn examples(&self) -> usize {
        match self {
            Data::Pairs(p) => p.len(),
            Data::Windows(w) => w.len(),
        }
    }

    fn batch(&mut self, indices: &[usize]) -> Result<Batch> {
        Ok(match self {
            Data::Pairs(p) => Batch::Pairs(p.batch(indices)?),
            Data::Windows(w) => Batch::Windows { tokens: w.batch(indices)?, seq_len: w.seq_len() },
        })
    }
}

/// Either side's training step on one batch.
trait Trainer {
    fn step(&mut self, batch: &Batch) -> Result<Step>;
}

/// accelrt's own step ([`accelrt_train::step`]), timed around the call: the batch is tokenised
/// (MNRL) and sent to the device inside it, as a training loop does every step. Both variants are
/// boxed: a trainer is large (an `MnrlTrainer` alone is about 1.5 KB).
enum AccelrtTrainer {
    Mnrl(Box<MnrlTrainer>),
    CausalLm(Box<CausalLmTrainer>),
}

impl Trainer for (AccelrtTrainer, f64) {
    fn step(&mut self, batch: &Batch) -> Result<Step> {
        let lr = self.1;
        let start = Instant::now();
        let (out, rows) = match (&mut self.0, batch) {
            (AccelrtTrainer::Mnrl(t), Batch::Pairs(pairs)) => (t.step(pairs, lr)?, pairs.len()),
            (AccelrtTrainer::CausalLm(t), Batch::Windows { tokens, seq_len }) => {
                (t.step(tokens, lr)?, tokens.len() / seq_len)
            }
            _ => return Err(BenchError::Invalid("a batch of the other task reached the trainer".into())),
        };
        Ok(Step { rows, tokens: out.tokens as u64, loss: out.loss, time: start.elapsed(), peak_memory: None })
    }
}

/// A peer's step, timed by the harness around query and reply (as inference peers are).
impl Trainer for TrainingPeer {
    fn step(&mut self, batch: &Batch) -> Result<Step> {
        let s = match batch {
            Batch::Pairs(pairs) => {
                let texts: Vec<(&str, &str)> = pairs.iter().map(|p| (p.anchor.as_str(), p.positive.as_str())).collect();
                TrainingPeer::step(self, TrainBatch::Pairs(&texts))?
            }
            Batch::Windows { tokens, seq_len } => {
                let rows: Vec<&[u32]> = tokens.chunks(*seq_len).collect();
                TrainingPeer::step(self, TrainBatch::Windows(&rows))?
            }
        };
        Ok(Step { rows: s.rows, tokens: s.tokens, loss: s.loss, time: s.round_trip, peak_memory: s.peak_memory_bytes })
    }
}

/// The data file for `kind`: a path as given, or a data set's training file for the task.
fn resolve_data(store: &ModelStore, data: &str, kind: ModelKind) -> Result<PathBuf> {
    if Path::new(data).exists() {
        return Ok(PathBuf::from(data));
    }
    let spec = dataset::lookup(data).map_err(|e| BenchError::Invalid(format!("--data {data}: no such file ({e})")))?;
    let file = match kind {
        ModelKind::SentenceEmbedding => dataset::PAIRS_TRAIN,
        ModelKind::TextGeneration => dataset::CORPUS_TRAIN,
    };
    Ok(DataStore::new(store.root()).fetch(spec)?.join(file))
}

/// Runs the training scenario on accelrt, then on each peer (`config.peers` name training
/// runners), and keeps one result per system.
pub(super) fn run_training(
    config: &BenchConfig,
    backend: &dyn Backend,
    store: &ModelStore,
    model: &Path,
    kind: ModelKind,
    model_name: &str,
) -> Result<Outcome> {
    let t = &config.training;
    if kind == ModelKind::SentenceEmbedding && t.seq_len.is_some() {
        return Err(BenchError::Invalid(
            "--seq-len is for decoders (corpus windows); pairs are tokenised whole, up to the model's limit".into(),
        ));
    }
    let seq_len = t.seq_len.unwrap_or(DEFAULT_SEQ_LEN);
    let data_path = resolve_data(store, &t.data, kind)?;
    // --dtype bf16 is mixed precision: a graph pass with f32 master weights, not a backend-wide
    // compute dtype (which would round the parameters and the optimiser to bf16 too).
    let mixed_precision = config.options.compute_dtype.filter(|d| *d == accelrt_core::DType::BF16);
    let adamw = TrainingConfig {
        optimizer: Optimizer::AdamW(AdamW { weight_decay: t.weight_decay, ..AdamW::default() }),
        clip_norm: None,
        mixed_precision,
    };
    let prepare = PrepareOptions { compute_dtype: None };
    let (trainer, mut data, task) = match kind {
        ModelKind::SentenceEmbedding => {
            let pairs = PairsFile::open(&data_path)?;
            let trainer = MnrlTrainer::new(model, backend, &prepare, config.batch_size, &adamw)?;
            (AccelrtTrainer::Mnrl(Box::new(trainer)), Data::Pairs(pairs), "mnrl")
        }
        ModelKind::TextGeneration => {
            let trainer = CausalLmTrainer::new(model, backend, &prepare, seq_len, &adamw)?;
            let windows = TokenWindows::from_file(
                &data_path,
                seq_len,
                accelrt_train::corpus::DEFAULT_MAX_CORPUS_BYTES,
                |text| trainer.tokenizer().encode(text),
            )?;
            (AccelrtTrainer::CausalLm(Box::new(trainer)), Data::Windows(windows), "causal-lm")
        }
    };
    if data.examples() < config.batch_size {
        return Err(BenchError::Invalid(format!(
            "{} holds {} training examples, fewer than one batch of {}",
            data_path.display(),
            data.examples(),
            config.batch_size
        )));
    }
    let rules = config.rules.unwrap_or_else(|| RunRules::mlperf(ScenarioKind::Training));
    let device = backend.device_info()?;
    let describe = TrainingDescription {
        model_name,
        task,
        data: &data_path,
        seq_len: (kind == ModelKind::TextGeneration).then_some(seq_len),
        options: t,
        precision: if mixed_precision.is_some() { PRECISION_BF16_MIXED } else { PRECISION_F32 },
    };
    let mut outcome = Outcome::default();
    let first_loss;
    {
        let probe = LoadProbe::start(vec![]);
        let mut ours = (trainer, t.lr);
        let run = train_for(&mut ours, &mut data, config, &rules, "accelrt training");
        let load = probe.finish(true);
        match run {
            Ok(run) => {
                first_loss = run.warmup.first().map(|s| s.loss);
                let mut env = Environment::capture(backend.name(), &device);
                env.host_load = load;
                let r = result(config, "accelrt", env, device_bytes(backend), false, &describe, &run);
                outcome.keep(config, r)?;
            }
            Err(BenchError::Interrupted) => {
                outcome.interrupted = true;
                return Ok(outcome);
            }
            Err(e) => return Err(e),
        }
    }
    for (name, script) in &config.peers {
        let peer = run_peer(config, name, script, model, &mut data, &rules);
        match peer {
            Ok((peer, run, load)) => {
                let mut env = super::peer_environment(&peer.info, &device, config);
                env.host_load = load;
                let mut r = result(config, &peer.info.system, env, None, true, &describe, &run);
                // Both sides start from the same weights on the same batch: their first losses
                // agree unless the peer trained something else (another model, batch or loss).
                let same = if mixed_precision.is_some() { SAME_STEP_LOSS_BF16 } else { SAME_STEP_LOSS };
                if let (Some(ours), Some(theirs)) = (first_loss, run.warmup.first().map(|s| s.loss)) {
                    if (ours - theirs).abs() > same * ours.abs() {
                        r.valid = false;
                        r.invalid_reasons.push(format!(
                            "its first loss {theirs} is not accelrt's {ours} (within {same} relative): not the same step on the same batch"
                        ));
                    }
                }
                if let Err(e) = outcome.keep(config, r) {
                    outcome.peer_failures.push(e);
                }
            }
            Err(BenchError::Interrupted) => {
                outcome.interrupted = true;
                break;
            }
            Err(e) => outcome.peer_failures.push(e),
        }
    }
    Ok(outcome)
}

/// Starts a training peer on the model and runs it through the same batches.
fn run_peer(
    config: &BenchConfig,
    name: &str,
    script: &Path,
    model: &Path,
    data: &mut Data,
    rules: &RunRules,
) -> Result<(TrainingPeer, Run, Option<HostLoad>)> {
    let options = PeerOptions {
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        device: config.peer_device.clone(),
        dtype: config.peer_dtype.clone(),
        max_tokens: None,
    };
    let hyper = TrainHyper { lr: config.training.lr, weight_decay: config.training.weight_decay, dropout: 0.0 };
    // A GGUF decoder's runner is given the model's directory (it finds the one .gguf there).
    let dir = if model.is_file() { model.parent().unwrap_or(Path::new(".")) } else { model };
    let mut peer = TrainingPeer::spawn(name, script, dir, &options, &hyper)?;
    let probe = LoadProbe::start(vec![peer.pid()]);
    let run = train_for(&mut peer, data, config, rules, &format!("{name} training"))?;
    let load = probe.finish(true);
    Ok((peer, run, load))
}

/// Warm-up steps (at least one, and until `rules.warmup` has passed: the first steps compile,
/// allocate and fill caches), then measured steps until the run has lasted `rules.min_duration`
/// and made `rules.min_queries` steps. Batches start at the data's first example every time, so
/// every system trains on the same batches.
fn train_for(
    trainer: &mut dyn Trainer,
    data: &mut Data,
    config: &BenchConfig,
    rules: &RunRules,
    label: &str,
) -> Result<Run> {
    let mut sampler = Sampler::new(data.examples(), config.batch_size, Order::FileOrder)?;
    let mut next = |data: &mut Data| data.batch(&sampler.next_batch());
    let stop_if_interrupted = || if crate::interrupt::requested() { Err(BenchError::Interrupted) } else { Ok(()) };
    let start = Instant::now();
    let mut warmup = Vec::new();
    while warmup.is_empty() || start.elapsed() < rules.warmup {
        stop_if_interrupted()?;
        let batch = next(data)?;
        warmup.push(trainer.step(&batch)?);
    }
    // Measured time is the steps' own (summed), as the result counts it.
    let progress = Progress::new(label, rules, config.progress);
    let mut steps: Vec<Step> = Vec::new();
    let mut measured = Duration::ZERO;
    while steps.len() < rules.min_queries.max(1) || measured < rules.min_duration {
        stop_if_interrupted()?;
        let batch = next(data)?;
        let step = trainer.step(&batch)?;
        measured += step.time;
        steps.push(step);
        progress.update(measured, steps.len());
    }
    progress.finish();
    Ok(Run { warmup, measured: steps })
}

/// What a result says about the run besides its numbers.
struct TrainingDescription<'a> {
    /// The model's name as results record it.
    model_name: &'a str,
    task: &'static str,
    data: &'a Path,
    seq_len: Option<usize>,
    options: &'a TrainingOptions,
    /// `TrainingMetrics::precision` of both sides (the peer trains as accelrt does).
    precision: &'static str,
}

/// One system's result: throughput over the summed step times of the measured steps (what a
/// training job pays for; the harness's own work between steps is left out on both sides).
fn result(
    config: &BenchConfig,
    system: &str,
    env: Environment,
    device_bytes: Option<u64>,
    is_peer: bool,
    d: &TrainingDescription<'_>,
    run: &Run,
) -> BenchResult {
    let steps = &run.measured;
    let seconds: f64 = steps.iter().map(|s| s.time.as_secs_f64()).sum();
    let rows: usize = steps.iter().map(|s| s.rows).sum();
    let tokens: u64 = steps.iter().map(|s| s.tokens).sum();
    let mut invalid_reasons = Vec::new();
    let rules = config.rules.unwrap_or_else(|| RunRules::mlperf(ScenarioKind::Training));
    check_rules(&rules, Duration::from_secs_f64(seconds), steps.len(), &mut invalid_reasons);
    let per_s = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
    let m = Measurement {
        scenario: ScenarioKind::Training,
        batch_size: config.batch_size,
        queries: steps.len(),
        samples: rows,
        duration_s: seconds,
        throughput_per_s: per_s(rows as f64),
        latency_ms: Latency::from_samples(&steps.iter().map(|s| s.time).collect::<Vec<_>>()),
        valid: invalid_reasons.is_empty(),
        invalid_reasons,
        target_qps: None,
        p99_bound_ms: None,
    };
    let mut r = BenchResult::new(&m, d.model_name, system, &config.pricing, &[], env, device_bytes);
    if is_peer {
        // The peer's own peak, as it reported it; this process's would misreport it.
        r.memory.peak_host_bytes = run.warmup.iter().chain(steps).filter_map(|s| s.peak_memory).max();
    }
    let tokens_per_s = per_s(tokens as f64);
    r.training = Some(TrainingMetrics {
        task: d.task.into(),
        data: d.data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        seq_len: d.seq_len,
        lr: d.options.lr,
        weight_decay: d.options.weight_decay,
        dropout: 0.0,
        precision: d.precision.into(),
        warmup_steps: run.warmup.len(),
        tokens,
        tokens_per_s,
        losses: run.warmup.iter().chain(steps).map(|s| s.loss).collect(),
        usd_per_million_tokens: TrainingMetrics::usd_per_million_tokens(r.price_usd_per_hour, tokens_per_s),
    });
    // Training samples are not inferences: the cost is the training table's, per 1M tokens.
    r.usd_per_million_inferences = None;
    r
}
