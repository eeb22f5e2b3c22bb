//! The fuzz targets' bodies, kept in a library so the seed generator and the targets share them.
//! Each body may return early on any error: the fuzzer is looking for panics, aborts, hangs and
//! allocations past `-rss_limit_mb`, which are all bugs whatever the input.

use accelrt_core::WeightSource;
use accelrt_models::bert::BertConfig;
use accelrt_models::gguf::GgufFile;
use accelrt_models::llama::{self, LlamaConfig};
use accelrt_models::{ChatMessage, ChatTokenizer, ModelError, SafetensorsWeights};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use std::path::Path;

/// The synthetic-model writers of the models crate's tests (GGUF writer, tiny Llama, tiny BERT).
#[path = "../../models/tests/common/mod.rs"]
pub mod common;

pub fn gguf(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()) else { return };
    for name in file.tensors().keys() {
        if let Ok(view) = file.get(name) {
            let _ = view.to_host();
        }
    }
    if let Ok(cfg) = LlamaConfig::from_gguf(&file) {
        let dtype_of = |name: &str| -> accelrt_models::Result<_> {
            let info = file.tensor(name).ok_or_else(|| ModelError::InvalidInput(format!("no `{name}`")))?;
            info.dtype().map_err(ModelError::InvalidInput)
        };
        let _ = llama::build_graph(&cfg, 4, &dtype_of);
    }
    // The tokenizer is built from the metadata (its use is the `chat_tokenizer` target's work).
    let _ = ChatTokenizer::from_gguf(&file);
}

pub fn safetensors(data: &[u8]) {
    let Ok(weights) = SafetensorsWeights::from_bytes(Path::new("fuzz.safetensors"), data.to_vec()) else { return };
    for name in weights.names() {
        if let Ok(view) = weights.get(&name) {
            let _ = view.to_host();
        }
    }
    // A BERT config sized by the word embeddings (when they are a matrix), checked against the file.
    let (vocab_size, hidden_size) = match weights.shape("embeddings.word_embeddings.weight") {
        Some(&[v, h]) => (v, h),
        _ => (12, 8),
    };
    let cfg = BertConfig {
        vocab_size,
        hidden_size,
        num_hidden_layers: 2,
        num_attention_heads: 1,
        intermediate_size: 16,
        hidden_act: "gelu".into(),
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        position_embedding_type: "absolute".into(),
        model_type: None,
    };
    let _ = cfg.check_weights(&weights, "");
}

/// A merge rule: any text, or two tokens of the vocabulary (their concatenation is added to it, as
/// a BPE vocabulary needs).
#[derive(Debug, Arbitrary)]
pub enum Merge {
    Raw(String),
    Pair(u8, u8),
}

/// The tokenizer keys of a GGUF file, and what to do with the tokenizer built from them.
#[derive(Debug, Arbitrary)]
pub struct TokenizerInput {
    tokens: Vec<String>,
    types: Option<Vec<i32>>,
    merges: Vec<Merge>,
    pre: u8,
    template: Option<String>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    add_bos: bool,
    text: String,
    messages: Vec<(String, String)>,
    ids: Vec<u32>,
}

pub fn chat_tokenizer(input: TokenizerInput) {
    use common::Meta;
    let mut tokens = input.tokens;
    let mut merges = Vec::new();
    for m in input.merges {
        match m {
            Merge::Raw(s) => merges.push(s),
            Merge::Pair(a, b) if !tokens.is_empty() => {
                let (a, b) = (&tokens[a as usize % tokens.len()], &tokens[b as usize % tokens.len()]);
                let (merge, joined) = (format!("{a} {b}"), format!("{a}{b}"));
                merges.push(merge);
                if !tokens.contains(&joined) {
                    tokens.push(joined);
                }
            }
            Merge::Pair(..) => {}
        }
    }
    let pre = ["default", "gpt2", "smollm", "llama-bpe"][input.pre as usize % 4];
    let mut meta = vec![
        ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Meta::Str(pre.into())),
        ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
        ("tokenizer.ggml.merges", Meta::Strs(merges)),
        ("tokenizer.ggml.add_bos_token", Meta::Bool(input.add_bos)),
    ];
    if let Some(types) = input.types {
        meta.push(("tokenizer.ggml.token_type", Meta::I32s(types)));
    }
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", input.bos),
        ("tokenizer.ggml.eos_token_id", input.eos),
        ("tokenizer.ggml.eot_token_id", input.eot),
    ] {
        if let Some(id) = id {
            meta.push((key, Meta::U32(id)));
        }
    }
    if let Some(template) = input.template {
        meta.push(("tokenizer.chat_template", Meta::Str(template)));
    }
    let bytes = common::gguf(&meta, &[]).bytes;
    // The writer makes well-formed files: one the reader refuses is a bug in one of them.
    let file = GgufFile::from_bytes(Path::new("fuzz.gguf"), bytes).expect("a well-formed GGUF file parses");
    if let Ok(tokenizer) = ChatTokenizer::from_gguf(&file) {
        use_tokenizer(&tokenizer, &input.text, &input.messages, &input.ids);
    }
}

fn use_tokenizer(tokenizer: &ChatTokenizer, text: &str, messages: &[(String, String)], ids: &[u32]) {
    if let Ok(encoded) = tokenizer.encode(text) {
        let _ = tokenizer.decode(&encoded);
    }
    let _ = tokenizer.decode(ids);
    let messages: Vec<ChatMessage> = messages.iter().map(|(role, content)| ChatMessage::new(role, content)).collect();
    let _ = tokenizer.apply_chat_template(&messages);
    let _ = tokenizer.encode_chat(&messages, 64);
}
