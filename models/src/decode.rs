//! One generating sequence as a state machine, shared by every decode loop: the CLI's and the
//! benchmark's ([`TextGenerator::generate_batch`]) and the server's continuous batching. A driver
//! asks each sequence for its next input ([`Sequence::next_input`]), runs one model step for the
//! sequences it batches ([`TextGenerator::step_sequences`]), and hands each its logits
//! ([`Sequence::advance`]), which samples the next token, applies the stop rules and says what
//! text may be emitted. Drivers differ only in how they batch and what they do with the text.

use crate::sampling::{Sampler, SamplingParams};
use crate::text_stream::TextStream;
use crate::{ModelError, Result, TextGenerator};
use accelrt_core::SessionState;
use serde::Serialize;

/// When a generation must end, besides the model's own end-of-sequence tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    /// The most tokens to generate (≥ 1); the context can end a generation sooner.
    pub max_tokens: usize,
    /// Keep generating past end-of-sequence tokens (benchmarks: every request yields exactly
    /// `max_tokens` tokens, or fills the context). The name is vLLM's request field.
    pub ignore_eos: bool,
    /// Strings that end the generation; the output stops just before the first one found and
    /// never contains any part of it. Empty strings are ignored.
    pub stop: Vec<String>,
}

impl Limits {
    /// At most `max_tokens` tokens, stopping at end-of-sequence tokens, no stop strings.
    pub fn max_tokens(max_tokens: usize) -> Limits {
        Limits { max_tokens, ..Limits::default() }
    }
}

/// Why a generation ended, as OpenAI's `finish_reason` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence or end-of-turn token (not part of the output), or a stop string.
    Stop,
    /// `max_tokens` tokens were generated, or the sequence filled its context.
    Length,
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        })
    }
}

/// What one [`Sequence::advance`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    /// The token added to the output (`None` when an end-of-sequence token ended the sequence).
    pub token: Option<u32>,
    /// Text that is now safe to hand out: it can never turn out to be the start of a stop string
    /// or part of an incomplete UTF-8 character (those are held back until settled, and released
    /// when the sequence ends). Often empty.
    pub text: String,
    /// Set when the sequence has ended: it takes no further steps.
    pub finish: Option<FinishReason>,
}

/// One sequence being generated: its tokens, its sampler and its output text.
pub struct Sequence {
    prompt_len: usize,
    /// Prompt and generated tokens.
    history: Vec<u32>,
    sampler: Sampler,
    limits: Limits,
    text: TextStream,
    finish: Option<FinishReason>,
}

impl Sequence {
    /// A sequence for `prompt` (checked by the caller against the model: non-empty, fits the
    /// context, ids in the vocabulary, as [`TextGenerator::chat_prompt`] does). Refuses sampling
    /// parameters out of range and `max_tokens` 0.
    pub fn new(prompt: Vec<u32>, params: SamplingParams, limits: Limits) -> Result<Sequence> {
        if limits.max_tokens == 0 {
            return Err(ModelError::InvalidInput("max tokens must be at least 1".into()));
        }
        if prompt.is_empty() {
            return Err(ModelError::InvalidInput("the prompt is empty".into()));
        }
        let sampler = Sampler::new(params)?;
        let text = TextStream::new(limits.stop.clone());
        Ok(Sequence { prompt_len: prompt.len(), history: prompt, sampler, limits, text, finish: None })
    }

    /// The tokens this sequence adds to its cache in the next step, and the cache position of the
    /// first: the whole prompt at 0 (prefill), then the last sampled token (decode).
    pub fn next_input(&self) -> (usize, &[u32]) {
        if self.history.len() == self.prompt_len {
            (0, &self.history)
        } else {
            let last = self.history.len() - 1;
            (last, &self.history[last..])
        }
    }

    /// Takes this sequence's next-token logits (one per vocabulary entry) from the step that ran
    /// [`Sequence::next_input`]: samples a token and applies, in order, the end-of-sequence token
    /// (unless `ignore_eos`), the stop strings, `max_tokens` and the context. Errors only when
    /// `logits` is empty or the tokenizer cannot decode the output; calling it on a finished
    /// sequence is refused.
    pub fn advance(&mut self, g: &TextGenerator, logits: &[f32]) -> Result<Advance> {
        if self.finish.is_some() {
            return Err(ModelError::InvalidInput("the sequence has already finished".into()));
        }
        let id = self.sampler.sample(logits, &self.history)?;
        if !self.limits.ignore_eos && g.tokenizer().is_stop(id) {
            return Ok(self.end(None, String::new(), FinishReason::Stop));
        }
        self.history.push(id);
        let decoded = g.tokenizer().decode(self.generated())?;
        let (text, hit_stop) = self.text.update(&decoded);
        if hit_stop {
            return Ok(self.end(Some(id), text, FinishReason::Stop));
        }
        if self.generated().len() >= self.limits.max_tokens || self.history.len() >= g.context() {
            return Ok(self.end(Some(id), text, FinishReason::Length));
        }
        Ok(Advance { token: Some(id), text, finish: None })
    }

    /// Ends the sequence, releasing the text held back (nothing is held after a stop string).
    fn end(&mut self, token: Option<u32>, mut text: String, reason: FinishReason) -> Advance {
        text.push_str(&self.text.finish());
        self.finish = Some(reason);
        Advance { token, text, finish: Some(reason) }
    }

    /// Why the sequence ended; `None` while it runs.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// The prompt's length in tokens.
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    /// The generated tokens (end-of-sequence tokens that ended it are not among them).
    pub fn generated(&self) -> &[u32] {
        &self.history[self.prompt_len..]
    }

    /// The output text so far: cut before a stop string once one is found; while running it may
    /// end in text still held back (an incomplete character shows as U+FFFD).
    pub fn text(&self) -> &str {
        self.text.text()
    }
}

impl TextGenerator {
    /// One model step for several sequences at once: `batch` pairs each sequence with its session
    /// slot; every sequence's [`Sequence::next_input`] must have the same number of tokens (all
    /// decoding, or one prefill). Returns each sequence's next-token logits, in order, for
    /// [`Sequence::advance`].
    pub fn step_sequences(&self, state: &mut SessionState, batch: &[(usize, &Sequence)]) -> Result<Vec<Vec<f32>>> {
        let rows: Vec<(usize, usize, &[u32])> = batch
            .iter()
            .map(|(slot, seq)| {
                let (position, tokens) = seq.next_input();
                (*slot, position, tokens)
            })
            .collect();
        self.step(state, &rows)
    }
}
