//! Llama-architecture decoders (SmolLM2, TinyLlama, Llama 2/3, …) from GGUF metadata, as a graph with
//! key/value caches.
//!
//! One graph serves prefill and decode: it takes a block of new tokens per sequence, writes their
//! keys and values into the session's caches at explicit positions, and returns the logits of each
//! sequence's last token. The caches have a fixed capacity, so a static-shape backend can allocate
//! them once; attention masks by position, so rows of a batch can be at different lengths.

use crate::gguf::{GgufFile, GgufValue};
use crate::{ModelError, Result};
use accelrt_core::{BinaryOp, DType, Dim, Graph, GraphBuilder, Op, ReshapeDim, RopeStyle, Shape, UnaryOp, ValueId};

/// Input: token ids, u32, each below `vocab_size`: `[batch, new]` (the new tokens of each row) in
/// the inference graph, `[batch, seq]` (whole sequences) in the training graph.
pub const TOKENS: &str = "tokens";
/// Input of the inference graph: the cache position of each new token, u32 `[batch, new]`,
/// consecutive along each row and below the cache capacity.
pub const POSITIONS: &str = "positions";
/// Input of the inference graph: each row's sequence slot in the session, u32 `[batch]`, below the
/// number of slots the session was created with.
pub const SLOTS: &str = "slots";
/// Output: unnormalised next-token scores, f32: `[batch, vocab]` for each row's last new token
/// (inference), `[batch, seq, vocab]` for every position (training).
pub const LOGITS: &str = "logits";
/// The training graph's dropout seed input (u32, shape `[]`), present only with a positive
/// attention dropout; the trainer sets it every step (see `Op::Dropout`).
pub const DROPOUT_SEED: &str = "dropout_seed";

/// The hyper-parameters of a Llama-architecture model, as the GGUF metadata states them.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Rows of `token_embd.weight` (GGUF stores no separate key); token ids must be below it.
    pub vocab_size: usize,
    /// Width of the residual stream (`llama.embedding_length`).
    pub hidden_size: usize,
    /// Width of the gated feed-forward layer (`llama.feed_forward_length`).
    pub intermediate_size: usize,
    /// Decoder blocks (`llama.block_count`); the file must hold exactly this many.
    pub num_layers: usize,
    /// Query heads per layer (`llama.attention.head_count`); divides `hidden_size`.
    pub num_heads: usize,
    /// Key/value heads per layer (`llama.attention.head_count_kv`, default `num_heads`); divides
    /// `num_heads`. Fewer than `num_heads` is grouped-query attention: each key/value head serves
    /// `num_heads / num_kv_heads` query heads.
    pub num_kv_heads: usize,
    /// Width of one head, `hidden_size / num_heads`; rotary embedding covers all of it.
    pub head_dim: usize,
    /// Epsilon of every RMSNorm (`llama.attention.layer_norm_rms_epsilon`, default 1e-5).
    pub rms_norm_eps: f64,
    /// Base of the rotary position frequencies, θ in RoFormer (Su et al., 2021)
    /// (`llama.rope.freq_base`, default 10000).
    pub rope_base: f64,
    /// The context length the model was trained for, in tokens (`llama.context_length`); caches
    /// may not be longer.
    pub context_length: usize,
    /// Whether the output projection is the token embedding (no `output.weight`).
    pub tied_embeddings: bool,
}

