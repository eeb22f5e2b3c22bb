//! The connection layer over raw TCP on 127.0.0.1: header and body timeouts, the connection limit,
//! and a shutdown that waits for requests in flight but not for silent clients. The timeouts here
//! are short; the assertions are that a connection is closed (never that it is closed quickly, past
//! a generous bound), so they hold on a slow machine too.

mod common;

use accelrt_models::{registry, ModelStore, SentenceEmbedder};
use accelrt_serve::{AppState, BatchLimits, EmbeddingBatcher, Metrics, ServerInfo};
use common::{eventually, metric, raw_read, Server};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MODEL: &str = "all-minilm-l6-v2";
/// Far longer than any of these tests' timeouts: a connection still open after this is a failure.
const NEVER: Duration = Duration::from_secs(30);

struct Limits {
    header: Duration,
    body: Duration,
    connections: usize,
}

fn start(l: Limits) -> Server {
    let dir = ModelStore::from_env()
        .ensure(&registry::ALL_MINILM_L6_V2)
        .unwrap_or_else(|e| panic!("all-MiniLM-L6-v2 is needed by this test: {e}"));
    let embedder = SentenceEmbedder::load(&dir, &accelrt_candle::CandleBackend::cpu(), &Default::default()).unwrap();
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
    let limits = BatchLimits { max_batch: 8, max_batch_tokens: 2048, queue: 16 };
    let mut state = AppState::new(EmbeddingBatcher::start(embedder, limits, metrics.clone()).unwrap(), metrics, info);
    state.header_timeout = l.header;
    state.body_timeout = l.body;
    state.max_connections = l.connections;
    Server::start(state)
}

fn addr(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_string()
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(NEVER)).unwrap();
    s
}

/// Reads until the server closes the connection; fails if it is still open after `NEVER`.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!(
                "the server did not close the connection ({e}); read so far: {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

fn status_of(response: &[u8]) -> Option<u16> {
    std::str::from_utf8(response).ok()?.split(' ').nth(1)?.parse().ok()
}

fn small_request() -> String {
    serde_json::json!({ "model": MODEL, "input": "a well-behaved client" }).to_string()
}

