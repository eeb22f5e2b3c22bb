//! The embeddings server over real HTTP on 127.0.0.1, with all-MiniLM-L6-v2 on the CPU.

mod common;

use accelrt_models::{registry, ModelStore, SentenceEmbedder};
use accelrt_serve::{AppState, BatchLimits, EmbeddingBatcher, Metrics, ServerInfo};
use base64::Engine;
use common::{eventually, metric, raw_read, raw_send, Rng, Server};
use std::sync::Arc;
use std::time::Duration;

const MODEL: &str = "all-minilm-l6-v2";

fn embedder() -> SentenceEmbedder {
    let dir = ModelStore::from_env()
        .ensure(&registry::ALL_MINILM_L6_V2)
        .unwrap_or_else(|e| panic!("all-MiniLM-L6-v2 is needed by this test: {e}"));
    SentenceEmbedder::load(&dir, &accelrt_candle::CandleBackend::cpu(), &Default::default()).unwrap()
}

fn start(limits: BatchLimits, max_inputs: usize, max_body: usize) -> Server {
    let embedder = embedder();
    let info = ServerInfo {
        model: MODEL.into(),
        task: accelrt_serve::Task::Embeddings,
        backend: "candle".into(),
        device: "cpu".into(),
        version: "test".into(),
        dimensions: Some(embedder.dimension()),
        max_input_tokens: embedder.max_tokens(),
    };
    let metrics = Arc::new(Metrics::default());
    let batcher = EmbeddingBatcher::start(embedder, limits, metrics.clone()).unwrap();
    let mut state = AppState::new(batcher, metrics, info);
    state.max_inputs = max_inputs;
    state.max_body_bytes = max_body;
    Server::start(state)
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn embeddings_over_http_equal_the_library_and_the_api_is_complete() {
    let server = start(BatchLimits::default(), 64, 1 << 20);
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
    let server = start(BatchLimits::default(), 4, 4096);
    let long_ids: Vec<u32> = vec![101; 300];
    for (body, status, needle) in [
        ("{not json".to_string(), 400, "not valid JSON"),
        (r#"{"model": "all-minilm-l6-v2", "input": 42}"#.to_string(), 400, "invalid value for `input`"),
        (r#"["all-minilm-l6-v2", "hi"]"#.to_string(), 400, "must be a JSON object"),
        (r#"{"input": "hi"}"#.to_string(), 400, "`model` is required"),
        (r#"{"model": "all-minilm-l6-v2", "input": []}"#.to_string(), 400, "empty"),
        (r#"{"model": "gpt-4", "input": "hi"}"#.to_string(), 404, "does not exist"),
        (
            r#"{"model": "all-minilm-l6-v2", "input": "hi", "encoding_format": "hex"}"#.to_string(),
            400,
            "encoding_format",
        ),
        (r#"{"model": "all-minilm-l6-v2", "input": "hi", "dimensions": 128}"#.to_string(), 400, "384 dimensions"),
        (r#"{"model": "all-minilm-l6-v2", "input": ["a","b","c","d","e"]}"#.to_string(), 400, "at most 4"),
        (serde_json::json!({"model": MODEL, "input": long_ids}).to_string(), 400, "at most 256"),
        (r#"{"model": "all-minilm-l6-v2", "input": [5, 999999]}"#.to_string(), 400, "outside the vocabulary"),
        (serde_json::json!({"model": MODEL, "input": "x".repeat(5000)}).to_string(), 413, "exceeds 4096 bytes"),
        // Every field is one OpenAI defines; any other is refused as OpenAI refuses it.
        (
            r#"{"model": "all-minilm-l6-v2", "input": "hi", "truncate": true}"#.to_string(),
            400,
            "Unrecognized request argument supplied: truncate",
        ),
    ] {
        let (got, json, _) = server.post("/v1/embeddings", &body);
        assert_eq!(got, status, "{body:.80}: {json}");
        let message = json["error"]["message"].as_str().unwrap_or_else(|| panic!("not the OpenAI shape: {json}"));
        assert!(message.contains(needle), "{body:.80}: {message}");
        assert!(json["error"]["type"].is_string());
        if needle == "at most 256" {
            assert_eq!(json["error"]["code"], "context_length_exceeded");
        }
    }
    // An error quotes at most a short prefix of what the client sent.
    let (status, json, _) =
        server.post("/v1/embeddings", &serde_json::json!({"model": "m".repeat(3000), "input": "x"}).to_string());
    assert_eq!(status, 404, "{json}");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("`{}…`", "m".repeat(64))) && message.len() < 200, "{message}");
    let (status, json, _) = server.post(
        "/v1/embeddings",
        &serde_json::json!({"model": MODEL, "input": "x", "encoding_format": "e".repeat(3000)}).to_string(),
    );
    assert_eq!(status, 400, "{json}");
    assert!(json["error"]["message"].as_str().unwrap().len() < 200, "{json}");
    let (status, json, _) =
        server.post("/v1/embeddings", &format!(r#"{{"model": "{MODEL}", "input": "x", "{}": 1}}"#, "k".repeat(3000)));
    assert_eq!(status, 400, "{json}");
    assert!(json["error"]["message"].as_str().unwrap().len() < 200, "{json}");
    // The server is still healthy and answers.
    let (status, _, _) = server.post("/v1/embeddings", &serde_json::json!({"model": MODEL, "input": "ok"}).to_string());
    assert_eq!(status, 200);
    server.shutdown();
}

#[test]
fn a_flood_beyond_the_queue_is_refused_with_429_and_nothing_is_lost() {
    let server = start(BatchLimits { max_batch: 2, max_batch_tokens: 512, queue: 2 }, 64, 1 << 20);
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
    let mut server = start(BatchLimits::default(), 64, 1 << 20);
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

/// 10,000 requests from 32 concurrent clients, about a third of which hang up at a random moment
/// after sending: every request that waits gets exactly one answer, and it is its own (the vector
/// of the text it sent); the hang-ups leave the server healthy with an empty queue.
#[test]
fn ten_thousand_requests_with_random_disconnects_lose_or_duplicate_nothing() {
    const REQUESTS: u64 = 10_000;
    const CLIENTS: u64 = 32;
    let server = start(BatchLimits { max_batch: 32, max_batch_tokens: 8192, queue: 1024 }, 64, 1 << 20);
    let addr = server.url.trim_start_matches("http://").to_string();
    let texts: Vec<String> = (0..50).map(|i| format!("request text number {i} about {}", i * 7 % 13)).collect();
    let want = embedder().embed(&texts.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let next = std::sync::atomic::AtomicU64::new(0);
    let (answered, left) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (next, texts, want, addr) = (&next, &texts, &want, &addr);
                scope.spawn(move || {
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c + 1));
                    let (mut answered, mut left) = (0u64, 0u64);
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= REQUESTS {
                            return (answered, left);
                        }
                        let k = (i % texts.len() as u64) as usize;
                        let body = serde_json::json!({ "model": MODEL, "input": texts[k] }).to_string();
                        let conn = raw_send(addr, "/v1/embeddings", &body, "");
                        if rng.below(3) == 0 {
                            std::thread::sleep(Duration::from_micros(rng.below(3000)));
                            drop(conn);
                            left += 1;
                            continue;
                        }
                        let r = raw_read(conn);
                        assert_eq!(r.status, 200, "request {i}: {}", String::from_utf8_lossy(&r.body));
                        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                        let data = json["data"].as_array().unwrap();
                        assert_eq!(data.len(), 1, "request {i}");
                        let got = floats(&data[0]["embedding"]);
                        let diff = got.iter().zip(&want[k]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                        assert!(diff < 1e-5, "request {i} got another text's vector ({diff})");
                        answered += 1;
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    assert_eq!(answered + left, REQUESTS);
    assert!(left > REQUESTS / 5 && answered > REQUESTS / 2, "{answered} answered, {left} left");
    // Every accepted request has left the queue, and the server still answers.
    assert!(eventually(Duration::from_secs(10), || {
        metric(&server.get("/metrics").1, "accelrt_queue_depth") == 0.0
    }));
    let metrics = server.get("/metrics").1;
    let ok = metric(&metrics, "accelrt_requests_total{route=\"/v1/embeddings\",status=\"200\"}");
    assert!(ok >= answered as f64 && ok <= REQUESTS as f64, "{ok} answered by the server, {answered} received");
    assert_eq!(server.get("/health").0, 200);
    let (status, _, _) =
        server.post("/v1/embeddings", &serde_json::json!({"model": MODEL, "input": "after"}).to_string());
    assert_eq!(status, 200);
    server.shutdown();
}

/// Token-id inputs of exactly `len` tokens, different for each `i` (valid MiniLM ids).
fn long_inputs(n: usize, len: usize) -> Vec<Vec<u32>> {
    (0..n).map(|i| (0..len).map(|t| 1000 + ((i * 131 + t * 7) % 20000) as u32).collect()).collect()
}

/// One request's inputs are split into model batches that respect both limits, and its answer is
/// the library's, in order. (Before, a request was one batch: 2,048 inputs of 256 tokens needed
/// about 6 GiB for attention.)
#[test]
fn a_request_of_many_long_inputs_runs_in_batches_within_the_limits() {
    let limits = BatchLimits { max_batch: 8, max_batch_tokens: 1024, queue: 16 };
    let server = start(limits, 2048, 8 << 20);
    let inputs = long_inputs(40, 256);
    let lib = embedder();
    let want: Vec<Vec<f32>> =
        inputs.iter().flat_map(|i| lib.run(&lib.batch_from_ids(&[i.as_slice()]).unwrap()).unwrap()).collect();

    let (status, json, _) =
        server.post("/v1/embeddings", &serde_json::json!({ "model": MODEL, "input": inputs }).to_string());
    assert_eq!(status, 200, "{json}");
    let data = json["data"].as_array().unwrap();
    assert_eq!(data.len(), 40);
    for (i, (d, w)) in data.iter().zip(&want).enumerate() {
        assert_eq!(d["index"], i);
        let diff = floats(&d["embedding"]).iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "input {i}: {diff}");
    }
    assert_eq!(json["usage"]["prompt_tokens"], 40 * 256);
    // 1024 padded tokens hold 4 inputs of 256: exactly 10 batches, none over either limit.
    let metrics = server.get("/metrics").1;
    assert_eq!(metric(&metrics, "accelrt_batch_size_count"), 10.0, "{metrics}");
    assert_eq!(metric(&metrics, "accelrt_batch_size_bucket{le=\"4\"}"), 10.0);
    assert_eq!(metric(&metrics, "accelrt_batch_padded_tokens_bucket{le=\"1024\"}"), 10.0);
    assert_eq!(metric(&metrics, "accelrt_batch_padded_tokens_sum"), (40 * 256) as f64);

    // Short inputs fill batches by count instead; requests arriving together share batches and each
    // gets its own answer.
    let short: Vec<String> = (0..20).map(|i| format!("short text {i}")).collect();
    let want_short = lib.embed(&short.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|r| {
                let (server, short) = (&server, &short[r * 5..r * 5 + 5]);
                scope.spawn(move || {
                    server.post("/v1/embeddings", &serde_json::json!({ "model": MODEL, "input": short }).to_string())
                })
            })
            .collect();
        for (r, h) in handles.into_iter().enumerate() {
            let (status, json, _) = h.join().unwrap();
            assert_eq!(status, 200, "{json}");
            for (k, d) in json["data"].as_array().unwrap().iter().enumerate() {
                let diff = floats(&d["embedding"])
                    .iter()
                    .zip(&want_short[r * 5 + k])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(diff < 1e-5, "request {r} input {k}: {diff}");
            }
        }
    });
    let metrics = server.get("/metrics").1;
    let batches = metric(&metrics, "accelrt_batch_size_count");
    assert_eq!(metric(&metrics, "accelrt_batch_size_bucket{le=\"8\"}"), batches, "no batch over 8 inputs");
    assert_eq!(metric(&metrics, "accelrt_batch_padded_tokens_bucket{le=\"1024\"}"), batches);
    server.shutdown();
}

/// The shape that used to abort the server: 2,048 inputs of the model's full length in one request
/// (inside every limit). It runs in small batches, and a client that hangs up stops it: the rest of
/// its inputs are skipped.
#[test]
fn a_huge_request_is_split_and_a_hang_up_skips_the_rest_of_it() {
    let limits = BatchLimits { max_batch: 32, max_batch_tokens: 2048, queue: 16 };
    let server = start(limits, 2048, 8 << 20);
    let body = serde_json::json!({ "model": MODEL, "input": long_inputs(2048, 256) }).to_string();
    let conn = raw_send(server.url.trim_start_matches("http://"), "/v1/embeddings", &body, "");
    let batches = |server: &Server| metric(&server.get("/metrics").1, "accelrt_batch_size_count");
    assert!(eventually(Duration::from_secs(60), || batches(&server) >= 2.0), "the request does not start");
    drop(conn);
    assert!(eventually(Duration::from_secs(30), || {
        metric(&server.get("/metrics").1, "accelrt_requests_cancelled_total") == 1.0
    }));
    let after_cancel = batches(&server);
    std::thread::sleep(Duration::from_millis(500));
    let metrics = server.get("/metrics").1;
    // 2,048 inputs of 256 tokens would take 256 batches of 8; the hang-up stopped it far sooner.
    assert_eq!(metric(&metrics, "accelrt_batch_size_count"), after_cancel, "batches went on after the hang-up");
    assert!(after_cancel < 256.0, "{after_cancel} batches");
    assert_eq!(metric(&metrics, "accelrt_batch_padded_tokens_bucket{le=\"2048\"}"), after_cancel);
    assert_eq!(metric(&metrics, "accelrt_queue_depth"), 0.0);
    let (status, _, _) =
        server.post("/v1/embeddings", &serde_json::json!({"model": MODEL, "input": "after"}).to_string());
    assert_eq!(status, 200);
    server.shutdown();
}
