//! Linear layers on the CPU with their weights packed once, at prepare time.
//!
//! candle hands every `Linear` to the `gemm` crate, which packs the weight matrix again on every
//! call and splits the work through rayon. For the few-row products of one sentence (MiniLM: 7–33
//! rows against 384×384 and 384×1536 matrices) that per-call work is a large part of the product
//! itself. Here the weight is stored once as panels of [`NR`] output columns, each panel
//! `[in][NR]` contiguous, so a micro-kernel streams it front to back; the bias is the accumulators'
//! starting value; the work is split over panels (and row blocks, for big batches) on the thread
//! pool the graph runs in. Rows can be skipped in place (padding that the graph never reads, see
//! `crate::padding`).
//!
//! The kernel needs AVX-512F ([`available`]); elsewhere the executable keeps candle's matmul.

// The kernels are x86-64 only; elsewhere `available()` is false, nothing is packed, and the
// drivers below compile without a kernel to call.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_variables))]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output columns per panel: two 512-bit registers of f32.
pub const NR: usize = 32;
/// Rows per micro-kernel tile: 8 rows × 2 registers = 16 accumulators, leaving registers for the
/// two weight vectors; each weight load then feeds 8 FMAs.
const MR: usize = 8;
/// Rows per parallel task when a product has many rows (a batch): the task's activations
/// (64 × in floats) and one weight panel stay in the core's L2 while it works.
const ROW_BLOCK: usize = 64;
/// Below this many multiply-adds one thread does the whole product: handing it to the team
/// costs more than it saves (measured at MiniLM's shapes: ~20 µs of work).
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Whether this CPU runs the packed kernels (AVX-512F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs the bf16 kernel (AVX-512 BF16's `vdpbf16ps`: two bf16 products summed
/// into each f32 lane, twice the multiply-adds per instruction of f32 FMA).
pub fn available_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A linear layer's weight, `[out, in]` as stored in a model, packed for [`PackedLinear::forward`]
/// (f32) or [`PackedLinear::forward_rows_bf16`] (bf16).
pub struct PackedLinear {
    /// Input features (`in`).
    k: usize,
    /// Output features (`out`).
    n: usize,
    panels: Panels,
}

/// ⌈n / NR⌉ panels, the last one padded with zero columns.
enum Panels {
    /// `[k][NR]` f32 each.
    F32(Vec<f32>),
    /// `[k/2][NR]` pairs of bf16 each: the pair (w[j][2p], w[j][2p+1]) as one u32, low half
    /// first, the layout `vdpbf16ps` multiplies.
    Bf16(Vec<u32>),
}

impl PackedLinear {
    /// Packs `w`, the `[n, k]` row-major matrix of a layer y = x·wᵀ.
    ///
    /// Panics if `w.len() != n * k` (callers pass a weight whose shape was checked).
    pub fn pack(w: &[f32], n: usize, k: usize) -> PackedLinear {
        assert_eq!(w.len(), n * k, "weight of {} values is not [{n}, {k}]", w.len());
        let n_panels = n.div_ceil(NR);
        let mut panels = vec![0f32; n_panels * k * NR];
        if k == 0 {
            return PackedLinear { k, n, panels: Panels::F32(panels) };
        }
        for (p, panel) in panels.chunks_exact_mut(k * NR).enumerate() {
            for (col, row) in w.chunks_exact(k).enumerate().skip(p * NR).take(NR) {
                let c = col - p * NR;
                for (i, &v) in row.iter().enumerate() {
                    panel[i * NR + c] = v;
                }
            }
        }
        PackedLinear { k, n, panels: Panels::F32(panels) }
    }

    /// Packs `w`, the `[n, k]` row-major matrix of a layer y = x·wᵀ, rounded to bf16 (to nearest
    /// even, as candle's and PyTorch's casts round) for [`forward_rows_bf16`](Self::forward_rows_bf16).
    ///
    /// Panics if `w.len() != n * k` or if `k` is odd (the kernel multiplies pairs of features).
    pub fn pack_bf16(w: &[f32], n: usize, k: usize) -> PackedLinear {
        assert_eq!(w.len(), n * k, "weight of {} values is not [{n}, {k}]", w.len());
        assert!(k.is_multiple_of(2), "the bf16 kernel needs an even number of input features (got {k})");
        let pairs = k / 2;
        let mut panels = vec![0u32; n.div_ceil(NR) * pairs * NR];
        for (col, row) in w.chunks_exact(k.max(1)).enumerate().take(n) {
            let (p, c) = (col / NR, col % NR);
            for (i, pair) in row.chunks_exact(2).enumerate() {
                let (lo, hi) = (half::bf16::from_f32(pair[0]).to_bits(), half::bf16::from_f32(pair[1]).to_bits());
                panels[(p * pairs + i) * NR + c] = lo as u32 | (hi as u32) << 16;
            }
        }
        PackedLinear { k, n, panels: Panels::Bf16(panels) }
    }

    /// Whether the weight was packed for the bf16 kernel.
    pub fn is_bf16(&self) -> bool {
        matches!(self.panels, Panels::Bf16(_))
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.k
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// y[m, n] = x[m, k] · wᵀ (+ bias[n]), all row-major f32, split over the thread pool.
    ///
    /// Panics if the slices' lengths disagree with `m`, `k` and `n`, or if the CPU lacks AVX-512F
    /// (check [`available`] before packing).
    pub fn forward(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
        self.forward_rows(x, m, bias, None)
    }

    /// As [`forward`](Self::forward), but with `rows` (ascending indices below `m`) only those
    /// rows of y are computed; the others are zeros. Rows are read and written in place, so
    /// skipping costs no copies.
    ///
    /// Panics as `forward` does, or if a row index is out of range.
    pub fn forward_rows(&self, x: &[f32], m: usize, bias: Option<&[f32]>, rows: Option<&[usize]>) -> Vec<f32> {
        let Panels::F32(panels) = &self.panels else { panic!("the weight was packed for bf16") };
        assert_eq!(x.len(), m * self.k, "x of {} values is not [{m}, {}]", x.len(), self.k);
        assert!(available(), "the packed linear kernel needs AVX-512F");
        let k = self.k;
        self.run(m, bias, rows, &|block, p, cols, bias, out| {
            // SAFETY: `run` hands each call its own (row block, panel) tile of y and checked the
            // row indices; the feature was checked above.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                panel_f32(x, k, block, &panels[p * k * NR..(p + 1) * k * NR], bias, out, self.n, cols)
            };
        })
    }

    /// As [`forward_rows`](Self::forward_rows) for a weight packed with
    /// [`pack_bf16`](Self::pack_bf16) and x in bf16; products are summed in f32.
    ///
    /// Panics as `forward_rows` does, if the weight was packed for f32, or if the CPU lacks
    /// AVX-512 BF16 (check [`available_bf16`]).
    pub fn forward_rows_bf16(
        &self,
        x: &[half::bf16],
        m: usize,
        bias: Option<&[f32]>,
        rows: Option<&[usize]>,
    ) -> Vec<f32> {
        let Panels::Bf16(panels) = &self.panels else { panic!("the weight was packed for f32") };
        assert_eq!(x.len(), m * self.k, "x of {} values is not [{m}, {}]", x.len(), self.k);
        assert!(available_bf16(), "the bf16 linear kernel needs AVX-512 BF16");
        let pairs = self.k / 2;
        self.run(m, bias, rows, &|block, p, cols, bias, out| {
            // SAFETY: as in `forward_rows`; a row of x is `pairs` u32 pairs of bf16.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                let x = x.as_ptr() as *const u32;
                panel_bf16(x, pairs, block, &panels[p * pairs * NR..(p + 1) * pairs * NR], bias, out, self.n, cols)
            };
        })
    }

    /// Allocates y [m, n] (zeros) and calls `panel(rows, panel index, columns, bias of those
    /// columns, y)` for every (row block, panel) tile, in parallel when the product is big enough.
    #[allow(clippy::type_complexity)]
    fn run(
        &self,
        m: usize,
        bias: Option<&[f32]>,
        rows: Option<&[usize]>,
        panel: &(dyn Fn(&[usize], usize, std::ops::Range<usize>, Option<&[f32]>, OutPtr) + Sync),
    ) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "bias of {} values for {n} outputs", b.len());
        }
        assert!(rows.is_none_or(|r| r.iter().all(|&i| i < m)), "a row index is out of range for {m} rows");
        let mut y = vec![0f32; m * n];
        let all: Vec<usize>;
        let rows = match rows {
            Some(rows) => rows,
            None => {
                all = (0..m).collect();
                &all
            }
        };
        if rows.is_empty() || n == 0 {
            return y;
        }
        let n_panels = n.div_ceil(NR);
        let blocks: Vec<&[usize]> = rows.chunks(ROW_BLOCK).collect();
        let out = OutPtr(y.as_mut_ptr());
        let task = |t: usize| {
            let (rb, p) = (t / n_panels, t % n_panels);
            let cols = p * NR..((p + 1) * NR).min(n);
            panel(blocks[rb], p, cols.clone(), bias.map(|b| &b[cols]), out);
        };
        let tasks = blocks.len() * n_panels;
        if rows.len() * n * k < PARALLEL_MIN_MACS {
            (0..tasks).for_each(task);
        } else {
            // rayon, not the spinning team of the decode kernels: with other processes on the
            // cores a spinning helper that loses its core stalls every product (measured: 5–10×
            // slower single-stream p50 under load), while rayon's sleeping workers degrade gently.
            use rayon::prelude::*;
            (0..tasks).into_par_iter().for_each(task);
        }
        y
    }
}

