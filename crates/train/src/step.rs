//! Training steps of the bundled model families, end to end: the model's forward graph, its loss
//! and [`accelrt_core::training::training_graph`] (backward, optional clipping, AdamW/SGD, with the
//! parameters and moments as session variables on the device), prepared once on a backend, plus
//! what a trainer needs around it: batches from pairs or token windows, the trained model written
//! as a directory the inference commands load, and checkpoints that resume exactly.
//!
//! - [`MnrlTrainer`]: a BERT sentence-transformers model (all-MiniLM-L6-v2) with
//!   MultipleNegativesRankingLoss (scale 20, cosine, in-batch negatives). The BERT pooler is not in
//!   the graph (sentence-transformers does not use it), so it gets no gradient and is written back
//!   unchanged.
//! - [`CausalLmTrainer`]: a Llama GGUF (SmolLM2) with next-token cross-entropy on windows of
//!   tokens; every weight is dequantised to f32 for training, and tied embeddings stay one
//!   parameter (both uses add into its gradient).
//!
//! **Dropout** ([`TrainerOptions::dropout`]) is applied where the reference implementations apply
//! it in training — BERT: `hidden_dropout_prob` after the embeddings and each layer's two output
//! projections, `attention_probs_dropout_prob` on the attention weights
//! ([`bert::build_training_graph`]); Llama: `attention_dropout` on the attention weights
//! ([`llama::build_training_graph_with_dropout`]) — by `Op::Dropout`, whose masks are a hash of
//! a seed and each element's position. The seed of each micro-batch is [`dropout_seed`] of the
//! run's seed, the optimiser step and the micro-batch, so a resumed run draws the masks the
//! uninterrupted run drew. [`TrainerOptions::default`] has no dropout (the PyTorch reference
//! numbers are taken with dropout 0); inference graphs never contain dropout.
//!
//! **Gradient accumulation** ([`TrainerOptions::grad_accum`] = N): a step takes N micro-batches
//! (N × the batch size of examples) and applies one update from their averaged gradients
//! ([`accelrt_core::training::accumulating_training_graph`]). For the causal-LM loss (a mean over
//! predictions, every window the same length) that is the update of one batch N times as large,
//! up to float rounding. For MNRL it is **not**: each micro-batch's anchors meet only that
//! micro-batch's positives as negatives, so N micro-batches of B pairs average N losses with B − 1
//! negatives per anchor, while one batch of N·B pairs would have N·B − 1. Accumulation there buys
//! a steadier gradient at the memory of B pairs, not the harder task of a bigger batch.

use crate::{Pair, Result, TrainError};
use accelrt_core::training::{
    accumulating_training_graph, TrainingConfig, TrainingGraph, TrainingSession, TrainingState,
};
use accelrt_core::{
    loss, Backend, DType, Graph, GraphBuilder, HostTensor, Op, PrepareOptions, WeightSource, WeightView,
};
use accelrt_models::{bert, llama, ChatTokenizer, GgufFile, SafetensorsWeights, SentenceEmbedder};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The input of the MNRL step: anchors (rows 0..B) and positives (rows B..2B) in one padded batch.
const PAIR_IDS: &str = bert::INPUT_IDS;

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// Loss of the batch before the update.
    pub loss: f64,
    /// Global gradient norm before clipping (only with clipping configured).
    pub grad_norm: Option<f64>,
    /// Non-padding input tokens of the batch.
    pub tokens: usize,
}

/// Which dropout a training step applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DropoutChoice {
    /// None (PyTorch's `dropout = 0`, or `model.eval()`).
    Off,
    /// What the model's configuration says: BERT's `hidden_dropout_prob` and
    /// `attention_probs_dropout_prob` from `config.json`; a Llama GGUF carries no dropout key, and
    /// Llama's `attention_dropout` defaults to 0 (SmolLM2's config states 0), so none.
    ModelConfig,
    /// This probability everywhere the model applies dropout (`accelrt train --dropout P`).
    Probability(f64),
}

/// The dropout probabilities a model's training graph applies (Llama: only `attention`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DropoutRates {
    /// On hidden states (BERT's `hidden_dropout_prob`).
    pub hidden: f64,
    /// On attention weights.
    pub attention: f64,
}

