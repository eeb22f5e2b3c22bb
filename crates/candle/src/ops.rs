//! Each graph op as candle tensor operations.

use accelrt_core::reshape_target;
use accelrt_core::{BinaryOp, Op, RopeStyle, UnaryOp, ValueId};
use candle_core::{DType, Device, Result, Tensor, D};
use std::collections::{HashMap, HashSet};

/// Per-run state shared by the ops of one run.
pub(crate) struct RunContext<'a> {
    pub device: &'a Device,
    /// The dtype all floating-point work runs in when the caller chose one (`PrepareOptions`);
    /// `None` follows the graph's own dtypes.
    pub compute_override: Option<DType>,
    /// Weight nodes stored transposed ([in, out]) for linear layers.
    pub transposed: &'a HashSet<usize>,
    /// Additive attention biases already built in this run, keyed by (mask, causal, q_positions,
    /// q_len, kv_len): every layer of a model shares the same mask, so it is built once.
    pub attention_bias: HashMap<BiasKey, Option<Tensor>>,
    /// Rotary cos/sin tables already built in this run, keyed by (positions, head size, base bits).
    pub rope_tables: HashMap<(ValueId, usize, u64), (Tensor, Tensor)>,
}

pub(crate) type BiasKey = (Option<ValueId>, bool, Option<ValueId>, usize, usize);

/// A finite "minus infinity" for masked attention scores. It must stay finite in the compute dtype
/// (f32::MIN becomes −inf in f16, and the masked mean of a fully padded row would be NaN).
fn masked_score(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => -65504.0,
        _ => -1.0e30,
    }
}