/// `PackedLinear::forward` on candle tensors: x [..., k] of any float dtype (computed in f32, or
/// in bf16 with f32 sums for a bf16-packed weight; returned in x's dtype), bias [n]; returns [..., n]. With `rows`, only those rows of x (indices
/// into x as [rows, k], ascending) are computed and the others are zeros (see `crate::padding`).
pub(crate) fn forward_tensor(
    w: &PackedLinear,
    x: &candle_core::Tensor,
    bias: Option<&candle_core::Tensor>,
    rows: Option<&[usize]>,
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::{DType, Tensor};
    let dtype = x.dtype();
    let mut shape = x.dims().to_vec();
    match shape.last_mut() {
        Some(last) if *last == w.k => *last = w.n,
        _ => candle_core::bail!("linear: x {:?} does not end in {} features", x.dims(), w.k),
    }
    let bias: Option<Vec<f32>> = bias.map(|b| b.to_dtype(DType::F32)?.flatten_all()?.to_vec1()).transpose()?;
    if bias.as_ref().is_some_and(|b| b.len() != w.n) {
        candle_core::bail!("linear: bias of {} values for {} outputs", bias.map_or(0, |b| b.len()), w.n);
    }
    let m: usize = x.dims()[..x.rank() - 1].iter().product();
    if rows.is_some_and(|rows| rows.iter().any(|&r| r >= m)) {
        candle_core::bail!("linear: row index out of range for {m} rows");
    }
    // f32 activations reach a bf16 weight under bf16 autocast (`CandleExecutable`): rounded here,
    // 16 at a time, rather than by candle's element-by-element cast.
    let f32_into_bf16 = w.is_bf16() && dtype == DType::F32;
    let x = x.to_dtype(if w.is_bf16() && !f32_into_bf16 { DType::BF16 } else { DType::F32 })?.contiguous()?;
    let y = {
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else { candle_core::bail!("linear: not a CPU tensor") };
        let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("linear: not contiguous") };
        match (w.is_bf16(), f32_into_bf16) {
            (true, true) => ROUNDED.with(|scratch| {
                // One buffer per thread, reused: a fresh one per layer was page-faulted in every time.
                let mut scratch = scratch.borrow_mut();
                round_to_bf16_into(&cpu.as_slice::<f32>()?[start..end], &mut scratch);
                Ok::<_, candle_core::Error>(w.forward_rows_bf16(&scratch, m, bias.as_deref(), rows))
            })?,
            (true, false) => w.forward_rows_bf16(&cpu.as_slice::<half::bf16>()?[start..end], m, bias.as_deref(), rows),
            (false, _) => w.forward_rows(&cpu.as_slice::<f32>()?[start..end], m, bias.as_deref(), rows),
        }
    };
    Tensor::from_vec(y, shape, x.device())?.to_dtype(dtype)
}

