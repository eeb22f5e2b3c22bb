//! Criterion: scaled dot-product attention in f32, candle's composition (repeat the KV heads,
//! q·kᵀ, scale, add the mask, softmax, ·v: what `Op::Attention` runs for long query blocks) beside
//! the direct row kernel (`accelrt_candle::kernels::attention_f32`, with the copies in and out of
//! candle tensors that the executable makes). The shapes are MiniLM's (12 heads of 32) at one
//! sentence, a batch of 32 and longer texts, and SmolLM2's prefill (9 query heads over 3 KV heads
//! of 64, causal). These numbers choose which query blocks take the direct kernel (`ops.rs`).
//!
//!     cargo bench -p accelrt-candle --bench attention

use accelrt_candle::kernels::{attention_f32, pool, AttentionShape};
use candle_core::{Device, Tensor, D};
use criterion::{criterion_group, criterion_main, Criterion};

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| (((i + seed) * 7919) % 1000) as f32 / 500.0 - 1.0).collect()
}

/// The additive mask `[rows, 1, q_len, kv_len]`: causal (bottom-right aligned) or the last `pad`
/// keys of every row hidden.
fn bias(rows: usize, q_len: usize, kv_len: usize, causal: bool, pad: usize) -> Tensor {
    let mut b = vec![0f32; rows * q_len * kv_len];
    for r in 0..rows {
        for i in 0..q_len {
            for j in 0..kv_len {
                let hidden = if causal { j > kv_len - q_len + i } else { j >= kv_len - pad };
                if hidden {
                    b[(r * q_len + i) * kv_len + j] = f32::NEG_INFINITY;
                }
            }
        }
    }
    Tensor::from_vec(b, (rows, 1, q_len, kv_len), &Device::Cpu).unwrap()
}

fn repeat_kv(x: &Tensor, groups: usize) -> Tensor {
    if groups == 1 {
        return x.clone();
    }
    let (b, h, t, d) = x.dims4().unwrap();
    x.unsqueeze(2).unwrap().expand((b, h, groups, t, d)).unwrap().reshape((b, h * groups, t, d)).unwrap()
}

fn attention(c: &mut Criterion) {
    let pool = pool();
    // (name, batch, q heads, kv heads, sequence, head size, causal, padded keys per row)
    let cases = [
        ("minilm-b1-s22", 1, 12, 12, 22, 32, false, 0),
        ("minilm-b32-s32", 32, 12, 12, 32, 32, false, 8),
        ("minilm-b8-s128", 8, 12, 12, 128, 32, false, 32),
        ("minilm-b4-s256", 4, 12, 12, 256, 32, false, 64),
        ("smollm2-s64", 1, 9, 3, 64, 64, true, 0),
        ("smollm2-s256", 1, 9, 3, 256, 64, true, 0),
    ];
    for (name, batch, hq, hkv, s, d, causal, pad) in cases {
        let q = Tensor::from_vec(values(batch * hq * s * d, 1), (batch, hq, s, d), &Device::Cpu).unwrap();
        let k = Tensor::from_vec(values(batch * hkv * s * d, 2), (batch, hkv, s, d), &Device::Cpu).unwrap();
        let v = Tensor::from_vec(values(batch * hkv * s * d, 3), (batch, hkv, s, d), &Device::Cpu).unwrap();
        let rows = if causal { 1 } else { batch };
        let mask = bias(rows, s, s, causal, pad);
        let scale = (d as f64).powf(-0.5);
        c.bench_function(&format!("attention/{name}/candle"), |bench| {
            bench.iter(|| {
                pool.install(|| {
                    let (k, v) = (repeat_kv(&k, hq / hkv), repeat_kv(&v, hq / hkv));
                    let scores = q.contiguous().unwrap().matmul(&k.contiguous().unwrap().t().unwrap()).unwrap();
                    let scores = scores.affine(scale, 0.0).unwrap().broadcast_add(&mask).unwrap();
                    candle_nn::ops::softmax(&scores, D::Minus1).unwrap().matmul(&v.contiguous().unwrap()).unwrap()
                })
            })
        });
        let shape = AttentionShape { batch, q_heads: hq, q_len: s, head_dim: d, kv_heads: hkv, kv_len: s, v_dim: d };
        c.bench_function(&format!("attention/{name}/direct"), |bench| {
            bench.iter(|| {
                pool.install(|| {
                    let flat = |x: &Tensor| -> Vec<f32> { x.flatten_all().unwrap().to_vec1().unwrap() };
                    let m = flat(&mask);
                    let out = attention_f32(&flat(&q), &flat(&k), &flat(&v), Some((&m, rows)), shape, scale as f32);
                    Tensor::from_vec(out, (batch, hq, s, d), &Device::Cpu).unwrap()
                })
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = attention
}
criterion_main!(benches);
