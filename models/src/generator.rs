//! Text generation with a Llama-architecture GGUF model on any backend: prefill of the prompt into
//! the session's caches, then one token per step, several sequences decoded together in one step.

use crate::chat_tokenizer::{ChatMessage, ChatTokenizer};
use crate::decode::{FinishReason, Limits, Sequence};
use crate::gguf::GgufFile;
use crate::llama::{self, LlamaConfig};
use crate::sampling::SamplingParams;
use crate::{ModelError, Result};
use accelrt_core::{Backend, Executable, HostTensor, PrepareOptions, SessionState};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Cache positions per sequence when the caller does not choose (capped by the model's context).
pub const DEFAULT_CONTEXT: usize = 2048;

/// One finished generation, with its timings.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The prompt's length in tokens.
    pub prompt_tokens: usize,
    /// The generated tokens (an end-of-sequence token that ended the generation is not among them).
    pub tokens: Vec<u32>,
    /// The generated text, cut before a stop string if one was reached.
    pub text: String,
    /// Why it ended: an end-of-sequence token or stop string, or `max_tokens` / the context.
    pub finish_reason: FinishReason,
    /// From the start of the request to the first generated token (prefill + first sample); in a
    /// batch, from the start of the batch (prompts are prefilled one after another).
    pub time_to_first_token: Duration,
    /// The time of each decode step after the first token (one per further token).
    pub decode_times: Vec<Duration>,
}

/// A Llama-architecture GGUF model prepared on one backend, with its tokenizer: it builds prompts,
/// runs steps over a session's KV caches, and generates text.
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
    ///
    /// # Errors
    ///
    /// [`ModelError::Io`] or [`ModelError::Config`] for a missing, ambiguous or bad GGUF file
    /// (including tensor types accelrt cannot run); [`ModelError::Tokenizer`] for tokenizer
    /// metadata it cannot rebuild; [`ModelError::InvalidInput`] when `context` is 0 or over the
    /// model's; [`ModelError::Core`] when the backend cannot prepare the graph.
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

    /// The tokenizer and chat template read from the GGUF file.
    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.tokenizer
    }

    /// The model's hyper-parameters, as the GGUF metadata states them.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The GGUF file the model was loaded from (the file itself, also when a directory was given).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Positions each sequence's cache holds (prompt + output).
    pub fn context(&self) -> usize {
        self.context
    }

    /// The prepared decoder graph (for device facts and lower-level runs, e.g. by the benchmark).
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
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidInput`] when the caches could need more than `MemAvailable`;
    /// [`ModelError::Core`] when the backend cannot create the session.
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
    /// number — to its sequence; returns each row's next-token logits (`vocab_size` each).
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidInput`] when there are no rows or they differ in length;
    /// [`ModelError::Core`] when the backend refuses or fails the run (e.g. a slot or position
    /// past the session's caches); [`ModelError::NonFinite`] when a logit is NaN or infinite.
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

    /// Generates from token ids, at most `max_tokens` tokens; `on_text` sees the text as it
    /// becomes safe to show (see [`crate::decode::Advance::text`]; the pieces add up to [`Generation::text`]).
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &SamplingParams,
        max_tokens: usize,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        let limits = Limits::max_tokens(max_tokens);
        let mut out = self.generate_batch(&[prompt.to_vec()], params, &limits, |_, text| on_text(text))?;
        Ok(out.remove(0))
    }

    /// Generates for several prompts at once: each prompt is prefilled into its own slot, then all
    /// unfinished sequences decode together, one token each per step. `params.seed` seeds the first
    /// sequence; sequence i uses seed + i. `on_text(sequence, text)` streams the output.
    pub fn generate_batch(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        limits: &Limits,
        mut on_text: impl FnMut(usize, &str),
    ) -> Result<Vec<Generation>> {
        if prompts.is_empty() {
            return Err(ModelError::InvalidInput("no prompts".into()));
        }
        let mut seqs = Vec::with_capacity(prompts.len());
        for (i, p) in prompts.iter().enumerate() {
            self.check_prompt(p)?;
            let params = SamplingParams { seed: params.seed.wrapping_add(i as u64), ..params.clone() };
            seqs.push(Timed {
                seq: Sequence::new(p.clone(), params, limits.clone())?,
                ttft: Duration::ZERO,
                decode_times: Vec::new(),
            });
        }
        let mut state = self.new_session(prompts.len())?;
        let start = Instant::now();
        // Prompts differ in length, so each is prefilled in a step of its own.
        for (i, t) in seqs.iter_mut().enumerate() {
            let logits = self.step_sequences(&mut state, &[(i, &t.seq)])?;
            let advance = t.seq.advance(self, &logits[0])?;
            on_text(i, &advance.text);
            t.ttft = start.elapsed();
        }
        loop {
            let active: Vec<usize> = (0..seqs.len()).filter(|&i| seqs[i].seq.finish_reason().is_none()).collect();
            if active.is_empty() {
                break;
            }
            let batch: Vec<(usize, &Sequence)> = active.iter().map(|&i| (i, &seqs[i].seq)).collect();
            let started = Instant::now();
            let logits = self.step_sequences(&mut state, &batch)?;
            for (&i, row) in active.iter().zip(&logits) {
                let advance = seqs[i].seq.advance(self, row)?;
                on_text(i, &advance.text);
            }
            let took = started.elapsed();
            for &i in &active {
                seqs[i].decode_times.push(took);
            }
        }
        Ok(seqs.into_iter().map(Timed::finish).collect())
    }
}

/// A sequence of [`TextGenerator::generate_batch`] with its timings.
struct Timed {
    seq: Sequence,
    ttft: Duration,
    decode_times: Vec<Duration>,
}

impl Timed {
    fn finish(self) -> Generation {
        Generation {
            prompt_tokens: self.seq.prompt_len(),
            tokens: self.seq.generated().to_vec(),
            text: self.seq.text().to_string(),
            finish_reason: self.seq.finish_reason().expect("the loop runs every sequence to its end"),
            time_to_first_token: self.ttft,
            decode_times: self.decode_times,
        }
    }
}