impl DropoutRates {
    /// Whether any dropout is applied (then the graph takes a seed).
    pub fn any(&self) -> bool {
        self.hidden > 0.0 || self.attention > 0.0
    }
}

/// How a trainer runs its steps, beyond the optimiser ([`TrainingConfig`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainerOptions {
    /// Micro-batches per optimiser step (1: no accumulation). See the module documentation for
    /// what accumulation means for each loss.
    pub grad_accum: usize,
    /// Which dropout to apply.
    pub dropout: DropoutChoice,
    /// The run's seed, from which each micro-batch's dropout seed is derived ([`dropout_seed`]).
    pub seed: u64,
}

impl Default for TrainerOptions {
    /// No accumulation, no dropout.
    fn default() -> TrainerOptions {
        TrainerOptions { grad_accum: 1, dropout: DropoutChoice::Off, seed: 0 }
    }
}

/// The dropout seed (the `u32` scalar input of `Op::Dropout`) of micro-batch `micro` (from 0) of
/// optimiser step `step` (from 1) in a run seeded `seed`: a pure function of the three, through
/// SplitMix64 ([`crate::rng`]), so a run resumed at any step feeds the seeds the uninterrupted
/// run fed, and every micro-batch of every step draws other masks.
pub fn dropout_seed(seed: u64, step: u64, micro: u64) -> u32 {
    use crate::rng::SplitMix64;
    let position = SplitMix64::new(step).next_u64() ^ SplitMix64::new(micro ^ 0xD409_0D07_5EED_0001).next_u64();
    let mixed = SplitMix64::new(seed).next_u64() ^ position;
    (SplitMix64::new(mixed).next_u64() >> 32) as u32
}

impl TrainerOptions {
    fn check(&self) -> Result<()> {
        if let DropoutChoice::Probability(p) = self.dropout {
            if !(0.0..1.0).contains(&p) {
                return Err(TrainError::InvalidArgument(format!("--dropout {p} must be in [0, 1)")));
            }
        }
        let max = crate::checkpoint::MAX_GRAD_ACCUM;
        if self.grad_accum == 0 || self.grad_accum as u64 > max {
            return Err(TrainError::InvalidArgument(format!(
                "--grad-accum {} must be between 1 and {max}",
                self.grad_accum
            )));
        }
        Ok(())
    }
}

/// The f32 weights of `graph`: what a full fine-tune trains.
fn trainable(graph: &Graph) -> Vec<String> {
    graph
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Weight { .. }) && n.dtype == DType::F32)
        .map(|n| n.name.clone())
        .collect()
}

/// The MNRL step's graph for batches of `batch_size` pairs: the sentence encoder runs once on the
/// anchors and positives stacked into one batch of 2·B rows (padded to the longest text of both
/// sides; padding is masked in attention and pooling, so each row's embedding is the one it gets
/// alone), then rows 0..B and B..2B feed [`loss::mnrl_loss`]. One encoder pass rather than two
/// copies of the graph keeps one set of weight nodes, so each parameter has one gradient.
///
/// `dropout` as [`bert::build_training_graph`] applies it; `grad_accum` micro-batches per update.
#[allow(clippy::too_many_arguments)]
pub fn mnrl_graph(
    cfg: &bert::BertConfig,
    head: bert::SentenceHead,
    prefix: &str,
    batch_size: usize,
    config: &TrainingConfig,
    grad_accum: usize,
    dropout: bert::BertDropout,
) -> Result<TrainingGraph> {
    let forward = bert::build_training_graph(cfg, head, prefix, dropout)?;
    let emb = forward
        .outputs()
        .iter()
        .find(|(n, _)| n == bert::EMBEDDINGS)
        .map(|(_, id)| *id)
        .expect("the BERT graph outputs embeddings");
    let params = trainable(&forward);
    let mut b = GraphBuilder::from_graph(forward);
    let anchors = b.add("mnrl.anchors", Op::Slice { x: emb, axis: 0, start: 0, end: Some(batch_size) })?;
    let positives =
        b.add("mnrl.positives", Op::Slice { x: emb, axis: 0, start: batch_size, end: Some(2 * batch_size) })?;
    let l = loss::mnrl_loss(&mut b, "mnrl", anchors, positives, loss::MNRL_SCALE)?;
    b.output(accelrt_core::training::LOSS_OUTPUT, l);
    let forward = b.build()?;
    let names: Vec<&str> = params.iter().map(String::as_str).collect();
    let loss = accelrt_core::training::LOSS_OUTPUT;
    Ok(accumulating_training_graph(&forward, loss, &names, config, grad_accum)?)
}

