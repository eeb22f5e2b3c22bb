//! Seeded random corruption of a small valid GGUF model and a small valid BERT model directory:
//! truncations, byte flips, and size, count, type, dim and offset fields set to extremes (0,
//! u32::MAX, u64::MAX, 2^40, …). Each mutated model is loaded through the normal loading API
//! (file, config, tokenizer, graph, weights prepared on the CPU backend) and, when that succeeds,
//! used once. Every case must end in a typed error or a working model: never a panic, never an
//! abort, never an allocation past the 4 GiB address-space cap the cases run under.
//!
//! A failure prints the case (seed, number, mutation); the last "case" line of the child's output
//! names the one that killed it.

mod common;

use accelrt_core::{PrepareOptions, WeightSource};
use accelrt_models::gguf::GgufFile;
use accelrt_models::{ChatMessage, ModelError, SafetensorsWeights, SamplingParams, SentenceEmbedder, TextGenerator};
use common::{Gguf, Rng};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

const SEED: u64 = 0x5EED_0FC0DE;
const CASES: usize = 500;

/// Values a corrupt size field is set to: the edges of every width, and numbers a careless reader
/// would allocate or loop on.
const EXTREMES: [u64; 12] =
    [0, 1, 2, 31, 255, 1 << 31, u32::MAX as u64, 1 << 32, 1 << 40, i64::MAX as u64, u64::MAX - 1, u64::MAX];

/// Number texts a corrupt JSON field is set to.
const EXTREME_NUMBERS: [&str; 11] = [
    "0",
    "1",
    "-1",
    "2.5",
    "4294967295",
    "4294967296",
    "1099511627776",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "99999999999999999999999999",
];

/// What the cases came to; a panic is a failure, and so is a run where nothing loaded or nothing
/// failed (then the mutations are not testing what they should).
#[derive(Default)]
struct Tally {
    loaded: usize,
    errors: BTreeMap<&'static str, usize>,
    panics: Vec<String>,
}

impl Tally {
    fn record(&mut self, case: &str, outcome: std::thread::Result<Result<(), ModelError>>) {
        match outcome {
            Ok(Ok(())) => self.loaded += 1,
            Ok(Err(e)) => *self.errors.entry(kind(&e)).or_default() += 1,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.panics.push(format!("{case}: panicked: {message}"));
            }
        }
    }

    fn check(&self, what: &str) {
        println!(
            "{what}: {CASES} cases, {} loaded, errors {:?}, {} panics",
            self.loaded,
            self.errors,
            self.panics.len()
        );
        assert!(self.panics.is_empty(), "{what}: panics:\n{}", self.panics.join("\n"));
        let errors: usize = self.errors.values().sum();
        assert!(self.loaded > 0 && errors > CASES / 4, "{what}: {} loaded, {errors} errors", self.loaded);
    }
}