/// Evaluates `op` on already-evaluated operand values.
pub(crate) fn eval(op: &Op, val: &dyn Fn(ValueId) -> Tensor, ctx: &mut RunContext<'_>) -> Result<Tensor> {
    match op {
        Op::Input { .. } | Op::Weight { .. } | Op::KvCache { .. } | Op::Variable { .. } | Op::Assign { .. } => {
            unreachable!("inputs, weights, caches and variables are handled by the executable")
        }
        Op::TakeLast { x, axis } => {
            let x = val(*x);
            let size = x.dim(*axis)?;
            if size == 0 {
                candle_core::bail!("axis {axis} is empty");
            }
            x.narrow(*axis, size - 1, 1)
        }
        Op::Embedding { table, ids } => {
            let ids = val(*ids);
            let table = val(*table);
            let mut shape = ids.dims().to_vec();
            shape.push(table.dim(1)?);
            table.index_select(&ids.flatten_all()?, 0)?.reshape(shape)
        }
        Op::MatMul { a, b, transpose_b } => {
            // candle's matmul takes row-major or transposed operands, not general strides (a
            // permuted value, as gradient graphs make); contiguous() is free for the rest.
            let b = val(*b).contiguous()?;
            let b = if *transpose_b { b.t()? } else { b };
            val(*a).contiguous()?.broadcast_matmul(&b)
        }
        Op::Linear { x, weight, bias } => {
            let x = val(*x);
            let w = val(*weight);
            let w_t = if ctx.transposed.contains(&weight.index()) { w } else { w.t()? };
            // A weight stored in another float type (an f16 matrix in an f32 model) computes in x's.
            let w_t = if w_t.dtype() != x.dtype() { w_t.to_dtype(x.dtype())? } else { w_t };
            let mut out_shape = x.dims().to_vec();
            let features = *out_shape.last().expect("rank ≥ 1");
            *out_shape.last_mut().expect("rank ≥ 1") = w_t.dim(1)?;
            // One large GEMM over all rows is faster than a batched one per leading index.
            let rows = x.contiguous()?.reshape(((), features))?;
            let mut y = rows.matmul(&w_t)?;
            if let Some(b) = bias {
                y = y.broadcast_add(&val(*b))?;
            }
            y.reshape(out_shape)
        }
        Op::Binary { op, a, b } => {
            let (a, b) = (val(*a), val(*b));
            match op {
                BinaryOp::Add => a.broadcast_add(&b),
                BinaryOp::Sub => a.broadcast_sub(&b),
                BinaryOp::Mul => a.broadcast_mul(&b),
                BinaryOp::Div => a.broadcast_div(&b),
            }
        }
        Op::Unary { op, x } => {
            let x = val(*x);
            match op {
                UnaryOp::Gelu if x.dtype() == DType::F32 && x.device().is_cpu() => {
                    x.contiguous()?.apply_op1_no_bwd(&crate::kernels::GeluErf)
                }
                // candle's bf16/f16 erf is scalar and converts per element (24 % of a bf16 MiniLM
                // forward); the f32 kernel between two casts is exact to the f32 GELU, then rounded.
                UnaryOp::Gelu if matches!(x.dtype(), DType::BF16 | DType::F16) && x.device().is_cpu() => {
                    x.to_dtype(DType::F32)?.apply_op1_no_bwd(&crate::kernels::GeluErf)?.to_dtype(x.dtype())
                }
                UnaryOp::Gelu => x.gelu_erf(),
                UnaryOp::GeluTanh => x.gelu(),
                UnaryOp::Silu => x.silu(),
                UnaryOp::Relu => x.relu(),
                UnaryOp::Tanh => x.tanh(),
                UnaryOp::Exp => x.exp(),
                UnaryOp::Sigmoid => candle_nn::ops::sigmoid(&x),
                UnaryOp::Erf => x.erf(),
                UnaryOp::Step => x.gt(0.0)?.to_dtype(x.dtype()),
                UnaryOp::Sqrt => x.sqrt(),
                UnaryOp::Log => x.log(),
            }
        }
        Op::Affine { x, mul, add } => val(*x).affine(*mul, *add),
        Op::LayerNorm { x, gamma, beta, eps } => {
            let x = val(*x).contiguous()?;
            let gamma = val(*gamma);
            let beta = match beta {
                Some(b) => val(*b),
                None => gamma.zeros_like()?,
            };
            candle_nn::ops::layer_norm(&x, &gamma, &beta, *eps as f32)
        }
        Op::RmsNorm { x, gamma, eps } => candle_nn::ops::rms_norm(&val(*x).contiguous()?, &val(*gamma), *eps as f32),
        Op::Softmax { x } => candle_nn::ops::softmax_last_dim(&val(*x).contiguous()?),
        Op::Attention { q, k, v, mask, causal, scale, q_positions } => {
            let (q, k, v) = (val(*q), val(*k), val(*v));
            let (key, hq, hkv, q_len) = attention_shape_and_bias(&q, &k, *mask, *causal, *q_positions, val, ctx)?;
            let (batch, kv_len) = (q.dim(0)?, k.dim(2)?);
            if q.device().is_cpu()
                && q.dtype() == DType::F32
                && direct_attention_pays(batch * hq * q_len, q_len, kv_len)
            {
                return direct_attention(&q, &k, &v, ctx.attention_bias[&key].as_ref(), *scale);
            }
            let (k, v) = (repeat_kv(&k, hq / hkv)?, repeat_kv(&v, hq / hkv)?);
            let scores = q.contiguous()?.matmul(&k.contiguous()?.t()?)?.affine(*scale, 0.0)?;
            let scores = match &ctx.attention_bias[&key] {
                Some(bias) => scores.broadcast_add(bias)?,
                None => scores,
            };
            candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v.contiguous()?)
        }
        Op::Rope { x, positions, base, style } => {
            let x = val(*x).contiguous()?;
            let (_, _, _, head) = x.dims4()?;
            let key = (*positions, head, base.to_bits());
            if !ctx.rope_tables.contains_key(&key) {
                let tables = rope_tables(&val(*positions), head, *base, x.dtype(), ctx.device)?;
                ctx.rope_tables.insert(key, tables);
            }
            let (cos, sin) = &ctx.rope_tables[&key];
            let (cos, sin) = (cos.to_dtype(x.dtype())?, sin.to_dtype(x.dtype())?);
            match style {
                RopeStyle::HalfSplit => candle_nn::rotary_emb::rope(&x, &cos, &sin),
                RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, &cos, &sin),
            }
        }
        Op::Reshape { x, dims } => {
            let x = val(*x);
            let target = reshape_target(x.dims(), dims).map_err(candle_core::Error::msg)?;
            x.reshape(target)
        }
        Op::Permute { x, perm } => val(*x).permute(perm.as_slice()),
        Op::Slice { x, axis, start, end } => {
            let x = val(*x);
            let end = end.unwrap_or(x.dim(*axis)?);
            if end < *start {
                candle_core::bail!("slice {start}..{end} is empty-reversed");
            }
            x.narrow(*axis, *start, end - start)
        }
        Op::Concat { xs, axis } => {
            let parts: Vec<Tensor> = xs.iter().map(|x| val(*x)).collect();
            Tensor::cat(&parts, *axis)
        }
        Op::MeanPool { x, mask } => {
            let x = val(*x);
            let m = val(*mask).to_dtype(x.dtype())?;
            let summed = x.broadcast_mul(&m.unsqueeze(2)?)?.sum(1)?;
            let count = m.sum_keepdim(1)?.clamp(1e-9, f64::INFINITY)?;
            summed.broadcast_div(&count)
        }
        Op::L2Normalize { x, eps } => {
            let x = val(*x);
            let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(*eps, f64::INFINITY)?;
            x.broadcast_div(&norm)
        }
        Op::Cast { x, dtype } => {
            let target = match ctx.compute_override {
                Some(compute) if dtype.is_float() => compute,
                _ => crate::convert::to_candle_dtype(*dtype).map_err(candle_core::Error::wrap)?,
            };
            val(*x).to_dtype(target)
        }
        Op::Positions { like, axis } => {
            let n = val(*like).dim(*axis)?;
            Tensor::arange(0u32, n as u32, ctx.device)
        }
        Op::ReduceSum { x, axes, keep_dims } => {
            let x = val(*x);
            match (axes.is_empty(), keep_dims) {
                (true, _) => Ok(x),
                (false, true) => x.sum_keepdim(axes.clone()),
                (false, false) => x.sum(axes.clone()),
            }
        }
        Op::LogSoftmax { x } => candle_nn::ops::log_softmax(&val(*x).contiguous()?, D::Minus1),
        Op::OneHot { ids, depth, dtype } => {
            let target = match ctx.compute_override {
                Some(compute) => compute,
                None => crate::convert::to_candle_dtype(*dtype).map_err(candle_core::Error::wrap)?,
            };
            let ids = val(*ids).to_dtype(DType::I64)?;
            let classes = Tensor::arange(0i64, *depth as i64, ctx.device)?;
            // Ids outside 0..depth equal no class, so their rows are zeros.
            ids.unsqueeze(D::Minus1)?.broadcast_eq(&classes)?.to_dtype(target)
        }
        Op::IndexAdd { ids, src, rows } => {
            let src = val(*src);
            let width = src.dim(D::Minus1)?;
            let ids = val(*ids).flatten_all()?;
            let ids = if ids.dtype() == DType::U32 { ids } else { ids.to_dtype(DType::I64)? };
            let host: Vec<i64> = ids.to_dtype(DType::I64)?.to_vec1()?;
            if let Some(bad) = host.iter().find(|&&i| i < 0 || i as usize >= *rows) {
                candle_core::bail!("id {bad} out of range for {rows} rows");
            }
            let src = src.contiguous()?.reshape(((), width))?;
            Tensor::zeros((*rows, width), src.dtype(), ctx.device)?.index_add(&ids, &src, 0)
        }
        Op::AdamWStep { param, grad, m, v, lr, step, beta1, beta2, eps, weight_decay } => {
            let host = |t: Tensor| -> Result<f64> { t.to_dtype(DType::F64)?.to_scalar::<f64>() };
            let config =
                accelrt_core::optim::AdamW { beta1: *beta1, beta2: *beta2, eps: *eps, weight_decay: *weight_decay };
            let c = accelrt_core::optim::AdamWCoefficients::new(&config, host(val(*lr))?, host(val(*step))?);
            let (p, g, m, v) = (val(*param), val(*grad), val(*m), val(*v));
            if p.device().is_cpu() && p.dtype() == DType::F32 {
                return crate::kernels::adamw_f32(&c, &p, &g, &m, &v);
            }
            // Other devices and dtypes: the same formula as candle ops, the coefficients on the host.
            let m2 = (m.affine(c.beta1, 0.0)? + g.affine(1.0 - c.beta1, 0.0)?)?;
            let v2 = (v.affine(c.beta2, 0.0)? + g.sqr()?.affine(1.0 - c.beta2, 0.0)?)?;
            let denom = v2.sqrt()?.affine(1.0 / c.sqrt_bc2, c.eps)?;
            let p2 = (p.affine(c.decay, 0.0)? - (m2.clone() / denom)?.affine(c.step_size, 0.0)?)?;
            Tensor::stack(&[p2, m2, v2], 0)
        }
        Op::Dropout { x, seed, p, stream } => {
            let x = val(*x);
            let seed = val(*seed).to_dtype(DType::U32)?.to_scalar::<u32>()?;
            let mask = dropout_mask(x.elem_count(), seed, *p, *stream);
            let mask = Tensor::from_vec(mask, x.dims(), ctx.device)?.to_dtype(x.dtype())?;
            x.mul(&mask)
        }
        Op::AttentionProbs { q, k, mask, causal, scale, q_positions } => {
            let (q, k) = (val(*q), val(*k));
            let (key, hq, hkv, _) = attention_shape_and_bias(&q, &k, *mask, *causal, *q_positions, val, ctx)?;
            let k = repeat_kv(&k, hq / hkv)?;
            let scores = q.contiguous()?.matmul(&k.contiguous()?.t()?)?.affine(*scale, 0.0)?;
            let scores = match &ctx.attention_bias[&key] {
                Some(bias) => scores.broadcast_add(bias)?,
                None => scores,
            };
            candle_nn::ops::softmax_last_dim(&scores)
        }
    }
}