/// Whether a graph takes a dropout seed (the BERT and Llama seed inputs share one name).
fn takes_seed(graph: &Graph) -> bool {
    debug_assert_eq!(bert::DROPOUT_SEED, llama::DROPOUT_SEED);
    graph.nodes().iter().any(|n| n.name == bert::DROPOUT_SEED && matches!(n.op, Op::Input { .. }))
}

/// The per-micro-batch dropout seeds of the next step, as input tensors (none without dropout).
fn seeds(session: &TrainingSession, dropout: Option<u64>) -> Result<Vec<HostTensor>> {
    let Some(seed) = dropout else { return Ok(Vec::new()) };
    let step = session.steps() + 1;
    (0..session.micro_batches() as u64)
        .map(|m| Ok(HostTensor::u32(vec![], vec![dropout_seed(seed, step, m)])?))
        .collect()
}

/// A sentence-transformers BERT model in training with MNRL, its state on a backend.
pub struct MnrlTrainer {
    session: TrainingSession,
    /// The run seed, when the graph applies dropout.
    dropout_seed: Option<u64>,
    rates: DropoutRates,
    /// The original model, used for its tokenizer (truncation and special tokens exactly as
    /// `embed` does them).
    embedder: SentenceEmbedder,
    dir: PathBuf,
    batch_size: usize,
}

impl MnrlTrainer {
    /// Loads the sentence-transformers directory `dir` and prepares its training step for batches
    /// of `batch_size` pairs on `backend`.
    pub fn new(
        dir: &Path,
        backend: &dyn Backend,
        options: &PrepareOptions,
        batch_size: usize,
        config: &TrainingConfig,
    ) -> Result<MnrlTrainer> {
        Self::with_options(dir, backend, options, batch_size, config, &TrainerOptions::default())
    }

    /// [`MnrlTrainer::new`] with [`TrainerOptions`]: with `grad_accum` N, each step takes N
    /// micro-batches of `batch_size` pairs (each with its own in-batch negatives).
    pub fn with_options(
        dir: &Path,
        backend: &dyn Backend,
        options: &PrepareOptions,
        batch_size: usize,
        config: &TrainingConfig,
        trainer: &TrainerOptions,
    ) -> Result<MnrlTrainer> {
        trainer.check()?;
        if batch_size < 2 {
            return Err(TrainError::InvalidArgument(format!(
                "MNRL needs at least 2 pairs per batch (in-batch negatives), got {batch_size}"
            )));
        }
        let cfg = bert::BertConfig::from_file(&dir.join("config.json"))?;
        let head = bert::SentenceHead::from_dir(dir)?;
        let weights = SafetensorsWeights::open(&dir.join("model.safetensors"))?;
        let prefix = if weights.contains("bert.embeddings.word_embeddings.weight") { "bert." } else { "" };
        cfg.check_weights(&weights, prefix)?;
        let dropout = match trainer.dropout {
            DropoutChoice::Off => bert::BertDropout::NONE,
            DropoutChoice::ModelConfig => bert::BertDropout::from_file(&dir.join("config.json"))?,
            DropoutChoice::Probability(p) => bert::BertDropout::uniform(p),
        };
        let rates =
            DropoutRates { hidden: dropout.hidden_dropout_prob, attention: dropout.attention_probs_dropout_prob };
        let training = mnrl_graph(&cfg, head, prefix, batch_size, config, trainer.grad_accum, dropout)?;
        let dropout_seed = takes_seed(&training.graph).then_some(trainer.seed);
        let session = TrainingSession::new(backend, &training, &weights, options)?;
        // The tokenizer comes with the inference pipeline (truncation, special tokens and the
        // long-text guard exactly as `embed` applies them); its graph costs one more copy of the
        // weights, small next to the optimiser's two moments.
        let embedder = SentenceEmbedder::load(dir, backend, options)?;
        Ok(MnrlTrainer { session, dropout_seed, rates, embedder, dir: dir.to_path_buf(), batch_size })
    }

