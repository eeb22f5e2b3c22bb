//! Prometheus metrics in the text exposition format.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A histogram with fixed upper bounds (seconds or counts).
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    total: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if value <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros.fetch_add((value * 1e6) as u64, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            out.push_str(&format!("{name}_bucket{{le=\"{b}\"}} {}\n", c.load(Ordering::Relaxed)));
        }
        let total = self.total.load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {total}\n"));
        out.push_str(&format!("{name}_sum {}\n", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6));
        out.push_str(&format!("{name}_count {total}\n"));
    }
}

const SECONDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
const TOKENS: &[f64] = &[64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0];

pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    queue_depth: AtomicU64,
    tokens: AtomicU64,
    batch_size: Histogram,
    batch_padded_tokens: Histogram,
    tokenize: Histogram,
    queue: Histogram,
    inference: Histogram,
    request: Histogram,
    // Chat (continuous batching).
    active_sequences: AtomicU64,
    generated_tokens: AtomicU64,
    cancelled: AtomicU64,
    decode_rows: Histogram,
    decode_step: Histogram,
    prefill: Histogram,
    first_token: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            queue_depth: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            batch_size: Histogram::new(SIZES),
            batch_padded_tokens: Histogram::new(TOKENS),
            tokenize: Histogram::new(SECONDS),
            queue: Histogram::new(SECONDS),
            inference: Histogram::new(SECONDS),
            request: Histogram::new(SECONDS),
            active_sequences: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            decode_rows: Histogram::new(SIZES),
            decode_step: Histogram::new(SECONDS),
            prefill: Histogram::new(SECONDS),
            first_token: Histogram::new(SECONDS),
        }
    }
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16, took: Duration) {
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()).entry((route.to_string(), status)).or_default() += 1;
        self.request.observe(took.as_secs_f64());
    }

    pub fn queued(&self, delta: i64) {
        if delta >= 0 {
            self.queue_depth.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.queue_depth.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    pub fn tokenized(&self, took: Duration) {
        self.tokenize.observe(took.as_secs_f64());
    }

    /// Embeddings: one model batch of `items` inputs, `tokens` real and `padded` padded tokens.
    pub fn batch(&self, items: usize, tokens: usize, padded: usize, waited: &[Duration], took: Duration) {
        self.batch_size.observe(items as f64);
        self.batch_padded_tokens.observe(padded as f64);
        self.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        for w in waited {
            self.queue.observe(w.as_secs_f64());
        }
        self.inference.observe(took.as_secs_f64());
    }

    /// Chat: a prompt was prefilled; `first_token` runs from the request's arrival in the queue.
    pub fn prefilled(&self, prompt_tokens: usize, took: Duration, first_token: Duration) {
        self.tokens.fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        self.prefill.observe(took.as_secs_f64());
        self.first_token.observe(first_token.as_secs_f64());
    }

    /// Chat: one decode step over `rows` sequences.
    pub fn decode_step(&self, rows: usize, took: Duration) {
        self.decode_rows.observe(rows as f64);
        self.decode_step.observe(took.as_secs_f64());
    }

    /// Chat: tokens handed to clients.
    pub fn generated(&self, tokens: usize) {
        self.generated_tokens.fetch_add(tokens as u64, Ordering::Relaxed);
    }

    pub fn set_active_sequences(&self, n: usize) {
        self.active_sequences.store(n as u64, Ordering::Relaxed);
    }

    /// Work dropped because its client went away (or timed out).
    pub fn cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP accelrt_requests_total Requests by route and status.\n# TYPE accelrt_requests_total counter\n",
        );
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            out.push_str(&format!("accelrt_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n"));
        }
        out.push_str("# HELP accelrt_queue_depth Requests waiting for the model.\n# TYPE accelrt_queue_depth gauge\n");
        out.push_str(&format!("accelrt_queue_depth {}\n", self.queue_depth.load(Ordering::Relaxed)));
        out.push_str("# HELP accelrt_tokens_total Input tokens computed.\n# TYPE accelrt_tokens_total counter\n");
        out.push_str(&format!("accelrt_tokens_total {}\n", self.tokens.load(Ordering::Relaxed)));
        self.batch_size.render("accelrt_batch_size", "Inputs per model batch.", &mut out);
        self.batch_padded_tokens.render(
            "accelrt_batch_padded_tokens",
            "Padded tokens (inputs × longest) per model batch.",
            &mut out,
        );
        self.tokenize.render("accelrt_tokenize_seconds", "Tokenization time per request.", &mut out);
        self.queue.render("accelrt_queue_seconds", "Time a request waited for its batch.", &mut out);
        self.inference.render("accelrt_inference_seconds", "Model time per batch.", &mut out);
        self.request.render("accelrt_request_seconds", "Request time, end to end.", &mut out);
        let counter = |out: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
        };
        counter(
            &mut out,
            "accelrt_requests_cancelled_total",
            "counter",
            "Requests whose work was dropped because the client left or timed out.",
            self.cancelled.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "accelrt_generated_tokens_total",
            "counter",
            "Chat: tokens generated (rate() of this is tokens/s).",
            self.generated_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "accelrt_active_sequences",
            "gauge",
            "Chat: sequences in the running decode batch.",
            self.active_sequences.load(Ordering::Relaxed),
        );
        self.decode_rows.render("accelrt_decode_batch_size", "Chat: sequences per decode step.", &mut out);
        self.decode_step.render("accelrt_decode_step_seconds", "Chat: time per decode step.", &mut out);
        self.prefill.render("accelrt_prefill_seconds", "Chat: prompt prefill time.", &mut out);
        self.first_token.render(
            "accelrt_time_to_first_token_seconds",
            "Chat: from queueing to the first generated token.",
            &mut out,
        );
        out
    }
}
