//! BERT encoders (Hugging Face `config.json` + `model.safetensors`) as accelrt graphs, with the
//! sentence-transformers head (pooling, optional L2 normalisation).

use crate::weights::SafetensorsWeights;
use crate::{ModelError, Result};
use accelrt_core::{BinaryOp, DType, Dim, Graph, GraphBuilder, Op, ReshapeDim, Shape, UnaryOp, ValueId};
use serde::Deserialize;
use std::path::Path;

/// The fields of a Hugging Face BERT `config.json` that shape the graph.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BertConfig {
    /// Rows of the word-embedding table; token ids must be below it. 1 to [`MAX_DIM`].
    pub vocab_size: usize,
    /// Width of every token vector, and of the sentence vector; a multiple of
    /// `num_attention_heads`. 1 to [`MAX_DIM`].
    pub hidden_size: usize,
    /// Encoder layers, at most [`MAX_LAYERS`]; the weights must hold exactly this many.
    pub num_hidden_layers: usize,
    /// Attention heads per layer, each `hidden_size / num_attention_heads` wide.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer inside each encoder layer. 1 to [`MAX_DIM`].
    pub intermediate_size: usize,
    /// The feed-forward activation, by its transformers name: `gelu` (erf form, the default),
    /// `gelu_new` / `gelu_pytorch_tanh` / `gelu_fast` (tanh approximation), `relu`, `silu` /
    /// `swish`. Others are refused.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Rows of the position-embedding table: the longest input in tokens. 1 to [`MAX_DIM`].
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) table; default 2. 1 to [`MAX_DIM`].
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Epsilon added to the variance in every LayerNorm; default 1e-12, finite and ≥ 0.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Only `absolute` (the default; learned position embeddings) is supported.
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    /// `bert` when present; any other model type is refused.
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Reads and checks `config.json`: the keys above, their ranges, and that the activation and
    /// position embedding are ones the graph can build (the weights are checked separately, by
    /// [`BertConfig::check_weights`]).
    ///
    /// # Errors
    ///
    /// [`ModelError::Io`] when the file cannot be read; [`ModelError::Config`] when it is not
    /// valid JSON, lacks a required key, or fails a check.
    pub fn from_file(path: &Path) -> Result<BertConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let cfg: BertConfig = serde_json::from_str(&text).map_err(|e| ModelError::config(path, e.to_string()))?;
        cfg.check().map_err(|m| ModelError::config(path, m))?;
        Ok(cfg)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if let Some(t) = &self.model_type {
            if t != "bert" {
                return Err(format!("model_type `{t}` is not a BERT encoder"));
            }
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!("position_embedding_type `{}` is not supported", self.position_embedding_type));
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        activation(&self.hidden_act)?;
        // The graph has nodes per layer and weights per dim: a corrupt count (2^40 layers) would
        // build forever, and dims past these bounds overflow the shape arithmetic. The bounds are
        // far past any BERT encoder (BERT-large: 24 layers, hidden 1024).
        if self.num_hidden_layers > MAX_LAYERS {
            return Err(format!("num_hidden_layers {} is more than {MAX_LAYERS}", self.num_hidden_layers));
        }
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value == 0 || value > MAX_DIM {
                return Err(format!("{name} {value} is not between 1 and {MAX_DIM}"));
            }
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return Err(format!("layer_norm_eps {} is not a finite non-negative number", self.layer_norm_eps));
        }
        Ok(())
    }

    /// Checks this config against the weights it will be built with, before any graph is built:
    /// the embedding tables and every layer's matrices exist with the shapes the config implies
    /// (biases and norms are checked when the weights are loaded), and the file holds no layer past
    /// `num_hidden_layers` (a config that drops layers would run a truncated model). `prefix` is the
    /// weight-name prefix given to [`build_graph`].
    ///
    /// # Errors
    ///
    /// [`ModelError::Config`], naming the missing or misshapen tensor, or the extra layer.
    pub fn check_weights(&self, weights: &SafetensorsWeights, prefix: &str) -> Result<()> {
        let expect = |name: String, shape: &[usize]| -> Result<()> {
            let name = format!("{prefix}{name}");
            let found = weights.shape(&name).ok_or_else(|| {
                ModelError::config(weights.path(), format!("the config needs tensor `{name}`, which is missing"))
            })?;
            if found != shape {
                return Err(ModelError::config(
                    weights.path(),
                    format!("tensor `{name}` has shape {found:?}, the config implies {shape:?}"),
                ));
            }
            Ok(())
        };
        let (h, ffn) = (self.hidden_size, self.intermediate_size);
        expect("embeddings.word_embeddings.weight".into(), &[self.vocab_size, h])?;
        expect("embeddings.position_embeddings.weight".into(), &[self.max_position_embeddings, h])?;
        expect("embeddings.token_type_embeddings.weight".into(), &[self.type_vocab_size, h])?;
        for l in 0..self.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            for part in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]
            {
                expect(format!("{p}.{part}.weight"), &[h, h])?;
            }
            expect(format!("{p}.intermediate.dense.weight"), &[ffn, h])?;
            expect(format!("{p}.output.dense.weight"), &[h, ffn])?;
        }
        let next = format!("{prefix}encoder.layer.{}.attention.self.query.weight", self.num_hidden_layers);
        if weights.contains(&next) {
            return Err(ModelError::config(
                weights.path(),
                format!("num_hidden_layers is {} but the weights have more layers", self.num_hidden_layers),
            ));
        }
        Ok(())
    }
}