/// Whether f32 attention on the CPU takes the direct kernel (`kernels::attention_f32`) rather
/// than candle's composition (repeat the KV heads, two matmuls, mask, softmax). Measured with
/// `cargo bench -p accelrt-candle --bench attention` (docs/PERFORMANCE.md): the kernel wins for
/// decode steps, for one or a few sequences (candle's per-op overhead dominates) and for keys of
/// 64 and more; candle's batched GEMMs win for many short sequences (MiniLM at batch 32).
fn direct_attention_pays(queries: usize, q_len: usize, kv_len: usize) -> bool {
    q_len <= 8 || kv_len >= 64 || queries <= 1024
}

/// The checks and the cached additive mask (`ctx.attention_bias[key]`) that Attention and
/// AttentionProbs share: returns the bias key, the query and kv head counts and the query length.
fn attention_shape_and_bias(
    q: &Tensor,
    k: &Tensor,
    mask: Option<ValueId>,
    causal: bool,
    q_positions: Option<ValueId>,
    val: &dyn Fn(ValueId) -> Tensor,
    ctx: &mut RunContext<'_>,
) -> Result<(BiasKey, usize, usize, usize)> {
    let (_, hq, q_len, _) = q.dims4()?;
    let (_, hkv, kv_len, _) = k.dims4()?;
    if hkv == 0 || hq % hkv != 0 {
        candle_core::bail!("q heads ({hq}) must be a multiple of kv heads ({hkv})");
    }
    if causal && q_len > kv_len {
        candle_core::bail!("causal attention needs kv length ({kv_len}) ≥ query length ({q_len})");
    }
    let key = (mask, causal, q_positions, q_len, kv_len);
    if !ctx.attention_bias.contains_key(&key) {
        let visibility = match q_positions {
            Some(p) => Visibility::Positions(val(p)),
            None if causal => Visibility::Causal,
            None => Visibility::All,
        };
        let bias = attention_bias(mask.map(val), &visibility, q_len, kv_len, q.dtype(), ctx.device)?;
        ctx.attention_bias.insert(key, bias);
    }
    Ok((key, hq, hkv, q_len))
}

