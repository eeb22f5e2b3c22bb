//! CPU kernels that candle's own ops make slow. candle evaluates erf one element at a time with no
//! SIMD, which made GELU cost a fifth of MiniLM's forward pass; this GELU is branch-free so the
//! compiler vectorises it, is compiled for AVX-512 and AVX2 and chosen at run time, and splits large
//! tensors across the thread pool.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::OnceLock;

/// The thread pool CPU graphs run in (one worker per core, or `RAYON_NUM_THREADS`): a pool of our
/// own, so that a whole run can be installed on it (candle's and gemm's parallel loops then use it).
pub fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("accelrt-cpu-{i}"))
            .build()
            .expect("the CPU thread pool starts")
    })
}

/// erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), written without branches.
#[inline(always)]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * exp_neg(ax * ax);
    y.copysign(x)
}

/// e^(−v) for v ≥ 0, branch-free: 2^n by building the exponent bits, 2^f by a degree-7 polynomial.
/// Relative error below 1e-7 for v ≤ 87; 0 beyond (e^-87 ≈ 1.6e-38).
#[inline(always)]
fn exp_neg(v: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2: f32 = std::f32::consts::LN_2;
    // Rounding by adding and subtracting 1.5·2^23 keeps this free of library calls.
    const ROUND: f32 = 12_582_912.0;
    let y = (-v).max(-87.0) * LOG2E;
    let n = (y + ROUND) - ROUND;
    let z = (y - n) * LN2; // |z| ≤ ln2 / 2
    let p = 1.0
        + z * (1.0
            + z * (0.5
                + z * (1.0 / 6.0 + z * (1.0 / 24.0 + z * (1.0 / 120.0 + z * (1.0 / 720.0 + z * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    // Past e^-87 the result is 0, not a value at the bottom of f32's normal range: softmax would
    // otherwise scale it into subnormals, which every later multiply-add with it pays for.
    if v > 87.0 {
        0.0
    } else {
        p * scale
    }
}

#[inline(always)]
fn gelu_erf_slice(src: &[f32], dst: &mut [f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gelu_erf_avx512(src: &[f32], dst: &mut [f32]) {
    gelu_erf_slice(src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_erf_avx2(src: &[f32], dst: &mut [f32]) {
    gelu_erf_slice(src, dst)
}

/// GELU (erf form) of `src` into `dst`, with the widest vector unit this CPU has.
pub fn gelu_erf_f32(src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            // Safety: the features the function is compiled for were just detected.
            return unsafe { gelu_erf_avx512(src, dst) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // Safety: as above.
            return unsafe { gelu_erf_avx2(src, dst) };
        }
    }
    gelu_erf_slice(src, dst)
}

/// GELU (erf form) as a candle op on contiguous f32 CPU tensors.
pub struct GeluErf;

/// Elements per parallel task: large enough that splitting pays for itself.
const CHUNK: usize = 1 << 15;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "accelrt-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("accelrt-gelu-erf takes f32 (got {:?})", storage.dtype());
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("accelrt-gelu-erf takes a contiguous tensor");
        };
        let src = &data[start..end];
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| gelu_erf_f32(s, d));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// softmax(q·kᵀ·scale + bias)·v in f64, one (batch, head, query) at a time.
    fn attention_f64(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        bias: Option<(&[f32], usize)>,
        s: AttentionShape,
        scale: f32,
    ) -> Vec<f64> {
        let mut out = Vec::new();
        for b in 0..s.batch {
            for h in 0..s.q_heads {
                let kh = h / (s.q_heads / s.kv_heads);
                for i in 0..s.q_len {
                    let query = &q[((b * s.q_heads + h) * s.q_len + i) * s.head_dim..][..s.head_dim];
                    let scores: Vec<f64> = (0..s.kv_len)
                        .map(|j| {
                            let key = &k[((b * s.kv_heads + kh) * s.kv_len + j) * s.head_dim..][..s.head_dim];
                            let dot: f64 = query.iter().zip(key).map(|(&a, &b)| a as f64 * b as f64).sum();
                            let add = bias.map_or(0.0, |(bias, rows)| {
                                let r = if rows == 1 { 0 } else { b };
                                bias[(r * s.q_len + i) * s.kv_len + j] as f64
                            });
                            dot * scale as f64 + add
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    for c in 0..s.v_dim {
                        out.push(
                            (0..s.kv_len)
                                .map(|j| {
                                    weights[j] / total * v[((b * s.kv_heads + kh) * s.kv_len + j) * s.v_dim + c] as f64
                                })
                                .sum(),
                        );
                    }
                }
            }
        }
        out
    }

    /// Both score paths (one dot per key for a few queries, transposed keys in register blocks for
    /// more), key counts on and off the block size, value widths on and off it, grouped-query
    /// heads, and a padding bias per row that hides keys with the backend's finite "−∞".
    #[test]
    fn attention_matches_f64_on_every_path() {
        let values = |n: usize, seed: usize| -> Vec<f32> {
            (0..n).map(|i| (((i + seed) * 7919) % 1000) as f32 / 500.0 - 1.0).collect()
        };
        for (batch, q_heads, kv_heads, q_len, kv_len, head_dim, v_dim) in [
            (1, 2, 2, 1, 5, 8, 8),
            (2, 6, 2, 3, 37, 16, 48),
            (2, 4, 4, 5, 32, 32, 32),
            (3, 6, 3, 9, 70, 24, 64),
            (1, 2, 1, 40, 40, 64, 20),
        ] {
            let shape = AttentionShape { batch, q_heads, q_len, head_dim, kv_heads, kv_len, v_dim };
            let q = values(batch * q_heads * q_len * head_dim, 1);
            let k = values(batch * kv_heads * kv_len * head_dim, 2);
            let v = values(batch * kv_heads * kv_len * v_dim, 3);
            // Row r hides its last r keys.
            let mut bias = vec![0f32; batch * q_len * kv_len];
            for r in 0..batch {
                for i in 0..q_len {
                    for j in kv_len - r.min(kv_len - 1)..kv_len {
                        bias[(r * q_len + i) * kv_len + j] = -1.0e30;
                    }
                }
            }
            let scale = (head_dim as f32).powf(-0.5);
            for bias in [None, Some((bias.as_slice(), batch))] {
                let got = attention_f32(&q, &k, &v, bias, shape, scale);
                let want = attention_f64(&q, &k, &v, bias, shape, scale);
                assert_eq!(got.len(), want.len());
                for (n, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((*g as f64 - w).abs() <= 1e-5, "{shape:?} bias {} [{n}]: {g} vs {w}", bias.is_some());
                    assert!(g.is_normal() || *g == 0.0, "{g} is subnormal or not finite");
                }
            }
        }
    }

    #[test]
    fn gelu_matches_the_exact_erf_form() {
        let xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 0.0007).collect();
        let mut fast = vec![0.0; xs.len()];
        gelu_erf_f32(&xs, &mut fast);
        let mut baseline = vec![0.0; xs.len()];
        gelu_erf_slice(&xs, &mut baseline);
        for ((&x, &f), &b) in xs.iter().zip(&fast).zip(&baseline) {
            let exact = 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2));
            assert!((f as f64 - exact).abs() <= 1e-6 * (1.0 + exact.abs()), "x={x}: {f} vs {exact}");
            assert_eq!(f.to_bits(), b.to_bits(), "every SIMD width gives the same bits at x={x}");
        }
        let mut extreme = [0.0f32; 4];
        gelu_erf_f32(&[-1e30, 1e30, f32::MIN_POSITIVE, -0.0], &mut extreme);
        assert_eq!(extreme[0], -0.0);
        assert_eq!(extreme[1], 1e30);
        assert!(extreme[2] >= 0.0 && extreme[3] == 0.0);
    }
}

/// Dot product in 16 independent lanes, so it vectorises (a plain `sum()` must add in order).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    // Pairwise, so the 16 lanes fold in 4 vector steps instead of 15 dependent adds.
    let mut width = 8;
    while width > 0 {
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
        width /= 2;
    }
    lanes[0] + tail
}

/// Shapes of one attention call: q `[batch, q_heads, q_len, head_dim]`, k
/// `[batch, kv_heads, kv_len, head_dim]`, v `[batch, kv_heads, kv_len, v_dim]`; the output is
/// `[batch, q_heads, q_len, v_dim]`.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Sequences in the batch.
    pub batch: usize,
    /// Query heads; a multiple of `kv_heads`.
    pub q_heads: usize,
    /// Queries per sequence and head (1 in a decode step).
    pub q_len: usize,
    /// Size of each query and key vector.
    pub head_dim: usize,
    /// Key/value heads (grouped-query attention): query head `h` reads KV head
    /// `h / (q_heads / kv_heads)`. Equal to `q_heads` for plain multi-head attention.
    pub kv_heads: usize,
    /// Keys (and values) per sequence and head.
    pub kv_len: usize,
    /// Size of each value vector, and so of each output vector.
    pub v_dim: usize,
}

/// Scaled dot-product attention for a few queries per sequence (decode steps), f32 on the CPU.
///
/// candle builds this from a dozen small tensor ops (repeat of the KV heads, two matmuls, softmax,
/// bias), each with its own allocation and thread hand-off; for one query per head that overhead
/// was most of the attention time. This computes each (batch, head) row directly, reading
/// grouped-query KV heads in place. `bias` is the additive mask `[rows, 1, q_len, kv_len]` with
/// its `rows` (1 or batch) as the second element. All layouts are row-major; the result is
/// softmax(q·kᵀ·`scale` + bias)·v, `[batch, q_heads, q_len, v_dim]`.
///
/// Panics if a slice is shorter than `shape` says.
pub fn attention_f32(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<(&[f32], usize)>,
    shape: AttentionShape,
    scale: f32,
) -> Vec<f32> {
    let AttentionShape { batch, q_heads, q_len, head_dim, kv_len, v_dim, .. } = shape;
    let mut out = vec![0f32; batch * q_heads * q_len * v_dim];
    let level = simd_level();
    // Closures are compiled without the callee's target features, so each row goes through a
    // function compiled for the vector unit this CPU has.
    let row = |(row, out): (usize, &mut [f32])| match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd_level` detected the features.
        SimdLevel::Avx512 => unsafe { attention_row_avx512(q, k, v, bias, shape, scale, row, out) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { attention_row_avx2(q, k, v, bias, shape, scale, row, out) },
        _ => attention_row(q, k, v, bias, shape, scale, row, out),
    };
    // Below ~1 MFLOP, waking the pool costs more than the work.
    if batch * q_heads * q_len * kv_len * (head_dim + v_dim) < (1 << 20) {
        out.chunks_mut(q_len * v_dim).enumerate().for_each(row);
    } else {
        out.par_chunks_mut(q_len * v_dim).enumerate().for_each(row);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SimdLevel {
    Avx512,
    Avx2,
    Portable,
}

fn simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            return SimdLevel::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Portable
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attention_row_avx512(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<(&[f32], usize)>,
    shape: AttentionShape,
    scale: f32,
    row: usize,
    out: &mut [f32],
) {
    attention_row(q, k, v, bias, shape, scale, row, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attention_row_avx2(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<(&[f32], usize)>,
    shape: AttentionShape,
    scale: f32,
    row: usize,
    out: &mut [f32],
) {
    attention_row(q, k, v, bias, shape, scale, row, out)
}

/// Query blocks at least this long transpose the row's keys once and compute each query's scores
/// in register blocks of [`KEY_BLOCK`] keys, as d multiply-adds along the keys (no horizontal sums);
/// shorter ones (decode steps) take one dot product per key, which reads the keys once.
const TRANSPOSED_KEYS_MIN_QUERIES: usize = 4;
/// Keys per register block of scores, and value columns per register block of the output.
const KEY_BLOCK: usize = 32;

/// The queries of one (batch, head) row: out is [q_len, v_dim].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attention_row(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<(&[f32], usize)>,
    shape: AttentionShape,
    scale: f32,
    row: usize,
    out: &mut [f32],
) {
    let AttentionShape { q_heads: hq, q_len: sq, head_dim: d, kv_heads: hkv, kv_len: t, v_dim: dv, .. } = shape;
    let (bi, h) = (row / hq, row % hq);
    let kh = h / (hq / hkv);
    let keys = &k[(bi * hkv + kh) * t * d..][..t * d];
    let values = &v[(bi * hkv + kh) * t * dv..][..t * dv];
    // Keys as [d][t rounded up to KEY_BLOCK], pre-scaled and zero-padded, for long query blocks.
    let padded = t.next_multiple_of(KEY_BLOCK);
    let keys_t: Option<Vec<f32>> = (sq >= TRANSPOSED_KEYS_MIN_QUERIES).then(|| {
        let mut kt = vec![0f32; d * padded];
        for (j, key) in keys.chunks_exact(d).enumerate() {
            for (e, &x) in key.iter().enumerate() {
                kt[e * padded + j] = x * scale;
            }
        }
        kt
    });
    let mut scores = vec![0f32; padded];
    for i in 0..sq {
        let query = &q[((bi * hq + h) * sq + i) * d..][..d];
        let bias_row = bias.map(|(bias, rows)| {
            let r = if rows == 1 { 0 } else { bi };
            &bias[(r * sq + i) * t..][..t]
        });
        match &keys_t {
            Some(kt) => {
                for (block, chunk) in scores.chunks_exact_mut(KEY_BLOCK).enumerate() {
                    let mut acc = [0f32; KEY_BLOCK];
                    for (&qe, kt_row) in query.iter().zip(kt.chunks_exact(padded)) {
                        let keys: &[f32; KEY_BLOCK] =
                            kt_row[block * KEY_BLOCK..][..KEY_BLOCK].try_into().expect("a block");
                        for l in 0..KEY_BLOCK {
                            acc[l] = qe.mul_add(keys[l], acc[l]);
                        }
                    }
                    chunk.copy_from_slice(&acc);
                }
            }
            None => {
                for (s, key) in scores.iter_mut().zip(keys.chunks_exact(d)) {
                    *s = dot(query, key) * scale;
                }
            }
        }
        let scores = &mut scores[..t];
        if let Some(b) = bias_row {
            for (s, add) in scores.iter_mut().zip(b) {
                *s += add;
            }
        }
        softmax_in_place(scores);
        let o = &mut out[i * dv..(i + 1) * dv];
        if dv.is_multiple_of(KEY_BLOCK) {
            // The output in register blocks of KEY_BLOCK columns, summed over the keys.
            for (block, o) in o.chunks_exact_mut(KEY_BLOCK).enumerate() {
                let mut acc = [0f32; KEY_BLOCK];
                for (&w, value) in scores.iter().zip(values.chunks_exact(dv)) {
                    let value: &[f32; KEY_BLOCK] = value[block * KEY_BLOCK..][..KEY_BLOCK].try_into().expect("a block");
                    for l in 0..KEY_BLOCK {
                        acc[l] = w.mul_add(value[l], acc[l]);
                    }
                }
                o.copy_from_slice(&acc);
            }
        } else {
            for (&w, value) in scores.iter().zip(values.chunks_exact(dv)) {
                for (acc, &x) in o.iter_mut().zip(value) {
                    *acc += w * x;
                }
            }
        }
    }
}

/// softmax(x) in place: exp(x − max) / Σ, the max and the sum in 16 lanes so they vectorise.
#[inline(always)]
fn softmax_in_place(x: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; 16];
    for chunk in x.chunks(16) {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in x.iter_mut() {
        *v = exp_neg(max - *v);
    }
    let mut sums = [0f32; 16];
    for chunk in x.chunks(16) {
        for (s, &v) in sums.iter_mut().zip(chunk) {
            *s += v;
        }
    }
    let inv = 1.0 / sums.iter().sum::<f32>();
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `Op::AdamWStep` on the CPU in f32: one parallel pass over the parameter that reads p, g, m, v
/// in place and writes the stacked [3, …] result, instead of ~20 element-wise ops each touching
/// every parameter. Each element follows `AdamWCoefficients::apply` computed in f32 (the reference
/// evaluates it in f64; they differ by rounding only).
pub(crate) fn adamw_f32(
    c: &accelrt_core::optim::AdamWCoefficients,
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
) -> candle_core::Result<Tensor> {
    let n = p.elem_count();
    let (p, g, m, v) = (p.contiguous()?, g.contiguous()?, m.contiguous()?, v.contiguous()?);
    let guards = [p.storage_and_layout(), g.storage_and_layout(), m.storage_and_layout(), v.storage_and_layout()];
    let mut slices: Vec<&[f32]> = Vec::with_capacity(4);
    for (storage, layout) in &guards {
        let slice = crate::convert::cpu_f32(storage, layout, "adamw")?;
        if slice.len() != n {
            candle_core::bail!("adamw: param, grad, m and v differ in size");
        }
        slices.push(slice);
    }
    let (ps, gs, ms, vs) = (slices[0], slices[1], slices[2], slices[3]);
    let (decay, step_size, inv_sqrt_bc2) = (c.decay as f32, c.step_size as f32, (1.0 / c.sqrt_bc2) as f32);
    let (b1, b2, eps) = (c.beta1 as f32, c.beta2 as f32, c.eps as f32);
    let mut out = vec![0f32; 3 * n];
    let (op, rest) = out.split_at_mut(n);
    let (om, ov) = rest.split_at_mut(n);
    const CHUNK: usize = 1 << 14;
    op.par_chunks_mut(CHUNK).zip(om.par_chunks_mut(CHUNK)).zip(ov.par_chunks_mut(CHUNK)).enumerate().for_each(
        |(chunk, ((a, b), d))| {
            let base = chunk * CHUNK;
            let range = base..base + a.len();
            let (ps, gs, ms, vs) = (&ps[range.clone()], &gs[range.clone()], &ms[range.clone()], &vs[range]);
            for k in 0..a.len() {
                let g = gs[k];
                let m2 = b1 * ms[k] + (1.0 - b1) * g;
                let v2 = b2 * vs[k] + (1.0 - b2) * g * g;
                let denom = v2.sqrt() * inv_sqrt_bc2 + eps;
                (a[k], b[k], d[k]) = (ps[k] * decay - step_size * (m2 / denom), m2, v2);
            }
        },
    );
    let mut shape = vec![3];
    shape.extend_from_slice(p.dims());
    drop(guards);
    Tensor::from_vec(out, shape, p.device())
}
