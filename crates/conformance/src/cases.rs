//! The cases: small graphs with seeded random weights and inputs. Inputs use symbolic batch and
//! sequence dimensions, as real models do. Each function here builds one case afresh; the random
//! values are drawn from a generator seeded by the case's name, so a case is the same on every
//! call and every machine. Shapes below are written as the graph declares them; the sizes a case
//! runs at are in its inputs.
//!
//! # Gradient cases
//!
//! The `grad_*` cases take a forward case and add a scalar loss, Σ over its outputs of
//! `sum(output · probe.<output>)`, where each probe is an extra random f32 input of the output's
//! shape (so every element enters the loss with its own weight), then append the backward pass
//! (`accelrt_core::autodiff::grad`). Their outputs are the forward outputs, `loss`, and
//! `grad.<name>` for every float input and weight. Backends computing in f16/bf16 are allowed
//! 0.15 abs + 0.15 rel on them ([`Case::half_tolerance`]).

use crate::Tolerance;
use accelrt_core::{
    quant, BinaryOp, DType, Dim, Graph, GraphBuilder, HostTensor, HostWeights, Op, QuantType, ReshapeDim, RopeStyle,
    Shape, UnaryOp, ValueId, WeightSource, WeightView,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use std::borrow::Cow;

/// One conformance case: a graph, its weights and one set of inputs — or, for graphs with caches,
/// several steps of one session.
pub struct Case {
    /// The case's name: the function that builds it, and the test `conformance_tests!` makes.
    pub name: &'static str,
    /// The graph under test, with symbolic dimensions where a real model has them.
    pub graph: Graph,
    /// Every weight the graph names.
    pub weights: CaseWeights,
    /// The first (for most cases the only) step's inputs, by graph input name, at concrete sizes.
    pub inputs: Vec<(String, HostTensor)>,
    /// Further steps run in the same session after `inputs` (caches carry over); every step's
    /// outputs are compared.
    pub later_steps: Vec<Vec<(String, HostTensor)>>,
    /// Sequences the session holds (0 for graphs without caches).
    pub slots: usize,
    /// A looser bound than the suite's for this case, where the backend is allowed an
    /// approximation the reference does not make (quantised activations in quantised matmuls).
    pub min_tolerance: Option<Tolerance>,
    /// A looser bound used only when the backend computes in f16/bf16: gradient cases sum
    /// thousands of products (a loss over every output element, a weight's gradient over every
    /// row), and half-precision rounding accumulated over such sums, with the cancellation of
    /// terms of both signs, exceeds the per-element bound the forward cases keep.
    pub half_tolerance: Option<Tolerance>,
}

/// Weights of a case: plain tensors, plus block-quantised ones as raw GGUF-layout bytes.
#[derive(Debug, Clone, Default)]
pub struct CaseWeights {
    /// Unquantised weights (f32 in every case here), by name.
    pub plain: HostWeights,
    /// Block-quantised weights: (name, block type, logical shape in elements (`[rows, cols]`),
    /// the blocks as `accelrt_core::quant::quantize` writes them, GGUF's layout). A name here
    /// shadows the same name in `plain`.
    pub quantised: Vec<(String, QuantType, Vec<usize>, Vec<u8>)>,
}

impl WeightSource for CaseWeights {
    fn get(&self, name: &str) -> accelrt_core::Result<WeightView<'_>> {
        match self.quantised.iter().find(|(n, ..)| n == name) {
            Some((_, q, shape, bytes)) => {
                Ok(WeightView { dtype: DType::Quant(*q), shape: shape.clone(), bytes: Cow::Borrowed(bytes) })
            }
            None => self.plain.get(name),
        }
    }
}

/// Builds a case; every random draw comes from one seeded generator, so cases are reproducible.
struct Maker {
    name: &'static str,
    b: GraphBuilder,
    weights: CaseWeights,
    inputs: Vec<(String, HostTensor)>,
    rng: StdRng,
}

