//! Text generation with a Llama-architecture GGUF model on any backend: prefill of the prompt into
//! the session's caches, then one token per step, several sequences decoded together in one step.

use crate::chat_tokenizer::{ChatMessage, ChatTokenizer};
use crate::gguf::GgufFile;
use crate::llama::{self, LlamaConfig};
use crate::sampling::{Sampler, SamplingParams};
use crate::{ModelError, Result};
use accelrt_core::{Backend, Executable, HostTensor, PrepareOptions, SessionState};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Cache positions per sequence when the caller does not choose (capped by the model's context).
pub const DEFAULT_CONTEXT: usize = 2048;

/// How long generations may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most tokens to generate per sequence (≥ 1).
    pub max_tokens: usize,
    /// Keep generating past end-of-sequence tokens (benchmarks: every request yields `max_tokens`).
    pub ignore_stop: bool,
}

impl Limits {
    pub fn max_tokens(max_tokens: usize) -> Limits {
        Limits { max_tokens, ignore_stop: false }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-sequence or end-of-turn token (not included in the output).
    Stop,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The sequence filled its cache (the context length chosen when the model was loaded).
    ContextFull,
}

/// One finished generation, with its timings.
#[derive(Debug, Clone)]
pub struct Generation {
    pub prompt_tokens: usize,
    pub tokens: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
    /// From the start of the request to the first generated token (prefill + first sample); in a
    /// batch, from the start of the batch (prompts are prefilled one after another).
    pub time_to_first_token: Duration,
    /// The time of each decode step after the first token (one per further token).
    pub decode_times: Vec<Duration>,
}

pub struct TextGenerator {
    exe: Box<dyn Executable>,
    tokenizer: ChatTokenizer,
    config: LlamaConfig,
    context: usize,
    path: PathBuf,
    name: String,
}

/// The GGUF file for `path`: the file itself, or the only `.gguf` file in a directory.
pub fn find_gguf(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let entries = std::fs::read_dir(path).map_err(|e| ModelError::io(path, e))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(ModelError::config(path, "no .gguf file in this directory")),
        n => Err(ModelError::config(path, format!("{n} .gguf files in this directory; name one"))),
    }
}

/// The model file's name without its extension (`general.name` is often a training-run name).
fn model_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
}

/// Whether `path` names a GGUF model: a `.gguf` file, or a directory holding exactly one.
pub fn is_gguf_model(path: &Path) -> bool {
    path.exists() && find_gguf(path).is_ok_and(|p| p.extension().is_some_and(|e| e == "gguf"))
}

impl TextGenerator {
    /// Loads a GGUF model (file, or directory holding one) and prepares it on `backend` with caches
    /// of `context` positions per sequence (at most the model's own context length).
    pub fn load(path: &Path, backend: &dyn Backend, options: &PrepareOptions, context: usize) -> Result<TextGenerator> {
        let path = find_gguf(path)?;
        let file = GgufFile::open(&path)?;
        let config = LlamaConfig::from_gguf(&file)?;
        let tokenizer = ChatTokenizer::from_gguf(&file)?;
        if context == 0 || context > config.context_length {
            return Err(ModelError::InvalidInput(format!(
                "context {context} must be between 1 and the model's context length {}",
                config.context_length
            )));
        }
        let dtype_of = |name: &str| -> Result<accelrt_core::DType> {
            let info = file.tensor(name).ok_or_else(|| ModelError::config(&path, format!("no tensor `{name}`")))?;
            info.dtype().map_err(|m| ModelError::config(&path, format!("tensor `{name}`: {m}")))
        };
        let graph = llama::build_graph(&config, context, &dtype_of)?;
        let exe = backend.prepare(&graph, &file, options)?;
        let name = model_name(&path);
        Ok(TextGenerator { exe, tokenizer, config, context, path, name })
    }