    /// Pairs per micro-batch (per step without accumulation).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Micro-batches per optimiser step.
    pub fn grad_accum(&self) -> usize {
        self.session.micro_batches()
    }

    /// The dropout probabilities the step applies.
    pub fn dropout(&self) -> DropoutRates {
        self.rates
    }

    /// The batch tensors of `pairs`: anchors then positives, padded to the longest of all.
    pub fn batch(&self, pairs: &[Pair]) -> Result<(Vec<HostTensor>, usize)> {
        if pairs.len() != self.batch_size {
            return Err(TrainError::InvalidArgument(format!(
                "a batch of {} pairs; this step was built for {}",
                pairs.len(),
                self.batch_size
            )));
        }
        let texts: Vec<&str> =
            pairs.iter().map(|p| p.anchor.as_str()).chain(pairs.iter().map(|p| p.positive.as_str())).collect();
        let ids = self.embedder.encode(&texts)?;
        let batch = self.embedder.batch_from_ids(&ids.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
        Ok((vec![batch.input_ids, batch.attention_mask, batch.token_type_ids], batch.tokens))
    }

    /// One optimiser step on `pairs` at learning rate `lr`: `batch_size × grad_accum` pairs, taken
    /// as consecutive micro-batches of `batch_size`. The loss is the mean of the micro-batches'.
    pub fn step(&mut self, pairs: &[Pair], lr: f64) -> Result<StepOutcome> {
        let n = self.grad_accum();
        if pairs.len() != self.batch_size * n {
            return Err(TrainError::InvalidArgument(format!(
                "a step of {} pairs; this step takes {n} micro-batch(es) of {}",
                pairs.len(),
                self.batch_size
            )));
        }
        let mut tensors = Vec::with_capacity(n);
        let mut tokens = 0;
        for micro in pairs.chunks(self.batch_size) {
            let (t, count) = self.batch(micro)?;
            tensors.push(t);
            tokens += count;
        }
        let seeds = seeds(&self.session, self.dropout_seed)?;
        let inputs: Vec<Vec<(&str, &HostTensor)>> = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut inputs = vec![(PAIR_IDS, &t[0]), (bert::ATTENTION_MASK, &t[1]), (bert::TOKEN_TYPE_IDS, &t[2])];
                inputs.extend(seeds.get(i).map(|s| (bert::DROPOUT_SEED, s)));
                inputs
            })
            .collect();
        let micro: Vec<&[(&str, &HostTensor)]> = inputs.iter().map(|i| i.as_slice()).collect();
        let r = self.session.accumulated_step(&micro, lr)?;
        finite(r.loss, self.session.steps())?;
        Ok(StepOutcome { loss: r.loss, grad_norm: r.grad_norm, tokens })
    }

    /// The training session (parameters, step count).
    pub fn session(&self) -> &TrainingSession {
        &self.session
    }

    /// Mutable access to the session, e.g. to restore a checkpoint.
    pub fn session_mut(&mut self) -> &mut TrainingSession {
        &mut self.session
    }

    /// Writes the trained model to `out` as a sentence-transformers directory that `embed` loads:
    /// every file of the original directory except its weight files, and `model.safetensors` with
    /// the trained tensors in place of the originals (the others, such as the pooler, unchanged).
    pub fn save_model(&self, out: &Path) -> Result<()> {
        copy_model_files(&self.dir, out)?;
        let original = SafetensorsWeights::open(&self.dir.join("model.safetensors"))?;
        let trained: HashMap<String, HostTensor> = self.session.parameters()?.into_iter().collect();
        let mut tensors = Vec::new();
        for name in original.names() {
            let t = match trained.get(&name) {
                Some(t) => t.clone(),
                None => original.get(&name)?.to_host()?,
            };
            tensors.push((name, t));
        }
        write_safetensors(&out.join("model.safetensors"), &tensors)
    }
}

fn finite(loss: f64, step: u64) -> Result<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(TrainError::InvalidArgument(format!("the loss of step {step} is {loss}; training stopped")))
    }
}