impl Maker {
    fn new(name: &'static str) -> Maker {
        let seed = name.bytes().fold(0u64, |h, c| h.wrapping_mul(31).wrapping_add(c as u64));
        Maker {
            name,
            b: GraphBuilder::new(name),
            weights: CaseWeights::default(),
            inputs: vec![],
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn normal(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| StandardNormal.sample(&mut self.rng)).map(|x: f32| x * scale).collect()
    }

    /// A random f32 input declared with `dims` (symbols allowed) and run at `sizes`.
    fn input(&mut self, name: &str, dims: &[Dim], sizes: &[usize]) -> ValueId {
        let data = self.normal(sizes.iter().product(), 1.0);
        self.inputs.push((name.into(), HostTensor::f32(sizes.to_vec(), data).unwrap()));
        self.b.input(name, DType::F32, Shape(dims.to_vec())).unwrap()
    }

    fn input_tensor(&mut self, name: &str, dims: &[Dim], t: HostTensor) -> ValueId {
        let dtype = t.dtype();
        self.inputs.push((name.into(), t));
        self.b.input(name, dtype, Shape(dims.to_vec())).unwrap()
    }

    /// Random token ids below `vocab`.
    fn ids(&mut self, name: &str, dims: &[Dim], sizes: &[usize], vocab: u32) -> ValueId {
        let n = sizes.iter().product();
        let data = (0..n).map(|_| self.rng.gen_range(0..vocab)).collect();
        self.input_tensor(name, dims, HostTensor::u32(sizes.to_vec(), data).unwrap())
    }

    /// A padding mask [batch, len]: each row keeps a random prefix of at least one position.
    fn mask(&mut self, name: &str, dims: &[Dim], batch: usize, len: usize) -> ValueId {
        let mut data = Vec::with_capacity(batch * len);
        for row in 0..batch {
            // The first row is unpadded, so both the padded and the full paths are covered.
            let keep = if row == 0 { len } else { self.rng.gen_range(1..=len) };
            data.extend((0..len).map(|j| (j < keep) as u32));
        }
        self.input_tensor(name, dims, HostTensor::u32(vec![batch, len], data).unwrap())
    }

    fn weight(&mut self, name: &str, shape: &[usize], scale: f32) -> ValueId {
        let data = self.normal(shape.iter().product(), scale);
        self.weights.plain.insert(name, HostTensor::f32(shape.to_vec(), data).unwrap());
        self.b.weight(name, DType::F32, Shape::new(shape.iter().copied())).unwrap()
    }

    /// A norm gain near 1.
    fn gain(&mut self, name: &str, n: usize) -> ValueId {
        let data = self.normal(n, 0.1).into_iter().map(|x| 1.0 + x).collect();
        self.weights.plain.insert(name, HostTensor::f32(vec![n], data).unwrap());
        self.b.weight(name, DType::F32, Shape::new([n])).unwrap()
    }

    fn op(&mut self, name: &str, op: Op) -> ValueId {
        self.b.add(name, op).unwrap_or_else(|e| panic!("case {}: {e}", self.name))
    }

    fn finish(mut self, outputs: &[(&str, ValueId)]) -> Case {
        for (name, id) in outputs {
            self.b.output(name, *id);
        }
        Case {
            name: self.name,
            graph: self.b.build().unwrap(),
            weights: self.weights,
            inputs: self.inputs,
            later_steps: vec![],
            slots: 0,
            min_tolerance: None,
            half_tolerance: None,
        }
    }

    /// A random weight stored block-quantised (the values the backend sees are the dequantised ones).
    fn quant_weight(&mut self, name: &str, q: QuantType, shape: &[usize], scale: f32) -> ValueId {
        let data = self.normal(shape.iter().product(), scale);
        let bytes = quant::quantize(q, &data).unwrap();
        self.weights.quantised.push((name.into(), q, shape.to_vec(), bytes));
        self.b.weight(name, DType::Quant(q), Shape::new(shape.iter().copied())).unwrap()
    }
}

fn sym(s: &str) -> Dim {
    Dim::sym(s)
}

fn fixed(n: usize) -> Dim {
    Dim::Fixed(n)
}

/// Embedding lookup: ids `[batch, seq]` (u32, run at `[3, 5]`) into a table `[50, 8]`; output
/// `out` is `[batch, seq, 8]`.
pub fn embedding() -> Case {
    let mut m = Maker::new("embedding");
    let table = m.weight("table", &[50, 8], 1.0);
    let ids = m.ids("ids", &[sym("batch"), sym("seq")], &[3, 5], 50);
    let out = m.op("emb", Op::Embedding { table, ids });
    m.finish(&[("out", out)])
}

/// Batched matmul whose right operand lacks the batch axis: `[batch, 2, m, 16]` × `[2, 16, 9]`
/// → `[batch, 2, m, 9]` (b broadcast over `batch`).
pub fn matmul_batched_broadcast() -> Case {
    let mut m = Maker::new("matmul_batched_broadcast");
    let a = m.input("a", &[sym("batch"), fixed(2), sym("m"), fixed(16)], &[3, 2, 7, 16]);
    let b = m.input("b", &[fixed(2), fixed(16), fixed(9)], &[2, 16, 9]);
    let out = m.op("mm", Op::MatMul { a, b, transpose_b: false });
    m.finish(&[("out", out)])
}

/// Matmul with the right operand transposed (`transpose_b`): `[batch, m, 24]` × `[batch, n, 24]`ᵀ
/// → `[batch, m, n]`.
pub fn matmul_transposed() -> Case {
    let mut m = Maker::new("matmul_transposed");
    let a = m.input("a", &[sym("batch"), sym("m"), fixed(24)], &[2, 5, 24]);
    let b = m.input("b", &[sym("batch"), sym("n"), fixed(24)], &[2, 6, 24]);
    let out = m.op("mm", Op::MatMul { a, b, transpose_b: true });
    m.finish(&[("out", out)])
}

/// `Op::Linear` with PyTorch-layout weight `[out, in]` = `[48, 32]` and bias `[48]` on x
/// `[batch, seq, 32]` → `[batch, seq, 48]`.
pub fn linear() -> Case {
    let mut m = Maker::new("linear");
    let x = m.input("x", &[sym("batch"), sym("seq"), fixed(32)], &[2, 5, 32]);
    let weight = m.weight("w", &[48, 32], 0.2);
    let bias = Some(m.weight("b", &[48], 1.0));
    let out = m.op("lin", Op::Linear { x, weight, bias });
    m.finish(&[("out", out)])
}

/// `Op::Linear` without bias: x `[rows, 40]`, weight `[24, 40]` → `[rows, 24]`.
pub fn linear_no_bias() -> Case {
    let mut m = Maker::new("linear_no_bias");
    let x = m.input("x", &[sym("rows"), fixed(40)], &[7, 40]);
    let weight = m.weight("w", &[24, 40], 0.2);
    let out = m.op("lin", Op::Linear { x, weight, bias: None });
    m.finish(&[("out", out)])
}

/// Add, sub (`b − a`), mul of `[batch, seq, 8]` with `[seq, 8]` under NumPy broadcasting,
/// and a division by a weight `[8]` kept positive (`exp` of it); one output per op.
pub fn binary_broadcast() -> Case {
    let mut m = Maker::new("binary_broadcast");
    let a = m.input("a", &[sym("batch"), sym("seq"), fixed(8)], &[2, 3, 8]);
    let b = m.input("b", &[sym("seq"), fixed(8)], &[3, 8]);
    // Divisors kept away from zero, so the division is well conditioned.
    let d = m.weight("d", &[8], 1.0);
    let d = m.op("d_pos", Op::Unary { op: UnaryOp::Exp, x: d });
    let add = m.op("add", Op::Binary { op: BinaryOp::Add, a, b });
    let sub = m.op("sub", Op::Binary { op: BinaryOp::Sub, a: b, b: a });
    let mul = m.op("mul", Op::Binary { op: BinaryOp::Mul, a, b });
    let div = m.op("div", Op::Binary { op: BinaryOp::Div, a, b: d });
    m.finish(&[("add", add), ("sub", sub), ("mul", mul), ("div", div)])
}

/// GELU (erf), GELU (tanh approximation), SiLU, ReLU, tanh and exp of x `[batch, 64]`, one output
/// named after each op.
pub fn unary() -> Case {
    let mut m = Maker::new("unary");
    let x = m.input("x", &[sym("batch"), fixed(64)], &[4, 64]);
    let ops = [
        ("gelu", UnaryOp::Gelu),
        ("gelu_tanh", UnaryOp::GeluTanh),
        ("silu", UnaryOp::Silu),
        ("relu", UnaryOp::Relu),
        ("tanh", UnaryOp::Tanh),
        ("exp", UnaryOp::Exp),
    ];
    let outs: Vec<(&str, ValueId)> = ops.iter().map(|(n, op)| (*n, m.op(n, Op::Unary { op: *op, x }))).collect();
    m.finish(&outs)
}

/// `Op::Affine`: `x · 0.125 − 1.5` on `[batch, 10]`.
pub fn affine() -> Case {
    let mut m = Maker::new("affine");
    let x = m.input("x", &[sym("batch"), fixed(10)], &[3, 10]);
    let out = m.op("aff", Op::Affine { x, mul: 0.125, add: -1.5 });
    m.finish(&[("out", out)])
}

/// LayerNorm over the last axis of `[batch, seq, 48]` with gain and bias, eps 1e-12 (BERT's).
pub fn layer_norm() -> Case {
    let mut m = Maker::new("layer_norm");
    let x = m.input("x", &[sym("batch"), sym("seq"), fixed(48)], &[2, 3, 48]);
    let gamma = m.gain("g", 48);
    let beta = Some(m.weight("b", &[48], 0.5));
    let out = m.op("ln", Op::LayerNorm { x, gamma, beta, eps: 1e-12 });
    m.finish(&[("out", out)])
}

/// LayerNorm over `[batch, 20]` with a gain and no bias, eps 1e-5.
pub fn layer_norm_no_beta() -> Case {
    let mut m = Maker::new("layer_norm_no_beta");
    let x = m.input("x", &[sym("batch"), fixed(20)], &[3, 20]);
    let gamma = m.gain("g", 20);
    let out = m.op("ln", Op::LayerNorm { x, gamma, beta: None, eps: 1e-5 });
    m.finish(&[("out", out)])
}

/// RMSNorm over the last axis of `[batch, seq, 36]`, eps 1e-5.
pub fn rms_norm() -> Case {
    let mut m = Maker::new("rms_norm");
    let x = m.input("x", &[sym("batch"), sym("seq"), fixed(36)], &[2, 4, 36]);
    let gamma = m.gain("g", 36);
    let out = m.op("rms", Op::RmsNorm { x, gamma, eps: 1e-5 });
    m.finish(&[("out", out)])
}

/// Softmax over the last axis of `[batch, 3, 17]`.
pub fn softmax() -> Case {
    let mut m = Maker::new("softmax");
    let x = m.input("x", &[sym("batch"), fixed(3), fixed(17)], &[2, 3, 17]);
    let out = m.op("sm", Op::Softmax { x });
    m.finish(&[("out", out)])
}

fn attention_case(
    name: &'static str,
    hq: usize,
    hkv: usize,
    q_len: usize,
    kv_len: usize,
    masked: bool,
    causal: bool,
) -> Case {
    let mut m = Maker::new(name);
    let (batch, d) = (3, 16);
    let q = m.input("q", &[sym("batch"), fixed(hq), sym("q_len"), fixed(d)], &[batch, hq, q_len, d]);
    let k = m.input("k", &[sym("batch"), fixed(hkv), sym("kv_len"), fixed(d)], &[batch, hkv, kv_len, d]);
    let v = m.input("v", &[sym("batch"), fixed(hkv), sym("kv_len"), fixed(d)], &[batch, hkv, kv_len, d]);
    let mask = masked.then(|| m.mask("mask", &[sym("batch"), sym("kv_len")], batch, kv_len));
    let scale = 1.0 / (d as f64).sqrt();
    let out = m.op("attn", Op::Attention { q, k, v, mask, causal, scale, q_positions: None });
    m.finish(&[("out", out)])
}

/// Attention, 4 heads, q/k/v `[batch, 4, 6, 16]`, with a padding mask `[batch, kv_len]` (the first
/// row unpadded, the others keep a random prefix), not causal, scale 1/√16.
pub fn attention_padding_mask() -> Case {
    attention_case("attention_padding_mask", 4, 4, 6, 6, true, false)
}

/// Causal attention without a mask: 2 heads, q/k/v `[batch, 2, 5, 16]`, scale 1/√16.
pub fn attention_causal() -> Case {
    attention_case("attention_causal", 2, 2, 5, 5, false, true)
}

/// Grouped-query heads, a query block appended after a cache (q_len < kv_len), causal and padded.
pub fn attention_gqa_cached_causal() -> Case {
    attention_case("attention_gqa_cached_causal", 6, 2, 3, 8, true, true)
}

/// Rotary embedding with half-split pairing (feature i with i + d/2, as Hugging Face Llama), base
/// 10000, on x `[batch, 2, seq, 16]` at positions `0..seq` (`Op::Positions`).
pub fn rope_half_split() -> Case {
    let mut m = Maker::new("rope_half_split");
    let x = m.input("x", &[sym("batch"), fixed(2), sym("seq"), fixed(16)], &[2, 2, 5, 16]);
    let positions = m.op("pos", Op::Positions { like: x, axis: 2 });
    let out = m.op("rope", Op::Rope { x, positions, base: 10000.0, style: RopeStyle::HalfSplit });
    m.finish(&[("out", out)])
}

/// Each batch row at its own offset, as in batched decoding.
pub fn rope_interleaved_per_row() -> Case {
    let mut m = Maker::new("rope_interleaved_per_row");
    let x = m.input("x", &[sym("batch"), fixed(3), sym("seq"), fixed(8)], &[2, 3, 4, 8]);
    let pos = HostTensor::u32(vec![2, 4], vec![0, 1, 2, 3, 17, 18, 19, 20]).unwrap();
    let positions = m.input_tensor("positions", &[sym("batch"), sym("seq")], pos);
    let out = m.op("rope", Op::Rope { x, positions, base: 100000.0, style: RopeStyle::Interleaved });
    m.finish(&[("out", out)])
}

/// Splitting heads and merging them back: x `[batch, seq, 12]` → reshape `[batch, seq, 3, 4]` (last
/// axis inferred) → permute to `[batch, 3, seq, 4]` (output `heads`), scaled, permuted back and
/// merged to `[batch, seq, 12]` (output `merged`). The scale is a consumer of a non-contiguous
/// value, which strided backends get wrong first.
pub fn reshape_permute() -> Case {
    let mut m = Maker::new("reshape_permute");
    let x = m.input("x", &[sym("batch"), sym("seq"), fixed(12)], &[2, 5, 12]);
    let heads = m.op(
        "split_heads",
        Op::Reshape {
            x,
            dims: vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Fixed(3), ReshapeDim::Infer],
        },
    );
    let perm = m.op("perm", Op::Permute { x: heads, perm: vec![0, 2, 1, 3] });
    // A consumer of the permuted (non-contiguous) value, then the merge back.
    let scaled = m.op("scaled", Op::Affine { x: perm, mul: 2.0, add: 0.0 });
    let back = m.op("unperm", Op::Permute { x: scaled, perm: vec![0, 2, 1, 3] });
    let merged =
        m.op("merge", Op::Reshape { x: back, dims: vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Infer] });
    m.finish(&[("heads", perm), ("merged", merged)])
}