/// x rounded to bf16, to nearest even as `half::bf16::from_f32` rounds: 16 values per
/// `vcvtneps2bf16` where the CPU has AVX-512 BF16, which also flushes subnormal inputs (below
/// 1.2e-38) to zero.
pub fn round_to_bf16(x: &[f32]) -> Vec<half::bf16> {
    let mut out = Vec::new();
    round_to_bf16_into(x, &mut out);
    out
}

/// As [`round_to_bf16`], into `out` (resized to `x.len()`, its allocation reused).
pub fn round_to_bf16_into(x: &[f32], out: &mut Vec<half::bf16>) {
    out.clear();
    out.resize(x.len(), half::bf16::ZERO);
    #[cfg(target_arch = "x86_64")]
    if available_bf16() {
        // SAFETY: the features were just detected; the slices have the same length.
        unsafe { round_to_bf16_avx512(x, out) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = half::bf16::from_f32(v);
    }
}

thread_local! {
    /// The bf16 copy of a linear layer's f32 input (`forward_tensor`), reused across layers.
    static ROUNDED: std::cell::RefCell<Vec<half::bf16>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round_to_bf16_avx512(x: &[f32], out: &mut [half::bf16]) {
    let blocks = x.len() / 16;
    for b in 0..blocks {
        let v = _mm512_loadu_ps(x.as_ptr().add(b * 16));
        let rounded: __m256bh = _mm512_cvtneps_pbh(v);
        _mm256_storeu_si256(
            out.as_mut_ptr().add(b * 16) as *mut __m256i,
            std::mem::transmute::<__m256bh, __m256i>(rounded),
        );
    }
    for (o, &v) in out[blocks * 16..].iter_mut().zip(&x[blocks * 16..]) {
        *o = half::bf16::from_f32(v);
    }
}

/// `y`'s base pointer, shared by tasks that write disjoint tiles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes its own tile (see `PackedLinear::forward`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// The listed rows of x times one panel, into the same rows of y at columns `cols` (row stride
/// `ldy`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn panel_f32(
    x: &[f32],
    k: usize,
    rows: &[usize],
    panel: &[f32],
    bias: Option<&[f32]>,
    y: OutPtr,
    ldy: usize,
    cols: std::ops::Range<usize>,
) {
    let mut bias_padded = [0f32; NR];
    if let Some(b) = bias {
        bias_padded[..b.len()].copy_from_slice(b);
    }
    let width = cols.len();
    for tile in rows.chunks(MR) {
        let a = |i: usize| x.as_ptr().add(tile[i.min(tile.len() - 1)] * k);
        let c = |i: usize| y.0.add(tile[i.min(tile.len() - 1)] * ldy + cols.start);
        let b = panel.as_ptr();
        match tile.len() {
            8 => tile_f32::<8>(std::array::from_fn(a), k, b, &bias_padded, std::array::from_fn(c), width),
            7 => tile_f32::<7>(std::array::from_fn(a), k, b, &bias_padded, std::array::from_fn(c), width),
            6 => tile_f32::<6>(std::array::from_fn(a), k, b, &bias_padded, std::array::from_fn(c), width),
            5 => tile_f32::<5>(std::array::from_fn(a), k, b, &bias_padded, std::array::from_fn(c), width),
            4 => tile_f32::<4>(std::array::from_fn(a), k, b, &bias_padded, std::array::from_fn(c), width),
            3 => tile_f32::<3>(std::array::from_fn(a), k, b, &bias_padded, std::array::from_fn(c), width),
            2 => tile_f32::<2>(std::array::from_fn(a), k, b, &bias_padded, std::array::from_fn(c), width),
            _ => tile_f32::<1>(std::array::from_fn(a), k, b, &bias_padded, std::array::from_fn(c), width),
        }
    }
}

/// R rows × NR columns: c[r][0..width] = bias + Σ_p a[r][p] · b[p, 0..NR], where a[r] and c[r]
/// point at row r of x and of y.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_f32<const R: usize>(
    a: [*const f32; R],
    k: usize,
    b: *const f32,
    bias: &[f32; NR],
    c: [*mut f32; R],
    width: usize,
) {
    let mut lo = [_mm512_loadu_ps(bias.as_ptr()); R];
    let mut hi = [_mm512_loadu_ps(bias.as_ptr().add(16)); R];
    for p in 0..k {
        let b0 = _mm512_loadu_ps(b.add(p * NR));
        let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
        for r in 0..R {
            let av = _mm512_set1_ps(*a[r].add(p));
            lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
            hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
        }
    }
    let mask = if width >= NR { u32::MAX } else { (1u32 << width) - 1 };
    let (m0, m1) = (mask as u16, (mask >> 16) as u16);
    for r in 0..R {
        _mm512_mask_storeu_ps(c[r], m0, lo[r]);
        _mm512_mask_storeu_ps(c[r].add(16), m1, hi[r]);
    }
}

