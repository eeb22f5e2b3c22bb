//! The server's Prometheus metrics, kept and written (text format 0.0.4) by `prometheus-client`.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s text (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

// Bucket upper bounds: seconds, batch sizes, padded tokens per batch.
const SECONDS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const SIZES: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
const TOKENS: [f64; 9] = [64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0];

/// Labels of `accelrt_requests_total`: route and HTTP status.
type RouteStatus = [(&'static str, String); 2];

/// Everything `GET /metrics` reports. Each field is a handle on a metric the registry holds (the
/// handles share their values), so recording never touches the registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    queue_depth: Gauge,
    tokens: Counter,
    batch_size: Histogram,
    batch_padded_tokens: Histogram,
    tokenize: Histogram,
    queue: Histogram,
    inference: Histogram,
    request: Histogram,
    // Chat (continuous batching).
    active_sequences: Gauge,
    generated_tokens: Counter,
    cancelled: Counter,
    decode_rows: Histogram,
    decode_step: Histogram,
    prefill: Histogram,
    first_token: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            queue_depth: Gauge::default(),
            tokens: Counter::default(),
            batch_size: Histogram::new(SIZES),
            batch_padded_tokens: Histogram::new(TOKENS),
            tokenize: Histogram::new(SECONDS),
            queue: Histogram::new(SECONDS),
            inference: Histogram::new(SECONDS),
            request: Histogram::new(SECONDS),
            active_sequences: Gauge::default(),
            generated_tokens: Counter::default(),
            cancelled: Counter::default(),
            decode_rows: Histogram::new(SIZES),
            decode_step: Histogram::new(SECONDS),
            prefill: Histogram::new(SECONDS),
            first_token: Histogram::new(SECONDS),
        };
        // Counter names go in without the `_total` the text format appends; help texts without the
        // full stop the registry appends.
        let mut r = Registry::default();
        r.register("accelrt_requests", "Requests by route and status", m.requests.clone());
        r.register("accelrt_queue_depth", "Requests waiting for the model", m.queue_depth.clone());
        r.register("accelrt_tokens", "Input tokens computed", m.tokens.clone());
        r.register("accelrt_batch_size", "Inputs per model batch", m.batch_size.clone());
        r.register(
            "accelrt_batch_padded_tokens",
            "Padded tokens (inputs × longest) per model batch",
            m.batch_padded_tokens.clone(),
        );
        r.register("accelrt_tokenize_seconds", "Tokenization time per request", m.tokenize.clone());
        r.register("accelrt_queue_seconds", "Time a request waited for its batch", m.queue.clone());
        r.register("accelrt_inference_seconds", "Model time per batch", m.inference.clone());
        r.register("accelrt_request_seconds", "Request time, end to end", m.request.clone());
        r.register(
            "accelrt_requests_cancelled",
            "Requests whose work was dropped because the client left or timed out",
            m.cancelled.clone(),
        );
        r.register(
            "accelrt_generated_tokens",
            "Chat: tokens generated (rate() of this is tokens/s)",
            m.generated_tokens.clone(),
        );
        r.register(
            "accelrt_active_sequences",
            "Chat: sequences in the running decode batch",
            m.active_sequences.clone(),
        );
        r.register("accelrt_decode_batch_size", "Chat: sequences per decode step", m.decode_rows.clone());
        r.register("accelrt_decode_step_seconds", "Chat: time per decode step", m.decode_step.clone());
        r.register("accelrt_prefill_seconds", "Chat: prompt prefill time", m.prefill.clone());
        r.register(
            "accelrt_time_to_first_token_seconds",
            "Chat: from queueing to the first generated token",
            m.first_token.clone(),
        );
        Metrics { registry: r, ..m }
    }
}

impl Metrics {
    /// A request answered on `route` with HTTP `status`, `took` from arrival to response
    /// (`accelrt_requests_total` and `accelrt_request_seconds`). `route` becomes a label value:
    /// pass one of the served routes, never a client's path.
    pub fn request(&self, route: &str, status: u16, took: Duration) {
        self.requests.get_or_create(&[("route", route.to_string()), ("status", status.to_string())]).inc();
        self.request.observe(took.as_secs_f64());
    }

    /// Requests entered (`delta` > 0) or left (< 0) the queue in front of the model.
    pub fn queued(&self, delta: i64) {
        self.queue_depth.inc_by(delta);
    }

