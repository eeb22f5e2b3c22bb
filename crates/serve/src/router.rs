//! The server's state and its routes.

use crate::batcher::EmbeddingBatcher;
use crate::chat::ChatScheduler;
use crate::metrics::Metrics;
use crate::{body, chat_route, embeddings_route, request_id};
use accelrt_models::ServerInfo;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Duration;

/// A model id for clients (`/v1/models`, `model` in requests) made from a model's name, file or
/// directory name: lower case, and any run of characters other than letters, digits, `.`, `_` and
/// `-` turned into one `-`. `None` when nothing usable is left.
pub fn model_id(name: &str) -> Option<String> {
    let mut id = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            id.push(c);
        } else if !id.ends_with('-') {
            id.push('-');
        }
    }
    let id = id.trim_matches(|c| c == '-' || c == '.');
    (!id.is_empty()).then(|| id.to_string())
}

/// The model behind the server.
pub enum Engine {
    /// A sentence-embedding model: serves `/v1/embeddings`; chat requests are refused (400).
    Embeddings(EmbeddingBatcher),
    /// A generation model: serves `/v1/chat/completions`; embeddings requests are refused (400).
    Chat(ChatScheduler),
}

impl Engine {
    /// Whether the model thread is still there to take work: false once it has ended (returned, or
    /// unwound from a panic), which drops its end of the queue.
    pub fn model_alive(&self) -> bool {
        match self {
            Engine::Embeddings(b) => b.model_alive(),
            Engine::Chat(s) => s.model_alive(),
        }
    }
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

/// Everything the routes share: the model, the metrics, the limits and the draining flag. The
/// limits are plain fields, set after [`AppState::new`] and before [`router`] or
/// [`serve`](crate::serve) take the state.
pub struct AppState {
    /// The model behind the routes.
    pub engine: Engine,
    /// The metrics `GET /metrics` reports and the routes record into; the engine should have
    /// been started with the same handle.
    pub metrics: Arc<Metrics>,
    /// What `GET /info` answers; its `model` is the id requests must name.
    pub info: ServerInfo,
    /// The most inputs in one embeddings request (default 2048); more is refused (400).
    pub max_inputs: usize,
    /// The largest request body in bytes (default 8 MiB); a larger one is refused (413).
    pub max_body_bytes: usize,
    /// A request still unanswered after this is cut off (504) and its work cancelled (default
    /// 300 s).
    pub request_timeout: Duration,
    /// A connection whose request headers have not all arrived this long after it opened (or
    /// after its previous answer, for a kept-alive connection) is closed (default 10 s).
    pub header_timeout: Duration,
    /// A request whose whole body has not arrived this long after its headers is answered 408
    /// and its connection closed (default 60 s).
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog until one closes
    /// (default 512).
    pub max_connections: usize,
    draining: tokio::sync::watch::Sender<bool>,
    /// Set once the model thread's end has been logged.
    model_stop_logged: std::sync::atomic::AtomicBool,
}

impl AppState {
    /// A state with the default limits (see the fields), not draining. `metrics` should be the
    /// handle the engine was started with, so one `/metrics` shows both.
    pub fn new(engine: impl Into<Engine>, metrics: Arc<Metrics>, info: ServerInfo) -> AppState {
        AppState {
            engine: engine.into(),
            metrics,
            info,
            max_inputs: 2048,
            max_body_bytes: 8 << 20,
            request_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            max_connections: 512,
            draining: tokio::sync::watch::Sender::new(false),
            model_stop_logged: Default::default(),
        }
    }

    /// Whether shutdown has begun ([`AppState::start_draining`]): health answers 503 and new
    /// requests are refused (503).
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Begins shutdown: health turns 503 and new work is refused.
    pub fn start_draining(&self) {
        self.draining.send_replace(true);
    }

