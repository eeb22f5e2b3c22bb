//! The model's own thread and the bounded queue in front of it: dynamic batches under a token
//! budget and a size limit. A request's inputs are items of work, not one unit: a batch takes items
//! in arrival order, from several requests or part of one, so no request — whatever its shape — makes
//! a batch larger than the limits; a request is answered when its last item is done.

use crate::api::ApiError;
use crate::metrics::Metrics;
use accelrt_models::SentenceEmbedder;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Bounds of the embeddings batcher: the size of one model batch and of the queue in front of it.
/// Defaults: 32 inputs, 8192 padded tokens, 256 waiting requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// The most inputs in one model batch.
    pub max_batch: usize,
    /// The most padded tokens (inputs × longest input) in one model batch.
    pub max_batch_tokens: usize,
    /// Requests waiting beyond this are refused (429) at once.
    pub queue: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits { max_batch: 32, max_batch_tokens: 8192, queue: 256 }
    }
}

impl BatchLimits {
    /// These limits made usable for inputs of up to `max_input_tokens` tokens: every limit at least
    /// 1, and a token budget that holds one input of the longest length (otherwise such an input
    /// could never run). `Err` says what was raised, for the caller to refuse or log.
    pub fn fitting(self, max_input_tokens: usize) -> Result<BatchLimits, (BatchLimits, String)> {
        let fitted = BatchLimits {
            max_batch: self.max_batch.max(1),
            max_batch_tokens: self.max_batch_tokens.max(max_input_tokens).max(1),
            queue: self.queue.max(1),
        };
        if fitted.max_batch_tokens != self.max_batch_tokens {
            let why = format!(
                "max_batch_tokens {} cannot hold one input of the model's {max_input_tokens} tokens; it must be at \
                 least {max_input_tokens}",
                self.max_batch_tokens
            );
            return Err((fitted, why));
        }
        Ok(fitted)
    }
}

type Reply = Result<Vec<Vec<f32>>, String>;

struct Job {
    items: Vec<Vec<u32>>,
    reply: oneshot::Sender<Reply>,
    enqueued: Instant,
}

/// A request taken off the queue: its items go to the model in order, over one batch or several.
struct InProgress {
    job: Job,
    /// Vectors of the items done so far (the first `done.len()` items).
    done: Vec<Vec<f32>>,
}

impl InProgress {
    fn remaining(&self) -> usize {
        self.job.items.len() - self.done.len()
    }
}

/// Runs a `SentenceEmbedder` on a dedicated thread behind a bounded queue.
pub struct EmbeddingBatcher {
    tx: mpsc::Sender<Job>,
    embedder: Arc<SentenceEmbedder>,
    metrics: Arc<Metrics>,
    limits: BatchLimits,
}

impl EmbeddingBatcher {
    /// Starts the model thread. A token budget too small for one input of the model's length is
    /// raised to that length (with a warning; `accelrt serve` refuses such a setting instead).
    ///
    /// # Errors
    ///
    /// `ModelError::InvalidInput` when the OS cannot start the thread (as
    /// [`ChatScheduler::start`](crate::ChatScheduler::start) reports it).
    pub fn start(
        embedder: SentenceEmbedder,
        limits: BatchLimits,
        metrics: Arc<Metrics>,
    ) -> Result<EmbeddingBatcher, accelrt_models::ModelError> {
        EmbeddingBatcher::start_on(std::thread::Builder::new().name("accelrt-model".into()), embedder, limits, metrics)
    }

    /// `start` with the model thread started by `thread` (tests: one that cannot start).
    fn start_on(
        thread: std::thread::Builder,
        embedder: SentenceEmbedder,
        limits: BatchLimits,
        metrics: Arc<Metrics>,
    ) -> Result<EmbeddingBatcher, accelrt_models::ModelError> {
        let limits = limits.fitting(embedder.max_tokens()).unwrap_or_else(|(fitted, why)| {
            tracing::warn!("{why}; using {}", fitted.max_batch_tokens);
            fitted
        });
        let (tx, rx) = mpsc::channel(limits.queue);
        let embedder = Arc::new(embedder);
        let worker = embedder.clone();
        let m = metrics.clone();
        thread
            .spawn(move || model_loop(&worker, rx, limits, &m))
            .map_err(|e| accelrt_models::ModelError::InvalidInput(format!("cannot start the model thread: {e}")))?;
        Ok(EmbeddingBatcher { tx, embedder, metrics, limits })
    }

