//! The tokenizer and chat template a GGUF file carries in its metadata.
//!
//! Byte-level BPE (`tokenizer.ggml.model = gpt2`) is rebuilt as a Hugging Face `tokenizers`
//! tokenizer: the vocabulary and merges come from the file, control tokens become special tokens
//! (matched whole, e.g. `<|im_start|>`), and the pre-tokenizer follows `tokenizer.ggml.pre`. SmolLM2
//! (`pre = smollm`) splits every digit on its own and adds no prefix space; treating it as plain
//! GPT-2 with a prefix space gives different ids and inserts spaces when decoding.

use crate::gguf::{GgufFile, GgufValue};
use crate::{ModelError, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

/// GGUF token types (`tokenizer.ggml.token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// A message of a chat.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

pub struct ChatTokenizer {
    tokenizer: Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    /// Token ids that end a generation (EOS, and end-of-turn tokens such as `<|im_end|>`).
    stop: Vec<u32>,
    chat_template: Option<String>,
}

impl ChatTokenizer {
    pub fn from_gguf(file: &GgufFile) -> Result<ChatTokenizer> {
        let bad = |m: String| ModelError::Tokenizer(format!("{}: {m}", file.path().display()));
        let model = file.value("tokenizer.ggml.model").and_then(GgufValue::as_str).unwrap_or("");
        if model != "gpt2" {
            return Err(bad(format!("tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`, is)")));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            let items = file.value(key).and_then(GgufValue::as_array).ok_or_else(|| bad(format!("no {key}")))?;
            items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad(format!("{key} holds a non-string"))))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| bad(format!("merge `{m}`")))
            })
            .collect::<Result<_>>()?;
        let types: Vec<i64> = match file.value("tokenizer.ggml.token_type").and_then(GgufValue::as_array) {
            Some(t) => t.iter().map(|v| v.as_u64().map(|x| x as i64).unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| bad(e.to_string()))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let pre = file.value("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("default");
        let byte_level = ByteLevel::new(false, true, true);
        match pre {
            "smollm" => {
                let digits = PreTokenizerWrapper::Digits(Digits::new(true));
                tokenizer
                    .with_pre_tokenizer(Some(Sequence::new(vec![digits, PreTokenizerWrapper::ByteLevel(byte_level)])));
            }
            "gpt2" | "default" => {
                tokenizer.with_pre_tokenizer(Some(byte_level));
            }
            other => {
                return Err(bad(format!("pre-tokenizer `{other}` is not supported (smollm, gpt2 and default are)")))
            }
        }
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == TOKEN_CONTROL || t == TOKEN_USER_DEFINED)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        tokenizer.add_special_tokens(special).map_err(|e| bad(e.to_string()))?;

        let id = |key: &str| file.value(key).and_then(GgufValue::as_u64).map(|v| v as u32);
        let (bos, eos) = (id("tokenizer.ggml.bos_token_id"), id("tokenizer.ggml.eos_token_id"));
        let add_bos = file.value("tokenizer.ggml.add_bos_token").and_then(GgufValue::as_bool).unwrap_or(false);
        let mut stop: Vec<u32> = eos.into_iter().collect();
        stop.extend(id("tokenizer.ggml.eot_token_id"));
        for name in ["<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>"] {
            if let Some(&i) = tokens.iter().position(|t| t == name).as_ref() {
                stop.push(i as u32);
            }
        }
        stop.sort_unstable();
        stop.dedup();
        let chat_template = file.value("tokenizer.chat_template").and_then(GgufValue::as_str).map(str::to_string);
        Ok(ChatTokenizer { tokenizer, bos, eos, add_bos, stop, chat_template })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Token ids of `text`; special-token strings in it (e.g. `<|im_start|>`) become their ids.
    /// The BOS token is prepended when the model asks for it (`add_bos_token`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The text of `ids`, special tokens included (so encode → decode gives the text back).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, false).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    pub fn is_stop(&self, id: u32) -> bool {
        self.stop.binary_search(&id).is_ok()
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The prompt text for `messages` by the model's own chat template (a Jinja template in the
    /// metadata), ending with the opening of the assistant's turn.
    pub fn apply_chat_template(&self, messages: &[ChatMessage]) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            ModelError::InvalidInput("this model has no chat template (tokenizer.chat_template)".into())
        })?;
        let mut env = minijinja::Environment::new();
        env.add_template("chat", template).map_err(|e| ModelError::Tokenizer(format!("chat template: {e}")))?;
        let bos = self.bos.and_then(|b| self.tokenizer.id_to_token(b)).unwrap_or_default();
        let eos = self.eos.and_then(|e| self.tokenizer.id_to_token(e)).unwrap_or_default();
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => bos,
                    eos_token => eos,
                })
            })
            .map_err(|e| ModelError::Tokenizer(format!("chat template: {e}")))
    }
}