fn kind(e: &ModelError) -> &'static str {
    match e {
        ModelError::Config { .. } => "config",
        ModelError::Safetensors { .. } => "safetensors",
        ModelError::Tokenizer(_) => "tokenizer",
        ModelError::Io { .. } => "io",
        ModelError::InvalidInput(_) => "invalid input",
        ModelError::Core(_) => "core",
        ModelError::NonFinite { .. } => "non-finite",
        _ => "other",
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF

/// One mutation of `g`, and what it was.
fn mutate_gguf(g: &Gguf, rng: &mut Rng) -> (Vec<u8>, String) {
    let mut b = g.bytes.clone();
    let header_end = g.fields.iter().map(|f| f.at + f.width).max().unwrap();
    let mut what = Vec::new();
    for round in 0..2 {
        // A second mutation now and then, e.g. a count set to an extreme and a truncation.
        if round == 1 && rng.below(6) != 0 {
            break;
        }
        match rng.below(6) {
            0 => {
                let len = rng.below(b.len());
                b.truncate(len);
                what.push(format!("truncated to {len}"));
            }
            1..=3 => {
                let f = g.fields[rng.below(g.fields.len())];
                if f.at + f.width > b.len() {
                    continue;
                }
                let old = if f.width == 4 {
                    u32::from_le_bytes(b[f.at..f.at + 4].try_into().unwrap()) as u64
                } else {
                    u64::from_le_bytes(b[f.at..f.at + 8].try_into().unwrap())
                };
                let value = match rng.below(4) {
                    0 => old.wrapping_add(1 + rng.below(64) as u64),
                    1 => old.wrapping_sub(1),
                    _ => EXTREMES[rng.below(EXTREMES.len())],
                };
                b[f.at..f.at + f.width].copy_from_slice(&value.to_le_bytes()[..f.width]);
                what.push(format!("field at {} ({} bytes) {old} -> {value}", f.at, f.width));
            }
            4 => {
                let n = 1 + rng.below(4);
                for _ in 0..n {
                    let at = rng.below(header_end.min(b.len()).max(1));
                    if at < b.len() {
                        b[at] = rng.next() as u8;
                    }
                }
                what.push(format!("{n} header bytes changed"));
            }
            _ => {
                // Anywhere, tensor data included: these often load, with other weights.
                let at = rng.below(b.len().max(1));
                if at < b.len() {
                    b[at] ^= 1 << rng.below(8);
                }
                what.push(format!("bit flipped at {at}"));
            }
        }
    }
    (b, what.join(", "))
}

/// Loads the model through the normal API and, if it loads, checks that its tensors are what
/// they claim and uses it: a chat prompt through the template, and two greedy tokens.
fn load_and_use_llama(path: &Path) -> Result<(), ModelError> {
    let backend = accelrt_candle::CandleBackend::cpu();
    let g = TextGenerator::load(path, &backend, &PrepareOptions::default(), 16)?;
    let file = GgufFile::open(path)?;
    check_tensor_bytes(&file, file.tensors().keys().cloned());
    let prompt = g.chat_prompt(&[ChatMessage::new("user", "ab cd")])?;
    g.generate(&prompt, &SamplingParams::greedy(), 2, |_| {})?;
    Ok(())
}

/// A file that loads must be a correct one: each tensor's bytes are exactly its dtype × shape, and
/// no two tensors share bytes (a wrong type or offset would otherwise read a neighbour's weights
/// and load "successfully").
fn check_tensor_bytes(source: &dyn WeightSource, names: impl Iterator<Item = String>) {
    let mut ranges = Vec::new();
    for name in names {
        // Tensors of types accelrt cannot run are refused by `get`, and never read.
        let Ok(view) = source.get(&name) else { continue };
        let elements = view.shape.iter().product::<usize>();
        assert_eq!(view.dtype.storage_bytes(elements), Some(view.bytes.len()), "`{name}`: size is not dtype × shape");
        let start = view.bytes.as_ptr() as usize;
        ranges.push((start, start + view.bytes.len(), name));
    }
    ranges.retain(|(start, end, _)| start < end);
    ranges.sort();
    for pair in ranges.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "the bytes of `{}` and `{}` overlap", pair[0].2, pair[1].2);
    }
}

