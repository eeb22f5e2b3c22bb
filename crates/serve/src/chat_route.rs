//! `POST /v1/chat/completions`: the whole answer as JSON, or (`stream: true`) server-sent events
//! of chunks ending with `data: [DONE]`.

use crate::api::{parse_body, ApiError};
use crate::chat::{ChatEvent, ChatJob, ChatScheduler};
use crate::chat_api::{ChatCompletionRequest, Completion};
use crate::router::{AppState, Engine};
use accelrt_models::{FinishReason, Limits};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const ROUTE: &str = "/v1/chat/completions";

pub async fn chat_completions(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let response = match chat(&state, body).await {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() && e.status != StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(error = %e, "chat request failed");
            }
            e.into_response()
        }
    };
    // For a stream this is the time to its headers; the stream's own end is logged by the stream.
    state.metrics.request(ROUTE, response.status().as_u16(), started.elapsed());
    response
}

/// `POST /v1/chat/completions` on an embeddings model: 400 naming the route to use (503 while
/// draining), without reading the body, so its size does not matter.
pub async fn wrong_model(State(state): State<Arc<AppState>>) -> Response {
    let error = if state.is_draining() {
        ApiError::unavailable("the server is shutting down")
    } else {
        ApiError::wrong_task(&state.info.model, "a sentence-embedding model", "/v1/embeddings")
    };
    state.metrics.request(ROUTE, error.status.as_u16(), Duration::ZERO);
    error.into_response()
}

/// A request that passed its checks, ready for the model.
struct Accepted {
    completion: Completion,
    include_usage: bool,
    events: mpsc::UnboundedReceiver<ChatEvent>,
    deadline: tokio::time::Instant,
    timeout: Duration,
}

async fn chat(state: &Arc<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let request: ChatCompletionRequest = parse_body(body, state.max_body_bytes, ROUTE)?;
    if request.model != state.info.model {
        return Err(ApiError::unknown_model(&request.model, &state.info.model));
    }
    let Engine::Chat(scheduler) = &state.engine else {
        return Err(ApiError::wrong_task(&state.info.model, "a sentence-embedding model", "/v1/embeddings"));
    };
    request.check_stream_options()?;
    let messages = request.chat_messages()?;
    let params = request.sampling()?;
    let max_tokens = request.max_tokens()?;
    let stop = request.stops()?;
    let prompt = prompt_tokens(scheduler, messages).await?;
    // `chat_prompt` refused prompts that leave no room for an answer (400 context_length_exceeded);
    // checked again here, as the arithmetic below depends on it.
    let context = scheduler.generator().context();
    if prompt.len() >= context {
        return Err(ApiError::context_length_exceeded(
            format!("the messages take {} tokens; the context holds {context} positions", prompt.len()),
            "messages",
        ));
    }
    let limits = Limits {
        max_tokens: max_tokens.unwrap_or(context - prompt.len()),
        ignore_eos: request.ignore_eos == Some(true),
        stop,
    };
    let job = ChatJob { prompt, params, limits };
    // The completion's own id (never the client's request id, which a client may reuse); it is on
    // the generation's log line, inside the request's span (which carries the request id).
    let accepted = Accepted {
        completion: Completion::new(&state.info.model),
        include_usage: request.include_usage(),
        events: scheduler.submit(job)?,
        deadline: tokio::time::Instant::now() + state.request_timeout,
        timeout: state.request_timeout,
    };
    if request.streaming() {
        Ok(stream(accepted))
    } else {
        whole(accepted).await
    }
}

/// Applies the chat template and tokenizes, off the async executor: message contents are text (a
/// user's `<|im_end|>` cannot close a turn), and a prompt whose bytes cannot fit the context is
/// refused before it is tokenised.
async fn prompt_tokens(
    scheduler: &ChatScheduler,
    messages: Vec<accelrt_models::ChatMessage>,
) -> Result<Vec<u32>, ApiError> {
    let generator = scheduler.shared_generator();
    tokio::task::spawn_blocking(move || generator.chat_prompt(&messages))
        .await
        .map_err(|e| ApiError::internal(format!("tokenizer task: {e}")))?
        .map_err(|e| ApiError::from_model(e, "messages"))
}