/// `Op::Attention` in f32 on the CPU through `kernels::attention_f32`, reading q, k, v and the
/// bias in place (copied only when not contiguous).
fn direct_attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (b, hq, sq, d) = q.dims4()?;
    let (_, hkv, t, dv) = v.dims4()?;
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    // Masks come as [b | 1, 1, q_len | 1, kv_len]; the kernel reads [b | 1, 1, q_len, kv_len].
    let bias = bias.map(|bias| -> Result<Tensor> { bias.broadcast_as((bias.dim(0)?, 1, sq, t))?.contiguous() });
    let bias = bias.transpose()?;
    let guards = [Some(&q), Some(&k), Some(&v), bias.as_ref()].map(|t| t.map(|t| t.storage_and_layout()));
    let mut slices: Vec<Option<&[f32]>> = Vec::with_capacity(4);
    for guard in &guards {
        slices.push(
            guard
                .as_ref()
                .map(|(storage, layout)| crate::convert::cpu_f32(storage, layout, "attention"))
                .transpose()?,
        );
    }
    let rows = bias.as_ref().map(|bias| bias.dim(0)).transpose()?.unwrap_or(1);
    let out = crate::kernels::attention_f32(
        slices[0].expect("q"),
        slices[1].expect("k"),
        slices[2].expect("v"),
        slices[3].map(|values| (values, rows)),
        crate::kernels::AttentionShape {
            batch: b,
            q_heads: hq,
            q_len: sq,
            head_dim: d,
            kv_heads: hkv,
            kv_len: t,
            v_dim: dv,
        },
        scale as f32,
    );
    drop(guards);
    Tensor::from_vec(out, (b, hq, sq, dv), q.device())
}