    /// Embeddings: one request's texts were tokenised in `took` (`accelrt_tokenize_seconds`).
    pub fn tokenized(&self, took: Duration) {
        self.tokenize.observe(took.as_secs_f64());
    }

    /// Embeddings: one model batch of `items` inputs, `tokens` real and `padded` padded tokens.
    pub fn batch(&self, items: usize, tokens: usize, padded: usize, waited: &[Duration], took: Duration) {
        self.batch_size.observe(items as f64);
        self.batch_padded_tokens.observe(padded as f64);
        self.tokens.inc_by(tokens as u64);
        for w in waited {
            self.queue.observe(w.as_secs_f64());
        }
        self.inference.observe(took.as_secs_f64());
    }

    /// Chat: a prompt was prefilled; `first_token` runs from the request's arrival in the queue.
    pub fn prefilled(&self, prompt_tokens: usize, took: Duration, first_token: Duration) {
        self.tokens.inc_by(prompt_tokens as u64);
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
        self.generated_tokens.inc_by(tokens as u64);
    }

    /// Chat: `n` sequences are in the decode batch now (`accelrt_active_sequences`; saturates at
    /// `i64::MAX`).
    pub fn set_active_sequences(&self, n: usize) {
        self.active_sequences.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Work dropped because its client went away (or timed out).
    pub fn cancelled(&self) {
        self.cancelled.inc();
    }

    /// Every metric in the Prometheus text format (version 0.0.4), to be served with
    /// `Content-Type: text/plain; version=0.0.4; charset=utf-8`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_parse::{Scrape, Value};

    /// The exposition read back by an independent parser of the text format: every family with its
    /// name, type and values, histograms with their buckets.
    #[test]
    fn the_exposition_parses_with_the_documented_names_types_and_values() {
        let m = Metrics::default();
        m.request("/v1/embeddings", 200, Duration::from_millis(3));
        m.request("/v1/embeddings", 200, Duration::from_millis(30));
        m.request("/v1/chat/completions", 429, Duration::ZERO);
        m.queued(2);
        m.queued(-1);
        m.batch(3, 20, 24, &[Duration::from_millis(1)], Duration::from_millis(7));
        m.prefilled(11, Duration::from_millis(4), Duration::from_millis(9));
        m.generated(5);
        m.set_active_sequences(2);
        m.cancelled();
        let text = m.render();
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let value = |name: &str, labels: &[(&str, &str)]| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
                .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
                .value
                .clone()
        };
        let ok = [("route", "/v1/embeddings"), ("status", "200")];
        assert_eq!(value("accelrt_requests_total", &ok), Value::Counter(2.0));
        let refused = [("route", "/v1/chat/completions"), ("status", "429")];
        assert_eq!(value("accelrt_requests_total", &refused), Value::Counter(1.0));
        assert_eq!(value("accelrt_queue_depth", &[]), Value::Gauge(1.0));
        assert_eq!(value("accelrt_tokens_total", &[]), Value::Counter(31.0));
        assert_eq!(value("accelrt_generated_tokens_total", &[]), Value::Counter(5.0));
        assert_eq!(value("accelrt_requests_cancelled_total", &[]), Value::Counter(1.0));
        assert_eq!(value("accelrt_active_sequences", &[]), Value::Gauge(2.0));
        let Value::Histogram(buckets) = value("accelrt_request_seconds", &[]) else {
            panic!("accelrt_request_seconds is not a histogram:\n{text}")
        };
        // 0 s, 3 ms and 30 ms: one at or under 1 ms, two under 5 ms, all three under 50 ms.
        let at = |le: f64| buckets.iter().find(|b| b.less_than == le).map(|b| b.count);
        assert_eq!((at(0.001), at(0.005), at(0.05), at(f64::INFINITY)), (Some(1.0), Some(2.0), Some(3.0), Some(3.0)));
        for name in [
            "accelrt_batch_size",
            "accelrt_batch_padded_tokens",
            "accelrt_tokenize_seconds",
            "accelrt_queue_seconds",
            "accelrt_inference_seconds",
            "accelrt_decode_batch_size",
            "accelrt_decode_step_seconds",
            "accelrt_prefill_seconds",
            "accelrt_time_to_first_token_seconds",
        ] {
            assert!(matches!(value(name, &[]), Value::Histogram(_)), "{name} is not a histogram:\n{text}");
        }
        assert!(text.contains("accelrt_time_to_first_token_seconds_sum 0.009\n"), "{text}");
    }
}