/// Slices and a concatenation of x `[batch, seq, 10]` and y `[batch, other, 10]`: `first` is x's
/// first position (`[batch, 1, 10]`), `tail` its features from 4 on (`[batch, seq, 6]`), and `cat`
/// is x, y and `first` joined along axis 1 (`[batch, seq + other + 1, 10]`).
pub fn slice_concat() -> Case {
    let mut m = Maker::new("slice_concat");
    let x = m.input("x", &[sym("batch"), sym("seq"), fixed(10)], &[2, 6, 10]);
    let y = m.input("y", &[sym("batch"), sym("other"), fixed(10)], &[2, 3, 10]);
    let first = m.op("first", Op::Slice { x, axis: 1, start: 0, end: Some(1) });
    let tail = m.op("tail", Op::Slice { x, axis: 2, start: 4, end: None });
    let cat = m.op("cat", Op::Concat { xs: vec![x, y, first], axis: 1 });
    m.finish(&[("first", first), ("tail", tail), ("cat", cat)])
}

/// Masked mean pooling of x `[batch, seq, 12]` over the positions its padding mask `[batch, seq]`
/// keeps → `[batch, 12]`.
pub fn mean_pool() -> Case {
    let mut m = Maker::new("mean_pool");
    let x = m.input("x", &[sym("batch"), sym("seq"), fixed(12)], &[4, 7, 12]);
    let mask = m.mask("mask", &[sym("batch"), sym("seq")], 4, 7);
    let out = m.op("pool", Op::MeanPool { x, mask });
    m.finish(&[("out", out)])
}