/// Waits for the end of the generation and answers with all of it.
async fn whole(mut a: Accepted) -> Result<Response, ApiError> {
    let mut text = String::new();
    loop {
        // On timeout the receiver is dropped, which cancels the generation (the model thread counts it).
        let event =
            tokio::time::timeout_at(a.deadline, a.events.recv()).await.map_err(|_| ApiError::timeout(a.timeout))?;
        match event {
            Some(ChatEvent::Text(t)) => text.push_str(&t),
            Some(ChatEvent::Finished { reason, prompt_tokens, completion_tokens }) => {
                tracing::info!(completion = %a.completion.id, ?reason, prompt_tokens, completion_tokens, "generated");
                let body = a.completion.whole(&text, reason, prompt_tokens, completion_tokens);
                return Ok(Json(body).into_response());
            }
            Some(ChatEvent::Failed(e)) => return Err(ApiError::internal(format!("generation failed: {e}"))),
            None => return Err(ApiError::internal("the model thread stopped")),
        }
    }
}

/// Server-sent events: a first chunk with the role, one chunk per text piece, a last chunk with the
/// finish reason, the usage chunk when asked for, then `[DONE]`. A failure or timeout midway ends
/// the stream with an error event (OpenAI's clients raise it) and no `[DONE]`. A client that
/// disconnects drops the stream, and with it the receiver, which cancels the generation.
fn stream(a: Accepted) -> Response {
    let span = tracing::Span::current();
    let first = a.completion.chunk(json!({ "role": "assistant", "content": "" }), None);
    let s = StreamState { a, pending: VecDeque::from([first.to_string()]), done: false, span };
    let events = futures_util::stream::unfold(s, |mut s| async move {
        let data = s.next().await?;
        Some((Ok::<_, Infallible>(Event::default().data(data)), s))
    });
    Sse::new(events).into_response()
}

struct StreamState {
    a: Accepted,
    /// Event data ready to go out.
    pending: VecDeque<String>,
    done: bool,
    span: tracing::Span,
}

impl StreamState {
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(data) = self.pending.pop_front() {
                return Some(data);
            }
            if self.done {
                return None;
            }
            let event = tokio::time::timeout_at(self.a.deadline, self.a.events.recv()).await;
            let a = &self.a;
            match event {
                Ok(Some(ChatEvent::Text(t))) => {
                    return Some(a.completion.chunk(json!({ "content": t }), None).to_string())
                }
                Ok(Some(ChatEvent::Finished { reason, prompt_tokens, completion_tokens })) => {
                    let completion = &a.completion.id;
                    self.span.in_scope(
                        || tracing::info!(%completion, ?reason, prompt_tokens, completion_tokens, "streamed"),
                    );
                    self.finish(reason, prompt_tokens, completion_tokens);
                }
                Ok(Some(ChatEvent::Failed(e))) => self.fail(ApiError::internal(format!("generation failed: {e}"))),
                Ok(None) => self.fail(ApiError::internal("the model thread stopped")),
                Err(_) => self.fail(ApiError::timeout(self.a.timeout)),
            }
        }
    }

    fn finish(&mut self, reason: FinishReason, prompt_tokens: usize, completion_tokens: usize) {
        let a = &self.a;
        self.pending.push_back(a.completion.chunk(json!({}), Some(reason)).to_string());
        if a.include_usage {
            self.pending.push_back(a.completion.usage_chunk(prompt_tokens, completion_tokens).to_string());
        }
        self.pending.push_back("[DONE]".into());
        self.done = true;
    }

    fn fail(&mut self, e: ApiError) {
        self.span.in_scope(|| tracing::error!(error = %e, "stream failed"));
        let body: Value = e.body();
        self.pending.push_back(body.to_string());
        self.done = true;
    }
}
