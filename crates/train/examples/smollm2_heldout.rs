//! The held-out loss of a causal LM on the Shakespeare corpus, with accelrt's own forward pass:
//! the mean next-token cross-entropy over the first WINDOWS consecutive windows of 128 tokens of
//! `corpus-heldout.txt` (the three held-out plays), defined as the training loss is. Run on the
//! original SmolLM2 it is the "before" of a fine-tune (docs/training.md) and can be compared with
//! PyTorch's number for the same windows (`heldout_before` in the SmolLM2 fixture); on the
//! directory `accelrt train` wrote, it is the "after".
//!
//! ```sh
//! cargo run --release -p accelrt-train --example smollm2_heldout -- [MODEL] [WINDOWS]
//! ```
//! MODEL is a GGUF file or a directory holding one (default: the cached smollm2-135m-instruct);
//! WINDOWS defaults to 64 (the fixture's), `all` takes every whole window. Prints one JSON object.

use accelrt_train::dataset::{self, DataStore, SHAKESPEARE};
use accelrt_train::eval::CausalLmEvaluator;
use accelrt_train::TokenWindows;

const SEQ_LEN: usize = 128;
/// Windows per forward pass (the fine-tune's batch size).
const BATCH: usize = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = match args.next() {
        Some(path) => std::path::PathBuf::from(path),
        None => accelrt_models::ModelStore::from_env().ensure(accelrt_models::lookup("smollm2-135m-instruct")?)?,
    };
    let windows = match args.next().as_deref() {
        None => 64,
        Some("all") => usize::MAX,
        Some(n) => n.parse()?,
    };
    let data = DataStore::from_env().fetch(&SHAKESPEARE)?.join(dataset::CORPUS_HELDOUT);

    let backend = accelrt_candle::CandleBackend::new(&"cpu".parse()?)?;
    let evaluator = CausalLmEvaluator::from_gguf(&model, &backend, &Default::default())?;
    let tokenizer = evaluator.tokenizer().expect("from_gguf loads the tokenizer");
    let corpus = TokenWindows::from_file(&data, SEQ_LEN, accelrt_train::corpus::DEFAULT_MAX_CORPUS_BYTES, |text| {
        tokenizer.encode(text)
    })?;
    let started = std::time::Instant::now();
    let loss = evaluator.loss(&corpus, windows, BATCH)?;
    let report = serde_json::json!({
        "model": model.display().to_string(),
        "data": data.display().to_string(),
        "stream_tokens": corpus.tokens().len(),
        "seq_len": SEQ_LEN,
        "heldout": loss,
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
