//! The server's state, its routes, and serving with graceful shutdown.

use crate::batcher::EmbeddingBatcher;
use crate::chat::ChatScheduler;
use crate::metrics::Metrics;
use crate::{chat_route, embeddings_route, request_id};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What `GET /info` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub model: String,
    /// `embeddings` or `chat`.
    pub task: String,
    pub backend: String,
    pub device: String,
    pub version: String,
    /// Embeddings: the vector length.
    pub dimensions: Option<usize>,
    /// Embeddings: tokens per input; chat: positions per sequence (prompt and output together).
    pub max_input_tokens: usize,
}

/// The model behind the server.
pub enum Engine {
    Embeddings(EmbeddingBatcher),
    Chat(ChatScheduler),
}

impl From<EmbeddingBatcher> for Engine {
    fn from(b: EmbeddingBatcher) -> Engine {
        Engine::Embeddings(b)
    }
}

impl From<ChatScheduler> for Engine {
    fn from(s: ChatScheduler) -> Engine {
        Engine::Chat(s)
    }
}

pub struct AppState {
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    pub info: ServerInfo,
    /// Inputs per embeddings request.
    pub max_inputs: usize,
    /// Request body bytes.
    pub max_body_bytes: usize,
    /// A request still unanswered after this is cut off (504) and its work cancelled.
    pub request_timeout: Duration,
    draining: AtomicBool,
}

impl AppState {
    pub fn new(engine: impl Into<Engine>, metrics: Arc<Metrics>, info: ServerInfo) -> AppState {
        AppState {
            engine: engine.into(),
            metrics,
            info,
            max_inputs: 2048,
            max_body_bytes: 8 << 20,
            request_timeout: Duration::from_secs(300),
            draining: AtomicBool::new(false),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v1/embeddings", post(embeddings_route::embeddings))
        .route("/v1/chat/completions", post(chat_route::chat_completions))
        .route("/v1/models", get(models))
        .route("/info", get(info))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// Serves until `shutdown` resolves; then health turns 503 and new work is refused for `drain`
/// (so a load balancer stops sending), the listener closes, and requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let app = router(state.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            state.draining.store(true, Ordering::SeqCst);
            tracing::info!("draining: health is 503, new requests are refused");
            tokio::time::sleep(drain).await;
        })
        .await
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    let body = serde_json::json!({
        "object": "list",
        "data": [{ "id": state.info.model, "object": "model", "created": 0, "owned_by": "accelrt" }]
    });
    state.metrics.request("/v1/models", 200, Duration::ZERO);
    Json(body).into_response()
}

async fn info(State(state): State<Arc<AppState>>) -> Response {
    Json(state.info.clone()).into_response()
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "draining" }))).into_response()
    } else {
        Json(serde_json::json!({ "status": "ok" })).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
