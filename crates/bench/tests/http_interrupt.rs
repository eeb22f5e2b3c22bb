//! Ctrl-C during `bench --url` against a server that never answers: the run returns interrupted
//! (so `accelrt bench` drops the running scenario and exits 130) soon after, instead of waiting for
//! the requests' deadlines (the server scenario's give-up, or 330 s per closed-loop request).
//!
//! Its own test binary: the interrupt flag is process-wide. One test, its cases in turn. The only
//! times are generous upper bounds that the old behaviour (waiting for the deadlines) breaks, and
//! "interrupted" itself, which the old open loop never returned once the last arrival had left.

use accelrt_bench::load::Arrivals;
use accelrt_bench::run::{BenchConfig, Outcome, TrainingOptions};
use accelrt_bench::{http_target, interrupt, Pricing, Result, RunRules, ScenarioKind};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A server whose `GET /info` answers and whose `POST`s are read and never answered; counts them.
fn silent_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let posts = Arc::new(AtomicUsize::new(0));
    let p = posts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let p = p.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut request = String::new();
                    if !matches!(reader.read_line(&mut request), Ok(n) if n > 0) {
                        return;
                    }
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && !line.trim().is_empty() {
                        line.clear();
                    }
                    if request.starts_with("GET /info") {
                        let info =
                            r#"{"model":"m","task":"embeddings","backend":"candle","device":"cpu","version":"0"}"#;
                        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", info.len());
                        let _ = out.write_all(format!("{head}{info}").as_bytes());
                        continue;
                    }
                    p.fetch_add(1, Ordering::SeqCst);
                    let mut sink = [0u8; 4096];
                    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                    return;
                }
            });
        }
    });
    (url, posts)
}

fn config(scenario: ScenarioKind, rules: RunRules, qps: f64, concurrency: usize) -> BenchConfig {
    BenchConfig {
        model: "m".into(),
        scenarios: vec![scenario],
        batch_size: 1,
        rules: Some(rules),
        qps: Some(qps),
        p99_ms: Some(60_000.0),
        find_max_qps: false,
        search_steps: 1,
        texts: vec!["one text".into()],
        peers: vec![],
        peer_device: "cpu".into(),
        peer_dtype: String::new(),
        pricing: Pricing { instance_type: None, instance_type_source: "unknown".into(), price: None, instance: None },
        options: Default::default(),
        progress: false,
        seed: 11,
        max_tokens: 4,
        context: 256,
        concurrency,
        out: None,
        training: TrainingOptions { data: String::new(), seq_len: None, lr: 1e-4, weight_decay: 0.0 },
    }
}

/// Runs `config` on another thread; once `posts` requests have reached the server, Ctrl-C. The run
/// must then return within `limit` (far below the deadlines it would otherwise wait for).
fn interrupted_after(config: BenchConfig, url: String, seen: &AtomicUsize, posts: usize, limit: Duration) -> Outcome {
    interrupt::reset();
    let (tx, rx) = std::sync::mpsc::channel::<Result<Outcome>>();
    std::thread::spawn(move || {
        let _ = tx.send(http_target::run(&config, &url));
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.load(Ordering::SeqCst) < posts {
        assert!(Instant::now() < deadline, "the requests did not reach the server");
        std::thread::sleep(Duration::from_millis(10));
    }
    interrupt::request();
    let outcome = rx.recv_timeout(limit).unwrap_or_else(|_| panic!("Ctrl-C was not noticed within {limit:?}"));
    interrupt::reset();
    outcome.unwrap()
}

#[test]
fn ctrl_c_ends_a_run_against_a_server_that_never_answers() {
    // 1. Server scenario, after its last arrival: waiting for the answers (before, until the
    //    give-up deadline, and then a result was kept as if no Ctrl-C had come).
    let (url, seen) = silent_server();
    let rules = RunRules { warmup: Duration::ZERO, min_duration: Duration::ZERO, min_queries: 3 };
    let qps = 0.5;
    let schedule = Arrivals::poisson(qps, &rules, 11).unwrap();
    assert!(schedule.give_up > *schedule.at.last().unwrap() + Duration::from_secs(2), "{schedule:?}");
    let planned = schedule.at.len();
    let outcome = interrupted_after(config(ScenarioKind::Server, rules, qps, 1), url, &seen, planned, schedule.give_up);
    assert!(outcome.interrupted && outcome.results.is_empty(), "{:?}", outcome.results);

    // 2. Offline: every client waiting on an answer (before, up to 330 s each).
    let (url, seen) = silent_server();
    let rules = RunRules { warmup: Duration::ZERO, min_duration: Duration::from_secs(1), min_queries: 1 };
    let outcome =
        interrupted_after(config(ScenarioKind::Offline, rules, qps, 4), url, &seen, 4, Duration::from_secs(60));
    assert!(outcome.interrupted && outcome.results.is_empty());

    // 3. Single-stream, in its warm-up.
    let (url, seen) = silent_server();
    let rules = RunRules { warmup: Duration::from_secs(5), min_duration: Duration::from_secs(1), min_queries: 1 };
    let outcome =
        interrupted_after(config(ScenarioKind::SingleStream, rules, qps, 4), url, &seen, 1, Duration::from_secs(60));
    assert!(outcome.interrupted && outcome.results.is_empty());
}