/// L2 normalisation of each row of `[batch, 30]`, eps 1e-12.
pub fn l2_normalize() -> Case {
    let mut m = Maker::new("l2_normalize");
    let x = m.input("x", &[sym("batch"), fixed(30)], &[5, 30]);
    let out = m.op("norm", Op::L2Normalize { x, eps: 1e-12 });
    m.finish(&[("out", out)])
}

/// Casts: f32 `[batch, 16]` to f16 and back (`round_trip`, so the f16 rounding is what is
/// compared), and u32 ids `[batch, 4]` (below 1000) to f32 and to i64.
pub fn cast() -> Case {
    let mut m = Maker::new("cast");
    let x = m.input("x", &[sym("batch"), fixed(16)], &[3, 16]);
    let ids = m.ids("ids", &[sym("batch"), fixed(4)], &[3, 4], 1000);
    let half = m.op("to_f16", Op::Cast { x, dtype: DType::F16 });
    let back = m.op("to_f32", Op::Cast { x: half, dtype: DType::F32 });
    let ids_f = m.op("ids_f32", Op::Cast { x: ids, dtype: DType::F32 });
    let ids_i = m.op("ids_i64", Op::Cast { x: ids, dtype: DType::I64 });
    m.finish(&[("round_trip", back), ("ids_f32", ids_f), ("ids_i64", ids_i)])
}

/// `Op::Positions` along the sequence axis of ids `[batch, seq]` (run at seq = 9): the u32 vector
/// `0..seq` (output `positions`) and its rows of a table `[16, 4]` (output `emb`).
pub fn positions() -> Case {
    let mut m = Maker::new("positions");
    let ids = m.ids("ids", &[sym("batch"), sym("seq")], &[2, 9], 10);
    let table = m.weight("pos_table", &[16, 4], 1.0);
    let pos = m.op("pos", Op::Positions { like: ids, axis: 1 });
    let emb = m.op("pos_emb", Op::Embedding { table, ids: pos });
    m.finish(&[("positions", pos), ("emb", emb)])
}

/// A BERT-style encoder layer with embeddings, padding mask, mean pooling and normalisation.
pub fn encoder_block() -> Case {
    let mut m = Maker::new("encoder_block");
    let (batch, seq, hidden, heads, ffn) = (3, 7, 32, 4, 64);
    let ids = m.ids("input_ids", &[sym("batch"), sym("seq")], &[batch, seq], 100);
    let mask = m.mask("attention_mask", &[sym("batch"), sym("seq")], batch, seq);
    let word = m.weight("word", &[100, hidden], 1.0);
    let pos_table = m.weight("pos_table", &[16, hidden], 0.5);
    let e = m.op("word_emb", Op::Embedding { table: word, ids });
    let pos = m.op("pos", Op::Positions { like: ids, axis: 1 });
    let pe = m.op("pos_emb", Op::Embedding { table: pos_table, ids: pos });
    let e = m.op("emb_sum", Op::Binary { op: BinaryOp::Add, a: e, b: pe });
    let g = m.gain("emb_ln_g", hidden);
    let bta = Some(m.weight("emb_ln_b", &[hidden], 0.1));
    let x = m.op("emb_ln", Op::LayerNorm { x: e, gamma: g, beta: bta, eps: 1e-12 });
    let split = |m: &mut Maker, name: &str, v: ValueId| {
        let r = m.op(
            &format!("{name}_r"),
            Op::Reshape {
                x: v,
                dims: vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Fixed(heads), ReshapeDim::Infer],
            },
        );
        m.op(&format!("{name}_t"), Op::Permute { x: r, perm: vec![0, 2, 1, 3] })
    };
    let proj = |m: &mut Maker, name: &str, input: ValueId, out: usize, inp: usize| {
        let w = m.weight(&format!("{name}.w"), &[out, inp], (1.0 / inp as f32).sqrt());
        let b = m.weight(&format!("{name}.b"), &[out], 0.1);
        m.op(name, Op::Linear { x: input, weight: w, bias: Some(b) })
    };
    let q = proj(&mut m, "q", x, hidden, hidden);
    let k = proj(&mut m, "k", x, hidden, hidden);
    let v = proj(&mut m, "v", x, hidden, hidden);
    let (q, k, v) = (split(&mut m, "q", q), split(&mut m, "k", k), split(&mut m, "v", v));
    let scale = 1.0 / ((hidden / heads) as f64).sqrt();
    let a = m.op("attn", Op::Attention { q, k, v, mask: Some(mask), causal: false, scale, q_positions: None });
    let a = m.op("attn_t", Op::Permute { x: a, perm: vec![0, 2, 1, 3] });
    let a = m.op(
        "attn_merge",
        Op::Reshape { x: a, dims: vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Infer] },
    );
    let o = proj(&mut m, "o", a, hidden, hidden);
    let r = m.op("res1", Op::Binary { op: BinaryOp::Add, a: o, b: x });
    let g1 = m.gain("ln1_g", hidden);
    let b1 = Some(m.weight("ln1_b", &[hidden], 0.1));
    let x1 = m.op("ln1", Op::LayerNorm { x: r, gamma: g1, beta: b1, eps: 1e-12 });
    let h = proj(&mut m, "ffn_in", x1, ffn, hidden);
    let h = m.op("gelu", Op::Unary { op: UnaryOp::Gelu, x: h });
    let h = proj(&mut m, "ffn_out", h, hidden, ffn);
    let r2 = m.op("res2", Op::Binary { op: BinaryOp::Add, a: h, b: x1 });
    let g2 = m.gain("ln2_g", hidden);
    let b2 = Some(m.weight("ln2_b", &[hidden], 0.1));
    let x2 = m.op("ln2", Op::LayerNorm { x: r2, gamma: g2, beta: b2, eps: 1e-12 });
    let pooled = m.op("pool", Op::MeanPool { x: x2, mask });
    let emb = m.op("normalize", Op::L2Normalize { x: pooled, eps: 1e-12 });
    m.finish(&[("hidden", x2), ("embedding", emb)])
}

