//! `bench --url`'s HTTP client (ureq on threads) against tiny servers written here: one that never
//! answers must not hang the run past its give-up deadline; healthy ones are measured over kept-alive
//! connections; a chat stream is timed and counted; an error status is a failed request.
//!
//! Nothing here depends on the machine's speed: the assertions are about what is sent, counted and
//! recorded, and the only times are generous upper bounds that a hang would break.

use accelrt_bench::load::Arrivals;
use accelrt_bench::run::{BenchConfig, Outcome, TrainingOptions};
use accelrt_bench::{http_target, Pricing, Result, RunRules, ScenarioKind};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the test server does with a `POST`.
#[derive(Clone, Copy)]
enum Post {
    /// Reads it and never answers (the connection stays open until the client closes it).
    Silent,
    /// A small embeddings answer, keeping the connection alive.
    Embeddings,
    /// A streamed chat answer of `TOKENS` tokens (chunked), keeping the connection alive.
    Chat,
    /// `429 Too Many Requests`.
    TooMany,
    /// The chat stream of `Chat` with its events separated by CRLF CRLF (valid SSE).
    ChatCrlf,
    /// One text chunk, with a usage chunk claiming this many completion tokens.
    ChatClaims(u64),
    /// `503` with terminal escapes in its status text and escapes and CR/LF in its body.
    Escapes,
}

const TOKENS: usize = 4;

/// What the test server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
    posts: AtomicUsize,
}

/// An HTTP/1.1 server on a free loopback port: `GET /info` answers `info`, a `POST` as `post` says.
/// Its threads live until the test process ends.
fn server(info: serde_json::Value, post: Post) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            s.connections.fetch_add(1, Ordering::SeqCst);
            let (s, info) = (s.clone(), info.to_string());
            std::thread::spawn(move || {
                let _ = serve_connection(stream, &info, post, &s);
            });
        }
    });
    (url, seen)
}

/// Answers the requests of one connection in turn, until the client closes it.
fn serve_connection(stream: TcpStream, info: &str, post: Post, seen: &Seen) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        seen.requests.fetch_add(1, Ordering::SeqCst);
        if request.starts_with("GET /info") {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{info}",
                info.len()
            )?;
            continue;
        }
        seen.posts.fetch_add(1, Ordering::SeqCst);
        match post {
            Post::Silent => {
                // Never answer; read until the client gives up and closes.
                let mut sink = [0u8; 4096];
                while reader.read(&mut sink)? > 0 {}
                return Ok(());
            }
            Post::Embeddings => {
                let answer = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,0.25]}]}"#;
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                )?;
            }
            Post::Chat | Post::ChatCrlf | Post::ChatClaims(_) => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                )?;
                let (chunks, claimed) = match post {
                    Post::ChatClaims(n) => (1, n),
                    _ => (TOKENS, TOKENS as u64),
                };
                let mut events =
                    vec![r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#.to_string()];
                events.extend((0..chunks).map(|_| r#"{"choices":[{"index":0,"delta":{"content":"ab"}}]}"#.to_string()));
                events.push(format!(r#"{{"choices":[],"usage":{{"prompt_tokens":3,"completion_tokens":{claimed}}}}}"#));
                events.push("[DONE]".into());
                let end = if matches!(post, Post::ChatCrlf) { "\r\n\r\n" } else { "\n\n" };
                for e in events {
                    let event = format!("data: {e}{end}");
                    write!(out, "{:x}\r\n{event}\r\n", event.len())?;
                    out.flush()?;
                }
                write!(out, "0\r\n\r\n")?;
            }
            Post::Escapes => {
                let answer = "\x1b[2J\x1b]0;owned-title\x07\x1b[1;31mFAKE OK\x1b[0m\r\n\r\nvalid: yes";
                write!(out, "HTTP/1.1 503 \x1b[31mRED\x1b[0m\r\nContent-Length: {}\r\n\r\n{answer}", answer.len())?;
            }
            Post::TooMany => {
                let answer = r#"{"error":{"message":"the queue is full"}}"#;
                write!(out, "HTTP/1.1 429 Too Many Requests\r\nContent-Length: {}\r\n\r\n{answer}", answer.len())?;
            }
        }
        out.flush()?;
    }
}

fn info(task: &str) -> serde_json::Value {
    serde_json::json!({ "model": "test-model", "task": task, "backend": "candle", "device": "cpu", "version": "0.0.0" })
}

fn rules(min_queries: usize, min_duration_s: f64, warmup_s: f64) -> RunRules {
    RunRules {
        warmup: Duration::from_secs_f64(warmup_s),
        min_duration: Duration::from_secs_f64(min_duration_s),
        min_queries,
    }
}

fn config(scenarios: &[ScenarioKind], rules: RunRules, qps: f64) -> BenchConfig {
    BenchConfig {
        model: "test-model".into(),
        scenarios: scenarios.to_vec(),
        batch_size: 1,
        rules: Some(rules),
        qps: Some(qps),
        p99_ms: Some(60_000.0),
        find_max_qps: false,
        search_steps: 1,
        texts: vec!["one text".into(), "another text".into()],
        peers: vec![],
        peer_device: "cpu".into(),
        peer_dtype: String::new(),
        pricing: Pricing { instance_type: None, instance_type_source: "unknown".into(), price: None, instance: None },
        options: Default::default(),
        progress: false,
        seed: 11,
        max_tokens: TOKENS,
        context: 256,
        concurrency: 4,
        out: None,
        training: TrainingOptions { data: String::new(), seq_len: None, lr: 1e-4, weight_decay: 0.0 },
    }
}

/// Runs the benchmark on another thread; a run that has not returned after `limit` is a hang.
fn run_within(config: BenchConfig, url: String, limit: Duration) -> Result<Outcome> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(http_target::run(&config, &url));
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("the run did not return within {limit:?}: it hung"))
}

