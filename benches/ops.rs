//! Criterion benchmarks of single graph ops at MiniLM's shapes (hidden 384, 12 heads of 32, FFN 1536)
//! for a batch of 8 sentences of 32 tokens, on every device available here (`accelrt devices`).
//!
//!     cargo bench --bench ops

use accelrt::core::{DType, GraphBuilder, HostTensor, HostWeights, Op, PrepareOptions, Shape, UnaryOp, ValueId};
use criterion::{criterion_group, criterion_main, Criterion};

const B: usize = 8;
const S: usize = 32;
const H: usize = 384;
const HEADS: usize = 12;
const FFN: usize = 1536;

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect()
}

/// Builds a one-op graph over the given inputs and weights and benchmarks `run` on it.
fn bench_op(
    c: &mut Criterion,
    name: &str,
    inputs: &[(&str, Vec<usize>)],
    weights: &[(&str, Vec<usize>)],
    op: impl Fn(&[ValueId], &[ValueId]) -> Op,
) {
    let mut b = GraphBuilder::new(name);
    let mut host_inputs = Vec::new();
    let ins: Vec<ValueId> = inputs
        .iter()
        .map(|(n, shape)| {
            host_inputs.push((*n, HostTensor::f32(shape.clone(), values(shape.iter().product())).unwrap()));
            b.input(n, DType::F32, Shape::new(shape.iter().copied())).unwrap()
        })
        .collect();
    let mut w = HostWeights::new();
    let ws: Vec<ValueId> = weights
        .iter()
        .map(|(n, shape)| {
            w.insert(*n, HostTensor::f32(shape.clone(), values(shape.iter().product())).unwrap());
            b.weight(n, DType::F32, Shape::new(shape.iter().copied())).unwrap()
        })
        .collect();
    let y = b.add("op", op(&ins, &ws)).unwrap();
    b.output("y", y);
    let graph = b.build().unwrap();
    let feed: Vec<(&str, &HostTensor)> = host_inputs.iter().map(|(n, t)| (*n, t)).collect();
    for device in available_devices() {
        let backend = accelrt::open_backend(&device).unwrap();
        let exe = backend.prepare(&graph, &w, &PrepareOptions::default()).unwrap();
        c.bench_function(&format!("{name}/{device}"), |bench| bench.iter(|| exe.run(&feed).unwrap()));
    }
}

fn available_devices() -> Vec<String> {
    accelrt::list_devices().into_iter().filter(|d| d.available).map(|d| d.device).collect()
}

fn ops(c: &mut Criterion) {
    let x = vec![B, S, H];
    bench_op(
        c,
        "matmul_batched_32x32x32",
        &[("a", vec![B, HEADS, S, 32]), ("b", vec![B, HEADS, 32, S])],
        &[],
        |i, _| Op::MatMul { a: i[0], b: i[1], transpose_b: false },
    );
    bench_op(c, "linear_384x1536", &[("x", x.clone())], &[("w", vec![FFN, H]), ("b", vec![FFN])], |i, w| Op::Linear {
        x: i[0],
        weight: w[0],
        bias: Some(w[1]),
    });
    bench_op(c, "layer_norm_384", &[("x", x.clone())], &[("g", vec![H]), ("b", vec![H])], |i, w| Op::LayerNorm {
        x: i[0],
        gamma: w[0],
        beta: Some(w[1]),
        eps: 1e-12,
    });
    bench_op(c, "gelu_erf_1536", &[("x", vec![B, S, FFN])], &[], |i, _| Op::Unary { op: UnaryOp::Gelu, x: i[0] });
    let heads = vec![B, HEADS, S, H / HEADS];
    bench_op(c, "attention_12x32", &[("q", heads.clone()), ("k", heads.clone()), ("v", heads)], &[], |i, _| {
        Op::Attention {
            q: i[0],
            k: i[1],
            v: i[2],
            mask: None,
            causal: false,
            scale: (32f64).powf(-0.5),
            q_positions: None,
        }
    });
}

criterion_group!(benches, ops);
criterion_main!(benches);