/// The most layers a config may ask for.
pub const MAX_LAYERS: usize = 1024;
/// The largest size a config may give any dim (vocabulary, hidden, positions, …): 2^24.
pub const MAX_DIM: usize = 1 << 24;

fn activation(name: &str) -> std::result::Result<UnaryOp, String> {
    Ok(match name {
        "gelu" => UnaryOp::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => UnaryOp::GeluTanh,
        "relu" => UnaryOp::Relu,
        "silu" | "swish" => UnaryOp::Silu,
        other => return Err(format!("hidden_act `{other}` is not supported")),
    })
}

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over non-padding tokens.
    Mean,
    /// The first token's vector (`[CLS]`).
    Cls,
}

/// The sentence-transformers modules after the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentenceHead {
    /// How the token vectors `[batch, seq, hidden]` become one `[batch, hidden]` vector.
    pub pooling: Pooling,
    /// Whether each sentence vector is scaled to unit L2 length (a `Normalize` module follows the
    /// pooling), so cosine similarity is a dot product.
    pub normalize: bool,
}

impl SentenceHead {
    /// Reads `modules.json` and the pooling module's `config.json` from a sentence-transformers folder.
    ///
    /// # Errors
    ///
    /// [`ModelError::Io`] when a file is missing; [`ModelError::Config`] when it does not parse,
    /// there is no Pooling module, or its config does not select exactly one of mean or CLS
    /// pooling (max and mean-sqrt-len pooling are not supported).
    pub fn from_dir(dir: &Path) -> Result<SentenceHead> {
        #[derive(Deserialize)]
        struct Module {
            #[serde(rename = "type")]
            kind: String,
            path: String,
        }
        #[derive(Deserialize)]
        struct PoolingConfig {
            #[serde(default)]
            pooling_mode_cls_token: bool,
            #[serde(default)]
            pooling_mode_mean_tokens: bool,
            #[serde(default)]
            pooling_mode_max_tokens: bool,
            #[serde(default)]
            pooling_mode_mean_sqrt_len_tokens: bool,
        }
        let modules_path = dir.join("modules.json");
        let modules: Vec<Module> = read_json(&modules_path)?;
        let pooling_module = modules
            .iter()
            .find(|m| m.kind.ends_with(".Pooling"))
            .ok_or_else(|| ModelError::config(&modules_path, "no Pooling module"))?;
        let pooling_path = dir.join(&pooling_module.path).join("config.json");
        let p: PoolingConfig = read_json(&pooling_path)?;
        let pooling = match (
            p.pooling_mode_mean_tokens,
            p.pooling_mode_cls_token,
            p.pooling_mode_max_tokens,
            p.pooling_mode_mean_sqrt_len_tokens,
        ) {
            (true, false, false, false) => Pooling::Mean,
            (false, true, false, false) => Pooling::Cls,
            _ => return Err(ModelError::config(&pooling_path, "only exactly one of mean or CLS pooling is supported")),
        };
        let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
        Ok(SentenceHead { pooling, normalize })
    }
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::config(path, e.to_string()))
}

