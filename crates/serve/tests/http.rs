//! The embeddings server over real HTTP on 127.0.0.1, with all-MiniLM-L6-v2 on the CPU.

use accelrt_core::Backend;
use accelrt_models::{registry, ModelStore, SentenceEmbedder};
use accelrt_serve::{AppState, BatchLimits, EmbeddingBatcher, Metrics, ServerInfo};
use base64::Engine;
use std::sync::Arc;
use std::time::Duration;

const MODEL: &str = "all-minilm-l6-v2";

fn embedder() -> SentenceEmbedder {
    let dir = ModelStore::from_env()
        .ensure(&registry::ALL_MINILM_L6_V2)
        .unwrap_or_else(|e| panic!("all-MiniLM-L6-v2 is needed by this test: {e}"));
    SentenceEmbedder::load(&dir, &accelrt_candle::CandleBackend::cpu(), &Default::default()).unwrap()
}

struct Server {
    url: String,
    state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(limits: BatchLimits, max_inputs: usize, max_body: usize) -> Server {
        let embedder = embedder();
        let backend = accelrt_candle::CandleBackend::cpu();
        let info = ServerInfo {
            model: MODEL.into(),
            backend: backend.name().into(),
            device: "cpu".into(),
            version: "test".into(),
            dimensions: embedder.dimension(),
            max_input_tokens: embedder.max_tokens(),
        };
        let metrics = Arc::new(Metrics::default());
        let batcher = EmbeddingBatcher::start(embedder, limits, metrics.clone());
        let mut state = AppState::new(batcher, metrics, info);
        state.max_inputs = max_inputs;
        state.max_body_bytes = max_body;
        let state = Arc::new(state);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                accelrt_serve::serve(
                    listener,
                    s,
                    async {
                        let _ = stopped.await;
                    },
                    Duration::from_millis(300),
                )
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        Server { url: format!("http://{addr}"), state, stop: Some(stop), thread: Some(thread) }
    }

    fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value, Option<String>) {
        let r = ureq::post(&format!("{}{path}", self.url)).set("Content-Type", "application/json").send_string(body);
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        let status = resp.status();
        let retry = resp.header("Retry-After").map(str::to_string);
        let text = resp.into_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)), retry)
    }

    fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&format!("{}{path}", self.url)).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
            Err(e) => panic!("{e}"),
        }
    }

    fn shutdown(mut self) {
        if self.stop.is_none() {
            return;
        }
        self.stop.take().unwrap().send(()).unwrap();
        self.thread.take().unwrap().join().unwrap();
    }
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn embeddings_over_http_equal_the_library_and_the_api_is_complete() {
    let server = Server::start(BatchLimits::default(), 64, 1 << 20);
    let texts = ["A cat sits on the mat.", "GPUs multiply matrices.", ""];
    let want = embedder().embed(&texts).unwrap();

    let body = serde_json::json!({ "model": MODEL, "input": texts }).to_string();
    let (status, json, _) = server.post("/v1/embeddings", &body);
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["object"], "list");
    for (i, w) in want.iter().enumerate() {
        let got = floats(&json["data"][i]["embedding"]);
        let diff = got.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "text {i}: {diff}");
        assert_eq!(json["data"][i]["index"], i);
    }
    assert!(json["usage"]["prompt_tokens"].as_u64().unwrap() >= 3);

    // base64: little-endian f32, the same numbers.
    let body = serde_json::json!({ "model": MODEL, "input": texts[0], "encoding_format": "base64" }).to_string();
    let (status, json, _) = server.post("/v1/embeddings", &body);
    assert_eq!(status, 200);
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(json["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let got: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert!(got.iter().zip(&want[0]).all(|(a, b)| (a - b).abs() < 1e-5));

    // Token ids in, the same vector as the text they encode.
    let ids = embedder().encode(&[texts[1]]).unwrap().remove(0);
    let body = serde_json::json!({ "model": MODEL, "input": ids }).to_string();
    let (status, json, _) = server.post("/v1/embeddings", &body);
    assert_eq!(status, 200);
    assert!(floats(&json["data"][0]["embedding"]).iter().zip(&want[1]).all(|(a, b)| (a - b).abs() < 1e-5));

    let (status, text) = server.get("/v1/models");
    assert_eq!(status, 200);
    assert!(text.contains(MODEL));
    let (status, text) = server.get("/info");
    assert!(status == 200 && text.contains("\"dimensions\":384"), "{text}");
    let (status, text) = server.get("/health");
    assert!(status == 200 && text.contains("ok"));
    let (_, text) = server.get("/metrics");
    assert!(text.contains("accelrt_requests_total{route=\"/v1/embeddings\",status=\"200\"} 3"), "{text}");
    assert!(text.contains("accelrt_batch_size_count") && text.contains("accelrt_queue_depth 0"), "{text}");
    server.shutdown();
}

#[test]
fn bad_requests_get_the_documented_status_in_the_openai_shape() {
    let server = Server::start(BatchLimits::default(), 4, 4096);
    let long_ids: Vec<u32> = vec![101; 300];
    for (body, status, needle) in [
        ("{not json".to_string(), 400, "not valid JSON"),
        (r#"{"model": "all-minilm-l6-v2", "input": 42}"#.to_string(), 422, "invalid request"),
        (r#"{"input": "hi"}"#.to_string(), 422, "model"),
        (r#"{"model": "all-minilm-l6-v2", "input": []}"#.to_string(), 400, "empty"),
        (r#"{"model": "gpt-4", "input": "hi"}"#.to_string(), 404, "does not exist"),
        (
            r#"{"model": "all-minilm-l6-v2", "input": "hi", "encoding_format": "hex"}"#.to_string(),
            400,
            "encoding_format",
        ),
        (r#"{"model": "all-minilm-l6-v2", "input": "hi", "dimensions": 128}"#.to_string(), 400, "384 dimensions"),
        (r#"{"model": "all-minilm-l6-v2", "input": ["a","b","c","d","e"]}"#.to_string(), 413, "at most 4"),
        (serde_json::json!({"model": MODEL, "input": long_ids}).to_string(), 413, "at most 256"),
        (r#"{"model": "all-minilm-l6-v2", "input": [5, 999999]}"#.to_string(), 400, "outside the vocabulary"),
        (serde_json::json!({"model": MODEL, "input": "x".repeat(5000)}).to_string(), 413, "exceeds 4096 bytes"),
    ] {
        let (got, json, _) = server.post("/v1/embeddings", &body);
        assert_eq!(got, status, "{body:.80}: {json}");
        let message = json["error"]["message"].as_str().unwrap_or_else(|| panic!("not the OpenAI shape: {json}"));
        assert!(message.contains(needle), "{body:.80}: {message}");
        assert!(json["error"]["type"].is_string());
    }
    // The server is still healthy and answers.
    let (status, _, _) = server.post("/v1/embeddings", &serde_json::json!({"model": MODEL, "input": "ok"}).to_string());
    assert_eq!(status, 200);
    server.shutdown();
}

#[test]
fn a_flood_beyond_the_queue_is_refused_with_429_and_nothing_is_lost() {
    let server = Server::start(BatchLimits { max_batch: 2, max_batch_tokens: 512, queue: 2 }, 64, 1 << 20);
    let body =
        serde_json::json!({ "model": MODEL, "input": vec!["a sentence of a few words to embed"; 16] }).to_string();
    let results: Vec<(u16, serde_json::Value, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24).map(|_| scope.spawn(|| server.post("/v1/embeddings", &body))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(
        ok + refused.len(),
        results.len(),
        "only 200 or 429: {:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(ok >= 1 && !refused.is_empty(), "{ok} ok, {} refused", refused.len());
    for r in &refused {
        assert_eq!(r.2.as_deref(), Some("1"), "Retry-After");
        assert_eq!(r.1["error"]["code"], "overloaded");
    }
    for r in results.iter().filter(|r| r.0 == 200) {
        assert_eq!(r.1["data"].as_array().unwrap().len(), 16);
    }
    server.shutdown();
}

#[test]
fn shutdown_drains_in_flight_requests_and_turns_health_to_503() {
    let mut server = Server::start(BatchLimits::default(), 64, 1 << 20);
    let body =
        serde_json::json!({ "model": MODEL, "input": vec!["text to embed while the server drains"; 32] }).to_string();
    let stop = server.stop.take().unwrap();
    std::thread::scope(|scope| {
        let in_flight: Vec<_> = (0..4).map(|_| scope.spawn(|| server.post("/v1/embeddings", &body))).collect();
        std::thread::sleep(Duration::from_millis(30));
        stop.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // Draining: health says 503 and new work is refused, while accepted requests finish.
        assert_eq!(server.get("/health").0, 503);
        let (status, json, retry) =
            server.post("/v1/embeddings", &serde_json::json!({"model": MODEL, "input": "late"}).to_string());
        assert_eq!((status, retry.as_deref()), (503, Some("5")), "{json}");
        for h in in_flight {
            let (status, json, _) = h.join().unwrap();
            assert_eq!(status, 200, "{json}");
            assert_eq!(json["data"].as_array().unwrap().len(), 32);
        }
    });
    assert!(server.state.is_draining());
    server.thread.take().unwrap().join().unwrap();
}