/// A Llama-style decoder layer: RMSNorm, rotary embeddings, grouped-query causal attention over a
/// longer key/value block, SiLU-gated MLP.
pub fn decoder_block() -> Case {
    let mut m = Maker::new("decoder_block");
    let (batch, seq, hidden, hq, hkv, ffn) = (2, 5, 24, 6, 2, 48);
    let head = hidden / hq;
    let x = m.input("x", &[sym("batch"), sym("seq"), fixed(hidden)], &[batch, seq, hidden]);
    let g = m.gain("attn_norm", hidden);
    let h = m.op("norm1", Op::RmsNorm { x, gamma: g, eps: 1e-5 });
    let proj = |m: &mut Maker, name: &str, input: ValueId, out: usize, inp: usize| {
        let w = m.weight(name, &[out, inp], (1.0 / inp as f32).sqrt());
        m.op(&format!("{name}_out"), Op::Linear { x: input, weight: w, bias: None })
    };
    let q = proj(&mut m, "wq", h, hq * head, hidden);
    let k = proj(&mut m, "wk", h, hkv * head, hidden);
    let v = proj(&mut m, "wv", h, hkv * head, hidden);
    let split = |m: &mut Maker, name: &str, v: ValueId, heads: usize| {
        let r = m.op(
            &format!("{name}_r"),
            Op::Reshape {
                x: v,
                dims: vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Fixed(heads), ReshapeDim::Fixed(head)],
            },
        );
        m.op(&format!("{name}_t"), Op::Permute { x: r, perm: vec![0, 2, 1, 3] })
    };
    let (q, k, v) = (split(&mut m, "q", q, hq), split(&mut m, "k", k, hkv), split(&mut m, "v", v, hkv));
    let positions = m.op("pos", Op::Positions { like: x, axis: 1 });
    let q = m.op("q_rope", Op::Rope { x: q, positions, base: 10000.0, style: RopeStyle::HalfSplit });
    let k = m.op("k_rope", Op::Rope { x: k, positions, base: 10000.0, style: RopeStyle::HalfSplit });
    let a = m.op(
        "attn",
        Op::Attention { q, k, v, mask: None, causal: true, scale: 1.0 / (head as f64).sqrt(), q_positions: None },
    );
    let a = m.op("attn_t", Op::Permute { x: a, perm: vec![0, 2, 1, 3] });
    let a = m.op(
        "attn_merge",
        Op::Reshape { x: a, dims: vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Infer] },
    );
    let o = proj(&mut m, "wo", a, hidden, hidden);
    let r = m.op("res1", Op::Binary { op: BinaryOp::Add, a: o, b: x });
    let g2 = m.gain("ffn_norm", hidden);
    let h2 = m.op("norm2", Op::RmsNorm { x: r, gamma: g2, eps: 1e-5 });
    let gate = proj(&mut m, "w_gate", h2, ffn, hidden);
    let up = proj(&mut m, "w_up", h2, ffn, hidden);
    let gate = m.op("silu", Op::Unary { op: UnaryOp::Silu, x: gate });
    let act = m.op("gated", Op::Binary { op: BinaryOp::Mul, a: gate, b: up });
    let down = proj(&mut m, "w_down", act, hidden, ffn);
    let out = m.op("res2", Op::Binary { op: BinaryOp::Add, a: down, b: r });
    m.finish(&[("out", out)])
}

/// Linear layers with Q4_1 and Q8_0 weights (a quantised matmul), over 1, 3 and 4+ rows.
pub fn quantised_linear() -> Case {
    let mut m = Maker::new("quantised_linear");
    let x = m.input("x", &[sym("batch"), fixed(64)], &[6, 64]);
    let w4 = m.quant_weight("w_q4_1", QuantType::Q4_1, &[40, 64], 0.125);
    let w8 = m.quant_weight("w_q8_0", QuantType::Q8_0, &[24, 64], 0.125);
    let bias = m.weight("bias", &[40], 0.1);
    let y4 = m.op("y4", Op::Linear { x, weight: w4, bias: Some(bias) });
    let y8 = m.op("y8", Op::Linear { x, weight: w8, bias: None });
    let one = m.op("x_last", Op::TakeLast { x, axis: 0 });
    let y1 = m.op("y1", Op::Linear { x: one, weight: w4, bias: None });
    let mut case = m.finish(&[("y4", y4), ("y8", y8), ("y1", y1)]);
    // Activations are quantised to 8 bits per block of 32 (as llama.cpp does): outputs of size ≈ 1
    // move by ≈ 0.006 (one σ); the reference uses exact activations.
    case.min_tolerance = Some(Tolerance { abs: 3e-2, rel: 1e-2 });
    case
}

/// An embedding table stored as Q8_0 (rows dequantised exactly).
pub fn quantised_embedding() -> Case {
    let mut m = Maker::new("quantised_embedding");
    let table = m.quant_weight("table", QuantType::Q8_0, &[50, 32], 1.0);
    let ids = m.ids("ids", &[sym("batch"), sym("seq")], &[2, 5], 50);
    let e = m.op("emb", Op::Embedding { table, ids });
    m.finish(&[("out", e)])
}

/// The last entry along an axis.
pub fn take_last() -> Case {
    let mut m = Maker::new("take_last");
    let x = m.input("x", &[sym("batch"), sym("seq"), fixed(6)], &[3, 5, 6]);
    let y = m.op("last", Op::TakeLast { x, axis: 1 });
    m.finish(&[("out", y)])
}

