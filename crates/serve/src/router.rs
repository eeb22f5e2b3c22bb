//! The HTTP routes.

use crate::api::{ApiError, EmbeddingData, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingValue, Usage};
use crate::batcher::EmbeddingBatcher;
use crate::metrics::Metrics;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `GET /info` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub model: String,
    pub backend: String,
    pub device: String,
    pub version: String,
    pub dimensions: usize,
    pub max_input_tokens: usize,
}

pub struct AppState {
    pub batcher: EmbeddingBatcher,
    pub metrics: Arc<Metrics>,
    pub info: ServerInfo,
    /// Inputs per request.
    pub max_inputs: usize,
    /// Request body bytes.
    pub max_body_bytes: usize,
    draining: AtomicBool,
}

impl AppState {
    pub fn new(batcher: EmbeddingBatcher, metrics: Arc<Metrics>, info: ServerInfo) -> AppState {
        AppState { batcher, metrics, info, max_inputs: 2048, max_body_bytes: 8 << 20, draining: AtomicBool::new(false) }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/info", get(info))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
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

async fn embeddings(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let result = embed(&state, body).await;
    let response = match result {
        Ok(r) => Json(r).into_response(),
        Err(e) => {
            if e.status.is_server_error() && e.status != StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(error = %e, "embeddings request failed");
            }
            e.into_response()
        }
    };
    state.metrics.request("/v1/embeddings", response.status().as_u16(), started.elapsed());
    response
}

async fn embed(state: &Arc<AppState>, body: Result<Bytes, BytesRejection>) -> Result<EmbeddingResponse, ApiError> {
    if state.is_draining() {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::too_large(format!("the request body exceeds {} bytes", state.max_body_bytes))
        }
        _ => ApiError::invalid(e.body_text(), None),
    })?;
    let request: EmbeddingRequest = serde_json::from_slice(&body).map_err(|e| {
        if e.is_data() {
            ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                ..ApiError::invalid(format!("invalid request: {e}"), None)
            }
        } else {
            ApiError::invalid(format!("the body is not valid JSON: {e}"), None)
        }
    })?;
    if request.model != state.info.model {
        return Err(ApiError::unknown_model(&request.model, &state.info.model));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("encoding_format `{other}`: use float or base64"),
                Some("encoding_format"),
            ))
        }
    };
    if let Some(d) = request.dimensions {
        if d != state.info.dimensions {
            return Err(ApiError::invalid(
                format!("this model's embeddings have {} dimensions and cannot be shortened", state.info.dimensions),
                Some("dimensions"),
            ));
        }
    }
    let count = match &request.input {
        EmbeddingInput::Text(_) | EmbeddingInput::Tokens(_) => 1,
        EmbeddingInput::Texts(t) => t.len(),
        EmbeddingInput::TokenLists(t) => t.len(),
    };
    if count == 0 {
        return Err(ApiError::invalid("`input` is empty", Some("input")));
    }
    if count > state.max_inputs {
        return Err(ApiError::too_large(format!("{count} inputs; at most {} per request", state.max_inputs)));
    }
    let tokenize_started = Instant::now();
    let items: Vec<Vec<u32>> = match request.input {
        EmbeddingInput::Tokens(ids) => vec![ids],
        EmbeddingInput::TokenLists(lists) => lists,
        EmbeddingInput::Text(t) => tokenize(state, vec![t]).await?,
        EmbeddingInput::Texts(t) => tokenize(state, t).await?,
    };
    state.metrics.tokenized(tokenize_started.elapsed());
    let max = state.info.max_input_tokens;
    let vocab = state.batcher.embedder().vocab_size() as u32;
    for (i, item) in items.iter().enumerate() {
        if item.is_empty() {
            return Err(ApiError::invalid(format!("input {i} has no tokens"), Some("input")));
        }
        if item.len() > max {
            return Err(ApiError::too_large(format!(
                "input {i} has {} tokens; the model takes at most {max}",
                item.len()
            )));
        }
        if let Some(bad) = item.iter().find(|&&t| t >= vocab) {
            return Err(ApiError::invalid(
                format!("input {i}: token id {bad} is outside the vocabulary ({vocab})"),
                Some("input"),
            ));
        }
    }
    let prompt_tokens = items.iter().map(Vec::len).sum();
    let vectors = state
        .batcher
        .submit(items)?
        .await
        .map_err(|_| ApiError::internal("the model thread stopped"))?
        .map_err(|e| ApiError::internal(format!("inference failed: {e}")))?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingValue::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingValue::Float(v)
            },
        })
        .collect();
    Ok(EmbeddingResponse {
        object: "list",
        data,
        model: state.info.model.clone(),
        usage: Usage { prompt_tokens, total_tokens: prompt_tokens },
    })
}

/// Tokenizes off the async executor. Inputs longer than the model's limit are truncated by the
/// tokenizer exactly as the library does (sentence-transformers' behaviour); token-id inputs are
/// checked against the limit instead.
async fn tokenize(state: &Arc<AppState>, texts: Vec<String>) -> Result<Vec<Vec<u32>>, ApiError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        state.batcher.embedder().encode(&refs)
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task: {e}")))?
    .map_err(|e| ApiError::invalid(e.to_string(), Some("input")))
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