/// `panel_f32` for bf16: x rows are `pairs` u32 pairs of bf16, the panel `[pairs][NR]` pairs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn panel_bf16(
    x: *const u32,
    pairs: usize,
    rows: &[usize],
    panel: &[u32],
    bias: Option<&[f32]>,
    y: OutPtr,
    ldy: usize,
    cols: std::ops::Range<usize>,
) {
    let mut bias_padded = [0f32; NR];
    if let Some(b) = bias {
        bias_padded[..b.len()].copy_from_slice(b);
    }
    let width = cols.len();
    for tile in rows.chunks(MR) {
        let a = |i: usize| x.add(tile[i] * pairs);
        let c = |i: usize| y.0.add(tile[i] * ldy + cols.start);
        let b = panel.as_ptr();
        let bias = &bias_padded;
        match tile.len() {
            8 => tile_bf16::<8>(std::array::from_fn(a), pairs, b, bias, std::array::from_fn(c), width),
            7 => tile_bf16::<7>(std::array::from_fn(a), pairs, b, bias, std::array::from_fn(c), width),
            6 => tile_bf16::<6>(std::array::from_fn(a), pairs, b, bias, std::array::from_fn(c), width),
            5 => tile_bf16::<5>(std::array::from_fn(a), pairs, b, bias, std::array::from_fn(c), width),
            4 => tile_bf16::<4>(std::array::from_fn(a), pairs, b, bias, std::array::from_fn(c), width),
            3 => tile_bf16::<3>(std::array::from_fn(a), pairs, b, bias, std::array::from_fn(c), width),
            2 => tile_bf16::<2>(std::array::from_fn(a), pairs, b, bias, std::array::from_fn(c), width),
            _ => tile_bf16::<1>(std::array::from_fn(a), pairs, b, bias, std::array::from_fn(c), width),
        }
    }
}

