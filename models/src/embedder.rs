//! The sentence-transformers pipeline: tokenize (truncate, pad), run the graph, return unit vectors.

use crate::bert::{self, BertConfig, SentenceHead};
use crate::weights::SafetensorsWeights;
use crate::{ModelError, Result};
use accelrt_core::{Backend, Executable, HostTensor, PrepareOptions};
use serde::Deserialize;
use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams, TruncationStrategy};

/// One tokenized batch, padded to its longest text.
pub struct TokenBatch {
    /// Token ids, u32 `[batch, seq]`; padding positions hold 0.
    pub input_ids: HostTensor,
    /// u32 `[batch, seq]`: 1 for a real token, 0 for padding.
    pub attention_mask: HostTensor,
    /// Segment ids, u32 `[batch, seq]`, all 0 (one sentence per text).
    pub token_type_ids: HostTensor,
    /// Non-padding tokens in the batch.
    pub tokens: usize,
}

/// Bytes of a text looked at first per token of the model's limit. A text longer than
/// `max_tokens × TEXT_BYTES_PER_TOKEN` is cut to that many bytes before it is tokenised, so a 10 MB
/// line costs what a 26 KB one does. English averages about 4–5 bytes per WordPiece token, so the
/// cut almost never reaches the tokens the model keeps; when it might (long whitespace runs, words
/// over 100 characters, each one `[UNK]`), the text is looked at again with 8× the bytes, up to
/// [`MAX_TEXT_BYTES_TOKENISED`] (see [`SentenceEmbedder::encode`]).
pub(crate) const TEXT_BYTES_PER_TOKEN: usize = 100;

/// The most bytes of one text ever tokenised (1 MiB). A longer text whose first MiB holds fewer
/// tokens than the model keeps is refused rather than embedded differently.
pub(crate) const MAX_TEXT_BYTES_TOKENISED: usize = 1 << 20;

/// A sentence-embedding model prepared on one backend.
pub struct SentenceEmbedder {
    exe: Box<dyn Executable>,
    tokenizer: Tokenizer,
    max_tokens: usize,
    dimension: usize,
    name: String,
}

impl SentenceEmbedder {
    /// Loads a sentence-transformers model directory (config.json, tokenizer.json,
    /// model.safetensors, modules.json, pooling config) and prepares it on `backend`. Texts are
    /// cut to `max_seq_length` of `sentence_bert_config.json` tokens, or to the position table's
    /// size when that is smaller or the file is absent.
    ///
    /// # Errors
    ///
    /// [`ModelError::Io`], [`ModelError::Config`], [`ModelError::Safetensors`] or
    /// [`ModelError::Tokenizer`] for a missing or bad file; [`ModelError::Core`] when the backend
    /// cannot prepare the graph.
    pub fn load(dir: &Path, backend: &dyn Backend, options: &PrepareOptions) -> Result<SentenceEmbedder> {
        let cfg = BertConfig::from_file(&dir.join("config.json"))?;
        let head = SentenceHead::from_dir(dir)?;
        let weights = SafetensorsWeights::open(&dir.join("model.safetensors"))?;
        let prefix = if weights.contains("embeddings.word_embeddings.weight") {
            ""
        } else if weights.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            return Err(ModelError::config(
                weights.path(),
                "no BERT embedding weights (embeddings.word_embeddings.weight)",
            ));
        };
        // The config must describe these weights before anything is built from it.
        cfg.check_weights(&weights, prefix)?;
        let graph = bert::build_graph(&cfg, head, prefix)?;
        let exe = backend.prepare(&graph, &weights, options)?;

