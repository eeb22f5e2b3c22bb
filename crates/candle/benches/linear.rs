//! Criterion: a linear layer at MiniLM's shapes, candle's matmul (the weight stored transposed,
//! [in, out], as the executable keeps it, plus a broadcast bias add) beside the packed kernel
//! (`accelrt_candle::linear`), in f32 and in bf16 (`vdpbf16ps`, where the CPU has AVX-512 BF16).
//! 22 rows is one average sentence of the built-in set; 704 is a
//! batch of 32 such sentences.
//!
//!     cargo bench -p accelrt-candle --bench linear

use accelrt_candle::linear::{available, available_bf16, PackedLinear};
use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| (((i + seed) * 7919) % 1000) as f32 / 500.0 - 1.0).collect()
}

fn linear(c: &mut Criterion) {
    let pool = accelrt_candle::kernels::pool();
    for (m, k, n) in [(22, 384, 384), (22, 384, 1536), (22, 1536, 384), (704, 384, 1536), (704, 1536, 384)] {
        let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
        let xt = Tensor::from_slice(&x, (m, k), &Device::Cpu).unwrap();
        let wt = Tensor::from_slice(&w, (n, k), &Device::Cpu).unwrap().t().unwrap().contiguous().unwrap();
        let bt = Tensor::from_slice(&b, n, &Device::Cpu).unwrap();
        // Both run inside the pool, as a graph run does.
        c.bench_function(&format!("linear/{m}x{k}x{n}/candle"), |bench| {
            bench.iter(|| pool.install(|| xt.matmul(&wt).unwrap().broadcast_add(&bt).unwrap()))
        });
        if available() {
            let packed = PackedLinear::pack(&w, n, k);
            c.bench_function(&format!("linear/{m}x{k}x{n}/packed"), |bench| {
                bench.iter(|| pool.install(|| packed.forward(&x, m, Some(&b))))
            });
        }
        if available_bf16() {
            let (xb, wb, bb) = (
                xt.to_dtype(DType::BF16).unwrap(),
                wt.to_dtype(DType::BF16).unwrap(),
                bt.to_dtype(DType::BF16).unwrap(),
            );
            c.bench_function(&format!("linear/{m}x{k}x{n}/candle-bf16"), |bench| {
                bench.iter(|| pool.install(|| xb.matmul(&wb).unwrap().broadcast_add(&bb).unwrap()))
            });
            let packed = PackedLinear::pack_bf16(&w, n, k);
            let x16: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
            c.bench_function(&format!("linear/{m}x{k}x{n}/packed-bf16"), |bench| {
                bench.iter(|| pool.install(|| packed.forward_rows_bf16(&x16, m, Some(&b), None)))
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = linear
}
criterion_main!(benches);
