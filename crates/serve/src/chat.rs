//! Continuous (iteration-level) batching for chat: the model thread owns one session with a fixed
//! number of sequence slots. Between decode steps, waiting requests are prefilled into free slots
//! and join the batch; finished or abandoned sequences leave it and free their slot at once.

use crate::api::ApiError;
use crate::metrics::Metrics;
use accelrt_models::{FinishReason, Limits, SamplingParams, Sequence, TextGenerator};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Sizes of the chat scheduler: the decode batch and the queue in front of it. Defaults: 8
/// sequences, 64 waiting requests; [`ChatScheduler::start`] raises a 0 to 1.
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
    /// Temperature, top-k, top-p and seed of this request's sampler.
    pub params: SamplingParams,
    /// `max_tokens` (≥ 1; the context can end it sooner), stop strings, `ignore_eos`.
    pub limits: Limits,
}

/// What a request hears from the model thread, in order: text pieces, then one end.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// The next piece of output text, never empty. Text that could still be the start of a stop
    /// string, or bytes of an unfinished character, is held back until that is decided.
    Text(String),
    /// The generation ended; no more events follow.
    Finished {
        /// Why: a stop token or stop string, or the `max_tokens` or context limit.
        reason: FinishReason,
        /// Tokens of the prompt (after the chat template).
        prompt_tokens: usize,
        /// Tokens generated: those of a stop string count (its text is cut), an end-of-sequence
        /// token that ended the generation does not.
        completion_tokens: usize,
    },
    /// The model failed on this request (the message says how); no more events follow.
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
    ///
    /// # Errors
    ///
    /// The backend's error when the session for [`ChatLimits::max_sequences`] sequences cannot
    /// be created (e.g. out of memory for the caches); `ModelError::InvalidInput` when the slot
    /// table cannot be allocated or the thread cannot be started.
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

    /// The model being served (for its context length and tokenizer).
    pub fn generator(&self) -> &TextGenerator {
        &self.generator
    }

    /// The generator, for work off the async executor (chat template, tokenization).
    pub fn shared_generator(&self) -> Arc<TextGenerator> {
        self.generator.clone()
    }

    /// The limits in force (each at least 1).
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
    ///
    /// # Errors
    ///
    /// [`ApiError::overloaded`] (429) when [`ChatLimits::queue`] requests are already waiting;
    /// [`ApiError::unavailable`] (503) when the model thread has stopped.
    pub fn submit(&self, job: ChatJob) -> Result<mpsc::UnboundedReceiver<ChatEvent>, ApiError> {
        let (events, rx) = mpsc::unbounded_channel();
        crate::queue::enqueue(&self.tx, Queued { job, events, enqueued: Instant::now() }, &self.metrics)?;
        Ok(rx)
    }
}

/// A sequence in the decode batch, with the client it streams to.
struct Active {
    seq: Sequence,
    events: mpsc::UnboundedSender<ChatEvent>,
}

impl Active {
    /// Takes the sequence's logits: streams its new text, counts its token, and ends the request
    /// when the sequence ends. Returns whether it goes on.
    fn advance(&mut self, g: &TextGenerator, logits: &[f32], metrics: &Metrics) -> bool {
        let advance = match self.seq.advance(g, logits) {
            Ok(a) => a,
            Err(e) => {
                let _ = self.events.send(ChatEvent::Failed(e.to_string()));
                return false;
            }
        };
        if advance.token.is_some() {
            metrics.generated(1);
        }
        if !advance.text.is_empty() {
            let _ = self.events.send(ChatEvent::Text(advance.text));
        }
        let Some(reason) = advance.finish else { return true };
        let _ = self.events.send(ChatEvent::Finished {
            reason,
            prompt_tokens: self.seq.prompt_len(),
            completion_tokens: self.seq.generated().len(),
        });
        false
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
        let seq = match Sequence::new(q.job.prompt, q.job.params, q.job.limits) {
            Ok(s) => s,
            Err(e) => {
                let _ = q.events.send(ChatEvent::Failed(e.to_string()));
                return;
            }
        };
        let started = Instant::now();
        let logits = match self.g.step_sequences(&mut self.session, &[(slot, &seq)]) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "prefill failed");
                let _ = q.events.send(ChatEvent::Failed(e.to_string()));
                return;
            }
        };
        let prompt_len = seq.prompt_len();
        // Prefill activations: about 16 values of the model's width per prompt token.
        crate::memory::note(prompt_len * self.g.config().hidden_size * 4 * 16);
        self.metrics.prefilled(prompt_len, started.elapsed(), q.enqueued.elapsed());
        let mut active = Active { seq, events: q.events };
        if active.advance(self.g, &logits[0], self.metrics) {
            self.slots[slot] = Some(active);
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
        let batch: Vec<(usize, &Sequence)> =
            running.iter().map(|&i| (i, &self.slots[i].as_ref().expect("running").seq)).collect();
        let started = Instant::now();
        let result = self.g.step_sequences(&mut self.session, &batch);
        self.metrics.decode_step(batch.len(), started.elapsed());
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
            if !active.advance(self.g, row, self.metrics) {
                self.slots[i] = None;
            }
        }
    }
}
