//! accelrt-serve: an OpenAI-compatible embeddings server any Rust service can embed.
//!
//! - `POST /v1/embeddings` (input as a string, strings, token ids or lists of token ids;
//!   `encoding_format` float or base64; usage counts), `GET /v1/models`, `GET /info`,
//!   `GET /health` (200 ready, 503 while draining), `GET /metrics` (Prometheus text).
//! - The model runs on its own thread, never on the async executor. Requests are tokenized on the
//!   request side, queued in a bounded queue (full ⇒ 429 with Retry-After at once) and merged into
//!   dynamic batches bounded by a token budget and a batch size; a request whose client has gone is
//!   dropped before it is computed.
//! - Graceful shutdown: draining turns health to 503 and refuses new work; queued and running
//!   requests finish.

mod api;
mod batcher;
mod metrics;
mod router;

pub use api::{ApiError, EmbeddingRequest};
pub use batcher::{BatchLimits, EmbeddingBatcher};
pub use metrics::Metrics;
pub use router::{router, serve, AppState, ServerInfo};
