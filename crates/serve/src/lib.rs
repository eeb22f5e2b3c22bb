//! accelrt-serve: OpenAI-compatible inference serving any Rust service can embed.
//!
//! - `POST /v1/embeddings` (input as a string, strings, token ids or lists of token ids;
//!   `encoding_format` float or base64; usage counts) for sentence-embedding models;
//!   `POST /v1/chat/completions` (chat template, sampling, stop strings, `stream: true` as
//!   server-sent events ending with `data: [DONE]`, usage, finish reasons) for generation models;
//!   `GET /v1/models`, `GET /info`, `GET /health` (200 ready, 503 while draining or once the model thread has stopped), `GET /metrics`
//!   (Prometheus text).
//! - The model runs on its own thread, never on the async executor, behind a bounded queue (full ⇒
//!   429 with Retry-After at once). Embeddings are merged into dynamic batches bounded by a token
//!   budget and a batch size; chat uses continuous batching (requests join the decode batch between
//!   steps and leave it when done). A request whose client has gone, or that timed out, is dropped.
//! - Every request has an id (`x-request-id`) on its log lines and in its response.
//! - Graceful shutdown: draining turns health to 503 and refuses new work; queued and running
//!   requests finish.

#![warn(missing_docs)]

mod api;
mod batcher;
mod body;
mod chat;
mod chat_api;
mod chat_route;
mod connections;
mod embeddings_route;
pub mod memory;
mod metrics;
mod queue;
mod request_id;
mod router;

pub use accelrt_models::{FinishReason, ServerInfo, Task};
pub use api::{ApiError, EmbeddingRequest, EncodingFormat};
pub use batcher::{BatchLimits, EmbeddingBatcher};
pub use chat::{ChatEvent, ChatJob, ChatLimits, ChatScheduler};
pub use chat_api::ChatCompletionRequest;
pub use connections::{ensure_open_files, serve};
pub use metrics::Metrics;
pub use request_id::RequestId;
pub use router::{model_id, router, AppState, Engine};
