//! What the scenarios run: queries of samples drawn in order (wrapping) from a fixed input set.

use crate::Result;
use accelrt_models::{Limits, SamplingParams, SentenceEmbedder, TextGenerator};
use std::time::Duration;

/// What a scenario sends queries to: a model in this process, or a peer's runner. Samples are
/// addressed by index into the workload's own input set, so every system gets the same inputs.
pub trait Workload {
    /// Runs one query made of `count` samples, starting at sample `first` of the input set (wrapping
    /// around its end). Returns once the results are back on the host.
    fn run(&mut self, first: usize, count: usize) -> Result<()>;

    /// Called when warm-up ends: per-request records kept so far are dropped.
    fn start_measuring(&mut self) {}

    /// Text generation: each measured request's timings since `start_measuring` (empty otherwise).
    fn take_requests(&mut self) -> Vec<RequestStats> {
        Vec::new()
    }
}

/// One generation request, as measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestStats {
    /// Tokens of the prompt as the model saw it (chat template included).
    pub prompt_tokens: usize,
    /// New tokens generated for it (`max_tokens` unless the system stopped early).
    pub output_tokens: usize,
    /// From the start of the query to this request's first output token.
    pub time_to_first_token: Duration,
    /// Mean time per output token after the first (None for a single-token output).
    pub time_per_output_token: Option<Duration>,
}

/// Text generation: prompts from the input set (as user messages in the model's chat template when
/// it has one), greedy, exactly `max_tokens` new tokens per request (end-of-sequence tokens do not
/// stop it, so every system produces the same amount of work).
pub struct GenerationWorkload<'a> {
    generator: &'a TextGenerator,
    prompts: Vec<Vec<u32>>,
    max_tokens: usize,
    requests: Vec<RequestStats>,
}

impl<'a> GenerationWorkload<'a> {
    /// A workload over `prompts` (token ids, already templated), each decoded for `max_tokens`
    /// new tokens.
    ///
    /// # Errors
    /// [`BenchError::Invalid`](crate::BenchError::Invalid) when `prompts` is empty or `max_tokens` is 0.
    pub fn new(
        generator: &'a TextGenerator,
        prompts: Vec<Vec<u32>>,
        max_tokens: usize,
    ) -> Result<GenerationWorkload<'a>> {
        if prompts.is_empty() {
            return Err(crate::BenchError::Invalid("the input set has no prompts".into()));
        }
        if max_tokens == 0 {
            return Err(crate::BenchError::Invalid("--max-tokens must be at least 1".into()));
        }
        Ok(GenerationWorkload { generator, prompts, max_tokens, requests: Vec::new() })
    }
}

impl Workload for GenerationWorkload<'_> {
    fn run(&mut self, first: usize, count: usize) -> Result<()> {
        let batch: Vec<Vec<u32>> = cycle(&self.prompts, first, count).cloned().collect();
        let limits = Limits { ignore_eos: true, ..Limits::max_tokens(self.max_tokens) };
        let out = self.generator.generate_batch(&batch, &SamplingParams::greedy(), &limits, |_, _| {})?;
        for g in out {
            let decode: Duration = g.decode_times.iter().sum();
            self.requests.push(RequestStats {
                prompt_tokens: g.prompt_tokens,
                output_tokens: g.tokens.len(),
                time_to_first_token: g.time_to_first_token,
                time_per_output_token: (!g.decode_times.is_empty()).then(|| decode / g.decode_times.len() as u32),
            });
        }
        Ok(())
    }

    fn start_measuring(&mut self) {
        self.requests.clear();
    }

    fn take_requests(&mut self) -> Vec<RequestStats> {
        std::mem::take(&mut self.requests)
    }
}

/// Sentence embeddings of a text set, tokenization included (as a service would do it).
pub struct EmbeddingWorkload<'a> {
    embedder: &'a SentenceEmbedder,
    texts: Vec<String>,
}

impl<'a> EmbeddingWorkload<'a> {
    /// A workload embedding `texts` (raw text; each query tokenizes its batch).
    ///
    /// # Errors
    /// [`BenchError::Invalid`](crate::BenchError::Invalid) when `texts` is empty.
    pub fn new(embedder: &'a SentenceEmbedder, texts: Vec<String>) -> Result<EmbeddingWorkload<'a>> {
        if texts.is_empty() {
            return Err(crate::BenchError::Invalid("the input set has no texts".into()));
        }
        Ok(EmbeddingWorkload { embedder, texts })
    }
}

/// The `count` items from index `first` on, wrapping around the end of `items`.
///
/// # Panics
/// When `items` is empty and `count` > 0 (the workloads refuse an empty input set up front).
pub fn cycle<T>(items: &[T], first: usize, count: usize) -> impl Iterator<Item = &T> {
    (0..count).map(move |i| &items[(first + i) % items.len()])
}

impl Workload for EmbeddingWorkload<'_> {
    fn run(&mut self, first: usize, count: usize) -> Result<()> {
        let batch: Vec<&str> = cycle(&self.texts, first, count).map(String::as_str).collect();
        self.embedder.embed(&batch)?;
        Ok(())
    }
}