/// Weight files a model directory may hold in other formats; the trained copy leaves them out, so
/// nothing can load the untrained weights from it by mistake.
fn is_weight_file(name: &str) -> bool {
    [".safetensors", ".bin", ".onnx", ".h5", ".msgpack", ".ot", ".gguf", ".pt", ".ckpt"]
        .iter()
        .any(|ext| name.ends_with(ext))
        || matches!(name, "onnx" | "openvino")
}

/// Copies `from` into `to` (recursively), leaving weight files out.
fn copy_model_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| TrainError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| TrainError::io(from, e))? {
        let entry = entry.map_err(|e| TrainError::io(from, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_weight_file(&name) || name.starts_with('.') {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if src.is_dir() {
            copy_model_files(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| TrainError::io(&dst, e))?;
        }
    }
    Ok(())
}

fn safetensors_dtype(d: DType) -> Result<safetensors::Dtype> {
    Ok(match d {
        DType::F32 => safetensors::Dtype::F32,
        DType::F16 => safetensors::Dtype::F16,
        DType::BF16 => safetensors::Dtype::BF16,
        DType::I64 => safetensors::Dtype::I64,
        DType::U32 => safetensors::Dtype::U32,
        DType::U8 => safetensors::Dtype::U8,
        DType::Quant(q) => {
            return Err(TrainError::InvalidArgument(format!("a {q:?} tensor cannot be written to safetensors")))
        }
    })
}

/// Writes `tensors` as one safetensors file (written aside and renamed, so a crash never leaves a
/// half-written model or checkpoint under the final name).
pub fn write_safetensors(path: &Path, tensors: &[(String, HostTensor)]) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, t)| t.to_le_bytes()).collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, t), b) in tensors.iter().zip(&bytes) {
        let view = safetensors::tensor::TensorView::new(safetensors_dtype(t.dtype())?, t.shape().to_vec(), b)
            .map_err(|e| TrainError::InvalidArgument(format!("tensor `{name}`: {e}")))?;
        views.push((name.clone(), view));
    }
    let tmp = path.with_extension("safetensors.partial");
    safetensors::tensor::serialize_to_file(views, None, &tmp)
        .map_err(|e| TrainError::InvalidArgument(format!("writing {}: {e}", tmp.display())))?;
    // The safetensors crate creates its file owner-only (0600); a model directory is read by
    // whoever serves it, like the config files copied beside it (which keep the umask's mode).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

/// Reads every tensor of a safetensors file (a checkpoint's state).
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, HostTensor)>> {
    let file = SafetensorsWeights::open(path)?;
    let mut out = Vec::new();
    for name in file.names() {
        let t = file.get(&name)?.to_host()?;
        out.push((name, t));
    }
    Ok(out)
}

/// Saves a session's whole state (parameters, optimiser moments) to `path`; the step count is the
/// caller's to store (it goes with the data position in the checkpoint's JSON).
pub fn save_state(session: &TrainingSession, path: &Path) -> Result<u64> {
    let state = session.save()?;
    write_safetensors(path, &state.variables)?;
    Ok(state.steps)
}

/// Restores a state written by [`save_state`] after `steps` updates. The file must hold exactly
/// the session's parameters and optimiser moments, each with its dtype and shape (what is
/// missing, extra or mis-shaped is named, and nothing is restored).
pub fn restore_state(session: &mut TrainingSession, path: &Path, steps: u64) -> Result<()> {
    crate::datafile::open_regular(path, u64::MAX)?;
    let variables = read_safetensors(path)?;
    session
        .restore(&TrainingState { steps, variables })
        .map_err(|e| TrainError::BadFile { path: path.to_path_buf(), message: e.to_string() })
}

/// A GGUF file's weights with every tensor converted to f32 (block-quantised and half-precision
/// ones dequantised), for training in f32.
pub struct DequantizedGguf<'a>(pub &'a GgufFile);

impl WeightSource for DequantizedGguf<'_> {
    fn get(&self, name: &str) -> accelrt_core::Result<WeightView<'_>> {
        let view = self.0.get(name)?;
        let values: Vec<f32> = match view.dtype {
            DType::F32 => return Ok(view),
            DType::Quant(q) => accelrt_core::quant::dequantize(q, &view.bytes)?,
            DType::F16 | DType::BF16 => view.to_host()?.to_f64_vec().into_iter().map(|x| x as f32).collect(),
            other => {
                return Err(accelrt_core::Error::Weight {
                    name: name.into(),
                    message: format!("a {other} tensor is not a floating-point weight"),
                })
            }
        };
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok(WeightView { dtype: DType::F32, shape: view.shape, bytes: Cow::Owned(bytes) })
    }
}

