//! `POST /v1/embeddings`.

use crate::api::{
    parse_body, ApiError, EmbeddingData, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingValue,
    EncodingFormat, Usage,
};
use crate::router::{AppState, Engine};
use accelrt_models::SentenceEmbedder;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn embeddings(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
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

/// `POST /v1/embeddings` on a chat model: 400 naming the route to use (503 while draining),
/// without reading the body, so its size does not matter.
pub async fn wrong_model(State(state): State<Arc<AppState>>) -> Response {
    let error = if state.is_draining() {
        ApiError::unavailable("the server is shutting down")
    } else {
        ApiError::wrong_task(&state.info.model, "a chat model", "/v1/chat/completions")
    };
    state.metrics.request("/v1/embeddings", error.status.as_u16(), Duration::ZERO);
    error.into_response()
}

async fn embed(state: &Arc<AppState>, body: Result<Bytes, BytesRejection>) -> Result<EmbeddingResponse, ApiError> {
    if state.is_draining() {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let request: EmbeddingRequest = parse_body(body, state.max_body_bytes, "/v1/embeddings")?;
    if request.model != state.info.model {
        return Err(ApiError::unknown_model(&request.model, &state.info.model));
    }
    let Engine::Embeddings(batcher) = &state.engine else {
        return Err(ApiError::wrong_task(&state.info.model, "a chat model", "/v1/chat/completions"));
    };
    let base64 = match request.encoding_format {
        EncodingFormat::Float => false,
        EncodingFormat::Base64 => true,
        EncodingFormat::Unsupported => {
            return Err(ApiError::invalid("encoding_format must be float or base64", Some("encoding_format")))
        }
    };
    let dimensions = batcher.embedder().dimension();
    if let Some(d) = request.dimensions {
        if d != dimensions {
            return Err(ApiError::invalid(
                format!("this model's embeddings have {dimensions} dimensions and cannot be shortened"),
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
        return Err(ApiError::invalid(
            format!("{count} inputs; at most {} per request", state.max_inputs),
            Some("input"),
        ));
    }
    let tokenize_started = Instant::now();
    let items: Vec<Vec<u32>> = match request.input {
        EmbeddingInput::Tokens(ids) => vec![ids],
        EmbeddingInput::TokenLists(lists) => lists,
        EmbeddingInput::Text(t) => tokenize(batcher.shared_embedder(), vec![t]).await?,
        EmbeddingInput::Texts(t) => tokenize(batcher.shared_embedder(), t).await?,
    };
    state.metrics.tokenized(tokenize_started.elapsed());
    let max = state.info.max_input_tokens;
    let vocab = batcher.embedder().vocab_size() as u32;
    for (i, item) in items.iter().enumerate() {
        if item.is_empty() {
            return Err(ApiError::invalid(format!("input {i} has no tokens"), Some("input")));
        }
        if item.len() > max {
            return Err(ApiError::context_length_exceeded(
                format!("input {i} has {} tokens; the model takes at most {max}", item.len()),
                "input",
            ));
        }
        if let Some(bad) = item.iter().find(|&&t| t >= vocab) {
            return Err(ApiError::invalid(
                format!("input {i}: token id {bad} is outside the vocabulary ({vocab})"),
                Some("input"),
            ));
        }
    }
    let prompt_tokens = items.iter().map(Vec::len).sum();
    let reply = batcher.submit(items)?;
    let vectors = tokio::time::timeout(state.request_timeout, reply)
        .await
        .map_err(|_| ApiError::timeout(state.request_timeout))?
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
async fn tokenize(embedder: Arc<SentenceEmbedder>, texts: Vec<String>) -> Result<Vec<Vec<u32>>, ApiError> {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        embedder.encode(&refs)
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task: {e}")))?
    .map_err(|e| ApiError::from_model(e, "input"))
}