impl LlamaConfig {
    /// Reads the `llama.*` keys. Other architectures, and rope scaling this graph does not model,
    /// are refused with a message naming them.
    ///
    /// # Errors
    ///
    /// [`ModelError::Config`] for another architecture, rope scaling, partial rotary embedding, a
    /// missing or non-integer key, inconsistent head counts, or tensors whose shapes or number
    /// disagree with the metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaConfig> {
        let bad = |m: String| ModelError::config(file.path(), m);
        let arch = file
            .value("general.architecture")
            .and_then(GgufValue::as_str)
            .ok_or_else(|| bad("no general.architecture in the metadata".into()))?;
        if arch != "llama" {
            return Err(bad(format!("architecture `{arch}` is not supported (only `llama` is)")));
        }
        let int = |key: &str| -> Result<usize> {
            file.value(&format!("llama.{key}"))
                .and_then(GgufValue::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("missing or non-integer llama.{key}")))
        };
        let float = |key: &str, default: f64| -> Result<f64> {
            match file.value(&format!("llama.{key}")) {
                None => Ok(default),
                Some(v) => v.as_f64().ok_or_else(|| bad(format!("llama.{key} is not a number"))),
            }
        };
        if let Some(kind) = file.value("llama.rope.scaling.type").and_then(GgufValue::as_str) {
            if kind != "none" {
                return Err(bad(format!("rope scaling `{kind}` is not supported")));
            }
        }
        let hidden_size = int("embedding_length")?;
        let num_heads = int("attention.head_count")?;
        let num_kv_heads = match file.value("llama.attention.head_count_kv") {
            Some(v) => {
                v.as_u64().ok_or_else(|| bad("llama.attention.head_count_kv is not an integer".into()))? as usize
            }
            None => num_heads,
        };
        if num_heads == 0 || num_kv_heads == 0 || hidden_size % num_heads != 0 || num_heads % num_kv_heads != 0 {
            return Err(bad(format!(
                "inconsistent heads: hidden {hidden_size}, heads {num_heads}, kv heads {num_kv_heads}"
            )));
        }
        let head_dim = hidden_size / num_heads;
        if let Some(rot) = file.value("llama.rope.dimension_count").and_then(GgufValue::as_u64) {
            if rot as usize != head_dim {
                return Err(bad(format!("partial rotary embedding ({rot} of {head_dim} dims) is not supported")));
            }
        }
        let embed = file.tensor("token_embd.weight").ok_or_else(|| bad("no token_embd.weight tensor".into()))?;
        let vocab_size = *embed.shape.first().unwrap_or(&0);
        let cfg = LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size: int("feed_forward_length")?,
            num_layers: int("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-5)?,
            rope_base: float("rope.freq_base", 10_000.0)?,
            context_length: int("context_length")?,
            tied_embeddings: file.tensor("output.weight").is_none(),
        };
        cfg.check(file).map_err(bad)?;
        Ok(cfg)
    }

    /// Checks the numbers against each other and against the tensors the file holds, before any
    /// graph is built: the graph has a node per layer and head, so a corrupt count (a block_count
    /// of 2^40) would otherwise build forever, and a wrong dim would only surface when the weights
    /// are loaded, after the work.
    fn check(&self, file: &GgufFile) -> std::result::Result<(), String> {
        if self.vocab_size == 0 || self.hidden_size == 0 || self.intermediate_size == 0 || self.context_length == 0 {
            return Err(format!(
                "vocabulary {}, embedding_length {}, feed_forward_length {} and context_length {} must all be positive",
                self.vocab_size, self.hidden_size, self.intermediate_size, self.context_length
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(format!("layer_norm_rms_epsilon {} is not a finite non-negative number", self.rms_norm_eps));
        }
        if !(self.rope_base.is_finite() && self.rope_base > 0.0) {
            return Err(format!("rope.freq_base {} is not a finite positive number", self.rope_base));
        }
        // Each block has 9 tensors; a count the file cannot hold is refused without walking it.
        let blocks_possible = file.tensors().len() / 9;
        if self.num_layers > blocks_possible {
            return Err(format!(
                "block_count is {} but the file has {} tensors, enough for at most {blocks_possible} blocks",
                self.num_layers,
                file.tensors().len()
            ));
        }
        if file.tensor(&format!("blk.{}.attn_norm.weight", self.num_layers)).is_some() {
            return Err(format!("block_count is {} but the file has more blocks", self.num_layers));
        }
        let expect = |name: &str, shape: &[usize]| -> std::result::Result<(), String> {
            let t = file.tensor(name).ok_or_else(|| format!("no tensor `{name}`"))?;
            if t.shape != shape {
                return Err(format!("tensor `{name}` has shape {:?}, the metadata implies {shape:?}", t.shape));
            }
            Ok(())
        };
        let (h, ffn, vocab) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let (q, kv) = (self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim);
        expect("token_embd.weight", &[vocab, h])?;
        expect("output_norm.weight", &[h])?;
        if !self.tied_embeddings {
            expect("output.weight", &[vocab, h])?;
        }
        for l in 0..self.num_layers {
            let p = format!("blk.{l}");
            expect(&format!("{p}.attn_norm.weight"), &[h])?;
            expect(&format!("{p}.attn_q.weight"), &[q, h])?;
            expect(&format!("{p}.attn_k.weight"), &[kv, h])?;
            expect(&format!("{p}.attn_v.weight"), &[kv, h])?;
            expect(&format!("{p}.attn_output.weight"), &[h, q])?;
            expect(&format!("{p}.ffn_norm.weight"), &[h])?;
            expect(&format!("{p}.ffn_gate.weight"), &[ffn, h])?;
            expect(&format!("{p}.ffn_up.weight"), &[ffn, h])?;
            expect(&format!("{p}.ffn_down.weight"), &[h, ffn])?;
        }
        // The tokenizer's ids index the embedding: more tokens than rows would read past it.
        if let Some(tokens) = file.value("tokenizer.ggml.tokens").and_then(GgufValue::as_array) {
            if tokens.len() != vocab {
                return Err(format!(
                    "tokenizer.ggml.tokens has {} tokens but token_embd.weight has {vocab} rows",
                    tokens.len()
                ));
            }
        }
        Ok(())
    }
}

/// Builds the decoder graph. `dtype_of(name)` gives each weight's stored type (quantised types stay
/// quantised: the backend runs them with quantised matmuls or refuses them by name); `capacity` is
/// the number of positions each sequence's cache holds.
///
/// Inputs: `tokens` and `positions` (u32, `[batch, new]`; positions consecutive per row), `slots`
/// (u32, `[batch]`: each row's sequence in the session). Output: `logits` (f32, `[batch, vocab]`) of
/// each row's last new token.
///
/// # Errors
///
/// Whatever `dtype_of` returns for a weight, and [`ModelError::Core`] when the graph cannot be
/// built (a weight type the ops refuse, shapes that do not compose).
pub fn build_graph(cfg: &LlamaConfig, capacity: usize, dtype_of: &dyn Fn(&str) -> Result<DType>) -> Result<Graph> {
    let mut b = LlamaBuilder { cfg, dtype_of, b: GraphBuilder::new("llama-decoder"), attention_dropout: 0.0 };
    b.build(Some(capacity))
}

/// Builds the decoder for training: the same weights and layers as [`build_graph`], but without
/// key/value caches (each run sees whole sequences, so causal attention over the block replaces the
/// cache) and with the logits of **every** position, which the next-token loss needs.
///
/// Input: `tokens` (u32, `[batch, seq]`; positions are `0..seq` in every row). Output: `logits`
/// (f32, `[batch, seq, vocab]`). A separate builder rather than an option of the inference graph, so
/// the inference graph (and every compiled artefact keyed by its hash) stays as it is.
///
/// # Errors
///
/// As [`build_graph`].
pub fn build_training_graph(cfg: &LlamaConfig, dtype_of: &dyn Fn(&str) -> Result<DType>) -> Result<Graph> {
    build_training_graph_with_dropout(cfg, dtype_of, 0.0)
}

/// [`build_training_graph`] with dropout `p` on the attention weights, where Hugging Face's
/// `LlamaAttention` applies its `attention_dropout` in training (the only dropout of a Llama;
/// SmolLM2's config sets it to 0, and GGUF metadata does not carry it). With `p` = 0 it is
/// exactly [`build_training_graph`]'s graph; otherwise the graph takes [`DROPOUT_SEED`] and each
/// layer computes its attention weights explicitly (`AttentionProbs`, dropout, then the product
/// with the values, query heads grouped over their key/value head), layer `l`'s dropout on stream
/// `l`.
///
/// # Errors
///
/// [`ModelError::InvalidInput`] when `p` is outside `[0, 1)`; otherwise as [`build_graph`].
pub fn build_training_graph_with_dropout(
    cfg: &LlamaConfig,
    dtype_of: &dyn Fn(&str) -> Result<DType>,
    p: f64,
) -> Result<Graph> {
    if !(0.0..1.0).contains(&p) {
        return Err(ModelError::InvalidInput(format!("attention dropout {p} is not in [0, 1)")));
    }
    let mut b = LlamaBuilder { cfg, dtype_of, b: GraphBuilder::new("llama-decoder-train"), attention_dropout: p };
    b.build(None)
}

struct LlamaBuilder<'a> {
    cfg: &'a LlamaConfig,
    dtype_of: &'a dyn Fn(&str) -> Result<DType>,
    b: GraphBuilder,
    /// Dropout on the attention weights (training graph only; 0 = none).
    attention_dropout: f64,
}

