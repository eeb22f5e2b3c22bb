//! The chat server over real HTTP on 127.0.0.1, with SmolLM2-135M-Instruct on the CPU: answers
//! equal the library's, streams equal whole answers, continuous batching keeps every request's
//! answer its own, hang-ups cancel work, and the limits answer with their documented statuses.

mod common;

use accelrt_models::{generator, registry, ChatMessage, ModelStore, SamplingParams, TextGenerator};
use accelrt_serve::{AppState, ChatLimits, ChatScheduler, Metrics, ServerInfo};
use common::{eventually, metric, raw_read, raw_send, sse_data, Server};
use serde_json::{json, Value};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

const MODEL: &str = "smollm2-135m-instruct";
const CONTEXT: usize = 512;

fn load() -> TextGenerator {
    let dir = ModelStore::from_env()
        .ensure(&registry::SMOLLM2_135M_INSTRUCT)
        .unwrap_or_else(|e| panic!("SmolLM2-135M-Instruct is needed by this test: {e}"));
    let gguf = generator::find_gguf(&dir).unwrap();
    TextGenerator::load(&gguf, &accelrt_candle::CandleBackend::cpu(), &Default::default(), CONTEXT).unwrap()
}

fn start(limits: ChatLimits, timeout: Duration) -> Server {
    let generator = load();
    let info = ServerInfo {
        model: MODEL.into(),
        task: accelrt_serve::Task::Chat,
        backend: "candle".into(),
        device: "cpu".into(),
        version: "test".into(),
        dimensions: None,
        max_input_tokens: generator.context(),
    };
    let metrics = Arc::new(Metrics::default());
    let scheduler = ChatScheduler::start(generator, limits, metrics.clone()).unwrap();
    let mut state = AppState::new(scheduler, metrics, info);
    state.request_timeout = timeout;
    Server::start(state)
}

/// The library's greedy answer to one user message.
fn library_answer(g: &TextGenerator, user: &str, max_tokens: usize) -> (String, &'static str) {
    let prompt = g.tokenizer().apply_chat_template(&[ChatMessage::new("user", user)]).unwrap();
    let ids = g.tokenizer().encode(&prompt).unwrap();
    let out = g.generate(&ids, &SamplingParams::greedy(), max_tokens, |_| {}).unwrap();
    let reason = match out.finish_reason {
        accelrt_models::FinishReason::Stop => "stop",
        accelrt_models::FinishReason::Length => "length",
    };
    (out.text, reason)
}