    /// Whether the model thread is still running (its end of the queue is dropped when it ends).
    pub fn model_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    /// The model being served (for its dimension, input length and vocabulary).
    pub fn embedder(&self) -> &SentenceEmbedder {
        &self.embedder
    }

    /// The embedder, for work off the async executor (tokenization).
    pub fn shared_embedder(&self) -> Arc<SentenceEmbedder> {
        self.embedder.clone()
    }

    /// The limits in force (after [`BatchLimits::fitting`]).
    pub fn limits(&self) -> BatchLimits {
        self.limits
    }

    /// Queues one request's token lists; refuses at once when the queue is full. The receiver
    /// gets one vector per list, in order, or the model's error message; dropping it cancels the
    /// items not yet run.
    ///
    /// # Errors
    ///
    /// [`ApiError::overloaded`] (429) when [`BatchLimits::queue`] requests are already waiting;
    /// [`ApiError::unavailable`] (503) when the model thread has stopped.
    pub fn submit(&self, items: Vec<Vec<u32>>) -> Result<oneshot::Receiver<Reply>, ApiError> {
        let (reply, rx) = oneshot::channel();
        crate::queue::enqueue(&self.tx, Job { items, reply, enqueued: Instant::now() }, &self.metrics)?;
        Ok(rx)
    }
}

/// The next batch: for each request from the front of `pending` that contributes, its index and the
/// range of its items. Items are taken in order while the batch stays within `max_batch` inputs and
/// `max_batch_tokens` padded tokens (inputs × longest); the first item always goes in (the limits
/// hold one input of the longest length, see [`BatchLimits::fitting`]).
fn plan(pending: &[&[Vec<u32>]], limits: BatchLimits) -> Vec<(usize, Range<usize>)> {
    let (mut count, mut longest) = (0usize, 0usize);
    let mut spans = Vec::new();
    for (r, items) in pending.iter().enumerate() {
        let mut end = 0;
        for item in items.iter() {
            let longer = longest.max(item.len());
            let fits = count < limits.max_batch && (count + 1) * longer <= limits.max_batch_tokens;
            if count > 0 && !fits {
                break;
            }
            (count, longest, end) = (count + 1, longer, end + 1);
        }
        if end > 0 {
            spans.push((r, 0..end));
        }
        if end < items.len() {
            break;
        }
    }
    spans
}