/// The causal-LM forward graph with its loss: the Llama training graph (all positions' logits, no
/// caches) with every weight f32 and [`loss::causal_lm_loss`] on the input tokens as labels,
/// output as [`accelrt_core::training::LOSS_OUTPUT`]. The training step differentiates it; the
/// held-out loss ([`crate::eval::CausalLmEvaluator`]) runs it as it is.
pub fn causal_lm_loss_graph(cfg: &llama::LlamaConfig) -> Result<Graph> {
    loss_graph(cfg, 0.0)
}

fn loss_graph(cfg: &llama::LlamaConfig, attention_dropout: f64) -> Result<Graph> {
    let forward = llama::build_training_graph_with_dropout(cfg, &|_| Ok(DType::F32), attention_dropout)?;
    let logits = forward
        .outputs()
        .iter()
        .find(|(n, _)| n == llama::LOGITS)
        .map(|(_, id)| *id)
        .expect("the Llama graph outputs logits");
    let tokens = forward.nodes().iter().position(|n| n.name == llama::TOKENS).expect("the graph has tokens");
    let mut b = GraphBuilder::from_graph(forward);
    let l = loss::causal_lm_loss(&mut b, "lm_loss", logits, accelrt_core::ValueId(tokens as u32))?;
    b.output(accelrt_core::training::LOSS_OUTPUT, l);
    Ok(b.build()?)
}

/// The causal-LM step's graph: [`causal_lm_loss_graph`] differentiated with respect to every
/// weight, with `grad_accum` micro-batches per update and dropout `attention_dropout` on the
/// attention weights.
pub fn causal_lm_graph(
    cfg: &llama::LlamaConfig,
    config: &TrainingConfig,
    grad_accum: usize,
    attention_dropout: f64,
) -> Result<TrainingGraph> {
    let forward = loss_graph(cfg, attention_dropout)?;
    let params = trainable(&forward);
    let names: Vec<&str> = params.iter().map(String::as_str).collect();
    let loss = accelrt_core::training::LOSS_OUTPUT;
    Ok(accumulating_training_graph(&forward, loss, &names, config, grad_accum)?)
}

/// A Llama GGUF model in training with next-token cross-entropy, its state on a backend.
pub struct CausalLmTrainer {
    session: TrainingSession,
    /// The run seed, when the graph applies dropout.
    dropout_seed: Option<u64>,
    attention_dropout: f64,
    tokenizer: ChatTokenizer,
    config: llama::LlamaConfig,
    gguf: PathBuf,
    seq_len: usize,
}

impl CausalLmTrainer {
    /// Loads the GGUF model at `path` (file, or directory holding one), dequantised to f32, and
    /// prepares its training step for windows of `seq_len` tokens on `backend`.
    pub fn new(
        path: &Path,
        backend: &dyn Backend,
        options: &PrepareOptions,
        seq_len: usize,
        config: &TrainingConfig,
    ) -> Result<CausalLmTrainer> {
        Self::with_options(path, backend, options, seq_len, config, &TrainerOptions::default())
    }

    /// [`CausalLmTrainer::new`] with [`TrainerOptions`]: with `grad_accum` N, each step's windows
    /// are split into N equal micro-batches whose averaged gradient makes one update.
    pub fn with_options(
        path: &Path,
        backend: &dyn Backend,
        options: &PrepareOptions,
        seq_len: usize,
        config: &TrainingConfig,
        trainer: &TrainerOptions,
    ) -> Result<CausalLmTrainer> {
        trainer.check()?;
        let gguf = accelrt_models::generator::find_gguf(path)?;
        let file = GgufFile::open(&gguf)?;
        let cfg = llama::LlamaConfig::from_gguf(&file)?;
        if seq_len < 2 || seq_len > cfg.context_length {
            return Err(TrainError::InvalidArgument(format!(
                "--seq-len {seq_len} must be between 2 and the model's context length {}",
                cfg.context_length
            )));
        }
        let tokenizer = ChatTokenizer::from_gguf(&file)?;
        let attention_dropout = match trainer.dropout {
            DropoutChoice::Off | DropoutChoice::ModelConfig => 0.0,
            DropoutChoice::Probability(p) => p,
        };
        let training = causal_lm_graph(&cfg, config, trainer.grad_accum, attention_dropout)?;
        let dropout_seed = takes_seed(&training.graph).then_some(trainer.seed);
        let session = TrainingSession::new(backend, &training, &DequantizedGguf(&file), options)?;
        Ok(CausalLmTrainer { session, dropout_seed, attention_dropout, tokenizer, config: cfg, gguf, seq_len })
    }