#[test]
fn half_sent_headers_are_closed_after_the_header_timeout() {
    let server = start(Limits { header: Duration::from_millis(500), body: NEVER, connections: 16 });
    let mut s = connect(&addr(&server));
    let started = Instant::now();
    s.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: test\r\nContent-Type: app").unwrap();
    let answer = read_until_closed(&mut s);
    assert!(started.elapsed() >= Duration::from_millis(450), "closed before the timeout");
    // hyper may say 408 before closing; nothing else may come back.
    assert!(answer.is_empty() || status_of(&answer) == Some(408), "{:?}", String::from_utf8_lossy(&answer));

    // A connection that sends nothing at all, and a kept-alive one that goes quiet after an answer,
    // are closed the same way.
    let mut silent = connect(&addr(&server));
    assert!(read_until_closed(&mut silent).is_empty());
    let mut kept = connect(&addr(&server));
    let body = small_request();
    write!(kept, "POST /v1/embeddings HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let answer = read_until_closed(&mut kept);
    assert_eq!(status_of(&answer), Some(200), "{:?}", String::from_utf8_lossy(&answer));
    server.shutdown();
}

#[test]
fn a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_closes() {
    let server = start(Limits { header: NEVER, body: Duration::from_millis(1000), connections: 16 });
    let head =
        "POST /v1/embeddings HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    // Headers and a few bytes of the body, then silence.
    let mut s = connect(&addr(&server));
    s.write_all(format!("{head}{{\"model\":").as_bytes()).unwrap();
    let answer = read_until_closed(&mut s);
    assert_eq!(status_of(&answer), Some(408), "{:?}", String::from_utf8_lossy(&answer));
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.contains("connection: close") && text.contains("\"code\":\"body_timeout\""), "{text}");

    // A body trickling in, a byte every 100 ms, never completes within the timeout either: the
    // timeout is for the whole body, not between two reads.
    let mut s = connect(&addr(&server));
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // One byte per 100 ms (the 100-byte body would take 10 s) until the server answers.
    while answer.is_empty() && started.elapsed() < NEVER {
        s.write_all(b" ").unwrap();
        match s.read(&mut buf) {
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    s.set_read_timeout(Some(NEVER)).unwrap();
    answer.extend(read_until_closed(&mut s));
    assert_eq!(status_of(&answer), Some(408), "{:?}", String::from_utf8_lossy(&answer));
    assert!(started.elapsed() < Duration::from_secs(9), "answered only when the body was nearly complete");
    let metrics = server.get("/metrics").1;
    assert_eq!(metric(&metrics, "accelrt_requests_total{route=\"/v1/embeddings\",status=\"408\"}"), 2.0);
    server.shutdown();
}

/// A declared Content-Length over the body limit is refused at once: 413 before any of the body is
/// sent, with no `100 Continue` first (the client is told not to send it), and the connection closes.
#[test]
fn a_declared_length_over_the_limit_is_refused_before_the_body_is_read() {
    // A body timeout far past the read guard: an answer can only come from the declared length.
    let server = start(Limits { header: NEVER, body: Duration::from_secs(3600), connections: 16 });
    let over = 8u64 << 30;
    for expect in ["", "Expect: 100-continue\r\n"] {
        let mut s = connect(&addr(&server));
        let head = format!(
            "POST /v1/embeddings HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             Content-Length: {over}\r\n{expect}\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let answer = read_until_closed(&mut s);
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert_eq!(status_of(&answer), Some(413), "{expect:?}: {text}");
        assert!(!text.contains("100 continue"), "{expect:?}: {text}");
        assert!(text.contains("connection: close") && text.contains("exceeds"), "{text}");
    }
    // The server goes on serving.
    let (status, _, _) = server.post("/v1/embeddings", &small_request());
    assert_eq!(status, 200);
    let metrics = server.get("/metrics").1;
    assert_eq!(metric(&metrics, "accelrt_requests_total{route=\"/v1/embeddings\",status=\"413\"}"), 2.0);
    server.shutdown();
}

/// With a limit of 4 connections, 12 silent ones: the first 4 are served (and time out), the rest
/// wait in the backlog, unaccepted; a well-behaved client behind them is answered once the silent
/// ones have timed out, never locked out.
#[test]
fn silent_connections_beyond_the_limit_do_not_lock_out_a_client() {
    let server = start(Limits { header: Duration::from_millis(500), body: NEVER, connections: 4 });
    let a = addr(&server);
    let silent: Vec<TcpStream> = (0..12).map(|_| connect(&a)).collect();
    let started = Instant::now();
    let (status, json, _) = server.post("/v1/embeddings", &small_request());
    assert_eq!(status, 200, "{json}");
    let waited = started.elapsed();
    // Every silent connection is closed by the server (each after being accepted and timing out).
    for mut s in silent {
        assert!(read_until_closed(&mut s).is_empty());
    }
    println!("a client behind 12 silent connections (limit 4, header timeout 0.5 s) waited {waited:?}");
    assert!(waited < NEVER);
    server.shutdown();
}

/// Shutdown finishes the request in flight and drops every silent connection at once (their
/// timeouts are far longer than the test), so it ends within the drain and a small bound.
#[test]
fn shutdown_finishes_requests_in_flight_and_never_waits_for_silent_clients() {
    let mut server =
        start(Limits { header: Duration::from_secs(600), body: Duration::from_secs(600), connections: 64 });
    let a = addr(&server);
    // Silent clients: a connection that sent nothing, one midway through its headers, one with
    // headers and part of a body, and a kept-alive one that is idle after its answer.
    let nothing = connect(&a);
    let mut half_headers = connect(&a);
    half_headers.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: te").unwrap();
    let mut part_body = connect(&a);
    part_body.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: test\r\nContent-Length: 50\r\n\r\n{\"mod").unwrap();
    let mut idle = connect(&a);
    let body = small_request();
    write!(idle, "POST /v1/embeddings HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    // A request in flight: 64 inputs of 256 tokens, 8 model batches.
    let ids: Vec<Vec<u32>> = (0..64).map(|i| (0..256).map(|t| 1000 + ((i * 31 + t) % 5000) as u32).collect()).collect();
    let big = serde_json::json!({ "model": MODEL, "input": ids }).to_string();
    // In flight means its body is read and its first batch has run (the idle client's request ran
    // one batch before it, so wait for one more than that).
    let batches = || metric(&server.get("/metrics").1, "accelrt_batch_size_count");
    let before = batches();
    let in_flight = common::raw_send(&a, "/v1/embeddings", &big, "");
    assert!(eventually(NEVER, || batches() > before));

    let stop = server.stop.take().unwrap();
    let thread = server.thread.take().unwrap();
    let started = Instant::now();
    stop.send(()).unwrap();
    let answer = raw_read(in_flight);
    assert_eq!(answer.status, 200, "the request in flight is answered");
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(json["data"].as_array().unwrap().len(), 64);
    let answered = started.elapsed();
    thread.join().unwrap();
    let stopped = started.elapsed();
    println!("shutdown: the request in flight answered after {answered:?}, the server stopped after {stopped:?}");
    // The drain is 0.3 s; the silent clients' timeouts are 600 s.
    assert!(stopped < answered.max(Duration::from_millis(300)) + Duration::from_secs(10), "{stopped:?}");
    for (name, mut s) in
        [("nothing", nothing), ("half headers", half_headers), ("part of a body", part_body), ("idle", idle)]
    {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let rest = read_until_closed(&mut s);
        assert!(rest.is_empty() || status_of(&rest) == Some(503) || name == "idle", "{name}: {rest:?}");
    }
}
