//! Criterion benchmark of choosing the next token from SmolLM2-sized logits (49,152 entries): the
//! cost the chat server pays per sequence per step on top of the decode step (OpenAI's default is
//! temperature 1, so every request samples).
//!
//!     cargo bench --bench sampling

use accelrt::models::{Sampler, SamplingParams};
use criterion::{criterion_group, criterion_main, Criterion};

/// Logits shaped like a language model's: a few likely tokens, a long tail.
fn logits(n: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919) % 1000) as f32 / 100.0) - 12.0 + if i % 4099 == 0 { 8.0 } else { 0.0 }).collect()
}

fn sampling(c: &mut Criterion) {
    let logits = logits(49_152);
    let history: Vec<u32> = (0..64).collect();
    let cases = [
        ("greedy", SamplingParams::greedy()),
        ("temperature_1", SamplingParams { temperature: 1.0, ..SamplingParams::greedy() }),
        ("top_k_40", SamplingParams { temperature: 0.8, top_k: Some(40), ..SamplingParams::greedy() }),
        ("top_p_0.9", SamplingParams { temperature: 0.8, top_p: Some(0.9), ..SamplingParams::greedy() }),
    ];
    let mut group = c.benchmark_group("sample_49152");
    for (name, params) in cases {
        let mut sampler = Sampler::new(params).unwrap();
        group.bench_function(name, |b| b.iter(|| sampler.sample(&logits, &history)));
    }
    group.finish();
}

criterion_group!(benches, sampling);
criterion_main!(benches);