    /// The model's tokenizer (to cut a corpus into windows).
    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.tokenizer
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &llama::LlamaConfig {
        &self.config
    }

    /// The GGUF file the model came from.
    pub fn gguf(&self) -> &Path {
        &self.gguf
    }

    /// The dropout probabilities the step applies (a Llama has only attention dropout).
    pub fn dropout(&self) -> DropoutRates {
        DropoutRates { hidden: 0.0, attention: self.attention_dropout }
    }

    /// One optimiser step on `tokens` (rows of `seq_len`, concatenated) at learning rate `lr`.
    /// With `grad_accum` N the rows are split into N equal consecutive micro-batches.
    pub fn step(&mut self, tokens: &[u32], lr: f64) -> Result<StepOutcome> {
        let n = self.session.micro_batches();
        let window = self.seq_len * n;
        if tokens.is_empty() || !tokens.len().is_multiple_of(window) {
            return Err(TrainError::InvalidArgument(format!(
                "{} tokens are not {n} equal micro-batch(es) of whole windows of {}",
                tokens.len(),
                self.seq_len
            )));
        }
        let rows = tokens.len() / window;
        let tensors = tokens
            .chunks(rows * self.seq_len)
            .map(|micro| HostTensor::u32(vec![rows, self.seq_len], micro.to_vec()))
            .collect::<accelrt_core::Result<Vec<_>>>()?;
        let seeds = seeds(&self.session, self.dropout_seed)?;
        let inputs: Vec<Vec<(&str, &HostTensor)>> = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| {
                std::iter::once((llama::TOKENS, t)).chain(seeds.get(i).map(|s| (llama::DROPOUT_SEED, s))).collect()
            })
            .collect();
        let micro: Vec<&[(&str, &HostTensor)]> = inputs.iter().map(|i| i.as_slice()).collect();
        let r = self.session.accumulated_step(&micro, lr)?;
        finite(r.loss, self.session.steps())?;
        Ok(StepOutcome { loss: r.loss, grad_norm: r.grad_norm, tokens: tokens.len() })
    }

    /// The training session (parameters, step count).
    pub fn session(&self) -> &TrainingSession {
        &self.session
    }

    /// Mutable access to the session, e.g. to restore a checkpoint.
    pub fn session_mut(&mut self) -> &mut TrainingSession {
        &mut self.session
    }
}

impl CausalLmTrainer {
    /// Writes the trained model to `out` as a GGUF file `generate --model DIR` loads: the
    /// original's metadata (tokenizer, chat template, hyper-parameters; `general.file_type` set to
    /// all-f32) and every tensor in f32, the trained values in place of the originals. f32 because
    /// that is what was trained: quantising again would undo most of a short fine-tune's change.
    pub fn save_model(&self, out: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
        let file = GgufFile::open(&self.gguf)?;
        let trained: HashMap<String, HostTensor> = self.session.parameters()?.into_iter().collect();
        let source = DequantizedGguf(&file);
        let mut tensors = Vec::new();
        for name in file.tensors().keys() {
            let t = match trained.get(name) {
                Some(t) => t.clone(),
                None => source.get(name)?.to_host()?,
            };
            tensors.push((name.clone(), t));
        }
        let mut metadata = file.metadata().clone();
        // llama.cpp's LLAMA_FTYPE_ALL_F32.
        metadata.insert("general.file_type".into(), GgufValue::U32(0));
        let stem = self.gguf.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        // Other .gguf files in `out` would make the directory ambiguous for `generate`.
        let path = out.join(format!("{stem}-trained-f32.gguf"));
        write_gguf(&path, &metadata, &tensors)?;
        Ok(path)
    }
}