/// Key/value caches over a session: prefill of two sequences of different lengths into two slots
/// (one short query block, one long), batched decode of both at different positions, then a
/// rewind that overwrites part of one sequence. Grouped-query attention masked by position.
pub fn kv_cache_session() -> Case {
    let (hq, hkv, d, capacity) = (4, 2, 8, 24);
    let mut m = Maker::new("kv_cache_session");
    let rows = [sym("batch"), sym("seq")];
    let heads = |h: usize| [sym("batch"), fixed(h), sym("seq"), fixed(d)];
    let q = m.b.input("q", DType::F32, Shape(heads(hq).to_vec())).unwrap();
    let k = m.b.input("k", DType::F32, Shape(heads(hkv).to_vec())).unwrap();
    let v = m.b.input("v", DType::F32, Shape(heads(hkv).to_vec())).unwrap();
    let positions = m.b.input("positions", DType::U32, Shape(rows.to_vec())).unwrap();
    let slots = m.b.input("slots", DType::U32, Shape(vec![sym("batch")])).unwrap();
    let kc = m.op("k_cache", Op::KvCache { x: k, positions, slots, capacity });
    let vc = m.op("v_cache", Op::KvCache { x: v, positions, slots, capacity });
    let scale = 1.0 / (d as f64).sqrt();
    let a =
        m.op("attn", Op::Attention { q, k: kc, v: vc, mask: None, causal: false, scale, q_positions: Some(positions) });
    // (slot, first position, new tokens) per row of each step.
    let steps: [&[(u32, u32, usize)]; 5] =
        [&[(0, 0, 5)], &[(1, 0, 11)], &[(0, 5, 1), (1, 11, 1)], &[(1, 12, 1), (0, 6, 1)], &[(0, 3, 2)]];
    let mut all = Vec::new();
    for rows in steps {
        let (b, n) = (rows.len(), rows[0].2);
        let mut step = Vec::new();
        for (name, h) in [("q", hq), ("k", hkv), ("v", hkv)] {
            let data = m.normal(b * h * n * d, 1.0);
            step.push((name.to_string(), HostTensor::f32(vec![b, h, n, d], data).unwrap()));
        }
        let pos = rows.iter().flat_map(|&(_, start, n)| start..start + n as u32).collect();
        step.push(("positions".into(), HostTensor::u32(vec![b, n], pos).unwrap()));
        step.push(("slots".into(), HostTensor::u32(vec![b], rows.iter().map(|r| r.0).collect()).unwrap()));
        all.push(step);
    }
    let mut case = m.finish(&[("out", a)]);
    case.inputs = all.remove(0);
    case.later_steps = all;
    case.slots = 2;
    case
}

/// A session like [`kv_cache_session`]'s whose value cache takes its positions from an input of its
/// own (`v_positions`; the key cache and attention read `positions`), so that one cache's write
/// can be refused after the other's was accepted. Its steps are valid (both position inputs equal):
/// a prompt in each of two slots, a decode step of both, two more tokens of one and a rewind.
/// Not one of [`all`]: `crate::check_refused_steps` runs it, with refused steps between these.
pub(crate) fn kv_cache_own_positions() -> Case {
    let (hq, hkv, d, capacity) = (4, 2, 8, 16);
    let mut m = Maker::new("kv_cache_own_positions");
    let rows = [sym("batch"), sym("seq")];
    let heads = |h: usize| [sym("batch"), fixed(h), sym("seq"), fixed(d)];
    let q = m.b.input("q", DType::F32, Shape(heads(hq).to_vec())).unwrap();
    let k = m.b.input("k", DType::F32, Shape(heads(hkv).to_vec())).unwrap();
    let v = m.b.input("v", DType::F32, Shape(heads(hkv).to_vec())).unwrap();
    let positions = m.b.input("positions", DType::U32, Shape(rows.to_vec())).unwrap();
    let v_positions = m.b.input("v_positions", DType::U32, Shape(rows.to_vec())).unwrap();
    let slots = m.b.input("slots", DType::U32, Shape(vec![sym("batch")])).unwrap();
    let kc = m.op("k_cache", Op::KvCache { x: k, positions, slots, capacity });
    let vc = m.op("v_cache", Op::KvCache { x: v, positions: v_positions, slots, capacity });
    let scale = 1.0 / (d as f64).sqrt();
    let a =
        m.op("attn", Op::Attention { q, k: kc, v: vc, mask: None, causal: false, scale, q_positions: Some(positions) });
    // (slot, first position, new tokens) per row of each step.
    let steps: [&[(u32, u32, usize)]; 5] =
        [&[(0, 0, 4)], &[(1, 0, 3)], &[(0, 4, 1), (1, 3, 1)], &[(0, 5, 2)], &[(0, 3, 2)]];
    let mut all = Vec::new();
    for rows in steps {
        let (b, n) = (rows.len(), rows[0].2);
        let mut step = Vec::new();
        for (name, h) in [("q", hq), ("k", hkv), ("v", hkv)] {
            let data = m.normal(b * h * n * d, 1.0);
            step.push((name.to_string(), HostTensor::f32(vec![b, h, n, d], data).unwrap()));
        }
        let pos: Vec<u32> = rows.iter().flat_map(|&(_, start, n)| start..start + n as u32).collect();
        step.push(("positions".into(), HostTensor::u32(vec![b, n], pos.clone()).unwrap()));
        step.push(("v_positions".into(), HostTensor::u32(vec![b, n], pos).unwrap()));
        step.push(("slots".into(), HostTensor::u32(vec![b], rows.iter().map(|r| r.0).collect()).unwrap()));
        all.push(step);
    }
    let mut case = m.finish(&[("out", a)]);
    case.inputs = all.remove(0);
    case.later_steps = all;
    case.slots = 2;
    case
}

/// The ops added for training, forward only: log-softmax, one-hot rows (an id out of range gives
/// zeros, as an ignore index does), sums over axes, the new unary ops, a scatter-add of rows and
/// the attention weights (grouped heads, padded, causal).
pub fn training_ops() -> Case {
    let mut m = Maker::new("training_ops");
    let x = m.input("x", &[sym("batch"), sym("seq"), fixed(9)], &[2, 3, 9]);
    let ids = HostTensor::i64(vec![2, 3], vec![0, 8, -100, 4, 4, 9]).unwrap();
    let ids = m.input_tensor("ids", &[sym("batch"), sym("seq")], ids);
    let ls = m.op("log_softmax", Op::LogSoftmax { x });
    let oh = m.op("one_hot", Op::OneHot { ids, depth: 9, dtype: DType::F32 });
    let picked = m.op("picked", Op::Binary { op: BinaryOp::Mul, a: ls, b: oh });
    let total = m.op("total", Op::ReduceSum { x: picked, axes: vec![0, 1, 2], keep_dims: false });
    let rows = m.op("rows", Op::ReduceSum { x, axes: vec![1], keep_dims: true });
    let cols = m.op("cols", Op::ReduceSum { x, axes: vec![0, 2], keep_dims: false });
    let positive = m.op("positive", Op::Unary { op: UnaryOp::Exp, x });
    let mut outs = vec![("log_softmax", ls), ("one_hot", oh), ("total", total), ("rows", rows), ("cols", cols)];
    for (name, op, input) in [
        ("sigmoid", UnaryOp::Sigmoid, x),
        ("erf", UnaryOp::Erf, x),
        ("step", UnaryOp::Step, x),
        ("sqrt", UnaryOp::Sqrt, positive),
        ("log", UnaryOp::Log, positive),
    ] {
        outs.push((name, m.op(name, Op::Unary { op, x: input })));
    }
    let row_ids = m_ids(&mut m);
    let added = m.op("index_add", Op::IndexAdd { ids: row_ids, src: x, rows: 5 });
    outs.push(("index_add", added));
    let q = m.input("q", &[sym("batch"), fixed(4), sym("q_len"), fixed(8)], &[2, 4, 3, 8]);
    let k = m.input("k", &[sym("batch"), fixed(2), sym("kv_len"), fixed(8)], &[2, 2, 5, 8]);
    let mask = m.mask("mask", &[sym("batch"), sym("kv_len")], 2, 5);
    let probs =
        m.op("probs", Op::AttentionProbs { q, k, mask: Some(mask), causal: true, scale: 0.35, q_positions: None });
    outs.push(("probs", probs));
    m.finish(&outs)
}

