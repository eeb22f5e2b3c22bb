//! The operations a graph is made of, at the granularity a transformer needs.

use crate::{DType, Shape};
use serde::{Deserialize, Serialize};

/// Index of a node (and of the one value it produces) in its graph. Graphs are SSA: every node
/// produces exactly one value, and operands always refer to earlier nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnaryOp {
    /// GELU, exact (erf) form: x · Φ(x).
    Gelu,
    /// GELU, tanh approximation.
    GeluTanh,
    Silu,
    Relu,
    Tanh,
    Exp,
    /// The logistic function 1 / (1 + e^−x).
    Sigmoid,
    /// The error function erf(x) = 2/√π ∫₀ˣ e^(−t²) dt.
    Erf,
    /// The Heaviside step: 1 where x > 0, else 0 (the derivative of ReLU; its own derivative is 0).
    Step,
    /// √x (NaN below 0).
    Sqrt,
    /// The natural logarithm (−∞ at 0, NaN below).
    Log,
}

/// How rotary embeddings pair up the features of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeStyle {
    /// Feature i is rotated with feature i + d/2 (GPT-NeoX, Hugging Face Llama).
    HalfSplit,
    /// Feature 2i is rotated with feature 2i + 1 (original Llama, GGUF checkpoints).
    Interleaved,
}

/// One output dimension of a reshape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReshapeDim {
    /// The size of the input's dimension at this index (keeps symbolic dims symbolic).
    Keep(usize),
    /// A fixed size.
    Fixed(usize),
    /// Whatever is left (at most one per reshape).
    Infer,
}

/// Where a graph variable's value comes from before a session's first assignment to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariableInit {
    /// The weight of the variable's name in the weight source (a trained parameter).
    Weight,
    /// Zeros (optimiser moments).
    Zeros,
}