use accelrt_models::gguf::GgufValue;

fn gguf_value_type(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) -> Result<()> {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(*x as u8),
        GgufValue::String(s) => put_string(out, s),
        GgufValue::Array(items) => {
            let ty = items.first().map(gguf_value_type).unwrap_or(0);
            if items.iter().any(|i| gguf_value_type(i) != ty) {
                return Err(TrainError::InvalidArgument("a GGUF array mixes value types".into()));
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item)?;
            }
        }
    }
    Ok(())
}

/// Writes a GGUF (version 3) file of f32 tensors with `metadata` (written aside and renamed).
pub fn write_gguf(
    path: &Path,
    metadata: &std::collections::BTreeMap<String, GgufValue>,
    tensors: &[(String, HostTensor)],
) -> Result<()> {
    let alignment = metadata.get("general.alignment").and_then(GgufValue::as_u64).unwrap_or(32) as usize;
    let mut head = Vec::new();
    head.extend_from_slice(b"GGUF");
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut head, key);
        head.extend_from_slice(&gguf_value_type(value).to_le_bytes());
        put_value(&mut head, value)?;
    }
    let mut offset = 0usize;
    let mut offsets = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if t.dtype() != DType::F32 {
            return Err(TrainError::InvalidArgument(format!("tensor `{name}` is {}, not f32", t.dtype())));
        }
        put_string(&mut head, name);
        head.extend_from_slice(&(t.shape().len() as u32).to_le_bytes());
        // GGUF lists dims innermost first.
        for &d in t.shape().iter().rev() {
            head.extend_from_slice(&(d as u64).to_le_bytes());
        }
        head.extend_from_slice(&0u32.to_le_bytes()); // GGML_TYPE_F32
        head.extend_from_slice(&(offset as u64).to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.len() * 4).div_ceil(alignment) * alignment;
    }
    head.resize(head.len().div_ceil(alignment) * alignment, 0);
    let tmp = path.with_extension("gguf.partial");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f.write_all(&head)?;
        let mut written = 0usize;
        for ((_, t), &at) in tensors.iter().zip(&offsets) {
            f.write_all(&vec![0u8; at - written])?;
            let bytes = t.to_le_bytes();
            f.write_all(&bytes)?;
            written = at + bytes.len();
        }
        f.write_all(&vec![0u8; offset - written])?;
        f.flush()
    };
    write().map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A written GGUF reads back through accelrt's own reader with the same metadata (arrays of
    /// strings included) and the same tensor values and shapes, at aligned offsets.
    #[test]
    fn gguf_round_trips_through_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let mut meta = std::collections::BTreeMap::new();
        meta.insert("general.architecture".to_string(), GgufValue::String("llama".into()));
        meta.insert("general.alignment".to_string(), GgufValue::U32(64));
        meta.insert(
            "tokenizer.ggml.tokens".to_string(),
            GgufValue::Array(vec![GgufValue::String("a".into()), GgufValue::String("bc".into())]),
        );
        meta.insert("llama.rope.freq_base".to_string(), GgufValue::F32(10000.0));
        let a = HostTensor::f32(vec![2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-8, 7.0]).unwrap();
        let b = HostTensor::f32(vec![5], vec![0.5; 5]).unwrap();
        write_gguf(&path, &meta, &[("a".into(), a.clone()), ("b".into(), b.clone())]).unwrap();
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.metadata(), &meta);
        assert_eq!(file.tensor("a").unwrap().shape, vec![2, 3]);
        assert_eq!(file.get("a").unwrap().to_host().unwrap(), a);
        assert_eq!(file.get("b").unwrap().to_host().unwrap(), b);
    }

    #[test]
    fn safetensors_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.safetensors");
        let t = vec![
            ("w".to_string(), HostTensor::f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap()),
            ("w.adam_m".to_string(), HostTensor::f32(vec![2, 2], vec![0.0, -1.0, 0.25, 9.0]).unwrap()),
        ];
        write_safetensors(&path, &t).unwrap();
        let mut back = read_safetensors(&path).unwrap();
        back.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(back, t);
        assert!(!path.with_extension("safetensors.partial").exists());
    }
}
