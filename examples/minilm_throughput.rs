//! all-MiniLM-L6-v2 sentences/s on the CPU: accelrt's graph path side by side with
//! candle-transformers' own `BertModel` (plus the same mean pooling and normalisation), on the same
//! pre-tokenized batches of benches/data/sentences.txt, in the same process, passes interleaved.
//!
//!     cargo run --release --example minilm_throughput -- [--batch-sizes 1,8,32] [--seconds 5]

use accelrt::models::{registry, ModelStore, SentenceEmbedder, TokenBatch};
use accelrt::{HostTensor, PrepareOptions};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use clap::Parser;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Batch sizes to measure
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 32])]
    batch_sizes: Vec<usize>,
    /// Measuring time per path and batch size
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Text file, one sentence per line
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/data/sentences.txt"))]
    texts: String,
}

/// candle-transformers' BERT with the sentence-transformers head written in candle ops.
struct CandleBert {
    model: BertModel,
}

impl CandleBert {
    fn embed(&self, batch: &TokenBatch) -> Result<Tensor> {
        let t = |h: &HostTensor| -> Result<Tensor> {
            let ids = h.to_i64_vec().expect("ids are integers");
            let ids: Vec<u32> = ids.into_iter().map(|x| x as u32).collect();
            Ok(Tensor::from_vec(ids, h.shape(), &Device::Cpu)?)
        };
        let (ids, mask, types) = (t(&batch.input_ids)?, t(&batch.attention_mask)?, t(&batch.token_type_ids)?);
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&m)?.sum(1)?;
        let pooled = summed.broadcast_div(&m.sum(1)?.clamp(1e-9, f64::INFINITY)?)?;
        let norm = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
        Ok(pooled.broadcast_div(&norm)?)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.texts).with_context(|| args.texts.clone())?;
    let texts: Vec<&str> = text.lines().collect();
    let dir = ModelStore::from_env().ensure(&registry::ALL_MINILM_L6_V2)?;

    let backend = accelrt::open_backend("cpu")?;
    let ours = SentenceEmbedder::load(&dir, backend.as_ref(), &PrepareOptions::default())?;
    let config: Config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &Device::Cpu)? };
    let theirs = CandleBert { model: BertModel::load(vb, &config)? };

    println!("{} sentences, {} tokens; {} threads", texts.len(), ours.tokenize(&texts)?.tokens, rayon_threads());
    println!("| batch | accelrt graph (sent/s) | candle-transformers BertModel (sent/s) | accelrt / candle |");
    println!("|---|---|---|---|");
    for &bs in &args.batch_sizes {
        let batches: Vec<TokenBatch> = texts.chunks(bs).map(|c| ours.tokenize(c)).collect::<Result<_, _>>()?;
        // Both paths must compute the same thing before their speed is compared.
        for b in &batches {
            let a = ours.run(b)?;
            let c = theirs.embed(b)?.to_vec2::<f32>()?;
            let diff = a.iter().flatten().zip(c.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            anyhow::ensure!(diff < 1e-4, "the two paths disagree by {diff}");
        }
        let (mut t_ours, mut t_theirs) = (Vec::new(), Vec::new());
        let start = Instant::now();
        // Warm-up pass each, then alternate passes so both see the same machine state.
        for b in &batches {
            ours.run(b)?;
            theirs.embed(b)?;
        }
        while start.elapsed().as_secs_f64() < 2.0 * args.seconds || t_ours.len() < 5 {
            let t = Instant::now();
            for b in &batches {
                ours.run(b)?;
            }
            t_ours.push(t.elapsed());
            let t = Instant::now();
            for b in &batches {
                theirs.embed(b)?.to_vec2::<f32>()?;
            }
            t_theirs.push(t.elapsed());
        }
        let rate = |d: Duration| texts.len() as f64 / d.as_secs_f64();
        let (a, c) = (rate(median(t_ours)), rate(median(t_theirs)));
        println!("| {bs} | {a:.1} | {c:.1} | {:.2} |", a / c);
    }
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