    /// Resolves once shutdown has begun.
    pub async fn drained(&self) {
        let mut rx = self.draining.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}

/// The routes served.
pub const ROUTES: [&str; 6] = ["/v1/embeddings", "/v1/chat/completions", "/v1/models", "/info", "/health", "/metrics"];

/// The six routes (embeddings, chat completions, models, info, health, metrics) on `state`, every
/// request given an id (`x-request-id`). Routing comes first: an unknown path is 404 and a wrong
/// method 405, whatever the body. The body limit and body timeout apply before the handler runs,
/// and only on the route that reads a body (the one the model serves); the route the model does not
/// serve answers 400 without reading the body, and the `GET` routes never read one.
/// [`serve`](crate::serve) runs it; tests can call it directly.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    let read_body = || axum::middleware::from_fn_with_state(state.clone(), body::read_whole_body);
    let (embeddings, chat) = match &state.engine {
        Engine::Embeddings(_) => {
            (post(embeddings_route::embeddings).route_layer(read_body()), post(chat_route::wrong_model))
        }
        Engine::Chat(_) => {
            (post(embeddings_route::wrong_model), post(chat_route::chat_completions).route_layer(read_body()))
        }
    };
    Router::new()
        .route("/v1/embeddings", embeddings)
        .route("/v1/chat/completions", chat)
        .route("/v1/models", get(models))
        .route("/info", get(info))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(request_id::middleware))
        .with_state(state)
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
    if !state.engine.model_alive() {
        if !state.model_stop_logged.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::error!("the model thread has stopped; health is 503 and requests cannot be served");
        }
        let body = serde_json::json!({ "status": "model stopped", "error": "the model thread has stopped" });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    } else if state.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "draining" }))).into_response()
    } else {
        Json(serde_json::json!({ "status": "ok" })).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], state.metrics.render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::{model_id, router, AppState, ServerInfo};
    use crate::{ChatLimits, ChatScheduler, Metrics};
    use accelrt_models::{generator, registry, ModelStore, TextGenerator};
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use tower::ServiceExt;

    fn smollm2() -> TextGenerator {
        let dir = ModelStore::from_env()
            .ensure(&registry::SMOLLM2_135M_INSTRUCT)
            .unwrap_or_else(|e| panic!("SmolLM2-135M-Instruct is needed by this test: {e}"));
        let gguf = generator::find_gguf(&dir).unwrap();
        TextGenerator::load(&gguf, &accelrt_candle::CandleBackend::cpu(), &Default::default(), 256).unwrap()
    }

    fn info() -> ServerInfo {
        ServerInfo {
            model: "m".into(),
            task: accelrt_models::Task::Chat,
            backend: "candle".into(),
            device: "cpu".into(),
            version: "test".into(),
            dimensions: None,
            max_input_tokens: 256,
        }
    }

    async fn health(state: &Arc<AppState>) -> (u16, String) {
        let request = Request::get("/health").body(Body::empty()).unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_is_503_once_the_model_thread_has_died() {
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        // A model thread that panics when told to, as a model thread that fails does.
        let (scheduler, thread) = ChatScheduler::with_thread(smollm2(), metrics.clone(), move |rx| {
            let _rx = rx;
            let _ = stopped.recv();
            panic!("the model thread fails (this panic is the test's)");
        });
        let state = Arc::new(AppState::new(scheduler, metrics, info()));
        assert!(state.engine.model_alive());
        assert_eq!(health(&state).await.0, 200);
        stop.send(()).unwrap();
        assert!(thread.join().is_err(), "the thread panicked");
        assert!(!state.engine.model_alive());
        let (status, body) = health(&state).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("model stopped"), "{body}");
        // Still 503 (logged once, answered every time).
        assert_eq!(health(&state).await.0, 503);
    }

    #[test]
    fn a_scheduler_too_large_to_allocate_is_an_error_from_start_not_a_dead_thread() {
        let limits = ChatLimits { max_sequences: usize::MAX, queue: 4 };
        let started = ChatScheduler::start(smollm2(), limits, Arc::new(Metrics::default()));
        assert!(started.is_err());
    }

    /// Over the body limit, declared (refused before reading) or not (refused when the limit is
    /// passed): 413 naming `messages`, on the one route that reads a body. Routing comes first:
    /// an unknown path is 404 and a wrong method 405 whatever the body, the `GET` routes ignore
    /// one, and embeddings on a chat model is the same 400 at any size.
    #[tokio::test]
    async fn only_a_route_that_reads_a_body_answers_413_after_routing() {
        let metrics = Arc::new(Metrics::default());
        let scheduler = ChatScheduler::start(smollm2(), ChatLimits { max_sequences: 1, queue: 1 }, metrics.clone());
        let mut state = AppState::new(scheduler.unwrap(), metrics, info());
        state.max_body_bytes = 64;
        let state = Arc::new(state);
        let big = serde_json::json!({ "model": "m", "messages": [{ "role": "user", "content": "x".repeat(200) }] });
        let big = big.to_string();
        let small = r#"{"model": "m", "input": "x"}"#.to_string();
        let null = serde_json::Value::Null;
        for (method, path, body, status, param) in [
            ("POST", "/v1/chat/completions", &big, 413, serde_json::json!("messages")),
            ("POST", "/v1/embeddings", &big, 400, serde_json::json!("model")),
            ("POST", "/v1/embeddings", &small, 400, serde_json::json!("model")),
            ("GET", "/v1/models", &big, 200, null.clone()),
            ("GET", "/health", &big, 200, null.clone()),
            ("POST", "/nope", &big, 404, null.clone()),
            ("POST", "/v1/completions", &big, 404, null.clone()),
            ("POST", "/v1/chat/completions/", &big, 404, null.clone()),
            ("GET", "/v1/chat/completions", &big, 405, null.clone()),
            ("POST", "/health", &big, 405, null.clone()),
        ] {
            for declared in [true, false] {
                let mut request =
                    Request::builder().method(method).uri(path).header("content-type", "application/json");
                if declared {
                    request = request.header("content-length", body.len());
                }
                let response = router(state.clone()).oneshot(request.body(Body::from(body.clone())).unwrap()).await;
                let response = response.unwrap();
                assert_eq!(response.status(), status, "{method} {path} (declared: {declared})");
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                if status == 413 || status == 400 {
                    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(json["error"]["param"], param, "{path} (declared: {declared}): {json}");
                    if status == 413 {
                        assert_eq!(json["error"]["code"], "input_too_large", "{path}: {json}");
                    } else {
                        assert!(json["error"]["message"].as_str().unwrap().contains("a chat model"), "{json}");
                    }
                }
            }
        }
    }

    #[test]
    fn model_ids_are_names_never_paths() {
        assert_eq!(model_id("SmolLM2 135M Instruct").as_deref(), Some("smollm2-135m-instruct"));
        assert_eq!(model_id("SmolLM2-135M-Instruct.Q4_1").as_deref(), Some("smollm2-135m-instruct.q4_1"));
        assert_eq!(model_id("/srv/models/x.gguf").as_deref(), Some("srv-models-x.gguf"));
        assert_eq!(model_id(" ..//  ").as_deref(), None);
    }
}