/// A graph operation. Operands are `ValueId`s of earlier nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Op {
    /// A named graph input, supplied at every run.
    Input {
        dtype: DType,
        shape: Shape,
    },
    /// A weight, looked up by the node's name in the weight source when the graph is prepared.
    Weight {
        dtype: DType,
        shape: Shape,
    },
    /// A value that persists across the runs of a session (see `Executable::new_state`): a
    /// parameter being trained, an optimiser moment. Every read in a step sees the value from
    /// before the step; an `Assign` sets the value the next step sees. It starts as `init` says;
    /// a run without a session always sees the initial value. Fixed shape, float dtype.
    Variable {
        dtype: DType,
        shape: Shape,
        init: VariableInit,
    },
    /// One fused AdamW update (`torch.optim.AdamW`, not amsgrad) of a parameter: param, grad, m and v
    /// have one shape S; `lr` and `step` (1 for the first update) are float scalars (shape []).
    /// Yields `[3] + S`: the new parameter, m and v, stacked (see `accelrt_core::optim`):
    /// p' = p·(1 − lr·wd) − lr/(1 − β1^t) · m' / (√v' / √(1 − β2^t) + eps),
    /// m' = β1·m + (1 − β1)·g, v' = β2·v + (1 − β2)·g². Fused because the optimiser touches every
    /// parameter: as ~20 element-wise ops it dominated a training step's time.
    AdamWStep {
        param: ValueId,
        grad: ValueId,
        m: ValueId,
        v: ValueId,
        lr: ValueId,
        step: ValueId,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// Sets variable `var` (an `Op::Variable` node) to `value` (its dtype and shape) for the next
    /// step of the session, and yields `value`. At most one `Assign` per variable.
    Assign {
        var: ValueId,
        value: ValueId,
    },
    /// Rows of `table` ([vocab, hidden]) selected by integer `ids` (any shape): `ids.shape + [hidden]`.
    Embedding {
        table: ValueId,
        ids: ValueId,
    },
    /// Batched matrix product of the last two axes; leading axes broadcast.
    /// With `transpose_b`, `b` is given as [..., n, k].
    MatMul {
        a: ValueId,
        b: ValueId,
        transpose_b: bool,
    },
    /// x · weightᵀ + bias, with `weight` as [out, in] (the PyTorch layout); x is [..., in].
    Linear {
        x: ValueId,
        weight: ValueId,
        bias: Option<ValueId>,
    },
    /// Element-wise with NumPy broadcasting.
    Binary {
        op: BinaryOp,
        a: ValueId,
        b: ValueId,
    },
    Unary {
        op: UnaryOp,
        x: ValueId,
    },
    /// x · mul + add.
    Affine {
        x: ValueId,
        mul: f64,
        add: f64,
    },
    /// Normalises the last axis: (x − mean) / sqrt(var + eps) · gamma + beta.
    LayerNorm {
        x: ValueId,
        gamma: ValueId,
        beta: Option<ValueId>,
        eps: f64,
    },
    /// x / sqrt(mean(x²) + eps) · gamma over the last axis.
    RmsNorm {
        x: ValueId,
        gamma: ValueId,
        eps: f64,
    },
    /// Softmax over the last axis.
    Softmax {
        x: ValueId,
    },
    /// Scaled dot-product attention.
    ///
    /// q: [batch, q_heads, q_len, d]; k: [batch, kv_heads, kv_len, d]; v: [batch, kv_heads, kv_len, dv];
    /// q_heads must be a multiple of kv_heads (grouped-query attention). Output: [batch, q_heads, q_len, dv].
    /// `mask` ([batch, kv_len], non-zero = attend) hides padding keys. With `causal`, query i sits at
    /// position kv_len − q_len + i and sees keys at positions ≤ its own (so a query block appended to a
    /// cache works). With `q_positions` ([batch, q_len], integer) query (b, i) instead sits at position
    /// q_positions[b, i] and sees keys 0..=that position: rows of a batch may be at different lengths
    /// (keys past a row's position, e.g. stale cache rows, are never seen). A query that sees no key at
    /// all gets an unspecified (finite) row.
    Attention {
        q: ValueId,
        k: ValueId,
        v: ValueId,
        mask: Option<ValueId>,
        causal: bool,
        scale: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        q_positions: Option<ValueId>,
    },
    /// A key/value cache that persists across runs of one session (see `Executable::new_state`).
    ///
    /// Writes x ([batch, heads, new, d]) into the cache slot `slots[b]` (`[batch]`, integer) of each row
    /// at positions `positions[b, ..]` ([batch, new], integer; consecutive within a row, the first at
    /// most the slot's current length), then yields every row's cache up to the step's longest row:
    /// [batch, heads, kv_len, d] with kv_len = max over rows of (last position + 1). Entries past a
    /// row's own length are unspecified; attention with `q_positions` never reads them. A slot holds
    /// at most `capacity` positions, so compiled backends can allocate it once.
    KvCache {
        x: ValueId,
        positions: ValueId,
        slots: ValueId,
        capacity: usize,
    },
    /// The last entry of x along `axis` (kept as an axis of size 1), e.g. the last position's hidden
    /// state, from which the next token is predicted.
    TakeLast {
        x: ValueId,
        axis: usize,
    },
    /// Rotary position embedding of x: [batch, heads, seq, d] at integer `positions`
    /// (`[seq]`, or `[batch, seq]` for rows at different offsets); frequencies base^(−2i/d).
    Rope {
        x: ValueId,
        positions: ValueId,
        base: f64,
        style: RopeStyle,
    },
    Reshape {
        x: ValueId,
        dims: Vec<ReshapeDim>,
    },
    /// Output axis i is input axis `perm[i]`.
    Permute {
        x: ValueId,
        perm: Vec<usize>,
    },
    /// x[start..end] along `axis` (`end: None` means to the end).
    Slice {
        x: ValueId,
        axis: usize,
        start: usize,
        end: Option<usize>,
    },
    Concat {
        xs: Vec<ValueId>,
        axis: usize,
    },
    /// Mean over the sequence axis of x: [batch, seq, hidden] counting only positions where
    /// mask ([batch, seq]) is non-zero: Σ x·m / max(Σ m, 1e-9).
    MeanPool {
        x: ValueId,
        mask: ValueId,
    },
    /// x / max(‖x‖₂, eps) over the last axis.
    L2Normalize {
        x: ValueId,
        eps: f64,
    },
    Cast {
        x: ValueId,
        dtype: DType,
    },
    /// The u32 vector 0..n, n = the size of `like`'s axis `axis` (position ids).
    Positions {
        like: ValueId,
        axis: usize,
    },
    /// The sum of x over `axes` (ascending, distinct; empty: x itself). With `keep_dims` the summed
    /// axes stay as axes of size 1, otherwise they are removed (all axes removed: a scalar, shape []).
    ReduceSum {
        x: ValueId,
        axes: Vec<usize>,
        keep_dims: bool,
    },
    /// log(softmax(x)) over the last axis, computed as x − max − log Σ exp(x − max), so it is
    /// finite wherever x is (a log of a softmax underflows to −∞).
    LogSoftmax {
        x: ValueId,
    },
    /// One-hot rows of integer `ids` (any shape): `ids.shape + [depth]` of float `dtype`, 1 at
    /// position ids[…] and 0 elsewhere. An id outside 0..depth (such as −100, PyTorch's ignore
    /// index) gives a row of zeros.
    OneHot {
        ids: ValueId,
        depth: usize,
        dtype: DType,
    },
    /// The adjoint of `Embedding`: a zero [rows, width] matrix with every row `src[i]` of `src`
    /// (`ids.shape + [width]`) added into row `ids[i]` (a scatter-add; repeated ids accumulate).
    /// Ids must be in 0..rows.
    IndexAdd {
        ids: ValueId,
        src: ValueId,
        rows: usize,
    },
    /// The attention weights `Attention` with the same operands uses: softmax over keys of
    /// q·kᵀ·scale with hidden keys (padding mask, causal, q_positions) at exactly 0:
    /// [batch, q_heads, q_len, kv_len]. Query head h reads key head h / (q_heads / kv_heads).
    /// A query that sees no key at all gets an unspecified (finite) row. The gradient of attention
    /// is built from it.
    AttentionProbs {
        q: ValueId,
        k: ValueId,
        mask: Option<ValueId>,
        causal: bool,
        scale: f64,
        q_positions: Option<ValueId>,
    },
    /// Inverted dropout (training): each element of x is kept, scaled by 1/(1 − p), or zeroed, by a
    /// mask every backend computes identically — a counter-based hash of the element's position,
    /// not a stateful random generator, so the reference evaluator can check it bit for bit and a
    /// resumed run draws the same masks.
    ///
    /// `seed` is a u32 scalar (shape []); `stream` tells apart the dropout nodes of one graph that
    /// share a seed; `p` ∈ [0, 1) (p = 0 is the identity). Element i of x (its row-major flat
    /// index, taken modulo 2³²; the StableHLO export refuses values of more than 2³² elements) is
    /// kept iff
    ///
    /// ```text
    /// MurmurHash3_x86_32(key = le32(stream) ‖ le32(i), seed) ≥ ⌊p · 2³²⌋
    /// ```
    ///
    /// where MurmurHash3_x86_32 is Austin Appleby's 32-bit MurmurHash3 (SMHasher,
    /// `MurmurHash3.cpp`) of the 8-byte key, all arithmetic on u32 wrapping:
    ///
    /// ```text
    /// h = seed
    /// for k in [stream, i]:
    ///     k = k · 0xcc9e2d51; k = rotl(k, 15); k = k · 0x1b873593
    ///     h = h ^ k; h = rotl(h, 13); h = h · 5 + 0xe6546b64
    /// h = h ^ 8                                   (the key's length in bytes)
    /// h = h ^ (h >> 16); h = h · 0x85ebca6b; h = h ^ (h >> 13); h = h · 0xc2b2ae35; h = h ^ (h >> 16)
    /// ```
    ///
    /// Kept elements become x · (1 / (1 − p)) (the scale computed in f64, applied in the compute
    /// dtype), dropped ones 0. The gradient is the same op on the incoming gradient (same seed,
    /// stream and p), so forward and backward drop the same elements.
    ///
    /// **Feeding `seed` from a training graph**: make it a graph input (u32, shape []) that the
    /// trainer sets every step from the run's seed and the step number through a hash (for
    /// example MurmurHash3_x86_32 of le32(step) with the run seed as its seed), never from a
    /// stateful generator, so a run resumed at step n feeds the seeds the uninterrupted run fed;
    /// give every dropout node of the graph its own `stream` (e.g. its index among them).
    Dropout {
        x: ValueId,
        seed: ValueId,
        p: f64,
        stream: u32,
    },
}