fn request(user: &str, max_tokens: usize) -> Value {
    json!({
        "model": MODEL,
        "messages": [{ "role": "user", "content": user }],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

fn stream_text(body: &str) -> (String, Vec<Value>) {
    let data = sse_data(body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let text = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    (text, chunks)
}

fn post_text(server: &Server, body: &Value) -> (u16, String) {
    let r = ureq::post(&format!("{}/v1/chat/completions", server.url)).send_string(&body.to_string());
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn answers_equal_the_library_and_streams_equal_whole_answers() {
    let server = start(ChatLimits::default(), Duration::from_secs(60));
    let g = load();
    let user = "Name three colours.";
    let (want, reason) = library_answer(&g, user, 24);

    let (status, json, _) = server.post("/v1/chat/completions", &request(user, 24).to_string());
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(json["choices"][0]["message"]["role"], "assistant");
    assert_eq!(json["choices"][0]["message"]["content"], want.as_str());
    assert_eq!(json["choices"][0]["finish_reason"], reason);
    assert_eq!(json["usage"]["completion_tokens"], 24);
    let prompt_tokens = json["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(json["usage"]["total_tokens"].as_u64().unwrap(), prompt_tokens + 24);

    // The same request streamed: a role chunk, text chunks adding up to the same answer, the finish
    // reason, the usage chunk, [DONE].
    let mut body = request(user, 24);
    body["stream"] = json!(true);
    body["stream_options"] = json!({ "include_usage": true });
    let (status, text) = post_text(&server, &body);
    assert_eq!(status, 200);
    let (streamed, chunks) = stream_text(&text);
    assert_eq!(streamed, want);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], reason);
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], 24);
    assert_eq!(usage["usage"]["prompt_tokens"].as_u64(), Some(prompt_tokens));

    // A stop string: the answer is cut just before it, finish reason `stop`, in both forms.
    let cut = want.char_indices().filter(|(_, c)| *c == ' ').nth(3).map(|(i, _)| i).unwrap();
    let stop_word: String = want[cut..].chars().take(4).collect();
    let mut body = request(user, 24);
    body["stop"] = json!(["never appears", stop_word]);
    let (_, json, _) = server.post("/v1/chat/completions", &body.to_string());
    assert_eq!(json["choices"][0]["message"]["content"], &want[..cut], "stop {stop_word:?}");
    assert_eq!(json["choices"][0]["finish_reason"], "stop");
    body["stream"] = json!(true);
    let (streamed, _) = stream_text(&post_text(&server, &body).1);
    assert_eq!(streamed, &want[..cut]);

    // top_p 0 keeps only the most likely token (OpenAI takes top_p in [0, 1]): the greedy answer,
    // whatever the temperature.
    let mut body = request(user, 24);
    body["temperature"] = json!(1.3);
    body["top_p"] = json!(0);
    let (status, json, _) = server.post("/v1/chat/completions", &body.to_string());
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["choices"][0]["message"]["content"], want.as_str());

    // The caller's request id comes back in the header; a completion's id is its own, so a client
    // that reuses a request id still gets a different completion id each time.
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let r = ureq::post(&format!("{}/v1/chat/completions", server.url))
                .set("x-request-id", "trace-42")
                .send_string(&request(user, 2).to_string())
                .unwrap();
            assert_eq!(r.header("x-request-id"), Some("trace-42"));
            let json: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
            json["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(ids.iter().all(|id| id.starts_with("chatcmpl-")), "{ids:?}");
    assert_ne!(ids[0], ids[1], "a reused request id gave a repeated completion id");

    let (_, info) = server.get("/info");
    assert!(info.contains("\"task\":\"chat\"") && info.contains("\"max_input_tokens\":512"), "{info}");
    let metrics = server.get("/metrics").1;
    assert!(metric(&metrics, "accelrt_generated_tokens_total") >= 48.0);
    assert!(metric(&metrics, "accelrt_time_to_first_token_seconds_count") >= 5.0);
    server.shutdown();
}

#[test]
fn requests_join_and_leave_the_running_batch_and_each_gets_its_own_answer() {
    let server = start(ChatLimits { max_sequences: 4, queue: 16 }, Duration::from_secs(120));
    let g = load();
    let asks: Vec<(String, usize)> =
        (0..7).map(|i| (format!("Write one sentence about the number {i}."), [6, 30, 12, 40, 3, 20, 25][i])).collect();
    let want: Vec<(String, &str)> = asks.iter().map(|(u, n)| library_answer(&g, u, *n)).collect();
    // Staggered arrivals: later requests join while earlier ones are decoding, short ones leave first,
    // and with 4 slots for 7 requests some wait for a slot to free up.
    let got: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = asks
            .iter()
            .enumerate()
            .map(|(i, (u, n))| {
                let server = &server;
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_millis(40 * i as u64));
                    let (status, json, _) = server.post("/v1/chat/completions", &request(u, *n).to_string());
                    assert_eq!(status, 200, "{json}");
                    json
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (json, (text, reason))) in got.iter().zip(&want).enumerate() {
        assert_eq!(json["choices"][0]["message"]["content"], text.as_str(), "request {i}");
        assert_eq!(json["choices"][0]["finish_reason"], *reason, "request {i}");
    }
    // Steps ran with several sequences at once (the mean rows per step is above one).
    let metrics = server.get("/metrics").1;
    let rows = metric(&metrics, "accelrt_decode_batch_size_sum");
    let steps = metric(&metrics, "accelrt_decode_batch_size_count");
    assert!(rows > steps * 1.2, "{rows} rows in {steps} steps");
    assert!(eventually(Duration::from_secs(5), || {
        metric(&server.get("/metrics").1, "accelrt_active_sequences") == 0.0
    }));
    server.shutdown();
}

#[test]
fn bad_chat_requests_get_the_documented_status() {
    let server = start(ChatLimits::default(), Duration::from_secs(60));
    let long = "word ".repeat(CONTEXT);
    let cases: Vec<(String, u16, &str)> = vec![
        ("{oops".into(), 400, "not valid JSON"),
        (json!({"model": MODEL, "messages": "hi"}).to_string(), 400, "invalid value for `messages`"),
        (json!({"model": MODEL, "messages": [["user", "hi"]]}).to_string(), 400, "must be an object"),
        (json!({"model": MODEL, "messages": [{"role": "user", "content": []}]}).to_string(), 400, "needs `content`"),
        (json!({"model": MODEL, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "x"}]}).to_string(), 400, "stream is true"),
        (json!({"model": MODEL, "messages": []}).to_string(), 400, "empty"),
        (json!({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}).to_string(), 400, "role"),
        (json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}).to_string(), 404, "does not exist"),
        (json!({"model": MODEL, "n": 2, "messages": [{"role": "user", "content": "x"}]}).to_string(), 400, "n = 1"),
        (
            json!({"model": MODEL, "temperature": 3, "messages": [{"role": "user", "content": "x"}]}).to_string(),
            400,
            "temperature",
        ),
        (json!({"model": MODEL, "top_p": -0.1, "messages": [{"role": "user", "content": "x"}]}).to_string(), 400, "top_p"),
        (json!({"model": MODEL, "top_p": 1.5, "messages": [{"role": "user", "content": "x"}]}).to_string(), 400, "top_p"),
        (
            json!({"model": MODEL, "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}).to_string(),
            400,
            "max_tokens",
        ),
        (
            json!({"model": MODEL, "stop": ["a","b","c","d","e"], "messages": [{"role": "user", "content": "x"}]})
                .to_string(),
            400,
            "stop",
        ),
        // A prompt that cannot fit is a bad request (OpenAI: 400 context_length_exceeded), not 413.
        (json!({"model": MODEL, "messages": [{"role": "user", "content": long}]}).to_string(), 400, "context"),
        (json!({"model": MODEL, "tools": [{"type": "function", "function": {"name": "f"}}], "messages": [{"role": "user", "content": "x"}]}).to_string(), 400, "tools"),
        (json!({"model": MODEL, "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "x"}]}).to_string(), 400, "response_format"),
    ];
    // Parameters that would change the output and are not supported are refused, naming them,
    // never ignored; unknown ones are refused as OpenAI refuses them. Their no-op values pass.
    let x = json!([{"role": "user", "content": "x"}]);
    let mut cases = cases;
    for (field, value, needle) in [
        ("logit_bias", json!({"50256": -100}), "logit_bias"),
        ("logit_bias", json!("garbage"), "logit_bias"),
        ("functions", json!([{"name": "f", "parameters": {}}]), "functions"),
        ("function_call", json!({"name": "f"}), "function_call"),
        ("tool_choice", json!("required"), "tool_choice"),
        ("top_logprobs", json!(3), "top_logprobs"),
        ("modalities", json!(["text", "audio"]), "modalities"),
        ("prediction", json!({"type": "content", "content": "x"}), "prediction"),
        ("audio", json!({"voice": "alloy", "format": "wav"}), "audio"),
        ("max_completion_tokens", json!(7), "max_completion_tokens"),
        ("best_of", json!(2), "Unrecognized request argument supplied: best_of"),
        (
            "stream_options",
            json!({"include_usage": true, "chunk_size": 2}),
            "Unrecognized request argument supplied: chunk_size",
        ),
    ] {
        let mut body = json!({"model": MODEL, "messages": x, "max_tokens": 5});
        body[field] = value;
        cases.push((body.to_string(), 400, needle));
    }
    for (message, needle) in [
        (
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
            "tool_calls",
        ),
        (json!({"role": "user", "content": "x", "tool_call_id": "1"}), "tool_call_id"),
        (json!({"role": "function", "name": "f", "content": "x"}), "role"),
        (json!({"role": "user", "content": "x", "weight": 2}), "Unrecognized request argument supplied: weight"),
        (json!({"role": "x".repeat(5000), "content": "x"}), "role"),
        (json!({"role": "user"}), "a `user` message needs `content`"),
        (json!({"role": "system", "content": null}), "a `system` message needs `content`"),
        (json!({"role": "user", "content": [{"type": "text"}]}), "a text part has no `text`"),
    ] {
        cases.push((json!({"model": MODEL, "messages": [message]}).to_string(), 400, needle));
    }
    for (body, status, needle) in &cases {
        let (got, json, _) = server.post("/v1/chat/completions", body);
        assert!(json.to_string().len() < 1000, "an error echoes a bounded part of the request: {json:.300}");
        assert_eq!(got, *status, "{body:.80}: {json}");
        let message = json["error"]["message"].as_str().unwrap_or_else(|| panic!("not the OpenAI shape: {json}"));
        assert!(message.contains(needle), "{body:.80}: {message}");
        if *needle == "context" {
            assert_eq!(json["error"]["code"], "context_length_exceeded");
            assert_eq!(json["error"]["type"], "invalid_request_error");
        }
    }
    // `param` names what is at fault: the field the client sent, or the message (and part).
    for (body, param) in [
        (json!({"model": MODEL, "max_completion_tokens": 0, "messages": x}), json!("max_completion_tokens")),
        (json!({"model": MODEL, "max_tokens": 0, "messages": x}), json!("max_tokens")),
        (json!({"model": MODEL, "stop": ["", "a", "b", "c", "d", "e"], "messages": x}), json!("stop")),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}, {"role": "developer"}]}),
            json!("messages[1].content"),
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": ["not a part"]}]}),
            json!("messages[0].content[0]"),
        ),
        (json!({"model": MODEL, "messages": [{"role": "bogus", "content": "x"}]}), json!("messages[0].role")),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]}),
            json!("messages[0].content[0]"),
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "extra": 1}]}]}),
            json!("messages[0].content[0].extra"),
        ),
        (
            json!({"model": MODEL, "stream": true, "stream_options": {"include_tokens": true}, "messages": x}),
            json!("stream_options.include_tokens"),
        ),
        (json!({"model": MODEL, "stream": true, "stream_options": [true], "messages": x}), json!("stream_options")),
        (json!({"model": MODEL, "stream_options": {}, "messages": x}), json!("stream_options")),
        (json!({"model": MODEL, "max_tokens": "ten", "messages": x}), json!("max_tokens")),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text"}]}]}),
            json!("messages[0].content[1].text"),
        ),
    ] {
        let (_, json, _) = server.post("/v1/chat/completions", &body.to_string());
        assert_eq!(json["error"]["param"], param, "{body}: {json}");
    }
    // Null and no-op values of the parameters OpenAI defines are accepted.
    let mut noop = request("Hi", 2);
    for (field, value) in [
        ("n", json!(1)),
        ("logprobs", json!(false)),
        ("presence_penalty", json!(0)),
        ("frequency_penalty", json!(0)),
        ("user", json!("u")),
        ("store", json!(false)),
        ("metadata", json!({"k": "v"})),
        ("service_tier", json!("auto")),
        ("parallel_tool_calls", json!(true)),
        ("stream_options", Value::Null),
        ("seed", json!(3)),
        ("logit_bias", json!({})),
        ("logit_bias", Value::Null),
        ("modalities", json!(["text"])),
        ("top_logprobs", Value::Null),
        ("tools", json!([])),
        ("tool_choice", json!("none")),
        ("max_completion_tokens", json!(2)),
        // Empty stop strings never match: dropped, and not counted towards the 4.
        ("stop", json!(["", "never1", "never2", "", "never3", "never4", ""])),
        // An assistant turn may come without content (OpenAI: beside tool calls or a refusal).
        (
            "messages",
            json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": null, "refusal": "No."}, {"role": "user", "content": "Hi"}]),
        ),
    ] {
        noop[field] = value;
        let (status, json, _) = server.post("/v1/chat/completions", &noop.to_string());
        assert_eq!(status, 200, "{field}: {json}");
    }
    // stream_options (both fields OpenAI defines) with a stream; without one it is refused (above).
    let mut streamed = request("Hi", 2);
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": false, "include_obfuscation": true});
    assert_eq!(post_text(&server, &streamed).0, 200);
    // Embeddings on a chat model: a clear 400, not a crash.
    let (status, json, _) = server.post("/v1/embeddings", &json!({"model": MODEL, "input": "x"}).to_string());
    assert_eq!(status, 400, "{json}");
    assert!(json["error"]["message"].as_str().unwrap().contains("/v1/chat/completions"));
    let (status, json, _) = server.post("/v1/chat/completions", &request("Hi", 2).to_string());
    assert_eq!(status, 200, "{json}");
    server.shutdown();
}