impl LlamaBuilder<'_> {
    fn weight(&mut self, name: &str, shape: &[usize]) -> Result<ValueId> {
        let dtype = (self.dtype_of)(name)?;
        Ok(self.b.weight(name, dtype, Shape::new(shape.iter().copied()))?)
    }

    fn op(&mut self, name: impl Into<String>, op: Op) -> Result<ValueId> {
        Ok(self.b.add(name, op)?)
    }

    fn linear(&mut self, name: &str, x: ValueId, out: usize, inp: usize) -> Result<ValueId> {
        let weight = self.weight(&format!("{name}.weight"), &[out, inp])?;
        self.op(name, Op::Linear { x, weight, bias: None })
    }

    fn rms_norm(&mut self, name: &str, x: ValueId) -> Result<ValueId> {
        let gamma = self.weight(&format!("{name}.weight"), &[self.cfg.hidden_size])?;
        self.op(name, Op::RmsNorm { x, gamma, eps: self.cfg.rms_norm_eps })
    }

    /// [batch, seq, heads·d] → [batch, heads, seq, d]. The training graph states d (`fixed_d`):
    /// shape inference cannot derive it from a size with symbolic factors, and the rotary
    /// gradient needs it fixed. The inference graph keeps `Infer`, so its hash (and every
    /// compiled artefact keyed by it) stays as it was.
    fn split_heads(&mut self, name: &str, x: ValueId, heads: usize, fixed_d: Option<usize>) -> Result<ValueId> {
        let last = fixed_d.map_or(ReshapeDim::Infer, ReshapeDim::Fixed);
        let dims = vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Fixed(heads), last];
        let r = self.op(format!("{name}.split"), Op::Reshape { x, dims })?;
        self.op(format!("{name}.heads"), Op::Permute { x: r, perm: vec![0, 2, 1, 3] })
    }

    /// Causal attention with dropout on its weights, as `Op::Attention` computes it otherwise:
    /// P = AttentionProbs(q, k) [batch, hq, seq, seq], dropped out, then P·v with query head h
    /// reading key/value head h / (hq / hkv): v's heads are repeated to hq ([batch, hkv, 1, seq, d]
    /// concatenated `group` times on the new axis, then merged), so the product is a plain 4-D
    /// one. Returns the op of the last step, to be added under the attention's name.
    #[allow(clippy::too_many_arguments)]
    fn dropout_attention(
        &mut self,
        p: &str,
        q: ValueId,
        k: ValueId,
        v: ValueId,
        scale: f64,
        seed: ValueId,
        layer: usize,
    ) -> Result<Op> {
        let (hq, hkv, d) = (self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim);
        let probs = self.op(
            format!("{p}.attention.probs"),
            Op::AttentionProbs { q, k, mask: None, causal: true, scale, q_positions: None },
        )?;
        let stream = u32::try_from(layer).map_err(|_| ModelError::InvalidInput("too many layers".into()))?;
        let probs = self.op(
            format!("{p}.attention.probs.dropout"),
            Op::Dropout { x: probs, seed, p: self.attention_dropout, stream },
        )?;
        let group = hq / hkv;
        let v = if group > 1 {
            let dims = vec![
                ReshapeDim::Keep(0),
                ReshapeDim::Keep(1),
                ReshapeDim::Fixed(1),
                ReshapeDim::Keep(2),
                ReshapeDim::Fixed(d),
            ];
            let one = self.op(format!("{p}.attention.v.grouped"), Op::Reshape { x: v, dims })?;
            let rep = self.op(format!("{p}.attention.v.repeated"), Op::Concat { xs: vec![one; group], axis: 2 })?;
            let dims = vec![ReshapeDim::Keep(0), ReshapeDim::Fixed(hq), ReshapeDim::Keep(3), ReshapeDim::Fixed(d)];
            self.op(format!("{p}.attention.v.heads"), Op::Reshape { x: rep, dims })?
        } else {
            v
        };
        Ok(Op::MatMul { a: probs, b: v, transpose_b: false })
    }

    /// `capacity`: the cache size of the inference graph, or `None` for the training graph (no
    /// cache, all positions' logits).
    fn build(&mut self, capacity: Option<usize>) -> Result<Graph> {
        let cfg = self.cfg;
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (hq, hkv) = (cfg.num_heads, cfg.num_kv_heads);
        let rows = || Shape(vec![Dim::sym("batch"), Dim::sym("seq")]);
        let tokens = self.b.input(TOKENS, DType::U32, rows())?;
        let (positions, slots) = match capacity {
            Some(_) => {
                let positions = self.b.input(POSITIONS, DType::U32, rows())?;
                (positions, Some(self.b.input(SLOTS, DType::U32, Shape(vec![Dim::sym("batch")]))?))
            }
            None => (self.op("positions", Op::Positions { like: tokens, axis: 1 })?, None),
        };

        let seed = match self.attention_dropout > 0.0 {
            true => Some(self.b.input(DROPOUT_SEED, DType::U32, Shape(vec![]))?),
            false => None,
        };
        let embed = self.weight("token_embd.weight", &[cfg.vocab_size, h])?;
        let mut x = self.op("embed", Op::Embedding { table: embed, ids: tokens })?;
        // The residual stream is f32 whatever the table is stored in.
        if self.b.node(x).dtype != DType::F32 {
            x = self.op("embed.f32", Op::Cast { x, dtype: DType::F32 })?;
        }
        let scale = 1.0 / (d as f64).sqrt();
        for l in 0..cfg.num_layers {
            let p = format!("blk.{l}");
            let n = self.rms_norm(&format!("{p}.attn_norm"), x)?;
            let q = self.linear(&format!("{p}.attn_q"), n, hq * d, h)?;
            let k = self.linear(&format!("{p}.attn_k"), n, hkv * d, h)?;
            let v = self.linear(&format!("{p}.attn_v"), n, hkv * d, h)?;
            let fixed_d = capacity.is_none().then_some(d);
            let q = self.split_heads(&format!("{p}.q"), q, hq, fixed_d)?;
            let k = self.split_heads(&format!("{p}.k"), k, hkv, fixed_d)?;
            let v = self.split_heads(&format!("{p}.v"), v, hkv, fixed_d)?;
            // GGUF's converter permutes Q and K so that rotary pairs are adjacent features.
            let rope = |x| Op::Rope { x, positions, base: cfg.rope_base, style: RopeStyle::Interleaved };
            let q = self.op(format!("{p}.q.rope"), rope(q))?;
            let k = self.op(format!("{p}.k.rope"), rope(k))?;
            let attention = match (capacity, slots) {
                (Some(capacity), Some(slots)) => {
                    let k = self.op(format!("{p}.k.cache"), Op::KvCache { x: k, positions, slots, capacity })?;
                    let v = self.op(format!("{p}.v.cache"), Op::KvCache { x: v, positions, slots, capacity })?;
                    Op::Attention { q, k, v, mask: None, causal: false, scale, q_positions: Some(positions) }
                }
                // Whole sequences from position 0, with dropout on the attention weights.
                _ if seed.is_some() => self.dropout_attention(&p, q, k, v, scale, seed.expect("checked"), l)?,
                // Whole sequences from position 0: plain causal attention over the block.
                _ => Op::Attention { q, k, v, mask: None, causal: true, scale, q_positions: None },
            };
            let a = self.op(format!("{p}.attention"), attention)?;
            let a = self.op(format!("{p}.attention.merge_t"), Op::Permute { x: a, perm: vec![0, 2, 1, 3] })?;
            let dims = vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Fixed(hq * d)];
            let a = self.op(format!("{p}.attention.merge"), Op::Reshape { x: a, dims })?;
            let o = self.linear(&format!("{p}.attn_output"), a, h, hq * d)?;
            x = self.op(format!("{p}.attention.residual"), Op::Binary { op: BinaryOp::Add, a: x, b: o })?;

            let n = self.rms_norm(&format!("{p}.ffn_norm"), x)?;
            let ffn = cfg.intermediate_size;
            let gate = self.linear(&format!("{p}.ffn_gate"), n, ffn, h)?;
            let up = self.linear(&format!("{p}.ffn_up"), n, ffn, h)?;
            let gate = self.op(format!("{p}.ffn_gate.silu"), Op::Unary { op: UnaryOp::Silu, x: gate })?;
            let m = self.op(format!("{p}.ffn_mul"), Op::Binary { op: BinaryOp::Mul, a: gate, b: up })?;
            let down = self.linear(&format!("{p}.ffn_down"), m, h, ffn)?;
            x = self.op(format!("{p}.ffn.residual"), Op::Binary { op: BinaryOp::Add, a: x, b: down })?;
        }
        let head_weight = |s: &mut Self| -> Result<ValueId> {
            if cfg.tied_embeddings {
                Ok(embed)
            } else {
                s.weight("output.weight", &[cfg.vocab_size, h])
            }
        };
        let logits = if capacity.is_some() {
            // Only the last new token of each row predicts the next one.
            let last = self.op("last", Op::TakeLast { x, axis: 1 })?;
            let n = self.rms_norm("output_norm", last)?;
            let head = head_weight(self)?;
            let logits = self.op("output", Op::Linear { x: n, weight: head, bias: None })?;
            let dims = vec![ReshapeDim::Keep(0), ReshapeDim::Fixed(cfg.vocab_size)];
            self.op("logits", Op::Reshape { x: logits, dims })?
        } else {
            // Training: every position predicts its next token.
            let n = self.rms_norm("output_norm", x)?;
            let head = head_weight(self)?;
            self.op("logits", Op::Linear { x: n, weight: head, bias: None })?
        };
        self.b.output(LOGITS, logits);
        Ok(std::mem::replace(&mut self.b, GraphBuilder::new("")).build()?)
    }
}