    /// The model's name: its file's name without the extension (errors name the model by this,
    /// never by the path it was loaded from).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The prompt tokens of a chat by the model's template, its contents tokenised as text; a
    /// prompt that cannot leave room for one generated token is `ContextLengthExceeded`.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let ids = self.tokenizer.encode_chat(messages, self.context)?;
        self.check_prompt(&ids)?;
        Ok(ids)
    }

    /// Bytes past which no prompt can fit the context (`context × ` the most bytes one token
    /// stands for): a reader of prompts can stop there.
    pub fn prompt_byte_bound(&self) -> usize {
        self.context.saturating_mul(self.tokenizer.max_token_bytes())
    }

    /// The prompt tokens of plain text (special-token text in it is control, as in llama.cpp);
    /// refused like [`TextGenerator::chat_prompt`] when too long, before tokenising when the
    /// bytes alone cannot fit.
    pub fn text_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.check_fits(text.len(), self.context)?;
        let ids = self.tokenizer.encode(text)?;
        self.check_prompt(&ids)?;
        Ok(ids)
    }

    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.tokenizer
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Positions each sequence's cache holds (prompt + output).
    pub fn context(&self) -> usize {
        self.context
    }

    pub fn executable(&self) -> &dyn Executable {
        self.exe.as_ref()
    }

    /// Bytes of KV cache one sequence can fill: layers × (K and V) × kv heads × head dim ×
    /// context positions × 4 (f32, the widest cache dtype).
    pub fn kv_cache_bytes_per_sequence(&self) -> u64 {
        let c = &self.config;
        [c.num_layers, 2, c.num_kv_heads, c.head_dim, self.context, 4]
            .iter()
            .fold(1u64, |n, &d| n.saturating_mul(d as u64))
    }

    /// A session for up to `slots` sequences at once. Its caches may fill
    /// `slots × kv_cache_bytes_per_sequence()` bytes; more than the host's available memory
    /// (`MemAvailable`) is refused here, before anything is allocated, rather than failing (or the
    /// process aborting) when the caches fill up.
    pub fn new_session(&self, slots: usize) -> Result<SessionState> {
        let need = self.kv_cache_bytes_per_sequence().saturating_mul(slots as u64);
        if let Some(available) = accelrt_core::host::meminfo_bytes("MemAvailable") {
            if need > available {
                return Err(ModelError::InvalidInput(format!(
                    "the KV caches of {slots} sequence(s) × {} positions need {:.1} GB, more than the {:.1} GB \
                     this host has available; lower the context or the number of sequences",
                    self.context,
                    need as f64 / 1e9,
                    available as f64 / 1e9
                )));
            }
        }
        Ok(self.exe.new_state(slots)?)
    }

    /// One step: each row (slot, first position, tokens) appends its tokens — every row the same
    /// number — to its sequence; returns each row's next-token logits.
    pub fn step(&self, state: &mut SessionState, rows: &[(usize, usize, &[u32])]) -> Result<Vec<Vec<f32>>> {
        let n = rows.first().map(|r| r.2.len()).unwrap_or(0);
        if n == 0 || rows.iter().any(|r| r.2.len() != n) {
            return Err(ModelError::InvalidInput(
                "a step needs ≥ 1 row, each with the same number (≥ 1) of tokens".into(),
            ));
        }
        let b = rows.len();
        let tokens: Vec<u32> = rows.iter().flat_map(|r| r.2.iter().copied()).collect();
        let positions: Vec<u32> = rows.iter().flat_map(|r| (r.1..r.1 + n).map(|p| p as u32)).collect();
        let slots: Vec<u32> = rows.iter().map(|r| r.0 as u32).collect();
        let tokens = HostTensor::u32(vec![b, n], tokens)?;
        let positions = HostTensor::u32(vec![b, n], positions)?;
        let slots = HostTensor::u32(vec![b], slots)?;
        let inputs = [(llama::TOKENS, &tokens), (llama::POSITIONS, &positions), (llama::SLOTS, &slots)];
        let mut out = self.exe.run_with_state(state, &inputs)?;
        let logits = out.take(llama::LOGITS).expect("the graph's output");
        let logits = logits.as_f32().expect("logits are f32");
        if logits.iter().any(|x| !x.is_finite()) {
            return Err(ModelError::NonFinite { model: self.name.clone(), output: llama::LOGITS.into() });
        }
        Ok(logits.chunks_exact(self.config.vocab_size).map(<[f32]>::to_vec).collect())
    }

    fn check_prompt(&self, prompt: &[u32]) -> Result<()> {
        if prompt.is_empty() {
            return Err(ModelError::InvalidInput("the prompt is empty".into()));
        }
        if prompt.len() >= self.context {
            return Err(ModelError::ContextLengthExceeded {
                tokens: prompt.len(),
                at_least: false,
                context: self.context,
            });
        }
        if let Some(bad) = prompt.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(ModelError::InvalidInput(format!("token id {bad} is outside the vocabulary")));
        }
        Ok(())
    }

    /// Generates from token ids; `on_token(id, text)` sees each new token with the text it adds
    /// (text can lag a token behind while a multi-byte character is incomplete).
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &SamplingParams,
        max_tokens: usize,
        mut on_token: impl FnMut(u32, &str),
    ) -> Result<Generation> {
        let limits = Limits::max_tokens(max_tokens);
        let mut out = self.generate_batch(&[prompt.to_vec()], params, limits, |_, id, text| on_token(id, text))?;
        Ok(out.remove(0))
    }

    /// Generates for several prompts at once: each prompt is prefilled into its own slot, then all
    /// unfinished sequences decode together, one token each per step. `params.seed` seeds the first
    /// sequence; sequence i uses seed + i. `on_token(sequence, id, text)` streams the output.
    pub fn generate_batch(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        limits: Limits,
        mut on_token: impl FnMut(usize, u32, &str),
    ) -> Result<Vec<Generation>> {
        if prompts.is_empty() {
            return Err(ModelError::InvalidInput("no prompts".into()));
        }
        if limits.max_tokens == 0 {
            return Err(ModelError::InvalidInput("max tokens must be at least 1".into()));
        }
        for p in prompts {
            self.check_prompt(p)?;
        }
        let mut state = self.new_session(prompts.len())?;
        let mut seqs = Vec::with_capacity(prompts.len());
        let start = Instant::now();
        for (i, prompt) in prompts.iter().enumerate() {
            let mut sampler =
                Sampler::new(SamplingParams { seed: params.seed.wrapping_add(i as u64), ..params.clone() })?;
            let logits = self.step(&mut state, &[(i, 0, prompt)])?;
            let first = sampler.sample(&logits[0], prompt);
            let mut seq = Sequence::new(prompt.clone(), sampler);
            seq.push(first, self, limits, &mut |id, text| on_token(i, id, text))?;
            seq.ttft = start.elapsed();
            seqs.push(seq);
        }
        loop {
            let active: Vec<usize> = (0..seqs.len()).filter(|&i| seqs[i].stop.is_none()).collect();
            if active.is_empty() {
                break;
            }
            let last: Vec<[u32; 1]> = active.iter().map(|&i| [*seqs[i].history.last().expect("one token")]).collect();
            let rows: Vec<(usize, usize, &[u32])> =
                active.iter().zip(&last).map(|(&i, t)| (i, seqs[i].history.len() - 1, &t[..])).collect();
            let started = Instant::now();
            let logits = self.step(&mut state, &rows)?;
            for (&i, row) in active.iter().zip(&logits) {
                let seq = &mut seqs[i];
                let next = seq.sampler.sample(row, &seq.history);
                seq.push(next, self, limits, &mut |id, text| on_token(i, id, text))?;
            }
            let took = started.elapsed();
            for &i in &active {
                seqs[i].decode_times.push(took);
            }
        }
        Ok(seqs.into_iter().map(Sequence::finish).collect())
    }
}