#[test]
fn a_client_that_hangs_up_cancels_its_generation_and_frees_its_slot() {
    let server = start(ChatLimits { max_sequences: 1, queue: 4 }, Duration::from_secs(120));
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut long = request("Count from one to one thousand.", 2000);
    long["ignore_eos"] = json!(true);
    long["max_tokens"] = json!(CONTEXT);

    // A stream: read its first events, then hang up.
    long["stream"] = json!(true);
    let mut conn = raw_send(&addr, "/v1/chat/completions", &long.to_string(), "");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while sse_data(&String::from_utf8_lossy(&seen)).len() < 4 {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(conn);
    let cancelled = |server: &Server| metric(&server.get("/metrics").1, "accelrt_requests_cancelled_total");
    assert!(eventually(Duration::from_secs(5), || cancelled(&server) == 1.0), "the stream's work goes on");

    // A whole-answer request: hang up while it runs.
    long["stream"] = json!(false);
    let conn = raw_send(&addr, "/v1/chat/completions", &long.to_string(), "");
    std::thread::sleep(Duration::from_millis(300));
    drop(conn);
    assert!(eventually(Duration::from_secs(5), || cancelled(&server) == 2.0), "the request's work goes on");

    // The only slot is free again: a short request is answered, and nothing is left running.
    let (status, json, _) = server.post("/v1/chat/completions", &request("Hi", 4).to_string());
    assert_eq!(status, 200, "{json}");
    // (The gauge is updated after the step that finished the answer, so it may trail the answer.)
    assert!(eventually(Duration::from_secs(5), || {
        metric(&server.get("/metrics").1, "accelrt_active_sequences") == 0.0
    }));
    let metrics = server.get("/metrics").1;
    assert!(metric(&metrics, "accelrt_generated_tokens_total") < (2 * CONTEXT) as f64);
    server.shutdown();
}

#[test]
fn a_full_queue_is_refused_at_once_and_slow_requests_time_out() {
    let server = start(ChatLimits { max_sequences: 1, queue: 1 }, Duration::from_millis(1500));
    let mut long = request("Count from one to one thousand.", CONTEXT);
    long["ignore_eos"] = json!(true);
    std::thread::scope(|scope| {
        // One request decodes, one waits in the queue, the third is refused.
        let running = scope.spawn(|| server.post("/v1/chat/completions", &long.to_string()));
        std::thread::sleep(Duration::from_millis(400));
        let waiting = scope.spawn(|| server.post("/v1/chat/completions", &long.to_string()));
        std::thread::sleep(Duration::from_millis(200));
        let (status, json, retry) = server.post("/v1/chat/completions", &long.to_string());
        assert_eq!((status, retry.as_deref()), (429, Some("1")), "{json}");
        assert_eq!(json["error"]["code"], "overloaded");
        // Both accepted requests run past the 1.5 s timeout: 504, code `timeout`.
        for h in [running, waiting] {
            let (status, json, _) = h.join().unwrap();
            assert_eq!(status, 504, "{json}");
            assert_eq!(json["error"]["code"], "timeout");
        }
    });
    // The timed-out request still in the queue leaves it when the model thread ends its current
    // step (slow on a loaded machine): until then the queue is full.
    assert!(eventually(Duration::from_secs(30), || metric(&server.get("/metrics").1, "accelrt_queue_depth") == 0.0));
    // A stream that times out ends with an error event and no [DONE].
    let mut body = long.clone();
    body["stream"] = json!(true);
    let (status, text) = post_text(&server, &body);
    assert_eq!(status, 200);
    let data = sse_data(&text);
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "timeout", "{text:.300}");
    assert!(!data.iter().any(|d| d == "[DONE]"));
    assert!(eventually(Duration::from_secs(5), || {
        metric(&server.get("/metrics").1, "accelrt_active_sequences") == 0.0
    }));
    // The three timed-out generations were each cancelled once (the refused one never ran).
    assert!(eventually(Duration::from_secs(5), || {
        metric(&server.get("/metrics").1, "accelrt_requests_cancelled_total") == 3.0
    }));
    server.shutdown();
}