impl Op {
    /// The operands, in a fixed order.
    pub fn operands(&self) -> Vec<ValueId> {
        match self {
            Op::Input { .. } | Op::Weight { .. } | Op::Variable { .. } => vec![],
            Op::Assign { var, value } => vec![*var, *value],
            Op::AdamWStep { param, grad, m, v, lr, step, .. } => vec![*param, *grad, *m, *v, *lr, *step],
            Op::Embedding { table, ids } => vec![*table, *ids],
            Op::MatMul { a, b, .. } | Op::Binary { a, b, .. } => vec![*a, *b],
            Op::Linear { x, weight, bias } => [Some(*x), Some(*weight), *bias].into_iter().flatten().collect(),
            Op::Unary { x, .. }
            | Op::Affine { x, .. }
            | Op::Softmax { x }
            | Op::LogSoftmax { x }
            | Op::ReduceSum { x, .. }
            | Op::Reshape { x, .. }
            | Op::Permute { x, .. }
            | Op::Slice { x, .. }
            | Op::L2Normalize { x, .. }
            | Op::Cast { x, .. } => vec![*x],
            Op::LayerNorm { x, gamma, beta, .. } => [Some(*x), Some(*gamma), *beta].into_iter().flatten().collect(),
            Op::RmsNorm { x, gamma, .. } => vec![*x, *gamma],
            Op::Attention { q, k, v, mask, q_positions, .. } => {
                [Some(*q), Some(*k), Some(*v), *mask, *q_positions].into_iter().flatten().collect()
            }
            Op::KvCache { x, positions, slots, .. } => vec![*x, *positions, *slots],
            Op::TakeLast { x, .. } => vec![*x],
            Op::Rope { x, positions, .. } => vec![*x, *positions],
            Op::Concat { xs, .. } => xs.clone(),
            Op::MeanPool { x, mask } => vec![*x, *mask],
            Op::Positions { like, .. } => vec![*like],
            Op::OneHot { ids, .. } => vec![*ids],
            Op::IndexAdd { ids, src, .. } => vec![*ids, *src],
            Op::Dropout { x, seed, .. } => vec![*x, *seed],
            Op::AttentionProbs { q, k, mask, q_positions, .. } => {
                [Some(*q), Some(*k), *mask, *q_positions].into_iter().flatten().collect()
            }
        }
    }

