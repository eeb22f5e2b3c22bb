//! Continuous (iteration-level) batching for chat: the model thread owns one session with a fixed
//! number of sequence slots. Between decode steps, waiting requests are prefilled into free slots
//! and join the batch; finished or abandoned sequences leave it and free their slot at once.

use crate::api::ApiError;
use crate::metrics::Metrics;
use crate::text_stream::TextStream;
use accelrt_models::{Sampler, SamplingParams, TextGenerator};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy)]
pub struct ChatLimits {
    /// Sequences decoding together (slots of the session; each holds a full context of cache).
    pub max_sequences: usize,
    /// Requests waiting for a slot beyond this are refused (429) at once.
    pub queue: usize,
}

impl Default for ChatLimits {
    fn default() -> Self {
        ChatLimits { max_sequences: 8, queue: 64 }
    }
}

/// One generation to run.
#[derive(Debug, Clone)]
pub struct ChatJob {
    /// The prompt's token ids (chat template applied); fits the context (checked by the caller).
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// The most tokens to generate (≥ 1); the context can end it sooner.
    pub max_tokens: usize,
    /// Strings that end the generation; they are not part of the output.
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens (benchmarks: fixed output lengths).
    pub ignore_eos: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` or the context ran out.
    Length,
}

/// What a request hears from the model thread, in order: text pieces, then one end.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    Text(String),
    Finished { reason: FinishReason, prompt_tokens: usize, completion_tokens: usize },
    Failed(String),
}

pub(crate) struct Queued {
    job: ChatJob,
    events: mpsc::UnboundedSender<ChatEvent>,
    enqueued: Instant,
}

/// Runs a `TextGenerator` on a dedicated thread behind a bounded queue.
pub struct ChatScheduler {
    tx: mpsc::Sender<Queued>,
    generator: Arc<TextGenerator>,
    limits: ChatLimits,
    metrics: Arc<Metrics>,
}

impl ChatScheduler {
    /// Starts the model thread; fails if the session's caches cannot be allocated.
    pub fn start(
        generator: TextGenerator,
        limits: ChatLimits,
        metrics: Arc<Metrics>,
    ) -> Result<ChatScheduler, accelrt_models::ModelError> {
        let limits = ChatLimits { max_sequences: limits.max_sequences.max(1), queue: limits.queue.max(1) };
        let (tx, rx) = mpsc::channel(limits.queue);
        let generator = Arc::new(generator);
        let (worker, m) = (generator.clone(), metrics.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("accelrt-model".into())
            .spawn(move || {
                // Everything the loop needs is allocated before it reports ready, so a limit too
                // large is an error from `start`, never a panic of a thread already serving.
                let mut slots = Vec::new();
                if slots.try_reserve_exact(limits.max_sequences).is_err() {
                    let why = format!("cannot allocate {} sequence slots", limits.max_sequences);
                    let _ = ready_tx.send(Err(accelrt_models::ModelError::InvalidInput(why)));
                    return;
                }
                slots.resize_with(limits.max_sequences, || None);
                match worker.new_session(limits.max_sequences) {
                    Ok(session) => {
                        let _ = ready_tx.send(Ok(()));
                        ModelLoop { g: &worker, metrics: &m, session, slots }.run(rx)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| accelrt_models::ModelError::InvalidInput(format!("cannot start the model thread: {e}")))?;
        ready_rx.recv().map_err(|_| {
            accelrt_models::ModelError::InvalidInput("the model thread stopped while starting".into())
        })??;
        Ok(ChatScheduler { tx, generator, limits, metrics })
    }

    pub fn generator(&self) -> &TextGenerator {
        &self.generator
    }

    /// The generator, for work off the async executor (chat template, tokenization).
    pub fn shared_generator(&self) -> Arc<TextGenerator> {
        self.generator.clone()
    }

    pub fn limits(&self) -> ChatLimits {
        self.limits
    }

    /// Whether the model thread is still running (its end of the queue is dropped when it ends).
    pub fn model_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    /// A scheduler whose model thread runs `thread` instead of the model loop (tests: a thread
    /// that ends, as a panicking one does).
    #[cfg(test)]
    pub(crate) fn with_thread(
        generator: TextGenerator,
        metrics: Arc<Metrics>,
        thread: impl FnOnce(mpsc::Receiver<Queued>) + Send + 'static,
    ) -> (ChatScheduler, std::thread::JoinHandle<()>) {
        let limits = ChatLimits { max_sequences: 1, queue: 1 };
        let (tx, rx) = mpsc::channel(limits.queue);
        let handle = std::thread::spawn(move || thread(rx));
        (ChatScheduler { tx, generator: Arc::new(generator), limits, metrics }, handle)
    }

    /// Queues a generation; refuses at once when the queue is full. Dropping the receiver cancels
    /// the generation (before its prefill, or between two decode steps).
    pub fn submit(&self, job: ChatJob) -> Result<mpsc::UnboundedReceiver<ChatEvent>, ApiError> {
        let (events, rx) = mpsc::unbounded_channel();
        crate::queue::enqueue(&self.tx, Queued { job, events, enqueued: Instant::now() }, &self.metrics)?;
        Ok(rx)
    }
}

/// A sequence in the decode batch.
struct Active {
    job: ChatJob,
    events: mpsc::UnboundedSender<ChatEvent>,
    sampler: Sampler,
    /// Prompt and generated tokens.
    history: Vec<u32>,
    text: TextStream,
}

impl Active {
    fn generated(&self) -> &[u32] {
        &self.history[self.job.prompt.len()..]
    }

    /// Takes a sampled token; returns why the sequence ends, if it does.
    fn push(&mut self, id: u32, g: &TextGenerator, metrics: &Metrics) -> Result<Option<FinishReason>, String> {
        if !self.job.ignore_eos && g.tokenizer().is_stop(id) {
            let rest = self.text.finish();
            self.send_text(rest);
            return Ok(Some(FinishReason::Stop));
        }
        self.history.push(id);
        metrics.generated(1);
        let text = g.tokenizer().decode(self.generated()).map_err(|e| e.to_string())?;
        let (delta, hit_stop) = self.text.update(&text);
        self.send_text(delta);
        if hit_stop {
            return Ok(Some(FinishReason::Stop));
        }
        if self.generated().len() >= self.job.max_tokens || self.history.len() >= g.context() {
            let rest = self.text.finish();
            self.send_text(rest);
            return Ok(Some(FinishReason::Length));
        }
        Ok(None)
    }

    fn send_text(&self, text: String) {
        if !text.is_empty() {
            let _ = self.events.send(ChatEvent::Text(text));
        }
    }

    fn finish(self, reason: FinishReason) {
        let _ = self.events.send(ChatEvent::Finished {
            reason,
            prompt_tokens: self.job.prompt.len(),
            completion_tokens: self.history.len() - self.job.prompt.len(),
        });
    }
}

struct ModelLoop<'a> {
    g: &'a TextGenerator,
    metrics: &'a Metrics,
    session: accelrt_core::SessionState,
    /// One entry per session slot; `None` is free.
    slots: Vec<Option<Active>>,
}

impl ModelLoop<'_> {
    fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        loop {
            // Admit waiting requests into free slots; with nothing running, wait for one.
            while let Some(free) = self.slots.iter().position(Option::is_none) {
                let idle = self.slots.iter().all(Option::is_none);
                let next = if idle { rx.blocking_recv() } else { rx.try_recv().ok() };
                let Some(q) = next else {
                    if idle {
                        return; // every sender is gone: the server has shut down
                    }
                    break;
                };
                self.metrics.queued(-1);
                self.admit(free, q);
            }
            self.leave_abandoned();
            self.decode();
            self.metrics.set_active_sequences(self.slots.iter().flatten().count());
        }
    }

    /// Prefills a request's prompt into `slot` and samples its first token.
    fn admit(&mut self, slot: usize, q: Queued) {
        if q.events.is_closed() {
            self.metrics.cancelled();
            return;
        }
        let mut sampler = match Sampler::new(q.job.params.clone()) {
            Ok(s) => s,
            Err(e) => {
                let _ = q.events.send(ChatEvent::Failed(e.to_string()));
                return;
            }
        };
        let started = Instant::now();
        let logits = match self.g.step(&mut self.session, &[(slot, 0, &q.job.prompt)]) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "prefill failed");
                let _ = q.events.send(ChatEvent::Failed(e.to_string()));
                return;
            }
        };
        // Prefill activations: about 16 values of the model's width per prompt token.
        crate::memory::note(q.job.prompt.len() * self.g.config().hidden_size * 4 * 16);
        let first = sampler.sample(&logits[0], &q.job.prompt);
        self.metrics.prefilled(q.job.prompt.len(), started.elapsed(), q.enqueued.elapsed());
        let mut active = Active {
            history: q.job.prompt.clone(),
            text: TextStream::new(q.job.stop.clone()),
            job: q.job,
            events: q.events,
            sampler,
        };
        match active.push(first, self.g, self.metrics) {
            Ok(None) => self.slots[slot] = Some(active),
            Ok(Some(reason)) => active.finish(reason),
            Err(e) => {
                let _ = active.events.send(ChatEvent::Failed(e));
            }
        }
    }

    /// Sequences whose client has gone leave the batch before the next step costs anything.
    fn leave_abandoned(&mut self) {
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|a| a.events.is_closed()) {
                *slot = None;
                self.metrics.cancelled();
            }
        }
    }

    /// One token for every running sequence.
    fn decode(&mut self) {
        let running: Vec<usize> = (0..self.slots.len()).filter(|&i| self.slots[i].is_some()).collect();
        if running.is_empty() {
            return;
        }
        let last: Vec<[u32; 1]> = running
            .iter()
            .map(|&i| [*self.slots[i].as_ref().expect("running").history.last().expect("≥ 1 token")])
            .collect();
        let rows: Vec<(usize, usize, &[u32])> = running
            .iter()
            .zip(&last)
            .map(|(&i, t)| (i, self.slots[i].as_ref().expect("running").history.len() - 1, &t[..]))
            .collect();
        let started = Instant::now();
        let result = self.g.step(&mut self.session, &rows);
        self.metrics.decode_step(rows.len(), started.elapsed());
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "decode step failed");
                for &i in &running {
                    if let Some(a) = self.slots[i].take() {
                        let _ = a.events.send(ChatEvent::Failed(e.to_string()));
                    }
                }
                return;
            }
        };
        for (&i, row) in running.iter().zip(&logits) {
            let active = self.slots[i].as_mut().expect("running");
            let next = active.sampler.sample(row, &active.history);
            match active.push(next, self.g, self.metrics) {
                Ok(None) => {}
                Ok(Some(reason)) => self.slots[i].take().expect("running").finish(reason),
                Err(e) => {
                    let a = self.slots[i].take().expect("running");
                    let _ = a.events.send(ChatEvent::Failed(e));
                }
            }
        }
    }
}
