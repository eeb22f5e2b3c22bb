//! The held-out measures of an embedding model on the Shakespeare pairs, with accelrt's own
//! forward pass: retrieval of each held-out anchor's reply among all 939 held-out replies, and
//! the MNRL loss over the held-out pairs in file-order batches. Run on the original model it is
//! the "before" of a fine-tune (docs/training.md); on a fine-tuned directory, the "after".
//!
//! ```sh
//! cargo run --release -p accelrt-train --example minilm_heldout -- [MODEL_DIR] [BATCH]
//! ```
//! MODEL_DIR defaults to the cached all-minilm-l6-v2, BATCH to 8. Prints one JSON object.

use accelrt_train::dataset::{self, DataStore, SHAKESPEARE};
use accelrt_train::{eval, Order, PairsFile, Sampler};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model_dir = match args.next() {
        Some(dir) => std::path::PathBuf::from(dir),
        None => accelrt_models::ModelStore::from_env().ensure(accelrt_models::lookup("all-minilm-l6-v2")?)?,
    };
    let batch: usize = args.next().map(|b| b.parse()).transpose()?.unwrap_or(8);
    let data = DataStore::from_env().fetch(&SHAKESPEARE)?;
    let mut pairs = PairsFile::open(data.join(dataset::PAIRS_HELDOUT))?;
    let all = pairs.batch(&(0..pairs.len()).collect::<Vec<_>>())?;

    let backend = accelrt_candle::CandleBackend::new(&"cpu".parse()?)?;
    let embedder = accelrt_models::SentenceEmbedder::load(&model_dir, &backend, &Default::default())?;
    let started = std::time::Instant::now();
    let embed = |texts: Vec<&str>| -> Result<Vec<Vec<f32>>, accelrt_models::ModelError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(64) {
            out.extend(embedder.embed(chunk)?);
        }
        Ok(out)
    };
    let anchors = embed(all.iter().map(|p| p.anchor.as_str()).collect())?;
    let positives = embed(all.iter().map(|p| p.positive.as_str()).collect())?;
    let retrieval = eval::retrieval(&anchors, &positives)?;

    let mut sampler = Sampler::new(all.len(), batch, Order::FileOrder)?;
    let batches = sampler.batches_per_epoch();
    let mut loss = 0.0;
    for _ in 0..batches {
        let idx = sampler.next_batch();
        let a: Vec<Vec<f32>> = idx.iter().map(|&i| anchors[i].clone()).collect();
        let p: Vec<Vec<f32>> = idx.iter().map(|&i| positives[i].clone()).collect();
        loss += eval::mnrl_loss(&a, &p, 20.0)?;
    }
    let report = serde_json::json!({
        "model": model_dir.display().to_string(),
        "heldout_pairs": all.len(),
        "retrieval": retrieval,
        "mnrl_loss": { "batch_size": batch, "batches": batches, "mean": loss / batches as f64 },
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