        #[derive(Deserialize)]
        struct StConfig {
            max_seq_length: Option<usize>,
        }
        let st_path = dir.join("sentence_bert_config.json");
        let max_seq = if st_path.is_file() { bert::read_json::<StConfig>(&st_path)?.max_seq_length } else { None };
        let max_tokens = max_seq.unwrap_or(cfg.max_position_embeddings).min(cfg.max_position_embeddings);
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"), max_tokens)?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        Ok(SentenceEmbedder { exe, tokenizer, max_tokens, dimension: cfg.hidden_size, name })
    }

    /// The model's name: its directory's name (servers show this, never the path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Length of the output vectors.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Texts are truncated to this many tokens (special tokens included).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The prepared graph (for device facts and lower-level runs, e.g. by the benchmark).
    pub fn executable(&self) -> &dyn Executable {
        self.exe.as_ref()
    }

    /// Tokenizes a batch: truncation to `max_tokens`, padding to the longest text.
    pub fn tokenize(&self, texts: &[&str]) -> Result<TokenBatch> {
        if texts.is_empty() {
            return Err(ModelError::InvalidInput("an empty batch has nothing to embed".into()));
        }
        let items = self.encode(texts)?;
        self.batch_from_ids(&items.iter().map(Vec::as_slice).collect::<Vec<_>>())
    }

    /// Token ids the model accepts are below this.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Token ids of each text (special tokens included, truncated to `max_tokens`), unpadded.
    ///
    /// A text over [`SentenceEmbedder::text_byte_budget`] bytes is cut to that budget first (at a
    /// character boundary). The ids are those of the whole text when the cut text was truncated and
    /// the tokens kept end before its last whitespace (tokens are made within whitespace-separated
    /// words); otherwise the text is cut again 8× longer, up to 1 MiB (`MAX_TEXT_BYTES_TOKENISED`). A text
    /// still undecided there (thousands of bytes per token) is refused with `InvalidInput` naming
    /// it, never embedded differently.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let mut ids: Vec<Option<Vec<u32>>> = vec![None; texts.len()];
        let mut pending: Vec<usize> = (0..texts.len()).collect();
        let mut budget = self.text_byte_budget();
        while !pending.is_empty() {
            let cut: Vec<&str> = pending.iter().map(|&i| prefix_within(texts[i], budget)).collect();
            let encodings =
                self.tokenizer.encode_batch(cut.clone(), true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
            let mut undecided = Vec::new();
            for ((&i, cut), e) in pending.iter().zip(&cut).zip(&encodings) {
                let real = e.get_attention_mask().iter().filter(|&&m| m != 0).count();
                if cut.len() == texts[i].len() || cut_is_exact(cut, e, real, self.max_tokens) {
                    ids[i] = Some(e.get_ids()[..real].to_vec());
                } else {
                    undecided.push(i);
                }
            }
            if let Some(&i) = undecided.first().filter(|_| budget >= MAX_TEXT_BYTES_TOKENISED) {
                return Err(ModelError::InvalidInput(format!(
                    "input {i} is {} bytes and its first {MAX_TEXT_BYTES_TOKENISED} bytes hold fewer than the {} \
                     tokens the model keeps (thousands of bytes per token); shorten it",
                    texts[i].len(),
                    self.max_tokens
                )));
            }
            // Text whose cut was too short to decide (long whitespace runs, giant words): look further.
            budget = budget.saturating_mul(8).min(MAX_TEXT_BYTES_TOKENISED);
            pending = undecided;
        }
        Ok(ids.into_iter().map(|i| i.expect("every text decided")).collect())
    }

    /// Bytes of each text looked at: `max_tokens × TEXT_BYTES_PER_TOKEN`.
    pub fn text_byte_budget(&self) -> usize {
        self.max_tokens.saturating_mul(TEXT_BYTES_PER_TOKEN)
    }

    /// A batch of token id lists (each 1…`max_tokens` ids), padded to the longest.
    pub fn batch_from_ids(&self, items: &[&[u32]]) -> Result<TokenBatch> {
        if items.is_empty() {
            return Err(ModelError::InvalidInput("an empty batch has nothing to embed".into()));
        }
        if let Some(bad) = items.iter().find(|i| i.is_empty() || i.len() > self.max_tokens) {
            return Err(ModelError::InvalidInput(format!(
                "a token list of {} ids; each must hold 1 to {} ids",
                bad.len(),
                self.max_tokens
            )));
        }
        let len = items.iter().map(|i| i.len()).max().unwrap_or(0);
        let shape = vec![items.len(), len];
        let (mut ids, mut mask) = (Vec::with_capacity(items.len() * len), Vec::with_capacity(items.len() * len));
        for item in items {
            ids.extend_from_slice(item);
            ids.resize(ids.len() + len - item.len(), 0);
            mask.extend(std::iter::repeat_n(1u32, item.len()));
            mask.resize(mask.len() + len - item.len(), 0);
        }
        let tokens = items.iter().map(|i| i.len()).sum();
        Ok(TokenBatch {
            input_ids: HostTensor::u32(shape.clone(), ids)?,
            attention_mask: HostTensor::u32(shape.clone(), mask)?,
            token_type_ids: HostTensor::u32(shape.clone(), vec![0; shape[0] * shape[1]])?,
            tokens,
        })
    }

    /// Runs one tokenized batch and returns one vector per text, each [`SentenceEmbedder::dimension`]
    /// long.
    ///
    /// # Errors
    ///
    /// [`ModelError::Core`] when the backend fails; [`ModelError::NonFinite`] when any output
    /// value is NaN or infinite (broken weights; nothing is returned).
    pub fn run(&self, batch: &TokenBatch) -> Result<Vec<Vec<f32>>> {
        let mut out = self.exe.run(&[
            (bert::INPUT_IDS, &batch.input_ids),
            (bert::ATTENTION_MASK, &batch.attention_mask),
            (bert::TOKEN_TYPE_IDS, &batch.token_type_ids),
        ])?;
        let emb = out.take(bert::EMBEDDINGS).expect("the graph has an `embeddings` output");
        let values = emb.as_f32().expect("embeddings are f32");
        if values.iter().any(|x| !x.is_finite()) {
            return Err(ModelError::NonFinite { model: self.name.clone(), output: bert::EMBEDDINGS.into() });
        }
        Ok(values.chunks(self.dimension).map(<[f32]>::to_vec).collect())
    }

    /// Embeds `texts` as one batch.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.run(&self.tokenize(texts)?)
    }

    /// Embeds `texts` in batches of at most `batch_size`, in order.
    pub fn embed_batched(&self, texts: &[&str], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        if batch_size == 0 {
            return Err(ModelError::InvalidInput("batch size must be at least 1".into()));
        }
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(batch_size) {
            out.extend(self.embed(chunk)?);
        }
        Ok(out)
    }
}