#[test]
fn mutated_gguf_models_load_or_fail_cleanly() {
    if common::in_capped_child("mutated_gguf_models_load_or_fail_cleanly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    let base = common::llama_gguf();
    std::fs::write(&path, &base.bytes).unwrap();
    load_and_use_llama(&path).expect("the unmutated model loads and generates");

    let mut rng = Rng::new(SEED);
    let mut tally = Tally::default();
    for case in 0..CASES {
        let (bytes, what) = mutate_gguf(&base, &mut rng);
        let case = format!("gguf seed {SEED:#x} case {case}: {what}");
        eprintln!("{case}");
        std::fs::write(&path, &bytes).unwrap();
        tally.record(&case, catch_unwind(AssertUnwindSafe(|| load_and_use_llama(&path))));
    }
    tally.check("gguf");
}

// ---------------------------------------------------------------------------------------------
// BERT (safetensors)

/// The byte ranges of the numbers in `text` (digits, with a leading minus, a fraction, an exponent).
fn numbers(text: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i].is_ascii_digit() && (i == 0 || !text[i - 1].is_ascii_alphanumeric() && text[i - 1] != b'_') {
            let start = if i > 0 && text[i - 1] == b'-' { i - 1 } else { i };
            let mut end = i;
            while end < text.len() && (text[end].is_ascii_digit() || b".eE-+".contains(&text[end])) {
                end += 1;
            }
            out.push((start, end));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// `text` with one of its numbers replaced by an extreme one, and what was done.
fn replace_number(text: &[u8], rng: &mut Rng) -> (Vec<u8>, String) {
    let found = numbers(text);
    let (start, end) = found[rng.below(found.len())];
    let new = EXTREME_NUMBERS[rng.below(EXTREME_NUMBERS.len())];
    let mut out = text[..start].to_vec();
    out.extend(new.as_bytes());
    out.extend(&text[end..]);
    let old = String::from_utf8_lossy(&text[start..end]).to_string();
    (out, format!("number at {start} {old} -> {new}"))
}

/// One mutation of the model directory's config.json or model.safetensors.
fn mutate_bert(config: &[u8], weights: &[u8], rng: &mut Rng) -> (Vec<u8>, Vec<u8>, String) {
    let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header = &weights[8..8 + header_len];
    let data = &weights[8 + header_len..];
    let mut w = weights.to_vec();
    let what = match rng.below(6) {
        0 => {
            let len = rng.below(w.len());
            w.truncate(len);
            format!("safetensors truncated to {len}")
        }
        1 => {
            let value = EXTREMES[rng.below(EXTREMES.len())];
            w[..8].copy_from_slice(&value.to_le_bytes());
            format!("safetensors header length -> {value}")
        }
        2 => {
            let n = 1 + rng.below(3);
            for _ in 0..n {
                let at = 8 + rng.below(header_len);
                w[at] = rng.next() as u8;
            }
            format!("{n} safetensors header bytes changed")
        }
        3 => {
            // A shape or offset set to an extreme, with the header length kept consistent.
            let (new_header, what) = replace_number(header, rng);
            w = (new_header.len() as u64).to_le_bytes().to_vec();
            w.extend(&new_header);
            w.extend(data);
            format!("safetensors {what}")
        }
        4 => {
            let (new_config, what) = replace_number(config, rng);
            return (new_config, w, format!("config.json {what}"));
        }
        _ => {
            let at = rng.below(w.len());
            w[at] ^= 1 << rng.below(8);
            format!("safetensors bit flipped at {at}")
        }
    };
    (config.to_vec(), w, what)
}

fn load_and_use_bert(dir: &Path) -> Result<(), ModelError> {
    let backend = accelrt_candle::CandleBackend::cpu();
    let e = SentenceEmbedder::load(dir, &backend, &PrepareOptions::default())?;
    let weights = SafetensorsWeights::open(&dir.join("model.safetensors"))?;
    check_tensor_bytes(&weights, weights.names().into_iter());
    e.embed(&["a b c", "h"])?;
    Ok(())
}

#[test]
fn mutated_bert_models_load_or_fail_cleanly() {
    if common::in_capped_child("mutated_bert_models_load_or_fail_cleanly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    common::write_bert_dir(dir.path());
    load_and_use_bert(dir.path()).expect("the unmutated model loads and embeds");
    let config = std::fs::read(dir.path().join("config.json")).unwrap();
    let weights = std::fs::read(dir.path().join("model.safetensors")).unwrap();

    let mut rng = Rng::new(SEED);
    let mut tally = Tally::default();
    for case in 0..CASES {
        let (c, w, what) = mutate_bert(&config, &weights, &mut rng);
        let case = format!("bert seed {SEED:#x} case {case}: {what}");
        eprintln!("{case}");
        std::fs::write(dir.path().join("config.json"), &c).unwrap();
        std::fs::write(dir.path().join("model.safetensors"), &w).unwrap();
        tally.record(&case, catch_unwind(AssertUnwindSafe(|| load_and_use_bert(dir.path()))));
    }
    tally.check("bert");
}