/// Input: token ids, u32 `[batch, seq]`, each below `vocab_size`; what padding positions hold does
/// not matter (the mask hides them) as long as it is a valid id.
pub const INPUT_IDS: &str = "input_ids";
/// Input: u32 `[batch, seq]`, 1 for a real token and 0 for padding. Attention ignores padded keys
/// and mean pooling averages only real tokens.
pub const ATTENTION_MASK: &str = "attention_mask";
/// Input: segment ids, u32 `[batch, seq]`, each below `type_vocab_size` (all 0 for one sentence).
pub const TOKEN_TYPE_IDS: &str = "token_type_ids";
/// Output: the sentence vectors, f32 `[batch, hidden]` (unit length when the head normalises).
pub const EMBEDDINGS: &str = "embeddings";
/// The training graph's dropout seed input (u32, shape `[]`), present only when some dropout
/// probability is positive; the trainer sets it every step (see `Op::Dropout`).
pub const DROPOUT_SEED: &str = "dropout_seed";

/// The dropout probabilities of a BERT model in training, where Hugging Face's `BertModel`
/// applies them: `hidden_dropout_prob` after the embeddings' LayerNorm and after each layer's
/// attention-output and FFN-output projections (before the residual sum), and
/// `attention_probs_dropout_prob` on the attention weights. Read from `config.json`; a missing
/// key is transformers' default, 0.1.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct BertDropout {
    /// Probability of zeroing an element of the hidden states (after the embeddings and after each
    /// attention-output and FFN-output projection); kept elements are scaled by `1 / (1 - p)`.
    /// In `[0, 1)`.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Probability of zeroing an attention weight (after the softmax, before the product with the
    /// values). In `[0, 1)`.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
}

fn default_dropout() -> f64 {
    0.1
}

impl BertDropout {
    /// No dropout anywhere (the training graph is then the inference graph).
    pub const NONE: BertDropout = BertDropout { hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0 };

    /// The same probability everywhere (`accelrt train --dropout P`).
    pub fn uniform(p: f64) -> BertDropout {
        BertDropout { hidden_dropout_prob: p, attention_probs_dropout_prob: p }
    }

    /// The probabilities `config.json` at `path` states; each must be in `[0, 1)`.
    ///
    /// # Errors
    ///
    /// [`ModelError::Io`] when the file cannot be read; [`ModelError::Config`] when it does not
    /// parse or a probability is out of range.
    pub fn from_file(path: &Path) -> Result<BertDropout> {
        let d: BertDropout = read_json(path)?;
        d.check().map_err(|m| ModelError::config(path, m))?;
        Ok(d)
    }

    /// Each probability is in `[0, 1)` (1 would drop everything; `Op::Dropout` refuses it). The
    /// error is a message naming the key and its value.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            ("attention_probs_dropout_prob", self.attention_probs_dropout_prob),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{name} {p} is not in [0, 1)"));
            }
        }
        Ok(())
    }
}

/// Builds the encoder + sentence head as a graph. Inputs (u32, `[batch, seq]`): `input_ids`,
/// `attention_mask` (1 = token, 0 = padding) and `token_type_ids`; output `embeddings`
/// `[batch, hidden]`. Weight names follow the Hugging Face checkpoint, each prefixed with `prefix`
/// (e.g. "" or "bert."), all f32. No dropout: this is the inference graph.
///
/// # Errors
///
/// [`ModelError::Core`] when the graph cannot be built (shapes that do not compose).
pub fn build_graph(cfg: &BertConfig, head: SentenceHead, prefix: &str) -> Result<Graph> {
    build_training_graph(cfg, head, prefix, BertDropout::NONE)
}