    /// A short name of the operation kind, for messages and statistics.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Weight { .. } => "weight",
            Op::Variable { .. } => "variable",
            Op::Assign { .. } => "assign",
            Op::AdamWStep { .. } => "adamw_step",
            Op::Embedding { .. } => "embedding",
            Op::MatMul { .. } => "matmul",
            Op::Linear { .. } => "linear",
            Op::Binary { .. } => "binary",
            Op::Unary { .. } => "unary",
            Op::Affine { .. } => "affine",
            Op::LayerNorm { .. } => "layer_norm",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Softmax { .. } => "softmax",
            Op::Attention { .. } => "attention",
            Op::Rope { .. } => "rope",
            Op::Reshape { .. } => "reshape",
            Op::Permute { .. } => "permute",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::MeanPool { .. } => "mean_pool",
            Op::L2Normalize { .. } => "l2_normalize",
            Op::Cast { .. } => "cast",
            Op::Positions { .. } => "positions",
            Op::KvCache { .. } => "kv_cache",
            Op::TakeLast { .. } => "take_last",
            Op::ReduceSum { .. } => "reduce_sum",
            Op::LogSoftmax { .. } => "log_softmax",
            Op::OneHot { .. } => "one_hot",
            Op::IndexAdd { .. } => "index_add",
            Op::AttentionProbs { .. } => "attention_probs",
            Op::Dropout { .. } => "dropout",
        }
    }
}
