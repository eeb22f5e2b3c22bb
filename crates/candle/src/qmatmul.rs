//! Quantised matrix products on the CPU for GGUF Q4_1 and Q8_0 weights: y = x · Wᵀ with W kept in
//! its 4- or 8-bit blocks.
//!
//! candle 0.11 has no SIMD dot product for Q4_1 (and its Q8_0 one is compiled in only when the
//! whole build targets AVX), which made SmolLM2 decode about 3× slower than llama.cpp. Like
//! llama.cpp, the activations are quantised to 8-bit blocks of 32 (one scale per block), and each
//! block product is an integer dot product: with AVX-512 VNNI one `vpdpbusd` per 32 weights, with
//! AVX2 `vpmaddubsw` + `vpmaddwd`. The kernel is chosen at run time, so one binary runs anywhere;
//! the portable scalar version is the fallback and the test oracle.

use std::sync::Mutex;

/// The block formats this kernel computes with directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QFormat {
    /// 32 weights: f16 scale d, f16 minimum m, 16 bytes of 4-bit levels q; w = q·d + m.
    Q4_1,
    /// 32 weights: f16 scale d, 32 signed bytes q; w = q·d.
    Q8_0,
}

impl QFormat {
    /// Bytes per block of 32 weights, as GGUF stores them: 20 for Q4_1 (two f16 and 16 bytes of
    /// nibbles), 34 for Q8_0 (one f16 and 32 bytes).
    pub fn block_bytes(self) -> usize {
        match self {
            QFormat::Q4_1 => 20,
            QFormat::Q8_0 => 34,
        }
    }
}

/// 32 activations quantised to signed bytes: x ≈ q·d, with `sum_d` = d·Σq (for Q4_1's minimum).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct ActBlock {
    q: [i8; 32],
    d: f32,
    sum_d: f32,
}

/// Two consecutive activation blocks A, B laid out for the 512-bit Q4_1 kernel: bytes
/// [A0..16, B0..16, A16..32, B16..32] (the order two weight blocks' nibbles unpack into), and
/// [A.d, A.sum_d, B.d, B.sum_d].
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct ActPair {
    q: [i8; 64],
    scales: [f32; 4],
}

fn pair_up(blocks: &[ActBlock]) -> Vec<ActPair> {
    blocks
        .chunks_exact(2)
        .map(|ab| {
            let (a, b) = (&ab[0], &ab[1]);
            let mut q = [0i8; 64];
            q[..16].copy_from_slice(&a.q[..16]);
            q[16..32].copy_from_slice(&b.q[..16]);
            q[32..48].copy_from_slice(&a.q[16..]);
            q[48..].copy_from_slice(&b.q[16..]);
            ActPair { q, scales: [a.d, a.sum_d, b.d, b.sum_d] }
        })
        .collect()
}

