//! The operations a graph is made of, at the granularity a transformer needs.

use crate::{DType, Shape};
use serde::{Deserialize, Serialize};

/// Index of a node (and of the one value it produces) in its graph. Graphs are SSA: every node
/// produces exactly one value, and operands always refer to earlier nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ValueId(pub u32);

impl ValueId {
    /// The node's position in `Graph::nodes()`, for indexing that slice or any per-node vector
    /// an evaluator keeps.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The element-wise operation of an `Op::Binary`. Both operands have one dtype, float or integer;
/// floats follow IEEE 754 in that dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryOp {
    /// `a + b` (`torch.add`, ONNX `Add`).
    Add,
    /// `a − b` (`torch.sub`, ONNX `Sub`).
    Sub,
    /// `a · b` element by element (`torch.mul`, ONNX `Mul`); the matrix product is `Op::MatMul`.
    Mul,
    /// `a / b` (`torch.div`, ONNX `Div`). Floats: x/0 is ±∞ or NaN. Integers truncate toward zero
    /// (`torch.div(..., rounding_mode="trunc")`); the reference evaluator fails with `Error::Node`
    /// on a zero divisor.
    Div,
}

/// The function of an `Op::Unary`, applied to each element of a float value. Formulas as the
/// reference evaluator computes them (in f64, then rounded to the value's dtype).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnaryOp {
    /// GELU, exact (erf) form: x · Φ(x) = 0.5 · x · (1 + erf(x / √2)) (Hendrycks & Gimpel 2016;
    /// `torch.nn.functional.gelu(x)`, BERT's `hidden_act = "gelu"`).
    Gelu,
    /// GELU, tanh approximation: 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))
    /// (`torch.nn.functional.gelu(x, approximate="tanh")`, Hugging Face `gelu_pytorch_tanh`).
    GeluTanh,
    /// SiLU (swish): x · sigmoid(x) = x / (1 + e^−x) (`torch.nn.functional.silu`; the activation
    /// of Llama's gated MLP).
    Silu,
    /// max(x, 0) (`torch.relu`).
    Relu,
    /// The hyperbolic tangent, in (−1, 1).
    Tanh,
    /// eˣ; overflows to +∞ above about 88.7 in f32 and bf16, 11.1 in f16.
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
    /// Feature i is rotated with feature i + d/2 (GPT-NeoX, Hugging Face Llama's `rotate_half`).
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
///
/// Each variant's doc is the op's specification. Its shape and dtype rule is in `infer/` (checked
/// when the node is added: a violation is an `Error::Node` naming the node), its f64 semantics in
/// `reference/`. Symbolic sizes are checked when the graph runs. Where a PyTorch or ONNX op is
/// named, the formula is that op's for the shapes given here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Op {
    /// A named graph input, supplied at every run under the node's name (checked by
    /// `Graph::bind_inputs`).
    Input {
        /// The element type callers must supply; anything but `DType::Quant`.
        dtype: DType,
        /// The declared shape. `Dim::Sym` axes (`batch`, `seq`) take their sizes from the tensors
        /// given at run time; one symbol must get one size across all inputs.
        shape: Shape,
    },
    /// A weight, looked up by the node's name in the weight source when the graph is prepared.
    Weight {
        /// The stored element type; may be `DType::Quant` (GGUF blocks), which `Embedding` (as the
        /// table) and `Linear` (as the weight) read.
        dtype: DType,
        /// Must be fully fixed. The source's tensor must match it and `dtype` exactly, else
        /// preparing fails with `Error::Weight`.
        shape: Shape,
    },
    /// A value that persists across the runs of a session (see `Executable::new_state`): a
    /// parameter being trained, an optimiser moment. Every read in a step sees the value from
    /// before the step; an `Assign` sets the value the next step sees. It starts as `init` says;
    /// a run without a session always sees the initial value. Fixed shape, float dtype.
    Variable {
        /// f32, f16 or bf16.
        dtype: DType,
        /// Fully fixed (no symbols).
        shape: Shape,
        /// The value before the session's first `Assign` to it.
        init: VariableInit,
    },
    /// One fused AdamW update (`torch.optim.AdamW` with `amsgrad=False`; decoupled weight decay as
    /// in Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019) of a parameter.
    /// `param`, `grad`, `m` and `v` have one float dtype and one shape `S`. Yields `[3] + S`: the
    /// new parameter, m and v stacked along a new first axis (split with `Slice` on axis 0; see
    /// `accelrt_core::optim`). With g = grad and t = step:
    ///
    /// ```text
    /// m' = β1·m + (1 − β1)·g
    /// v' = β2·v + (1 − β2)·g²
    /// p' = p·(1 − lr·wd) − lr/(1 − β1^t) · m' / (√v' / √(1 − β2^t) + eps)
    /// ```
    ///
    /// Fused because the optimiser touches every parameter: as ~20 element-wise ops it dominated a
    /// training step's time.
    AdamWStep {
        /// The parameter p before the step (usually an `Op::Variable`).
        param: ValueId,
        /// The gradient g of the loss with respect to `param`; the param's dtype and shape.
        grad: ValueId,
        /// The first moment (running mean of g) before the step; a variable with
        /// `VariableInit::Zeros`, the param's dtype and shape.
        m: ValueId,
        /// The second moment (running mean of g²) before the step; like `m`.
        v: ValueId,
        /// The learning rate: a scalar (shape `[]`) of the param's dtype, so a schedule can change
        /// it every step without rebuilding the graph.
        lr: ValueId,
        /// The update count t as a scalar (shape `[]`) of the param's dtype: 1 for the first update
        /// (at 0 the bias corrections divide by zero).
        step: ValueId,
        /// β1, decay of the first moment, in `[0, 1)` (PyTorch's default 0.9).
        beta1: f64,
        /// β2, decay of the second moment, in `[0, 1)` (PyTorch's default 0.999).
        beta2: f64,
        /// Added to the bias-corrected √v so the step stays finite where v ≈ 0; finite and ≥ 0
        /// (PyTorch's default 1e-8).
        eps: f64,
        /// Decoupled weight decay wd (finite; PyTorch's AdamW default 0.01): p shrinks by the factor
        /// 1 − lr·wd before the Adam step.
        weight_decay: f64,
    },
    /// Sets variable `var` (an `Op::Variable` node) to `value` (its dtype and shape) for the next
    /// step of the session, and yields `value`. At most one `Assign` per variable.
    Assign {
        /// The `Op::Variable` node to set.
        var: ValueId,
        /// The new value: the variable's dtype and a shape compatible with its own.
        value: ValueId,
    },
    /// Rows of `table` (`[vocab, hidden]`) selected by integer `ids` (any shape): yields
    /// `ids.shape + [hidden]` (`torch.nn.functional.embedding`, ONNX `Gather` on axis 0). A float
    /// table yields its own dtype, a quantised one f32 (its rows dequantised). An id outside
    /// `0..vocab` fails at run time (`Error::Node` in the reference evaluator).
    Embedding {
        /// The embedding matrix `[vocab, hidden]`, float or block-quantised (usually a weight).
        table: ValueId,
        /// Token, position or type ids: any integer dtype, any shape.
        ids: ValueId,
    },
    /// Batched matrix product of the last two axes (`torch.matmul`, ONNX `MatMul`, for operands of
    /// rank ≥ 2): `a` `[..., m, k]` times `b` `[..., k, n]` gives `[..., m, n]`; the leading axes
    /// broadcast NumPy-style. Both operands have the same float dtype, which the result keeps.
    /// With `transpose_b`, `b` is given as `[..., n, k]`.
    MatMul {
        /// The left operand `[..., m, k]`, rank ≥ 2.
        a: ValueId,
        /// The right operand `[..., k, n]` (or `[..., n, k]` with `transpose_b`), rank ≥ 2.
        b: ValueId,
        /// Multiply by `b`ᵀ (its last two axes swapped), e.g. q·kᵀ, without a separate `Permute`.
        transpose_b: bool,
    },
    /// x · weightᵀ + bias (`torch.nn.functional.linear`; ONNX `Gemm` with `transB = 1` for a 2-D
    /// x): x `[..., in]` gives `[..., out]` in x's dtype.
    Linear {
        /// Float input `[..., in]`, rank ≥ 1.
        x: ValueId,
        /// `[out, in]` (the PyTorch `nn.Linear` layout), float or block-quantised.
        weight: ValueId,
        /// An optional `[out]` vector added to every output row.
        bias: Option<ValueId>,
    },
    /// Element-wise `a op b` with NumPy broadcasting. Both operands have one dtype, float or
    /// integer (not quantised), which the result keeps; its shape is the broadcast shape (a symbol
    /// against a fixed size other than 1 is checked at run time).
    Binary {
        /// Which operation.
        op: BinaryOp,
        /// The left operand.
        a: ValueId,
        /// The right operand, broadcast against `a`.
        b: ValueId,
    },
    /// A function of each element of a float value (formulas at `UnaryOp`); same dtype and shape.
    Unary {
        /// Which function.
        op: UnaryOp,
        /// Float input, any shape.
        x: ValueId,
    },
    /// x · mul + add, element-wise with constant coefficients (e.g. a loss's scale, 1 − x, a
    /// negation, averaging over micro-batches); float x, same dtype and shape.
    Affine {
        /// Float input, any shape.
        x: ValueId,
        /// The constant factor, applied first.
        mul: f64,
        /// The constant added after the multiplication.
        add: f64,
    },
    /// Normalises the last axis: (x − mean) / sqrt(var + eps) · gamma + beta, with var the biased
    /// (population) variance (`torch.nn.functional.layer_norm` over the last axis, ONNX
    /// `LayerNormalization` with axis −1). Float x `[..., hidden]`; same dtype and shape.
    LayerNorm {
        /// Float input `[..., hidden]`.
        x: ValueId,
        /// Per-feature gain `[hidden]`.
        gamma: ValueId,
        /// Optional per-feature offset `[hidden]`; none adds nothing.
        beta: Option<ValueId>,
        /// Added to the variance before the square root; finite and ≥ 0 (BERT's
        /// `layer_norm_eps` is 1e-12, PyTorch's default 1e-5).
        eps: f64,
    },
    /// x / sqrt(mean(x²) + eps) · gamma over the last axis: RMSNorm (Zhang & Sennrich 2019;
    /// Hugging Face `LlamaRMSNorm`, `torch.nn.functional.rms_norm`). Float x `[..., hidden]`; same
    /// dtype and shape.
    RmsNorm {
        /// Float input `[..., hidden]`.
        x: ValueId,
        /// Per-feature gain `[hidden]`.
        gamma: ValueId,
        /// Added to the mean square before the square root; finite and ≥ 0 (a Llama config's
        /// `rms_norm_eps`, e.g. 1e-5).
        eps: f64,
    },
    /// Softmax over the last axis, exp(x − max) / Σ exp(x − max) (`torch.softmax(x, dim=-1)`,
    /// ONNX `Softmax` with axis −1); float x, same dtype and shape.
    Softmax {
        /// Float input; each lane along the last axis is normalised on its own.
        x: ValueId,
    },
    /// Scaled dot-product attention: softmax over the visible keys of q·kᵀ·scale, times v
    /// (`torch.nn.functional.scaled_dot_product_attention` with `scale` and `enable_gqa=True`).
    ///
    /// q: `[batch, q_heads, q_len, d]`; k: `[batch, kv_heads, kv_len, d]`; v:
    /// `[batch, kv_heads, kv_len, dv]`, all one float dtype; q_heads must be a multiple of kv_heads
    /// (grouped-query attention: query head h reads key/value head h / (q_heads / kv_heads), as
    /// Hugging Face's `repeat_kv`). Output: `[batch, q_heads, q_len, dv]`.
    /// `mask` (`[batch, kv_len]`, non-zero = attend) hides padding keys. With `causal`, query i sits
    /// at position kv_len − q_len + i and sees keys at positions ≤ its own (so a query block
    /// appended to a cache works: the mask is aligned to the bottom right, unlike PyTorch's
    /// `is_causal`, which aligns it to the top left; q_len > kv_len is a run-time error). With
    /// `q_positions` (`[batch, q_len]`, integer) query (b, i) instead sits at position
    /// `q_positions[b, i]` and sees keys `0..=that position`: rows of a batch may be at different
    /// lengths (keys past a row's position, e.g. stale cache rows, are never seen). A query that
    /// sees no key at all gets an unspecified (finite) row.
    Attention {
        /// Queries `[batch, q_heads, q_len, d]`, float.
        q: ValueId,
        /// Keys `[batch, kv_heads, kv_len, d]`, q's dtype.
        k: ValueId,
        /// Values `[batch, kv_heads, kv_len, dv]`, q's dtype.
        v: ValueId,
        /// Optional padding mask `[batch, kv_len]` of any numeric dtype: keys where it is 0 are
        /// hidden from every query of that row.
        mask: Option<ValueId>,
        /// Hide each query's future keys (bottom-right aligned, see above); cannot be combined with
        /// `q_positions`.
        causal: bool,
        /// The factor on q·kᵀ before the softmax, finite; 1/√d for standard attention.
        scale: f64,
        /// Optional integer `[batch, q_len]`: each query's absolute position, which bounds the keys
        /// it sees; cannot be combined with `causal`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        q_positions: Option<ValueId>,
    },
    /// A key/value cache that persists across runs of one session (see `Executable::new_state`).
    ///
    /// Writes x (`[batch, heads, new, d]`) into the cache slot `slots[b]` (`[batch]`, integer) of
    /// each row at positions `positions[b, ..]` (`[batch, new]`, integer; consecutive within a row,
    /// the first at most the slot's current length), then yields every row's cache up to the step's
    /// longest row: `[batch, heads, kv_len, d]` in x's dtype, with kv_len (the symbol `KV_LEN`) =
    /// max over rows of (last position + 1). Entries past a row's own length are unspecified;
    /// attention with `q_positions` never reads them. A slot holds at most `capacity` positions,
    /// so compiled backends can allocate it once. A write that breaks these rules fails at run time
    /// with the reason `SessionState::plan_cache_write` gives (a `CacheWriteError`).
    KvCache {
        /// The step's new keys or values `[batch, heads, new, d]`, float; new ≤ `capacity`.
        x: ValueId,
        /// Integer `[batch, new]`: where each row's entries go. A row may continue its sequence or
        /// rewind it (overwriting), never skip a position.
        positions: ValueId,
        /// Integer `[batch]`: the session slot (one per sequence) each row reads and writes;
        /// distinct within a step and below the slot count the session state was made with.
        slots: ValueId,
        /// The most positions one slot holds, ≥ 1.
        capacity: usize,
    },
    /// The last entry of x along `axis` (kept as an axis of size 1), e.g. the last position's hidden
    /// state, from which the next token is predicted. Any non-quantised dtype; an empty axis fails
    /// at run time.
    TakeLast {
        /// The input, any non-quantised dtype.
        x: ValueId,
        /// The axis to take the last entry of, below x's rank.
        axis: usize,
    },
    /// Rotary position embedding (Su et al., "RoFormer", 2021) of x: `[batch, heads, seq, d]` at
    /// integer `positions` (`[seq]`, or `[batch, seq]` for rows at different offsets); frequencies
    /// base^(−2i/d). Each feature pair (l, r) of a head, paired as `style` says, at position p is
    /// rotated by θᵢ = p · base^(−2i/d) for i in `0..d/2`: l' = l·cos θᵢ − r·sin θᵢ,
    /// r' = r·cos θᵢ + l·sin θᵢ (Hugging Face's `apply_rotary_pos_emb` for `HalfSplit`). d must be
    /// even; float x; same dtype and shape.
    Rope {
        /// Queries or keys `[batch, heads, seq, d]`, float, d even.
        x: ValueId,
        /// Integer absolute positions: `[seq]` shared by every row, or `[batch, seq]`.
        positions: ValueId,
        /// The frequency base, finite and > 1 (`rope_theta` in Hugging Face configs; 10000 for
        /// Llama).
        base: f64,
        /// Which features form a rotated pair.
        style: RopeStyle,
    },
    /// The same elements in row-major order under a new shape (`torch.reshape`, ONNX `Reshape`).
    /// Any dtype, which the result keeps. The element count must match: checked when the graph is
    /// built if x's shape is fixed, else at run time (`reshape_target`). An `Infer` axis whose size
    /// the graph cannot know gets a derived symbol `<node>:<axis>`.
    Reshape {
        /// The input, any dtype.
        x: ValueId,
        /// One entry per output axis; at most one `ReshapeDim::Infer`.
        dims: Vec<ReshapeDim>,
    },
    /// Output axis i is input axis `perm[i]` (`torch.permute`, ONNX `Transpose`); any dtype.
    Permute {
        /// The input, any dtype.
        x: ValueId,
        /// A permutation of `0..rank`.
        perm: Vec<usize>,
    },
    /// `x[start..end]` along `axis` (`end: None` means to the end); any dtype, only that axis
    /// changes size. Bounds are checked when the graph is built if the axis is fixed, else at run
    /// time.
    Slice {
        /// The input, any dtype.
        x: ValueId,
        /// The axis to slice, below x's rank.
        axis: usize,
        /// The first index kept.
        start: usize,
        /// One past the last index kept, ≥ `start` and ≤ the axis size; `None` is the axis size.
        end: Option<usize>,
    },
    /// Joins `xs` along `axis` (`torch.cat`, ONNX `Concat`): all parts have one dtype and rank and
    /// agree on every other axis; the joined axis is the sum of their sizes (a derived symbol
    /// `<node>:<axis>` if any of them is symbolic).
    Concat {
        /// The parts, in order; at least one.
        xs: Vec<ValueId>,
        /// The axis to join along, below the parts' rank.
        axis: usize,
    },
    /// Mean over the sequence axis of x: `[batch, seq, hidden]` counting only positions where
    /// mask (`[batch, seq]`) is non-zero: Σ x·m / max(Σ m, 1e-9), giving `[batch, hidden]` in x's
    /// dtype (sentence-transformers' `Pooling` with `pooling_mode_mean_tokens`).
    MeanPool {
        /// Float token states `[batch, seq, hidden]`.
        x: ValueId,
        /// `[batch, seq]` of any numeric dtype: the tokenizer's attention mask, 1 for tokens and 0
        /// for padding (other values weight the positions).
        mask: ValueId,
    },
    /// x / max(‖x‖₂, eps) over the last axis (`torch.nn.functional.normalize(x, p=2, dim=-1)`, as
    /// sentence-transformers' `Normalize` applies it); float x, same dtype and shape.
    L2Normalize {
        /// Float input; each lane along the last axis is scaled to unit length.
        x: ValueId,
        /// The least norm divided by, finite and ≥ 0; above 0 it keeps an all-zero lane at 0
        /// instead of NaN (PyTorch's default 1e-12).
        eps: f64,
    },
    /// Converts each element of x to `dtype`, same shape (`Tensor.to(dtype)`, ONNX `Cast`). Float to
    /// float rounds to nearest; float to integer truncates toward zero. A float outside the
    /// integer type's range (negative to unsigned, too large, NaN) gives an unspecified value:
    /// backends differ there (XLA's `convert` does not define it) and the conformance suite does
    /// not compare it. Neither side may be block-quantised: backends dequantise weights themselves.
    Cast {
        /// The input, any non-quantised dtype.
        x: ValueId,
        /// The target dtype, not `DType::Quant`.
        dtype: DType,
    },
    /// The u32 vector 0..n, n = the size of `like`'s axis `axis` (position ids): shape `[n]`,
    /// symbolic if that axis is (`torch.arange(n)` as Hugging Face models build position ids).
    Positions {
        /// Any value; only the size of its axis `axis` is read.
        like: ValueId,
        /// The axis of `like` whose size gives n.
        axis: usize,
    },
    /// The sum of x over `axes` (ascending, distinct; empty: x itself). With `keep_dims` the summed
    /// axes stay as axes of size 1, otherwise they are removed (all axes removed: a scalar, shape
    /// `[]`). For non-empty `axes`, `torch.sum(x, dim=axes, keepdim=keep_dims)` (ONNX `ReduceSum`);
    /// float x, same dtype.
    ReduceSum {
        /// Float input.
        x: ValueId,
        /// The axes to sum over: ascending, distinct, below x's rank.
        axes: Vec<usize>,
        /// Keep the summed axes as size-1 axes (so the result broadcasts against x).
        keep_dims: bool,
    },
    /// log(softmax(x)) over the last axis, computed as x − max − log Σ exp(x − max), so it is
    /// finite wherever x is (a log of a softmax underflows to −∞). `torch.log_softmax(x, dim=-1)`;
    /// float x of rank ≥ 1, same dtype and shape.
    LogSoftmax {
        /// Float input of rank ≥ 1, e.g. logits `[batch, seq, vocab]`.
        x: ValueId,
    },
    /// One-hot rows of integer `ids` (any shape): `ids.shape + [depth]` of float `dtype`, 1 at
    /// position `ids[…]` and 0 elsewhere. An id outside `0..depth` (such as −100, PyTorch's ignore
    /// index) gives a row of zeros, where `torch.nn.functional.one_hot` would fail.
    OneHot {
        /// Integer class ids, any shape.
        ids: ValueId,
        /// The number of classes (≥ 1): the size of the new last axis.
        depth: usize,
        /// The rows' float dtype.
        dtype: DType,
    },
    /// The adjoint of `Embedding`: a zero `[rows, width]` matrix with every row `src[i]` of `src`
    /// (`ids.shape + [width]`) added into row `ids[i]` (a scatter-add; repeated ids accumulate; as
    /// `torch.zeros(rows, width).index_add_(0, ids.flatten(), src.reshape(-1, width))`).
    /// Ids must be in `0..rows` (the reference evaluator fails with `Error::Node` otherwise).
    IndexAdd {
        /// Integer row indices, any shape.
        ids: ValueId,
        /// Float rows to add, `ids.shape + [width]`; the result keeps their dtype.
        src: ValueId,
        /// The number of rows of the result, ≥ 1 (e.g. the vocabulary size of the table whose
        /// gradient this is).
        rows: usize,
    },
    /// The attention weights `Attention` with the same operands uses: softmax over keys of
    /// q·kᵀ·scale with hidden keys (padding mask, causal, q_positions) at exactly 0:
    /// `[batch, q_heads, q_len, kv_len]`. Query head h reads key head h / (q_heads / kv_heads).
    /// A query that sees no key at all gets an unspecified (finite) row. The gradient of attention
    /// is built from it.
    AttentionProbs {
        /// Queries `[batch, q_heads, q_len, d]`, float.
        q: ValueId,
        /// Keys `[batch, kv_heads, kv_len, d]`, q's dtype.
        k: ValueId,
        /// Optional padding mask `[batch, kv_len]`, as in `Attention`.
        mask: Option<ValueId>,
        /// Bottom-right aligned causal masking, as in `Attention`; excludes `q_positions`.
        causal: bool,
        /// The factor on q·kᵀ before the softmax, finite.
        scale: f64,
        /// Optional integer `[batch, q_len]` query positions, as in `Attention`; excludes `causal`.
        q_positions: Option<ValueId>,
    },
    /// Inverted dropout (training): each element of x is kept, scaled by 1/(1 − p), or zeroed, by a
    /// mask every backend computes identically — a counter-based hash of the element's position,
    /// not a stateful random generator, so the reference evaluator can check it bit for bit and a
    /// resumed run draws the same masks.
    ///
    /// The scaling is `torch.nn.functional.dropout(x, p, training=True)`'s; the mask is not
    /// PyTorch's (which comes from its random generator).
    ///
    /// `seed` is a u32 scalar (shape `[]`); `stream` tells apart the dropout nodes of one graph that
    /// share a seed; `p` ∈ `[0, 1)` (p = 0 is the identity). Element i of x (its row-major flat
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
    /// **Feeding `seed` from a training graph**: make it a graph input (u32, shape `[]`) that the
    /// trainer sets every step from the run's seed and the step number through a hash (for
    /// example MurmurHash3_x86_32 of le32(step) with the run seed as its seed), never from a
    /// stateful generator, so a run resumed at step n feeds the seeds the uninterrupted run fed;
    /// give every dropout node of the graph its own `stream` (e.g. its index among them).
    Dropout {
        /// Float input, any shape; the result keeps its dtype and shape.
        x: ValueId,
        /// The mask's seed: a u32 scalar (shape `[]`), fed per step as described above.
        seed: ValueId,
        /// The probability of zeroing an element, in `[0, 1)`.
        p: f64,
        /// Keeps this node's mask apart from other dropout nodes fed the same seed; give each its
        /// own.
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

    /// The operands as places to rewrite, in the order of [`Op::operands`] (a test in the
    /// conformance crate checks the two agree on every op of the suite).
    pub fn operands_mut(&mut self) -> Vec<&mut ValueId> {
        match self {
            Op::Input { .. } | Op::Weight { .. } | Op::Variable { .. } => vec![],
            Op::Assign { var, value } => vec![var, value],
            Op::AdamWStep { param, grad, m, v, lr, step, .. } => vec![param, grad, m, v, lr, step],
            Op::Embedding { table, ids } => vec![table, ids],
            Op::MatMul { a, b, .. } | Op::Binary { a, b, .. } => vec![a, b],
            Op::Linear { x, weight, bias } => [Some(x), Some(weight), bias.as_mut()].into_iter().flatten().collect(),
            Op::Unary { x, .. }
            | Op::Affine { x, .. }
            | Op::Softmax { x }
            | Op::LogSoftmax { x }
            | Op::ReduceSum { x, .. }
            | Op::Reshape { x, .. }
            | Op::Permute { x, .. }
            | Op::Slice { x, .. }
            | Op::L2Normalize { x, .. }
            | Op::Cast { x, .. } => vec![x],
            Op::LayerNorm { x, gamma, beta, .. } => {
                [Some(x), Some(gamma), beta.as_mut()].into_iter().flatten().collect()
            }
            Op::RmsNorm { x, gamma, .. } => vec![x, gamma],
            Op::Attention { q, k, v, mask, q_positions, .. } => {
                [Some(q), Some(k), Some(v), mask.as_mut(), q_positions.as_mut()].into_iter().flatten().collect()
            }
            Op::KvCache { x, positions, slots, .. } => vec![x, positions, slots],
            Op::TakeLast { x, .. } => vec![x],
            Op::Rope { x, positions, .. } => vec![x, positions],
            Op::Concat { xs, .. } => xs.iter_mut().collect(),
            Op::MeanPool { x, mask } => vec![x, mask],
            Op::Positions { like, .. } => vec![like],
            Op::OneHot { ids, .. } => vec![ids],
            Op::IndexAdd { ids, src, .. } => vec![ids, src],
            Op::Dropout { x, seed, .. } => vec![x, seed],
            Op::AttentionProbs { q, k, mask, q_positions, .. } => {
                [Some(q), Some(k), mask.as_mut(), q_positions.as_mut()].into_iter().flatten().collect()
            }
        }
    }

    /// This op with every operand replaced by `f(operand)`: how a graph pass that inserts or
    /// moves nodes (so that value ids change) carries an op over to the new graph.
    pub fn map_operands(&self, mut f: impl FnMut(ValueId) -> ValueId) -> Op {
        let mut op = self.clone();
        for operand in op.operands_mut() {
            *operand = f(*operand);
        }
        op
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
