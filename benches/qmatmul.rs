//! Criterion benchmarks of the CPU quantised matmul kernels at SmolLM2-135M's shapes (hidden 576,
//! FFN 1536, vocabulary 49152), one row (a decode step) and 32 rows (a prefill block), for every
//! kernel this CPU can run (portable scalar, AVX2, AVX-512 VNNI).
//!
//!     cargo bench --bench qmatmul

use accelrt::candle::qmatmul::{best_kernel, matmul, Kernel, QFormat};
use accelrt::core::{quant, QuantType};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect()
}

fn kernels() -> Vec<Kernel> {
    match best_kernel() {
        Kernel::Avx512Vnni => vec![Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni],
        Kernel::Avx2 => vec![Kernel::Scalar, Kernel::Avx2],
        Kernel::Scalar => vec![Kernel::Scalar],
    }
}

fn qmatmul(c: &mut Criterion) {
    let shapes = [
        ("q4_1_ffn_up_1536x576", QuantType::Q4_1, QFormat::Q4_1, 1536, 576),
        ("q4_1_ffn_down_576x1536", QuantType::Q4_1, QFormat::Q4_1, 576, 1536),
        ("q8_0_output_49152x576", QuantType::Q8_0, QFormat::Q8_0, 49152, 576),
    ];
    for (name, qt, format, n, k) in shapes {
        let w = quant::quantize(qt, &values(n * k)).unwrap();
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(w.len() as u64));
        for m in [1usize, 32] {
            let x = values(m * k);
            for kernel in kernels() {
                // The scalar kernel on the 49152-row matrix takes seconds per sample: one row only.
                if kernel == Kernel::Scalar && (m > 1 || n > 4096) {
                    continue;
                }
                group
                    .bench_function(format!("m{m}/{kernel:?}"), |b| b.iter(|| matmul(kernel, format, &w, n, k, &x, m)));
            }
        }
        group.finish();
    }
}

criterion_group!(benches, qmatmul);
criterion_main!(benches);