/// One fused AdamW update (`Op::AdamWStep`) at step 3, learning rate and step as scalar inputs.
pub fn adamw_step() -> Case {
    let mut m = Maker::new("adamw_step");
    let rows = [sym("rows"), fixed(6)];
    let param = m.input("param", &rows, &[5, 6]);
    let grad = m.input("grad", &rows, &[5, 6]);
    let m1 = m.input("m", &rows, &[5, 6]);
    let v_log = m.input("v_log", &rows, &[5, 6]);
    // v is a running mean of squares: positive.
    let v = m.op("v", Op::Unary { op: UnaryOp::Exp, x: v_log });
    let lr = m.input_tensor("lr", &[], HostTensor::f32(vec![], vec![0.01]).unwrap());
    let step = m.input_tensor("step", &[], HostTensor::f32(vec![], vec![3.0]).unwrap());
    let out = m.op(
        "adamw",
        Op::AdamWStep { param, grad, m: m1, v, lr, step, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 },
    );
    m.finish(&[("stacked", out)])
}

/// Dropout (`Op::Dropout`): two masks of one seed told apart by their streams, at p = 0.1 and
/// 0.5, and p = 0. Every backend must drop exactly the reference's elements: one element dropped
/// differently is off by the whole value.
pub fn dropout() -> Case {
    let mut m = Maker::new("dropout");
    let x = m.input("x", &[sym("batch"), sym("seq"), fixed(12)], &[3, 5, 12]);
    let seed = m.input_tensor("seed", &[], HostTensor::u32(vec![], vec![0x5EED_2024]).unwrap());
    let light = m.op("light", Op::Dropout { x, seed, p: 0.1, stream: 0 });
    let half = m.op("half", Op::Dropout { x, seed, p: 0.5, stream: 1 });
    let none = m.op("none", Op::Dropout { x, seed, p: 0.0, stream: 2 });
    m.finish(&[("light", light), ("half", half), ("none", none)])
}

/// In-range ids [batch, seq] for `training_ops`' scatter-add (with repeats).
fn m_ids(m: &mut Maker) -> ValueId {
    let ids = HostTensor::u32(vec![2, 3], vec![4, 0, 4, 1, 4, 2]).unwrap();
    m.input_tensor("rows_ids", &[sym("batch"), sym("seq")], ids)
}

/// `case` with a loss Σ over its outputs of output · probe (a random input per output, so every
/// element counts with its own weight) and the loss's gradient with respect to every float weight
/// and input as outputs `grad.<name>`; the original outputs stay.
fn with_gradients(name: &'static str, case: Case) -> Case {
    let seed = name.bytes().fold(7u64, |h, c| h.wrapping_mul(31).wrapping_add(c as u64));
    let mut rng = StdRng::seed_from_u64(seed);
    let feed: Vec<(&str, &HostTensor)> = case.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let forward = accelrt_core::reference::evaluate(&case.graph, &case.weights, &feed).unwrap();
    let wrt: Vec<ValueId> = case
        .graph
        .nodes()
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.op, Op::Input { .. } | Op::Weight { .. }) && n.dtype.is_float())
        .map(|(i, _)| ValueId(i as u32))
        .collect();
    let names: Vec<String> = wrt.iter().map(|id| case.graph.node(*id).name.clone()).collect();
    let outputs = case.graph.outputs().to_vec();
    let mut b = GraphBuilder::from_graph(case.graph);
    let mut inputs = case.inputs;
    let mut loss: Option<ValueId> = None;
    for (out, id) in &outputs {
        let shape = forward.get(out).unwrap().shape().to_vec();
        let dims = b.node(*id).shape.clone();
        let probe_name = format!("probe.{out}");
        let data: Vec<f32> = (0..shape.iter().product()).map(|_| StandardNormal.sample(&mut rng)).collect();
        inputs.push((probe_name.clone(), HostTensor::f32(shape.clone(), data).unwrap()));
        let probe = b.input(&probe_name, DType::F32, dims).unwrap();
        let prod = b.add(format!("weighted.{out}"), Op::Binary { op: BinaryOp::Mul, a: *id, b: probe }).unwrap();
        let axes = (0..shape.len()).collect();
        let term = b.add(format!("term.{out}"), Op::ReduceSum { x: prod, axes, keep_dims: false }).unwrap();
        loss = Some(match loss {
            None => term,
            Some(l) => b.add(format!("loss+{out}"), Op::Binary { op: BinaryOp::Add, a: l, b: term }).unwrap(),
        });
    }
    let loss = loss.expect("cases have outputs");
    let grads = accelrt_core::autodiff::grad(&mut b, loss, &wrt).unwrap_or_else(|e| panic!("case {name}: {e}"));
    b.output("loss", loss);
    for (n, g) in names.iter().zip(grads) {
        b.output(&format!("grad.{n}"), g);
    }
    // Measured on candle's CPU kernels: up to 8 % on a loss of ≈ 18 summed over 480 bf16 products,
    // ≈ 0.065 on weight gradients of size ≈ 0.2.
    let half_tolerance = Some(Tolerance { abs: 0.15, rel: 0.15 });
    Case { name, graph: b.build().unwrap(), inputs, half_tolerance, ..case }
}

/// [`binary_broadcast`] with a loss over its outputs and the loss's gradients (see "Gradient cases" in
/// the module docs).
pub fn grad_binary_broadcast() -> Case {
    with_gradients("grad_binary_broadcast", binary_broadcast())
}

