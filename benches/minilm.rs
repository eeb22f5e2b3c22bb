//! Criterion benchmark of the whole all-MiniLM-L6-v2 forward (graph run incl. pooling, on
//! pre-tokenized batches) at batch 1 and 32, on every device available here.
//!
//!     cargo bench --bench minilm

use accelrt::models::{registry, ModelStore, SentenceEmbedder};
use accelrt::PrepareOptions;
use criterion::{criterion_group, criterion_main, Criterion};

fn minilm(c: &mut Criterion) {
    let dir = ModelStore::from_env().ensure(&registry::ALL_MINILM_L6_V2).expect("all-MiniLM-L6-v2 is needed");
    let texts: Vec<&str> = include_str!("data/sentences.txt").lines().collect();
    for device in accelrt::list_devices().into_iter().filter(|d| d.available).map(|d| d.device) {
        let backend = accelrt::open_backend(&device).unwrap();
        let model = SentenceEmbedder::load(&dir, backend.as_ref(), &PrepareOptions::default()).unwrap();
        for batch in [1usize, 32] {
            let tokens = model.tokenize(&texts[..batch]).unwrap();
            c.bench_function(&format!("minilm_forward/b{batch}/{device}"), |b| b.iter(|| model.run(&tokens).unwrap()));
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = minilm
}
criterion_main!(benches);