/// R rows × NR columns in bf16: each step broadcasts one pair of x's features and multiplies it
/// with the panel's pairs, both products summed into the f32 accumulators (`vdpbf16ps`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn tile_bf16<const R: usize>(
    a: [*const u32; R],
    pairs: usize,
    b: *const u32,
    bias: &[f32; NR],
    c: [*mut f32; R],
    width: usize,
) {
    let mut lo = [_mm512_loadu_ps(bias.as_ptr()); R];
    let mut hi = [_mm512_loadu_ps(bias.as_ptr().add(16)); R];
    for p in 0..pairs {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR) as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16) as *const _));
        for r in 0..R {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a[r].add(p) as i32));
            lo[r] = _mm512_dpbf16_ps(lo[r], av, b0);
            hi[r] = _mm512_dpbf16_ps(hi[r], av, b1);
        }
    }
    let mask = if width >= NR { u32::MAX } else { (1u32 << width) - 1 };
    let (m0, m1) = (mask as u16, (mask >> 16) as u16);
    for r in 0..R {
        _mm512_mask_storeu_ps(c[r], m0, lo[r]);
        _mm512_mask_storeu_ps(c[r].add(16), m1, hi[r]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i + seed) * 7919) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    #[test]
    fn rounding_to_bf16_matches_half_at_every_length() {
        let mut special = vec![0.0, -0.0, 1.0, f32::MAX, f32::MIN_POSITIVE, 1e-40, f32::INFINITY, -f32::INFINITY];
        // Halfway cases round to even: 1 + 2^-8 is exactly between two bf16 values.
        special.extend([1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -(1.0 + 1.0 / 256.0)]);
        for len in [0, 1, 15, 16, 17, 33, 1000] {
            let mut x = values(len, 4);
            for (v, s) in x.iter_mut().zip(&special) {
                *v = *s;
            }
            let rounded = round_to_bf16(&x);
            assert_eq!(rounded.len(), len);
            for (r, &v) in rounded.iter().zip(&x) {
                // AVX-512 BF16 flushes subnormal inputs to zero; the portable path keeps them.
                let want = half::bf16::from_f32(v);
                let flushed = v.is_subnormal() && *r == half::bf16::from_f32(0.0f32.copysign(v));
                assert!(r.to_bits() == want.to_bits() || flushed, "{v:e} (length {len}): {r} vs {want}");
            }
        }
        let mut reused = vec![half::bf16::ONE; 5];
        round_to_bf16_into(&[2.0, 3.0], &mut reused);
        assert_eq!(reused, [half::bf16::from_f32(2.0), half::bf16::from_f32(3.0)]);
    }

    #[test]
    fn matches_the_f64_product_at_every_edge() {
        if !available() {
            eprintln!("skipped: no AVX-512F on this CPU");
            return;
        }
        // Rows around the tile (8) and row block (64), columns around the panel (32), odd k.
        for (m, n, k) in [(1, 1, 1), (3, 31, 5), (8, 32, 16), (13, 70, 33), (65, 33, 7), (130, 384, 64), (9, 1536, 384)]
        {
            let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
            let packed = PackedLinear::pack(&w, n, k);
            for bias in [None, Some(b.as_slice())] {
                let y = packed.forward(&x, m, bias);
                for i in 0..m {
                    for j in 0..n {
                        let exact: f64 = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum::<f64>()
                            + bias.map_or(0.0, |b| b[j] as f64);
                        let got = y[i * n + j] as f64;
                        assert!(
                            (got - exact).abs() <= 1e-5 * (1.0 + exact.abs()) * (k as f64).sqrt(),
                            "({m},{n},{k}) [{i},{j}]: {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn listed_rows_are_computed_in_place_and_the_rest_are_zero() {
        if !available() {
            return;
        }
        let (m, n, k) = (70, 40, 24);
        let (x, w, b) = (values(m * k, 4), values(n * k, 5), values(n, 6));
        let packed = PackedLinear::pack(&w, n, k);
        let all = packed.forward(&x, m, Some(&b));
        let rows: Vec<usize> = (0..m).filter(|r| r % 3 != 1).collect();
        let some = packed.forward_rows(&x, m, Some(&b), Some(&rows));
        for r in 0..m {
            let (got, full) = (&some[r * n..(r + 1) * n], &all[r * n..(r + 1) * n]);
            if rows.contains(&r) {
                assert_eq!(got, full, "row {r} is computed exactly as without skipping");
            } else {
                assert!(got.iter().all(|&v| v == 0.0), "row {r} is skipped");
            }
        }
    }

    #[test]
    fn bf16_matches_the_f64_product_of_the_rounded_operands() {
        if !available_bf16() {
            eprintln!("skipped: no AVX-512 BF16 on this CPU");
            return;
        }
        let round = |v: &[f32]| -> Vec<half::bf16> { v.iter().map(|&x| half::bf16::from_f32(x)).collect() };
        for (m, n, k) in [(1, 1, 2), (3, 31, 6), (13, 70, 34), (65, 33, 8), (9, 384, 384)] {
            let (x, w, b) = (round(&values(m * k, 7)), values(n * k, 8), values(n, 9));
            let packed = PackedLinear::pack_bf16(&w, n, k);
            let rows: Vec<usize> = (0..m).filter(|r| r % 4 != 2).collect();
            for (bias, rows) in [(None, None), (Some(b.as_slice()), Some(rows.as_slice()))] {
                let y = packed.forward_rows_bf16(&x, m, bias, rows);
                for i in 0..m {
                    for j in 0..n {
                        let got = y[i * n + j] as f64;
                        if rows.is_some_and(|rows| !rows.contains(&i)) {
                            assert_eq!(got, 0.0);
                            continue;
                        }
                        // The products of bf16 values are exact in f32; only the sums round.
                        let exact: f64 = (0..k)
                            .map(|p| x[i * k + p].to_f64() * half::bf16::from_f32(w[j * k + p]).to_f64())
                            .sum::<f64>()
                            + bias.map_or(0.0, |b| b[j] as f64);
                        let bound = 1e-5 * (1.0 + exact.abs()) * (k as f64).sqrt();
                        assert!((got - exact).abs() <= bound, "({m},{n},{k}) [{i},{j}]: {got} vs {exact}");
                    }
                }
            }
        }
    }

    #[test]
    fn empty_products_and_no_features() {
        if !available() {
            return;
        }
        let packed = PackedLinear::pack(&values(4 * 3, 0), 4, 3);
        assert!(packed.forward(&[], 0, None).is_empty());
        // No input features: every row is the bias.
        let bias = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(PackedLinear::pack(&[], 4, 0).forward(&[], 2, Some(&bias)), [bias, bias].concat());
    }
}