/// The longest prefix of `text` of at most `bytes` bytes that ends on a character boundary.
fn prefix_within(text: &str, bytes: usize) -> &str {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether the encoding of a text cut short (`cut`) keeps what the whole text's would: it was
/// truncated to `max_tokens` (so the cut lost no kept token) and its last kept token ends before
/// the last whitespace of `cut` (so no kept token came from the word the cut split).
fn cut_is_exact(cut: &str, encoding: &tokenizers::Encoding, real: usize, max_tokens: usize) -> bool {
    if real < max_tokens {
        return false;
    }
    let Some(last_space) = cut.char_indices().rev().find(|(_, c)| c.is_whitespace()).map(|(i, _)| i) else {
        return false;
    };
    // Special tokens ([CLS], [SEP]) have no text; the last token with text decides.
    let specials = encoding.get_special_tokens_mask();
    let last_end = encoding.get_offsets()[..real].iter().zip(specials).filter(|(_, &s)| s == 0).map(|(o, _)| o.1).max();
    last_end.is_some_and(|end| end <= last_space)
}

/// Loads tokenizer.json with the pipeline's truncation and batch-longest padding (the file's own
/// settings, e.g. fixed padding to 128, are replaced).
fn load_tokenizer(path: &Path, max_tokens: usize) -> Result<Tokenizer> {
    let mut tok = Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
    let (pad_id, pad_type_id, pad_token) = match tok.get_padding() {
        Some(p) => (p.pad_id, p.pad_type_id, p.pad_token.clone()),
        None => {
            let token = "[PAD]".to_string();
            (tok.token_to_id(&token).unwrap_or(0), 0, token)
        }
    };
    tok.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        pad_id,
        pad_type_id,
        pad_token,
        ..Default::default()
    }));
    tok.with_truncation(Some(TruncationParams {
        max_length: max_tokens,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        ..Default::default()
    }))
    .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    Ok(tok)
}