/// A sequence being generated.
struct Sequence {
    prompt_len: usize,
    /// Prompt and generated tokens.
    history: Vec<u32>,
    sampler: Sampler,
    text: String,
    stop: Option<StopReason>,
    ttft: Duration,
    decode_times: Vec<Duration>,
}

impl Sequence {
    fn new(prompt: Vec<u32>, sampler: Sampler) -> Sequence {
        Sequence {
            prompt_len: prompt.len(),
            history: prompt,
            sampler,
            text: String::new(),
            stop: None,
            ttft: Duration::ZERO,
            decode_times: Vec::new(),
        }
    }

    /// Takes a sampled token: stops on a stop token, else appends it and streams its text.
    fn push(&mut self, id: u32, g: &TextGenerator, limits: Limits, on_token: &mut dyn FnMut(u32, &str)) -> Result<()> {
        if !limits.ignore_stop && g.tokenizer.is_stop(id) {
            self.stop = Some(StopReason::Stop);
            return Ok(());
        }
        self.history.push(id);
        let text = g.tokenizer.decode(&self.history[self.prompt_len..])?;
        // Hold back text that ends in an incomplete character; it is emitted with the next token.
        let delta = if text.ends_with('\u{fffd}') { "" } else { text.get(self.text.len()..).unwrap_or("") };
        on_token(id, delta);
        if !text.ends_with('\u{fffd}') {
            self.text = text;
        }
        let generated = self.history.len() - self.prompt_len;
        if generated >= limits.max_tokens {
            self.stop = Some(StopReason::MaxTokens);
        } else if self.history.len() >= g.context {
            self.stop = Some(StopReason::ContextFull);
        }
        Ok(())
    }

    fn finish(self) -> Generation {
        Generation {
            prompt_tokens: self.prompt_len,
            tokens: self.history[self.prompt_len..].to_vec(),
            text: self.text,
            stop: self.stop.expect("finished sequences have a stop reason"),
            time_to_first_token: self.ttft,
            decode_times: self.decode_times,
        }
    }
}