#[test]
fn shutdown_lets_running_streams_finish() {
    let mut server = start(ChatLimits::default(), Duration::from_secs(60));
    let mut body = request("Tell me about the sea.", 30);
    body["stream"] = json!(true);
    let stop = server.stop.take().unwrap();
    std::thread::scope(|scope| {
        let streams: Vec<_> = (0..3).map(|_| scope.spawn(|| post_text(&server, &body))).collect();
        std::thread::sleep(Duration::from_millis(150));
        stop.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(server.get("/health").0, 503);
        let (status, json, _) = server.post("/v1/chat/completions", &request("late", 2).to_string());
        assert_eq!(status, 503, "{json}");
        for s in streams {
            let (status, text) = s.join().unwrap();
            assert_eq!(status, 200);
            let (answer, _) = stream_text(&text);
            assert!(!answer.is_empty());
        }
    });
    server.thread.take().unwrap().join().unwrap();
}

/// Raw connections answer exactly once (no duplicated responses on the chat route either).
#[test]
fn raw_requests_get_exactly_one_answer() {
    let server = start(ChatLimits::default(), Duration::from_secs(60));
    let addr = server.url.trim_start_matches("http://").to_string();
    for stream in [false, true] {
        let mut body = request("Hi", 3);
        body["stream"] = json!(stream);
        let r = raw_read(raw_send(&addr, "/v1/chat/completions", &body.to_string(), ""));
        assert_eq!(r.status, 200);
        let text = String::from_utf8(r.body).unwrap();
        if stream {
            let (_, chunks) = stream_text(&text);
            assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "length", "{text}");
        } else {
            let json: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(json["usage"]["completion_tokens"], 3);
        }
    }
    server.shutdown();
}