/// The regression: a server that accepts every connection and reads every request but never
/// answers. The server scenario still ends at its give-up deadline (not a moment before), invalid,
/// with every arrival sent and none answered.
#[test]
fn a_server_that_never_answers_does_not_hang_the_server_scenario() {
    let (url, seen) = server(info("embeddings"), Post::Silent);
    let (rules, qps) = (rules(4, 0.5, 0.0), 8.0);
    let config = config(&[ScenarioKind::Server], rules, qps);
    let schedule = Arrivals::poisson(qps, &rules, config.seed).unwrap();
    let started = Instant::now();
    let outcome = run_within(config, url, schedule.give_up + Duration::from_secs(120)).unwrap();
    assert!(started.elapsed() >= schedule.give_up, "{:?} < {:?}", started.elapsed(), schedule.give_up);
    assert_eq!(outcome.results.len(), 1);
    let r = &outcome.results[0];
    assert_eq!(r.scenario, ScenarioKind::Server);
    assert!(!r.valid && r.queries == 0, "{r:?}");
    let planned = schedule.at.len();
    let reasons = r.invalid_reasons.join("\n");
    assert!(reasons.contains(&format!("could not keep up with 8.0 queries/s (0 of {planned} answered)")), "{reasons}");
    assert!(!reasons.contains("not sent") && !reasons.contains("requests failed"), "{reasons}");
    // Every arrival left (far below the in-flight bound); no warm-up request (warm-up 0).
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.posts.load(Ordering::SeqCst) < planned && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen.posts.load(Ordering::SeqCst), planned);
}

/// A healthy server: no request fails; the closed-loop runs meet their rules (nothing there
/// depends on speed); connections are kept alive and reused.
#[test]
fn a_healthy_server_is_measured_over_reused_connections() {
    let (url, seen) = server(info("embeddings"), Post::Embeddings);
    let qps = 20.0;
    let rules = rules(8, 0.3, 0.1);
    let config = config(&[ScenarioKind::Offline, ScenarioKind::SingleStream, ScenarioKind::Server], rules, qps);
    let planned = Arrivals::poisson(qps, &rules, config.seed).unwrap().at.len();
    let outcome = run_within(config, url, Duration::from_secs(600)).unwrap();
    assert_eq!(outcome.results.len(), 3);
    for r in &outcome.results {
        let reasons = r.invalid_reasons.join("\n");
        assert!(!reasons.contains("failed") && !reasons.contains("not sent"), "{reasons}");
        assert_eq!(r.system, "accelrt-serve");
        if r.scenario == ScenarioKind::Server {
            assert!(r.queries <= planned, "{r:?}");
        } else {
            assert!(r.valid && r.queries >= 8, "{r:?}");
        }
    }
    let (connections, requests) = (seen.connections.load(Ordering::SeqCst), seen.requests.load(Ordering::SeqCst));
    assert!(connections < requests, "{connections} connections for {requests} requests: none reused");
}