/// [`unary`] with a loss over its outputs and the loss's gradients (see "Gradient cases" in
/// the module docs).
pub fn grad_unary() -> Case {
    with_gradients("grad_unary", unary())
}

/// [`matmul_batched_broadcast`] with a loss over its outputs and the loss's gradients (see "Gradient cases" in
/// the module docs).
pub fn grad_matmul_batched_broadcast() -> Case {
    with_gradients("grad_matmul_batched_broadcast", matmul_batched_broadcast())
}

/// [`linear`] with a loss over its outputs and the loss's gradients (see "Gradient cases" in
/// the module docs).
pub fn grad_linear() -> Case {
    with_gradients("grad_linear", linear())
}

/// [`layer_norm`] with a loss over its outputs and the loss's gradients (see "Gradient cases" in
/// the module docs).
pub fn grad_layer_norm() -> Case {
    with_gradients("grad_layer_norm", layer_norm())
}

/// [`rms_norm`] with a loss over its outputs and the loss's gradients (see "Gradient cases" in
/// the module docs).
pub fn grad_rms_norm() -> Case {
    with_gradients("grad_rms_norm", rms_norm())
}

/// [`softmax`] with a loss over its outputs and the loss's gradients (see "Gradient cases" in
/// the module docs).
pub fn grad_softmax() -> Case {
    with_gradients("grad_softmax", softmax())
}

/// [`attention_gqa_cached_causal`] with a loss over its outputs and the loss's gradients (see "Gradient cases" in
/// the module docs).
pub fn grad_attention_gqa_cached_causal() -> Case {
    with_gradients("grad_attention_gqa_cached_causal", attention_gqa_cached_causal())
}

/// [`rope_interleaved_per_row`] with a loss over its outputs and the loss's gradients (see "Gradient cases" in
/// the module docs).
pub fn grad_rope_interleaved_per_row() -> Case {
    with_gradients("grad_rope_interleaved_per_row", rope_interleaved_per_row())
}

/// [`reshape_permute`] with a loss over its outputs and the loss's gradients (see "Gradient cases" in
/// the module docs).
pub fn grad_reshape_permute() -> Case {
    with_gradients("grad_reshape_permute", reshape_permute())
}

/// Slices and a concatenation whose symbolic-length operand comes last (a concatenation's
/// gradient needs every operand before the last at a fixed length).
pub fn grad_slice_concat() -> Case {
    let mut m = Maker::new("slice_concat_for_grad");
    let x = m.input("x", &[sym("batch"), sym("seq"), fixed(10)], &[2, 6, 10]);
    let y = m.input("y", &[sym("batch"), fixed(3), fixed(10)], &[2, 3, 10]);
    let first = m.op("first", Op::Slice { x, axis: 1, start: 0, end: Some(1) });
    let middle = m.op("middle", Op::Slice { x: y, axis: 2, start: 2, end: Some(7) });
    let tail = m.op("tail", Op::Slice { x, axis: 2, start: 4, end: None });
    let cat = m.op("cat", Op::Concat { xs: vec![first, y, x], axis: 1 });
    with_gradients("grad_slice_concat", m.finish(&[("middle", middle), ("tail", tail), ("cat", cat)]))
}

/// [`mean_pool`] with a loss over its outputs and the loss's gradients (see "Gradient cases" in
/// the module docs).
pub fn grad_mean_pool() -> Case {
    with_gradients("grad_mean_pool", mean_pool())
}

/// [`l2_normalize`] with a loss over its outputs and the loss's gradients (see "Gradient cases" in
/// the module docs).
pub fn grad_l2_normalize() -> Case {
    with_gradients("grad_l2_normalize", l2_normalize())
}

/// [`take_last`] with a loss over its outputs and the loss's gradients (see "Gradient cases" in
/// the module docs).
pub fn grad_take_last() -> Case {
    with_gradients("grad_take_last", take_last())
}

/// Dropout's gradient: the incoming gradient with the forward pass's mask.
pub fn grad_dropout() -> Case {
    with_gradients("grad_dropout", dropout())
}

/// A whole BERT-style encoder layer's gradients: embedding tables (scatter-add), layer norms,
/// padded attention, GELU, pooling and normalisation.
pub fn grad_encoder_block() -> Case {
    with_gradients("grad_encoder_block", encoder_block())
}

/// A whole Llama-style decoder layer's gradients: RMS norms, rotary embeddings, grouped-query
/// causal attention, the SiLU-gated MLP.
pub fn grad_decoder_block() -> Case {
    with_gradients("grad_decoder_block", decoder_block())
}

/// Next-token cross-entropy over a small LM head (padding labels ignored), and its gradients.
pub fn grad_causal_lm_loss() -> Case {
    let mut m = Maker::new("causal_lm_loss");
    let x = m.input("x", &[sym("batch"), sym("seq"), fixed(16)], &[2, 5, 16]);
    let w = m.weight("lm_head", &[11, 16], 0.25);
    let logits = m.op("logits", Op::Linear { x, weight: w, bias: None });
    let labels = HostTensor::i64(vec![2, 5], vec![3, 10, 0, 7, 7, 1, 2, -100, -100, -100]).unwrap();
    let labels = m.input_tensor("labels", &[sym("batch"), sym("seq")], labels);
    let loss = accelrt_core::loss::causal_lm_loss(&mut m.b, "ce", logits, labels).unwrap();
    with_gradients("grad_causal_lm_loss", m.finish(&[("ce", loss)]))
}

/// MultipleNegativesRankingLoss (scale 20) over projected embeddings, and its gradients.
pub fn grad_mnrl_loss() -> Case {
    let mut m = Maker::new("mnrl_loss");
    let a = m.input("anchors", &[sym("n"), fixed(12)], &[4, 12]);
    let p = m.input("positives", &[sym("n"), fixed(12)], &[4, 12]);
    let w = m.weight("proj", &[8, 12], 0.3);
    let ea = m.op("ea", Op::Linear { x: a, weight: w, bias: None });
    let ep = m.op("ep", Op::Linear { x: p, weight: w, bias: None });
    let loss = accelrt_core::loss::mnrl_loss(&mut m.b, "mnrl", ea, ep, accelrt_core::loss::MNRL_SCALE).unwrap();
    with_gradients("grad_mnrl_loss", m.finish(&[("mnrl", loss)]))
}

/// Every case, for tools that iterate (e.g. a device check that reports each by name), in the
/// order of the list in `__with_case_names!` (lib.rs), which `conformance_tests!` also expands.
pub fn all() -> Vec<Case> {
    crate::__with_case_names!(all)
}