/// The graph of [`build_graph`] with dropout where `BertModel` applies it in training (see
/// [`BertDropout`]). With every probability 0 it is exactly [`build_graph`]'s graph; otherwise it
/// takes one more input, [`DROPOUT_SEED`], and attention computes its weights explicitly
/// (`AttentionProbs`, dropout, then the product with the values) instead of the fused op. Each
/// dropout node has its own `stream` (its index among them, in graph order).
///
/// # Errors
///
/// [`ModelError::InvalidInput`] when a dropout probability is outside `[0, 1)`;
/// [`ModelError::Core`] when the graph cannot be built.
pub fn build_training_graph(cfg: &BertConfig, head: SentenceHead, prefix: &str, dropout: BertDropout) -> Result<Graph> {
    dropout.check().map_err(|m| ModelError::InvalidInput(format!("dropout: {m}")))?;
    let b = GraphBuilder::new("bert-sentence-embedding");
    Ok(BertBuilder { cfg, prefix, b, dropout, seed: None, streams: 0 }.build(head)?)
}

struct BertBuilder<'a> {
    cfg: &'a BertConfig,
    prefix: &'a str,
    b: GraphBuilder,
    dropout: BertDropout,
    /// The seed input, once the graph has one.
    seed: Option<ValueId>,
    /// Dropout nodes so far (the next one's stream).
    streams: u32,
}