fn quantize_row(x: &[f32], out: &mut [ActBlock]) {
    for (block, xs) in out.iter_mut().zip(x.chunks_exact(32)) {
        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
        // `max` skips NaN: a NaN activation would quantise to 0 and vanish, so a broken model
        // would answer as if fine. A NaN scale carries it into the output instead.
        let d = if amax.is_finite() && !xs.iter().any(|v| v.is_nan()) { amax / 127.0 } else { f32::NAN };
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in block.q.iter_mut().zip(xs) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        block.d = d;
        block.sum_d = d * sum as f32;
    }
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dot product of one weight row with one quantised activation row, portable.
fn dot_scalar(format: QFormat, w: &[u8], a: &[ActBlock]) -> f32 {
    let mut acc = 0f32;
    for (wb, ab) in w.chunks_exact(format.block_bytes()).zip(a) {
        match format {
            QFormat::Q4_1 => {
                let (d, m) = (f16_at(wb, 0), f16_at(wb, 2));
                let qs = &wb[4..20];
                let (lo, hi) = ab.q.split_at(16);
                let s: i32 = qs
                    .iter()
                    .zip(lo.iter().zip(hi))
                    .map(|(&q, (&a, &b))| (q & 0xf) as i32 * a as i32 + (q >> 4) as i32 * b as i32)
                    .sum();
                acc += d * ab.d * s as f32 + m * ab.sum_d;
            }
            QFormat::Q8_0 => {
                let d = f16_at(wb, 0);
                let s: i32 = wb[2..34].iter().zip(&ab.q).map(|(&w, &a)| w as i8 as i32 * a as i32).sum();
                acc += d * ab.d * s as f32;
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ActBlock, ActPair, QFormat};
    use std::arch::x86_64::*;

    /// How far ahead of the current block weights are prefetched.
    const PREFETCH_BYTES: usize = 512;

    /// The shared body: `dot32(u, s)` sums products of 32 unsigned by 32 signed bytes into 8 i32s.
    #[inline(always)]
    unsafe fn dot_rows<const R: usize>(
        format: QFormat,
        w: &[u8],
        acts: [&[ActBlock]; R],
        out: &mut [f32; R],
        dot32: impl Fn(__m256i, __m256i) -> __m256i,
    ) {
        let bb = format.block_bytes();
        let blocks = w.len() / bb;
        // Two accumulators per row, alternating by block, so consecutive blocks' FMAs do not wait
        // on each other.
        let mut acc = [[_mm256_setzero_ps(); R]; 2];
        let mut min_acc = [0f32; R];
        let low = _mm_set1_epi8(0x0f);
        for b in 0..blocks {
            let wb = w.as_ptr().add(b * bb);
            // Weights stream from memory once per token; asking for them a few blocks early keeps
            // more loads in flight than the hardware prefetcher alone does.
            _mm_prefetch::<_MM_HINT_T0>(wb.wrapping_add(PREFETCH_BYTES) as *const i8);
            let lane = b & 1;
            // The block's f16 scale (and minimum) as f32, with F16C.
            let scales = _mm_cvtph_ps(_mm_cvtsi32_si128((wb as *const i32).read_unaligned()));
            let d = _mm_cvtss_f32(scales);
            match format {
                QFormat::Q4_1 => {
                    let m = _mm_cvtss_f32(_mm_movehdup_ps(scales));
                    let qs = _mm_loadu_si128(wb.add(4) as *const __m128i);
                    let lo = _mm_and_si128(qs, low);
                    let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), low);
                    let levels = _mm256_set_m128i(hi, lo);
                    for r in 0..R {
                        let a = acts[r].get_unchecked(b);
                        let av = _mm256_load_si256(a.q.as_ptr() as *const __m256i);
                        let s = _mm256_cvtepi32_ps(dot32(levels, av));
                        acc[lane][r] = _mm256_fmadd_ps(s, _mm256_set1_ps(d * a.d), acc[lane][r]);
                        min_acc[r] += m * a.sum_d;
                    }
                }
                QFormat::Q8_0 => {
                    let wv = _mm256_loadu_si256(wb.add(2) as *const __m256i);
                    // u8 × i8 products: |w| times a with w's sign moved onto a.
                    let abs_w = _mm256_sign_epi8(wv, wv);
                    for r in 0..R {
                        let a = acts[r].get_unchecked(b);
                        let av = _mm256_load_si256(a.q.as_ptr() as *const __m256i);
                        let s = _mm256_cvtepi32_ps(dot32(abs_w, _mm256_sign_epi8(av, wv)));
                        acc[lane][r] = _mm256_fmadd_ps(s, _mm256_set1_ps(d * a.d), acc[lane][r]);
                    }
                }
            }
        }
        let acc: [__m256; R] = std::array::from_fn(|r| _mm256_add_ps(acc[0][r], acc[1][r]));
        for r in 0..R {
            let v = acc[r];
            let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            let one = _mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1));
            out[r] = _mm_cvtss_f32(one) + min_acc[r];
        }
    }

    /// Q4_1 with 512-bit VNNI, two blocks per step: the nibbles of blocks A and B unpack into one
    /// 64-byte vector [lo A, lo B, hi A, hi B] that meets an `ActPair` in one `vpdpbusd`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn q4_1_pairs_vnni512<const R: usize>(w: &[u8], acts: [&[ActPair]; R], out: &mut [f32; R]) {
        const BB: usize = 20;
        let pairs = w.len() / (2 * BB);
        let mut acc = [_mm512_setzero_ps(); R];
        let mut min_acc = [_mm_setzero_ps(); R];
        let low = _mm256_set1_epi8(0x0f);
        let spread = _mm512_set_epi32(2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0);
        for p in 0..pairs {
            let wa = w.as_ptr().add(p * 2 * BB);
            let wb = wa.add(BB);
            _mm_prefetch::<_MM_HINT_T0>(wa.wrapping_add(PREFETCH_BYTES) as *const i8);
            // [dA, mA, dB, mB] as f32.
            let header = _mm_insert_epi32::<1>(
                _mm_cvtsi32_si128((wa as *const i32).read_unaligned()),
                (wb as *const i32).read_unaligned(),
            );
            let dm = _mm_cvtph_ps(header);
            let qs = _mm256_inserti128_si256::<1>(
                _mm256_castsi128_si256(_mm_loadu_si128(wa.add(4) as *const __m128i)),
                _mm_loadu_si128(wb.add(4) as *const __m128i),
            );
            let lo = _mm256_and_si256(qs, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(qs), low);
            let levels = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            for r in 0..R {
                let a = acts[r].get_unchecked(p);
                // [dA·aA, mA·ΣA, dB·aB, mB·ΣB]
                let prod = _mm_mul_ps(dm, _mm_load_ps(a.scales.as_ptr()));
                min_acc[r] = _mm_add_ps(min_acc[r], prod);
                let scale = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(prod));
                let av = _mm512_loadu_si512(a.q.as_ptr() as *const __m512i);
                let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), levels, av);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[r]);
            }
        }
        for r in 0..R {
            let mut m = [0f32; 4];
            _mm_storeu_ps(m.as_mut_ptr(), min_acc[r]);
            out[r] = _mm512_reduce_add_ps(acc[r]) + m[1] + m[3];
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    pub unsafe fn dot_vnni<const R: usize>(format: QFormat, w: &[u8], acts: [&[ActBlock]; R], out: &mut [f32; R]) {
        dot_rows(format, w, acts, out, |u, s| _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_avx2<const R: usize>(format: QFormat, w: &[u8], acts: [&[ActBlock]; R], out: &mut [f32; R]) {
        // Pair sums stay within i16: Q4_1 levels ≤ 15, Q8_0 |w| ≤ 127, activations |q| ≤ 127.
        dot_rows(format, w, acts, out, |u, s| _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
    }
}

/// Which dot-product implementation this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust for any CPU; also the oracle the SIMD kernels are tested against.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C: `vpmaddubsw` + `vpmaddwd` per 32 weights.
    Avx2,
    /// x86-64 with AVX2, FMA, F16C and AVX-512 F, VL and VNNI: one `vpdpbusd` per 32 weights.
    Avx512Vnni,
}

/// The fastest kernel this CPU supports.
pub fn best_kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 =
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
        if avx2
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
        {
            return Kernel::Avx512Vnni;
        }
        if avx2 {
            return Kernel::Avx2;
        }
    }
    Kernel::Scalar
}