fn model_loop(embedder: &SentenceEmbedder, mut rx: mpsc::Receiver<Job>, limits: BatchLimits, metrics: &Metrics) {
    let mut pending: VecDeque<InProgress> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.blocking_recv() {
                Some(job) => pending.push_back(InProgress { job, done: Vec::new() }),
                None => return, // every sender is gone: the server has shut down
            }
            metrics.queued(-1);
        }
        // Take requests off the queue only while a batch could use their items, so the queue stays
        // the bound on waiting work.
        while pending.iter().map(InProgress::remaining).sum::<usize>() < limits.max_batch {
            match rx.try_recv() {
                Ok(job) => pending.push_back(InProgress { job, done: Vec::new() }),
                Err(_) => break,
            }
            metrics.queued(-1);
        }
        // A client that has gone (hung up, or timed out) costs nothing more: its remaining items
        // are skipped.
        pending.retain(|p| {
            let gone = p.job.reply.is_closed();
            if gone {
                metrics.cancelled();
            }
            !gone
        });
        answer_finished(&mut pending);
        if pending.is_empty() {
            continue;
        }
        let rest: Vec<&[Vec<u32>]> = pending.iter().map(|p| &p.job.items[p.done.len()..]).collect();
        let spans = plan(&rest, limits);
        let items: Vec<&[u32]> =
            spans.iter().flat_map(|(r, range)| rest[*r][range.clone()].iter().map(Vec::as_slice)).collect();
        let waited: Vec<Duration> = spans
            .iter()
            .filter(|(r, _)| pending[*r].done.is_empty())
            .map(|(r, _)| pending[*r].job.enqueued.elapsed())
            .collect();
        let (n_items, tokens) = (items.len(), items.iter().map(|i| i.len()).sum());
        let padded = n_items * items.iter().map(|i| i.len()).max().unwrap_or(0);
        let started = Instant::now();
        let result = embedder.batch_from_ids(&items).and_then(|b| embedder.run(&b));
        metrics.batch(n_items, tokens, padded, &waited, started.elapsed());
        // Activations: about 16 values of the model's width per padded token, plus attention.
        crate::memory::note(padded * embedder.dimension() * 4 * 16);
        let contributors = spans.len();
        match result {
            Ok(vectors) => {
                let mut vectors = vectors.into_iter();
                for (r, range) in spans {
                    pending[r].done.extend(vectors.by_ref().take(range.len()));
                }
                answer_finished(&mut pending);
            }
            Err(e) => {
                tracing::error!(error = %e, "model batch failed");
                for p in pending.drain(..contributors) {
                    let _ = p.job.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Answers the requests whose items are all done; they are served in order, so these are at the
/// front (a request without items is done at once).
fn answer_finished(pending: &mut VecDeque<InProgress>) {
    while pending.front().is_some_and(|p| p.remaining() == 0) {
        let p = pending.pop_front().expect("checked");
        let _ = p.job.reply.send(Ok(p.done));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_batch: usize, max_batch_tokens: usize) -> BatchLimits {
        BatchLimits { max_batch, max_batch_tokens, queue: 8 }
    }

    /// Requests of `lens` token counts each.
    fn requests(lens: &[&[usize]]) -> Vec<Vec<Vec<u32>>> {
        lens.iter().map(|r| r.iter().map(|&n| vec![1; n]).collect()).collect()
    }

    fn spans(reqs: &[Vec<Vec<u32>>], l: BatchLimits) -> Vec<(usize, Range<usize>)> {
        plan(&reqs.iter().map(Vec::as_slice).collect::<Vec<_>>(), l)
    }

    #[test]
    fn one_large_request_is_split_by_the_batch_size_and_the_token_budget() {
        let reqs = requests(&[&[256; 100]]);
        assert_eq!(spans(&reqs, limits(32, 8192)), [(0, 0..32)]);
        assert_eq!(spans(&reqs, limits(64, 1024)), [(0, 0..4)]);
    }

    #[test]
    fn small_requests_share_a_batch_and_one_that_does_not_fit_is_cut() {
        let reqs = requests(&[&[3, 5], &[4], &[10, 10, 10]]);
        // 5 inputs fit the size limit; 40 padded tokens allow 4 inputs of 10.
        assert_eq!(spans(&reqs, limits(5, 1000)), [(0, 0..2), (1, 0..1), (2, 0..2)]);
        assert_eq!(spans(&reqs, limits(8, 40)), [(0, 0..2), (1, 0..1), (2, 0..1)]);
        // A longer item raises the padding of everything before it.
        assert_eq!(spans(&requests(&[&[2, 2, 2, 9]]), limits(8, 20)), [(0, 0..3)]);
    }

    #[test]
    fn the_first_item_always_goes_in() {
        assert_eq!(spans(&requests(&[&[300, 1]]), limits(4, 256)), [(0, 0..1)]);
    }

    /// A thread the OS cannot start (here: one asking for a stack larger than the address space)
    /// is an error from `start`, as from `ChatScheduler::start`, not a panic.
    #[test]
    fn a_model_thread_that_cannot_start_is_an_error_not_a_panic() {
        use accelrt_models::{registry, ModelStore};
        let dir = ModelStore::from_env()
            .ensure(&registry::ALL_MINILM_L6_V2)
            .unwrap_or_else(|e| panic!("all-MiniLM-L6-v2 is needed by this test: {e}"));
        let embedder =
            SentenceEmbedder::load(&dir, &accelrt_candle::CandleBackend::cpu(), &Default::default()).unwrap();
        let unstartable = std::thread::Builder::new().stack_size(1 << 60);
        let started = EmbeddingBatcher::start_on(unstartable, embedder, BatchLimits::default(), Default::default());
        let e = started.err().expect("an error, not a batcher without a thread");
        assert!(e.to_string().contains("cannot start the model thread"), "{e}");
    }

    #[test]
    fn limits_must_hold_one_input_of_the_longest_length() {
        assert_eq!(limits(32, 8192).fitting(256), Ok(limits(32, 8192)));
        let (fitted, why) = limits(32, 100).fitting(256).unwrap_err();
        assert_eq!(fitted.max_batch_tokens, 256);
        assert!(why.contains("at least 256"), "{why}");
    }
}