/// Repeats each kv head `groups` times so grouped-query attention becomes plain multi-head attention.
fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (b, h, t, d) = x.dims4()?;
    x.unsqueeze(2)?.expand((b, h, groups, t, d))?.reshape((b, h * groups, t, d))
}

/// Which keys each query may see (besides the padding mask); see `Op::Attention`.
enum Visibility {
    All,
    Causal,
    /// Query (b, i) sits at position p[b, i].
    Positions(Tensor),
}

/// The additive bias (0 where a key is visible, a large negative number where not) for attention
/// scores [batch, heads, q_len, kv_len], or `None` when nothing is hidden.
fn attention_bias(
    mask: Option<Tensor>,
    visibility: &Visibility,
    q_len: usize,
    kv_len: usize,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    let neg = masked_score(dtype);
    let mut bias: Option<Tensor> = None;
    if let Some(mask) = mask {
        let (b, t) = mask.dims2()?;
        // keep ∈ {0, 1}; bias = (1 − keep) · neg, computed as keep · (−neg) + neg (exactly 0 for keep = 1).
        let keep = mask.ne(0f64)?.to_dtype(dtype)?;
        bias = Some(keep.affine(-neg, neg)?.reshape((b, 1, 1, t))?);
    }
    let limits: Option<(usize, Vec<i64>)> = match visibility {
        Visibility::All => None,
        Visibility::Causal => Some((1, (0..q_len).map(|i| (kv_len - q_len + i) as i64).collect())),
        Visibility::Positions(p) => {
            let (b, n) = p.dims2()?;
            if n != q_len {
                candle_core::bail!("q_positions {:?} do not match the query length {q_len}", p.dims());
            }
            Some((b, p.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?))
        }
    };
    if let Some((rows, limits)) = limits {
        let values: Vec<f32> = limits
            .iter()
            .flat_map(|&limit| (0..kv_len).map(move |j| if j as i64 > limit { neg as f32 } else { 0.0 }))
            .collect();
        let c = Tensor::from_vec(values, (rows, 1, q_len, kv_len), device)?.to_dtype(dtype)?;
        bias = Some(match bias {
            Some(b) => b.broadcast_add(&c)?,
            None => c,
        });
    }
    Ok(bias)
}

/// cos/sin tables for the given positions: [seq, head/2], or [batch, seq, head/2] for per-row positions.
fn rope_tables(positions: &Tensor, head: usize, base: f64, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let pos: Vec<i64> = positions.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
    let half = head / 2;
    let mut cos = Vec::with_capacity(pos.len() * half);
    let mut sin = Vec::with_capacity(pos.len() * half);
    for &p in &pos {
        for i in 0..half {
            let theta = p as f64 * base.powf(-2.0 * i as f64 / head as f64);
            cos.push(theta.cos() as f32);
            sin.push(theta.sin() as f32);
        }
    }
    let mut shape = positions.dims().to_vec();
    shape.push(half);
    let cos = Tensor::from_vec(cos, shape.as_slice(), device)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, shape.as_slice(), device)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

/// `Op::Dropout`'s multipliers in row-major order: 1/(1 − p) where MurmurHash3_x86_32 of
/// (stream, index) with `seed` reaches ⌊p·2³²⌋, else 0 (the formula is on the op).
fn dropout_mask(len: usize, seed: u32, p: f64, stream: u32) -> Vec<f32> {
    // p < 1 (checked when the graph was built), so the threshold is below 2³².
    let threshold = (p * 4_294_967_296.0).floor() as u64;
    let scale = (1.0 / (1.0 - p)) as f32;
    // The first block (the stream) is the same for every element.
    let h = murmur_block(seed, stream);
    (0..len)
        .map(|i| if u64::from(murmur_finish(murmur_block(h, i as u32), 8)) >= threshold { scale } else { 0.0 })
        .collect()
}

/// One 4-byte block of MurmurHash3_x86_32's body (SMHasher, MurmurHash3.cpp).
fn murmur_block(h: u32, block: u32) -> u32 {
    let k = block.wrapping_mul(0xcc9e_2d51).rotate_left(15).wrapping_mul(0x1b87_3593);
    (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

/// MurmurHash3_x86_32's finalisation of a key of `len` bytes (fmix32).
fn murmur_finish(h: u32, len: u32) -> u32 {
    let mut h = h ^ len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}