/// Activation rows computed together per weight row, so each weight block is decoded once for them.
const ROWS: usize = 4;

fn dot_group<const R: usize>(kernel: Kernel, format: QFormat, w: &[u8], acts: [&[ActBlock]; R], out: &mut [f32; R]) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `best_kernel` (or the caller's check) established the CPU features.
        Kernel::Avx512Vnni => unsafe { x86::dot_vnni(format, w, acts, out) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { x86::dot_avx2(format, w, acts, out) },
        _ => {
            for r in 0..R {
                out[r] = dot_scalar(format, w, acts[r]);
            }
        }
    }
}

/// `y[m, n] = x[m, k] · W[n, k]ᵀ`, with W as `n` rows of k/32 blocks of `format`; y is returned
/// row-major. The activations are first quantised to 8-bit blocks of 32, as llama.cpp does, so the
/// result differs from an f32 product by that rounding.
///
/// Panics if the sizes disagree (callers check shapes first) or if `kernel` needs CPU features
/// this machine lacks (use [`best_kernel`]).
pub fn matmul(kernel: Kernel, format: QFormat, w: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    assert!(k.is_multiple_of(32) && w.len() == n * k / 32 * format.block_bytes() && x.len() == m * k);
    #[cfg(target_arch = "x86_64")]
    if kernel != Kernel::Scalar {
        assert!(best_kernel() == kernel || (kernel == Kernel::Avx2 && best_kernel() == Kernel::Avx512Vnni));
    }
    let blocks = k / 32;
    let mut acts = vec![ActBlock { q: [0; 32], d: 0.0, sum_d: 0.0 }; m * blocks];
    for (row, out) in x.chunks_exact(k).zip(acts.chunks_exact_mut(blocks)) {
        quantize_row(row, out);
    }
    let row_bytes = blocks * format.block_bytes();
    let paired = kernel == Kernel::Avx512Vnni && format == QFormat::Q4_1 && blocks.is_multiple_of(2);
    let pairs: Vec<ActPair> = if paired { acts.chunks_exact(blocks).flat_map(pair_up).collect() } else { vec![] };
    let half = blocks / 2;
    // Work is split over weight rows; results come out as [n, m] and are transposed at the end.
    let mut y_t = vec![0f32; n * m];
    let team = crate::team::team();
    let rows_per_task = (n / (4 * team.size())).clamp(16, 256);
    let tasks: Vec<Mutex<&mut [f32]>> = y_t.chunks_mut(rows_per_task * m).map(Mutex::new).collect();
    team.run(tasks.len(), &|task| {
        let mut out = tasks[task].lock().unwrap_or_else(|e| e.into_inner());
        let out: &mut [f32] = &mut out;
        let first = task * rows_per_task;
        for (j, out_row) in out.chunks_exact_mut(m).enumerate() {
            let wr = &w[(first + j) * row_bytes..(first + j + 1) * row_bytes];
            let act = |i: usize| &acts[i * blocks..(i + 1) * blocks];
            #[cfg(target_arch = "x86_64")]
            if paired {
                let pair = |i: usize| &pairs[i * half..(i + 1) * half];
                let mut i = 0;
                // SAFETY: `paired` implies the AVX-512 VNNI kernel was detected.
                unsafe {
                    while i + ROWS <= m {
                        let mut o = [0f32; ROWS];
                        x86::q4_1_pairs_vnni512(wr, [pair(i), pair(i + 1), pair(i + 2), pair(i + 3)], &mut o);
                        out_row[i..i + ROWS].copy_from_slice(&o);
                        i += ROWS;
                    }
                    while i < m {
                        let mut o = [0f32; 1];
                        x86::q4_1_pairs_vnni512(wr, [pair(i)], &mut o);
                        out_row[i] = o[0];
                        i += 1;
                    }
                }
                continue;
            }
            let mut i = 0;
            while i + ROWS <= m {
                let mut o = [0f32; ROWS];
                dot_group(kernel, format, wr, [act(i), act(i + 1), act(i + 2), act(i + 3)], &mut o);
                out_row[i..i + ROWS].copy_from_slice(&o);
                i += ROWS;
            }
            while i < m {
                let mut o = [0f32; 1];
                dot_group(kernel, format, wr, [act(i)], &mut o);
                out_row[i] = o[0];
                i += 1;
            }
        }
    });
    drop(tasks);
    if m == 1 {
        return y_t;
    }
    let mut y = vec![0f32; m * n];
    for j in 0..n {
        for i in 0..m {
            y[i * n + j] = y_t[j * m + i];
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use accelrt_core::quant::{dequantize, quantize};
    use accelrt_core::QuantType;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every kernel this CPU has agrees with the dequantised product within the activation
    /// quantisation error (8-bit: ≈ 0.4 % of the row's magnitude).
    #[test]
    fn kernels_match_dequantised_product() {
        // k = 96 is an odd number of blocks (per-block path), 128 an even one (block pairs).
        for (n, k) in [(37, 96), (19, 128)] {
            for (qt, format) in [(QuantType::Q4_1, QFormat::Q4_1), (QuantType::Q8_0, QFormat::Q8_0)] {
                let w = quantize(qt, &data(n * k, 1)).unwrap();
                let wf = dequantize(qt, &w).unwrap();
                for m in [1, 3, 4, 9] {
                    let x = data(m * k, m as u32 + 7);
                    let mut kernels = vec![Kernel::Scalar];
                    if matches!(best_kernel(), Kernel::Avx2 | Kernel::Avx512Vnni) {
                        kernels.push(Kernel::Avx2);
                    }
                    if best_kernel() == Kernel::Avx512Vnni {
                        kernels.push(Kernel::Avx512Vnni);
                    }
                    let scalar = matmul(Kernel::Scalar, format, &w, n, k, &x, m);
                    for kernel in kernels {
                        let y = matmul(kernel, format, &w, n, k, &x, m);
                        for i in 0..m {
                            for j in 0..n {
                                let exact: f32 = (0..k).map(|c| x[i * k + c] * wf[j * k + c]).sum();
                                let scale: f32 = (0..k).map(|c| (x[i * k + c] * wf[j * k + c]).abs()).sum();
                                let got = y[i * n + j];
                                assert!(
                                    (got - exact).abs() <= 0.01 * scale + 1e-5,
                                    "{format:?} {kernel:?} m={m} [{i},{j}]: {got} vs {exact}"
                                );
                                // SIMD and scalar compute the same integer sums; only f32 summation order differs.
                                assert!((got - scalar[i * n + j]).abs() <= 1e-4 * scale + 1e-6, "{kernel:?} vs scalar");
                            }
                        }
                    }
                }
            }
        }
    }
}