/// A chat server's stream: each request's tokens are counted from its usage chunk and timed to
/// its first text chunk.
#[test]
fn a_chat_stream_is_counted_and_timed() {
    let (url, _) = server(info("chat"), Post::Chat);
    let config = config(&[ScenarioKind::Offline], rules(4, 0.2, 0.0), 10.0);
    let outcome = run_within(config, url, Duration::from_secs(600)).unwrap();
    let r = &outcome.results[0];
    assert!(r.valid && r.queries >= 4, "{r:?}");
    let g = r.generation.as_ref().expect("generation metrics");
    assert_eq!(g.requests, r.queries);
    assert_eq!(g.output_tokens, r.queries * TOKENS);
    assert_eq!(g.prompt_tokens_mean, 3.0);
    assert!(g.ttft_ms.max >= g.ttft_ms.p50 && g.ttft_ms.p50 >= 0.0, "{g:?}");
}

/// An error status is a failed request, shown with its status and the start of its body.
#[test]
fn an_error_status_is_a_failed_request() {
    let (url, _) = server(info("embeddings"), Post::TooMany);
    let config = config(&[ScenarioKind::SingleStream], rules(3, 0.0, 0.0), 10.0);
    let outcome = run_within(config, url, Duration::from_secs(600)).unwrap();
    let r = &outcome.results[0];
    assert!(!r.valid && r.queries == 0, "{r:?}");
    let reasons = r.invalid_reasons.join("\n");
    assert!(reasons.contains("3 of 3 requests failed (first: HTTP 429 Too Many Requests: {\"error\""), "{reasons}");
}

/// SSE events separated by CRLF CRLF (valid SSE, as some servers and proxies send) are read.
#[test]
fn a_chat_stream_with_crlf_line_endings_is_read() {
    let (url, _) = server(info("chat"), Post::ChatCrlf);
    let config = config(&[ScenarioKind::Offline], rules(4, 0.2, 0.0), 10.0);
    let outcome = run_within(config, url, Duration::from_secs(600)).unwrap();
    let r = &outcome.results[0];
    assert!(r.valid && r.queries >= 4, "{r:?}");
    assert_eq!(r.generation.as_ref().unwrap().output_tokens, r.queries * TOKENS);
}

/// A server's token count is not taken on trust: a stream that reports other than the exactly
/// `--max-tokens` asked for (1000 with one chunk: absurd tokens/s; 10¹²: a result that broke its
/// limits and failed the whole run) is a failed request, with the reason, and the run still ends
/// with a result.
#[test]
fn a_chat_stream_reporting_other_than_the_tokens_asked_for_is_a_failed_request() {
    for claimed in [1000, 1_000_000_000_000] {
        let (url, _) = server(info("chat"), Post::ChatClaims(claimed));
        let config = config(&[ScenarioKind::SingleStream], rules(3, 0.0, 0.0), 10.0);
        let outcome = run_within(config, url, Duration::from_secs(600)).unwrap();
        let r = &outcome.results[0];
        assert!(!r.valid && r.queries == 0, "{r:?}");
        let reasons = r.invalid_reasons.join("\n");
        let why =
            format!("3 of 3 requests failed (first: the server reported {claimed} completion tokens; {TOKENS} were");
        assert!(reasons.contains(&why), "{reasons}");
    }
}

/// A server's status text and error body reach the reasons (printed, and stored in results) with
/// their control characters escaped: no terminal escapes, no forged lines.
#[test]
fn control_characters_in_a_servers_error_are_escaped() {
    let (url, _) = server(info("embeddings"), Post::Escapes);
    let config = config(&[ScenarioKind::SingleStream], rules(2, 0.0, 0.0), 10.0);
    let outcome = run_within(config, url, Duration::from_secs(600)).unwrap();
    let r = &outcome.results[0];
    assert!(!r.valid, "{r:?}");
    for reason in &r.invalid_reasons {
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
    }
    let reasons = r.invalid_reasons.join("\n");
    assert!(reasons.contains("HTTP 503 \\u{1b}[31mRED\\u{1b}[0m: \\u{1b}[2J"), "{reasons}");
    assert!(reasons.contains("\\u{d}\\u{a}\\u{d}\\u{a}valid: yes"), "{reasons}");
}