impl BertBuilder<'_> {
    /// Dropout of `x` with probability `p` (none at all when `p` is 0).
    fn dropout(&mut self, name: &str, x: ValueId, p: f64) -> accelrt_core::Result<ValueId> {
        if p == 0.0 {
            return Ok(x);
        }
        let seed = match self.seed {
            Some(s) => s,
            None => {
                let s = self.b.input(DROPOUT_SEED, DType::U32, Shape(vec![]))?;
                self.seed = Some(s);
                s
            }
        };
        let stream = self.streams;
        self.streams += 1;
        self.b.add(format!("{name}.dropout"), Op::Dropout { x, seed, p, stream })
    }

    fn weight(&mut self, name: &str, shape: &[usize]) -> accelrt_core::Result<ValueId> {
        let full = format!("{}{name}", self.prefix);
        self.b.weight(&full, DType::F32, Shape::new(shape.iter().copied()))
    }

    fn linear(&mut self, name: &str, x: ValueId, out: usize, inp: usize) -> accelrt_core::Result<ValueId> {
        let weight = self.weight(&format!("{name}.weight"), &[out, inp])?;
        let bias = Some(self.weight(&format!("{name}.bias"), &[out])?);
        self.b.add(name, Op::Linear { x, weight, bias })
    }

    fn layer_norm(&mut self, name: &str, x: ValueId) -> accelrt_core::Result<ValueId> {
        let h = self.cfg.hidden_size;
        let gamma = self.weight(&format!("{name}.weight"), &[h])?;
        let beta = Some(self.weight(&format!("{name}.bias"), &[h])?);
        self.b.add(name, Op::LayerNorm { x, gamma, beta, eps: self.cfg.layer_norm_eps })
    }

    /// [batch, seq, hidden] → [batch, heads, seq, head_size]
    fn split_heads(&mut self, name: &str, x: ValueId) -> accelrt_core::Result<ValueId> {
        let heads = self.cfg.num_attention_heads;
        let dims = vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Fixed(heads), ReshapeDim::Infer];
        let r = self.b.add(format!("{name}.split"), Op::Reshape { x, dims })?;
        self.b.add(format!("{name}.heads"), Op::Permute { x: r, perm: vec![0, 2, 1, 3] })
    }

    fn build(mut self, head: SentenceHead) -> accelrt_core::Result<Graph> {
        let cfg = self.cfg;
        let (h, ffn) = (cfg.hidden_size, cfg.intermediate_size);
        let ids_shape = || Shape(vec![Dim::sym("batch"), Dim::sym("seq")]);
        let ids = self.b.input(INPUT_IDS, DType::U32, ids_shape())?;
        let mask = self.b.input(ATTENTION_MASK, DType::U32, ids_shape())?;
        let types = self.b.input(TOKEN_TYPE_IDS, DType::U32, ids_shape())?;

        let word = self.weight("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?;
        let pos_table = self.weight("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, h])?;
        let type_table = self.weight("embeddings.token_type_embeddings.weight", &[cfg.type_vocab_size, h])?;
        let e = self.b.add("embeddings.word", Op::Embedding { table: word, ids })?;
        let positions = self.b.add("embeddings.positions", Op::Positions { like: ids, axis: 1 })?;
        let p = self.b.add("embeddings.position", Op::Embedding { table: pos_table, ids: positions })?;
        let t = self.b.add("embeddings.token_type", Op::Embedding { table: type_table, ids: types })?;
        let e = self.b.add("embeddings.sum_position", Op::Binary { op: BinaryOp::Add, a: e, b: p })?;
        let e = self.b.add("embeddings.sum_type", Op::Binary { op: BinaryOp::Add, a: e, b: t })?;
        let mut x = self.layer_norm("embeddings.LayerNorm", e)?;
        let (hidden_p, attention_p) = (self.dropout.hidden_dropout_prob, self.dropout.attention_probs_dropout_prob);
        x = self.dropout("embeddings", x, hidden_p)?;

        let act = activation(&cfg.hidden_act).expect("checked when the config was read");
        let scale = 1.0 / ((h / cfg.num_attention_heads) as f64).sqrt();
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let q = self.linear(&format!("{p}.attention.self.query"), x, h, h)?;
            let k = self.linear(&format!("{p}.attention.self.key"), x, h, h)?;
            let v = self.linear(&format!("{p}.attention.self.value"), x, h, h)?;
            let q = self.split_heads(&format!("{p}.q"), q)?;
            let k = self.split_heads(&format!("{p}.k"), k)?;
            let v = self.split_heads(&format!("{p}.v"), v)?;
            let a = if attention_p > 0.0 {
                // Dropout acts on the attention weights, so they are computed explicitly.
                let probs = self.b.add(
                    format!("{p}.attention.probs"),
                    Op::AttentionProbs { q, k, mask: Some(mask), causal: false, scale, q_positions: None },
                )?;
                let probs = self.dropout(&format!("{p}.attention.probs"), probs, attention_p)?;
                self.b.add(format!("{p}.attention"), Op::MatMul { a: probs, b: v, transpose_b: false })?
            } else {
                self.b.add(
                    format!("{p}.attention"),
                    Op::Attention { q, k, v, mask: Some(mask), causal: false, scale, q_positions: None },
                )?
            };
            let a = self.b.add(format!("{p}.attention.merge_t"), Op::Permute { x: a, perm: vec![0, 2, 1, 3] })?;
            let dims = vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Fixed(h)];
            let a = self.b.add(format!("{p}.attention.merge"), Op::Reshape { x: a, dims })?;
            let o = self.linear(&format!("{p}.attention.output.dense"), a, h, h)?;
            let o = self.dropout(&format!("{p}.attention.output"), o, hidden_p)?;
            let r = self.b.add(format!("{p}.attention.residual"), Op::Binary { op: BinaryOp::Add, a: o, b: x })?;
            let x1 = self.layer_norm(&format!("{p}.attention.output.LayerNorm"), r)?;
            let i = self.linear(&format!("{p}.intermediate.dense"), x1, ffn, h)?;
            let i = self.b.add(format!("{p}.intermediate.act"), Op::Unary { op: act, x: i })?;
            let o = self.linear(&format!("{p}.output.dense"), i, h, ffn)?;
            let o = self.dropout(&format!("{p}.output"), o, hidden_p)?;
            let r = self.b.add(format!("{p}.output.residual"), Op::Binary { op: BinaryOp::Add, a: o, b: x1 })?;
            x = self.layer_norm(&format!("{p}.output.LayerNorm"), r)?;
        }

        let pooled = match head.pooling {
            Pooling::Mean => self.b.add("pooling.mean", Op::MeanPool { x, mask })?,
            Pooling::Cls => {
                let first = self.b.add("pooling.cls", Op::Slice { x, axis: 1, start: 0, end: Some(1) })?;
                let dims = vec![ReshapeDim::Keep(0), ReshapeDim::Keep(2)];
                self.b.add("pooling.cls.squeeze", Op::Reshape { x: first, dims })?
            }
        };
        let out =
            if head.normalize { self.b.add("normalize", Op::L2Normalize { x: pooled, eps: 1e-12 })? } else { pooled };
        self.b.output(EMBEDDINGS, out);
        self.b.build()
    }
}
