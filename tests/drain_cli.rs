//! The shutdown sequence a load balancer and systemd rely on (deploy/serving.yaml, docs/deploy.md),
//! against the real `accelrt serve` process: on SIGTERM it fails /health at once, refuses new
//! requests with 503, closes its listener once `--drain-seconds` have passed while the requests it
//! had accepted are still running, answers every one of those in full, and exits 0.
//!
//! crates/serve/tests/http.rs checks the same steps inside one process through the library's
//! shutdown future; this test covers what only the binary does (the SIGTERM handler, the exit status).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DRAIN_SECONDS: f64 = 0.5;

/// One HTTP/1.1 request on a fresh connection (`Connection: close`, so no pooled connection hides
/// whether the listener still accepts); the status line's code and the body.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(300)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

/// Starts `accelrt serve` on a free loopback port and returns it with its address, its log lines
/// collected in the background.
fn start_server() -> (Child, SocketAddr, Arc<Mutex<String>>) {
    use std::io::BufRead;
    let cache = common::cache_root();
    let mut child = Command::new(env!("CARGO_BIN_EXE_accelrt"))
        .args(["serve", "--model", "all-minilm-l6-v2", "--port", "0", "--drain-seconds", &DRAIN_SECONDS.to_string()])
        .arg("--cache-dir")
        .arg(&cache)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("accelrt starts");
    let stderr = child.stderr.take().unwrap();
    let logs = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("address=")) {
                let _ = tx.send(addr.to_string());
            }
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("the server did not start: {}", logs.lock().unwrap()));
    (child, addr.parse().expect("a socket address"), logs)
}

#[test]
fn sigterm_fails_health_refuses_new_work_finishes_in_flight_and_exits_zero() {
    let (mut child, addr, logs) = start_server();
    assert_eq!(request(addr, "GET", "/health", "").unwrap().0, 200, "healthy before SIGTERM");

    // Work that outlasts the drain: full-length inputs (truncated to the model's 256 tokens), as
    // many as this machine embeds in about 4 s (timed first), so the model is still busy with
    // them when the listener closes, on a fast machine or a loaded one.
    let long_text = "the quick brown fox jumps over the lazy dog while the server drains ".repeat(40);
    let probe = serde_json::json!({ "model": "all-minilm-l6-v2", "input": vec![long_text.clone(); 8] }).to_string();
    let t = Instant::now();
    assert_eq!(request(addr, "POST", "/v1/embeddings", &probe).unwrap().0, 200);
    let per_input = t.elapsed().as_secs_f64() / 8.0;
    const IN_FLIGHT: usize = 4;
    let inputs = ((4.0 / per_input) as usize / IN_FLIGHT).clamp(4, 512);
    let body = serde_json::json!({ "model": "all-minilm-l6-v2", "input": vec![long_text; inputs] }).to_string();
    let started = Instant::now();
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let answer = request(addr, "POST", "/v1/embeddings", &body);
                (answer, Instant::now())
            })
        })
        .collect();
    // Let every request be read and queued before the signal.
    std::thread::sleep(Duration::from_millis(300));
    let queued = request(addr, "GET", "/metrics", "").unwrap().1;
    assert!(queued.contains("accelrt_"), "metrics answer: {queued}");

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let signalled = Instant::now();
    std::thread::sleep(Duration::from_millis(200));

    // 1. Health fails at once, while the listener is still open (the load balancer must see it).
    let (status, health) = request(addr, "GET", "/health", "").expect("the listener is open during the drain");
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("draining"), "{health}");
    // 2. New work is refused, not queued.
    let (status, refused) =
        request(addr, "POST", "/v1/embeddings", r#"{"model":"all-minilm-l6-v2","input":"late"}"#).unwrap();
    assert_eq!(status, 503, "{refused}");

    // 3. Once the drain has passed, new connections are refused while the accepted work still runs.
    let after_drain = Duration::from_secs_f64(DRAIN_SECONDS) + Duration::from_millis(300);
    std::thread::sleep(after_drain.saturating_sub(signalled.elapsed()));
    let refused_at = Instant::now();
    let connect = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    assert!(connect.is_err(), "the listener still accepts {:?} after SIGTERM", refused_at - signalled);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the process ended before its in-flight work: {}",
        logs.lock().unwrap()
    );

    // 4. Every accepted request is answered in full, some of them after the listener closed.
    let mut last_answer = started;
    for w in workers {
        let (answer, at) = w.join().unwrap();
        let (status, body) = answer.expect("an in-flight request is answered");
        assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
        let json: serde_json::Value = serde_json::from_str(&body).expect("a whole JSON answer");
        assert_eq!(json["data"].as_array().map(Vec::len), Some(inputs));
        last_answer = last_answer.max(at);
    }
    assert!(last_answer > refused_at, "no request was still running when the listener closed: the test proved nothing");

    // 5. The process exits 0 on its own, soon after its last answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running 30 s after its last answer");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(100));
    let logs = logs.lock().unwrap().clone();
    assert!(status.success(), "exit status {status}\n{logs}");
    assert!(logs.contains("stopped"), "{logs}");
}
