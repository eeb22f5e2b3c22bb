//! The model's own thread and the bounded queue in front of it: dynamic batches under a token
//! budget and a size limit, assembled from whatever requests are waiting when the model frees up.

use crate::api::ApiError;
use crate::metrics::Metrics;
use accelrt_models::SentenceEmbedder;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, Copy)]
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

type Reply = Result<Vec<Vec<f32>>, String>;

struct Job {
    items: Vec<Vec<u32>>,
    reply: oneshot::Sender<Reply>,
    enqueued: Instant,
}

/// Runs a `SentenceEmbedder` on a dedicated thread behind a bounded queue.
pub struct EmbeddingBatcher {
    tx: mpsc::Sender<Job>,
    embedder: Arc<SentenceEmbedder>,
    metrics: Arc<Metrics>,
}

impl EmbeddingBatcher {
    pub fn start(embedder: SentenceEmbedder, limits: BatchLimits, metrics: Arc<Metrics>) -> EmbeddingBatcher {
        let (tx, rx) = mpsc::channel(limits.queue.max(1));
        let embedder = Arc::new(embedder);
        let worker = embedder.clone();
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("accelrt-model".into())
            .spawn(move || model_loop(&worker, rx, limits, &m))
            .expect("the model thread starts");
        EmbeddingBatcher { tx, embedder, metrics }
    }

    pub fn embedder(&self) -> &SentenceEmbedder {
        &self.embedder
    }

    /// The embedder, for work off the async executor (tokenization).
    pub fn shared_embedder(&self) -> Arc<SentenceEmbedder> {
        self.embedder.clone()
    }

    /// Queues one request's token lists; refuses at once when the queue is full.
    pub fn submit(&self, items: Vec<Vec<u32>>) -> Result<oneshot::Receiver<Reply>, ApiError> {
        let (reply, rx) = oneshot::channel();
        crate::queue::enqueue(&self.tx, Job { items, reply, enqueued: Instant::now() }, &self.metrics)?;
        Ok(rx)
    }
}

fn padded_tokens(jobs: &[Job]) -> (usize, usize) {
    let items: usize = jobs.iter().map(|j| j.items.len()).sum();
    let longest = jobs.iter().flat_map(|j| j.items.iter().map(Vec::len)).max().unwrap_or(0);
    (items, items * longest)
}

fn model_loop(embedder: &SentenceEmbedder, mut rx: mpsc::Receiver<Job>, limits: BatchLimits, metrics: &Metrics) {
    let mut carry: VecDeque<Job> = VecDeque::new();
    loop {
        let first = match carry.pop_front() {
            Some(job) => job,
            None => match rx.blocking_recv() {
                Some(job) => job,
                None => return, // every sender is gone: the server has shut down
            },
        };
        let mut batch = vec![first];
        // Take what is waiting, while it fits; a request that does not fit starts the next batch.
        loop {
            let next = match carry.pop_front() {
                Some(job) => job,
                None => match rx.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            batch.push(next);
            let (items, tokens) = padded_tokens(&batch);
            if batch.len() > 1 && (items > limits.max_batch || tokens > limits.max_batch_tokens) {
                carry.push_front(batch.pop().expect("just pushed"));
                break;
            }
        }
        metrics.queued(-(batch.len() as i64));
        // A client that has gone (hung up, or timed out) costs nothing more.
        batch.retain(|job| {
            let gone = job.reply.is_closed();
            if gone {
                metrics.cancelled();
            }
            !gone
        });
        if batch.is_empty() {
            continue;
        }
        let waited: Vec<Duration> = batch.iter().map(|j| j.enqueued.elapsed()).collect();
        let started = Instant::now();
        let items: Vec<&[u32]> = batch.iter().flat_map(|j| j.items.iter().map(Vec::as_slice)).collect();
        let result = embedder.batch_from_ids(&items).and_then(|b| embedder.run(&b));
        let (n_items, tokens) = (items.len(), items.iter().map(|i| i.len()).sum());
        metrics.batch(n_items, tokens, &waited, started.elapsed());
        match result {
            Ok(vectors) => {
                let mut vectors = vectors.into_iter();
                for job in batch {
                    let mine: Vec<Vec<f32>> = vectors.by_ref().take(job.items.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "model batch failed");
                for job in batch {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
