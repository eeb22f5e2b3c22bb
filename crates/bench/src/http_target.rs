//! `accelrt bench --url URL`: the scenarios against a running accelrt server over HTTP, one sample
//! per request, so the server's own batching, queueing, tokenisation and HTTP stack are all measured.
//!
//! - offline: `concurrency` clients, each sending its next request as soon as the last is answered
//!   (the server saturated); metric: samples/s. Latency is measured from each request's send.
//! - single-stream: one client, one request at a time; metric: latency, from the send.
//! - server: open loop — requests leave at Poisson arrival times whether or not earlier ones have
//!   been answered; latency from the *scheduled arrival* to the answer (so a client that sends late
//!   cannot hide it); valid only if p99 ≤ the bound, no request failed (a 429 counts as a failure),
//!   every arrival was sent (see [`MAX_IN_FLIGHT`]) and every request was answered before the
//!   give-up deadline of [`Arrivals`].
//!
//! Embeddings servers get `POST /v1/embeddings` with one text; chat servers get a streamed
//! `POST /v1/chat/completions` (greedy, `ignore_eos`, exactly `max_tokens` tokens), timed to the
//! first text chunk (TTFT) and per token after it (TPOT), both from the request's send.
//!
//! The client is blocking [`ureq`] on plain threads, one thread per request out: a closed-loop
//! client is one thread sending its requests in turn (at most [`MAX_IN_FLIGHT`] clients); the open
//! loop starts one thread per arrival, at most [`MAX_IN_FLIGHT`] at once, and joins each as soon as
//! its request ends, so threads (and memory) are bounded by the requests out, not by the requests
//! made. Connections are kept alive and reused (one pool per run). Nothing can wait forever on the
//! server: a connection must open within [`CONNECT_TIMEOUT`], and every request (sending, waiting,
//! reading the answer or the whole stream) has a deadline — the server scenario's give-up time,
//! otherwise [`REQUEST_TIMEOUT`] after its send; a request past its deadline fails (closed loop) or
//! is abandoned as unanswered (open loop). Every thread is joined before its run returns, with two
//! exceptions, both left to end on their own by their deadlines with their answers dropped: a
//! request still opening a connection when the open loop gives up (it ends within
//! [`CONNECT_TIMEOUT`]), and the requests out when Ctrl-C stops a run — the waiting thread polls
//! for Ctrl-C every 100 ms, in the open loop and in the closed loops (warm-up included), and
//! returns [`BenchError::Interrupted`] at once; `accelrt bench` exits first.
//!
//! What a server says is checked, not trusted: a chat stream must report exactly the `max_tokens`
//! asked for (else the request fails, with the reason), control characters in its status text,
//! error bodies and info are escaped before they are printed or stored, and failed requests are
//! counted with only their first few distinct reasons kept.

use crate::environment::{Environment, LoadProbe};
use crate::load::{Arrivals, LoadSearch, Sweep};
use crate::progress::Progress;
use crate::result::{BenchResult, GenerationMetrics};
use crate::run::{BenchConfig, Outcome};
use crate::scenario::{self, Measurement, RunRules, ScenarioKind};
use crate::stats::Latency;
use crate::workload::RequestStats;
use crate::{BenchError, Result};
use accelrt_core::{DeviceInfo, DeviceKind, DeviceSpec};
pub use accelrt_models::{ServerInfo, Task};
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The longest one request may take, from its send to the end of its answer (or stream), outside
/// the server scenario (whose requests end at its give-up deadline instead). Longer than `accelrt
/// serve`'s default `--request-timeout` (300 s), so a slow accelrt server's own timeout answer is
/// what gets recorded; a server that never answers costs a closed-loop client this long per request,
/// which then counts as failed (and makes the run invalid).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(330);

/// The longest opening a TCP connection to the server may take (a new one; kept-alive connections
/// are reused).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most requests the server scenario keeps out at once (one thread each). An arrival that finds
/// this many still unanswered is not sent at all — never queued to leave later than its scheduled
/// time, which would thin the load and hide the overload — and is counted: the run is then invalid,
/// with the reason "N of M arrivals were not sent (first: …)". An arrival whose thread the system
/// refuses to start is counted the same way. By Little's law a server keeps about `qps × latency`
/// requests out, so the bound is reached only by a server far behind its load.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Stack of each client thread: ureq and one SSE event's JSON need far less.
const STACK_BYTES: usize = 512 << 10;
/// How long the open loop waits past its give-up deadline for the abandoned requests' threads to
/// notice their own deadline (they time out at it) before leaving the stragglers to end alone.
const JOIN_GRACE: Duration = Duration::from_secs(1);
/// The largest embeddings answer read; a larger one is a failed request, not memory exhausted.
const MAX_ANSWER_BYTES: u64 = 64 << 20;
/// The largest server-sent event of a chat stream.
const MAX_EVENT_BYTES: usize = 1 << 20;
/// How much of an error answer's body is read (its first 200 characters are kept).
const MAX_ERROR_BYTES: u64 = 64 << 10;

/// How one request went.
struct Answer {
    /// From the request's send (or its scheduled arrival, in the server scenario) to its end.
    latency: Duration,
    result: std::result::Result<Option<RequestStats>, String>,
}

/// The server's endpoint, and a client for it shared by every thread of a run.
struct Target {
    agent: ureq::Agent,
    /// `base` + the endpoint's path.
    url: String,
    /// Request bodies, one per input text, serialised once.
    bodies: Vec<String>,
    chat: bool,
    /// Closed loop: each request's deadline after its send ([`REQUEST_TIMEOUT`]; shorter in tests).
    timeout: Duration,
    /// Chat: the completion tokens each request asks for (`max_tokens` with `ignore_eos`); a stream
    /// whose usage reports another count is a failed request.
    max_tokens: usize,
}

impl Target {
    /// A target for `base` + `path` whose connection pool keeps up to `idle` connections alive.
    fn new(base: &str, path: &str, bodies: Vec<String>, chat: bool, idle: usize) -> Target {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .max_idle_connections(idle)
            .max_idle_connections_per_host(idle)
            .build();
        Target { agent, url: format!("{base}{path}"), bodies, chat, timeout: REQUEST_TIMEOUT, max_tokens: 0 }
    }

    /// Sends request `i` (the body of text `i` mod the number of texts) and reads its answer to the
    /// end, all before `deadline`: chat streams yield their token counts and timings (from the send).
    fn send(&self, i: usize, deadline: Instant) -> std::result::Result<Option<RequestStats>, String> {
        let started = Instant::now();
        let budget = deadline.saturating_duration_since(started);
        if budget.is_zero() {
            return Err("its deadline passed before it was sent".into());
        }
        let body = &self.bodies[i % self.bodies.len()];
        let request = self.agent.post(&self.url).timeout(budget).set("content-type", "application/json");
        let response = match request.send_string(body) {
            Ok(response) => response,
            Err(ureq::Error::Status(code, response)) => {
                let status = format!("{code} {}", escape_control(response.status_text()));
                let mut text = Vec::new();
                let _ = response.into_reader().take(MAX_ERROR_BYTES).read_to_end(&mut text);
                let text = String::from_utf8_lossy(&text);
                let text = escape_control(&text.chars().take(200).collect::<String>());
                return Err(format!("HTTP {status}: {text}"));
            }
            Err(e) => return Err(escape_control(&format!("request: {e}"))),
        };
        let mut reader = response.into_reader();
        if !self.chat {
            let read = std::io::copy(&mut (&mut reader).take(MAX_ANSWER_BYTES + 1), &mut std::io::sink())
                .map_err(|e| format!("reading the answer: {e}"))?;
            if read > MAX_ANSWER_BYTES {
                return Err(format!("the answer is over {} MiB", MAX_ANSWER_BYTES >> 20));
            }
            return Ok(None);
        }
        // Server-sent events: note the first text chunk, read the usage chunk, stop at [DONE].
        let (mut sse, mut events) = (SseParser::default(), Vec::new());
        let (mut first, mut tokens, mut prompt, mut done) = (None, None, 0, false);
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading the stream: {e}")),
            };
            sse.feed(&chunk[..n], &mut events)?;
            for data in events.drain(..) {
                let data = data.trim();
                if data == "[DONE]" {
                    done = true;
                } else if data.contains("\"usage\"") || data.contains("\"error\"") {
                    let v: serde_json::Value = serde_json::from_str(data).map_err(|e| format!("a chunk: {e}"))?;
                    if !v["error"].is_null() {
                        return Err(format!("the stream failed: {}", v["error"]));
                    }
                    tokens = v["usage"]["completion_tokens"].as_u64().map(|n| n as usize);
                    prompt = v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) as usize;
                } else if first.is_none() && data.contains("\"content\":\"") && !data.contains("\"content\":\"\"") {
                    first = Some(started.elapsed());
                }
            }
        }
        let end = started.elapsed();
        let (true, Some(tokens)) = (done, tokens) else {
            return Err("the stream ended without usage and [DONE]".into());
        };
        // Asked for exactly `max_tokens` (ignore_eos): any other count is not this request's answer,
        // and counting it would make tokens/s whatever the server claims.
        if tokens != self.max_tokens {
            return Err(format!(
                "the server reported {tokens} completion tokens; {} were asked for (with ignore_eos)",
                self.max_tokens
            ));
        }
        if prompt as f64 > crate::limits::Limit::TOKENS.max {
            return Err(format!("the server reported {prompt} prompt tokens, over any context"));
        }
        let ttft = first.unwrap_or(end);
        Ok(Some(RequestStats {
            prompt_tokens: prompt,
            output_tokens: tokens,
            time_to_first_token: ttft,
            time_per_output_token: (tokens > 1).then(|| (end - ttft) / (tokens as u32 - 1)),
        }))
    }
}

/// Reads `GET URL/info` (at most 1 MiB of it, within 10 s).
///
/// Errors: [`BenchError::Invalid`] when the server cannot be reached or answers with an error, or
/// when what it answers is not an accelrt server's info.
pub fn server_info(url: &str) -> Result<ServerInfo> {
    let base = url.trim_end_matches('/');
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    let response = agent
        .get(&format!("{base}/info"))
        .call()
        .map_err(|e| BenchError::Invalid(format!("cannot reach the server at {base} (GET /info): {e}")))?;
    // An accelrt server's info is a few hundred bytes; read at most 1 MiB of whatever answers.
    let mut info: ServerInfo =
        serde_json::from_reader(std::io::Read::take(response.into_reader(), 1 << 20)).map_err(|e| {
            BenchError::Invalid(escape_control(&format!("{base}/info is not an accelrt server's info: {e}")))
        })?;
    // Its strings are printed and written into results: no control characters from a server.
    for field in [&mut info.model, &mut info.backend, &mut info.device, &mut info.version] {
        *field = escape_control(field);
    }
    Ok(info)
}

/// `text` with every control character (ESC, CR, LF, BEL, C1 controls…) written as a `\u{…}`
/// escape: what a server sends is printed to a terminal and written into results, and must be able
/// neither to drive the terminal nor to forge lines.
pub fn escape_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// A stream of server-sent events read in pieces, per the SSE format: a line ends at CRLF, LF or
/// CR; a blank line ends an event; an event's data is its `data:` lines (one leading space
/// dropped) joined by newlines; comments (`:`) and other fields are ignored.
#[derive(Default)]
struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The last byte was a CR: an LF right after it ends nothing more.
    after_cr: bool,
}

impl SseParser {
    /// Reads `bytes`, appending the data of each event they complete to `events`. Errors: a line
    /// or an event over [`MAX_EVENT_BYTES`].
    fn feed(&mut self, bytes: &[u8], events: &mut Vec<String>) -> std::result::Result<(), String> {
        for &b in bytes {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            if b == b'\r' || b == b'\n' {
                self.after_cr = b == b'\r';
                self.end_line(events);
            } else {
                self.line.push(b);
            }
            if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
                return Err(format!("an event of the stream is over {} MiB", MAX_EVENT_BYTES >> 20));
            }
        }
        Ok(())
    }

    fn end_line(&mut self, events: &mut Vec<String>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if std::mem::take(&mut self.has_data) {
                events.push(String::from_utf8_lossy(&self.data).into_owned());
            }
            self.data.clear();
            return;
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(0) => return, // a comment
            Some(p) => (&line[..p], &line[p + 1..]),
            None => (&line[..], &[][..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            self.has_data = true;
        }
    }
}

/// The most distinct failure reasons kept per run (each at most [`MAX_REASON_CHARS`]): failures
/// are otherwise only counted, so a server refusing a million requests costs no memory.
const KEPT_REASONS: usize = 3;
/// The longest failure reason kept (escaped), in characters.
const MAX_REASON_CHARS: usize = 300;

/// What the requests of a run came to: each answered one's latency (and chat statistics), and the
/// failed ones counted, with their first few distinct reasons.
#[derive(Debug, Default)]
struct Collected {
    answered: Vec<(Duration, Option<RequestStats>)>,
    failed: usize,
    /// The first [`KEPT_REASONS`] distinct reasons, control characters escaped.
    reasons: Vec<String>,
}

impl Collected {
    fn add(&mut self, answer: Answer) {
        match answer.result {
            Ok(stats) => self.answered.push((answer.latency, stats)),
            Err(why) => self.fail(&why),
        }
    }

    fn fail(&mut self, why: &str) {
        self.failed += 1;
        if self.reasons.len() < KEPT_REASONS {
            let why: String = escape_control(why).chars().take(MAX_REASON_CHARS).collect();
            if !self.reasons.contains(&why) {
                self.reasons.push(why);
            }
        }
    }

    /// Why the run is invalid for its failed requests, if any failed.
    fn failure_reason(&self) -> Option<String> {
        let first = self.reasons.first()?;
        let mut reason =
            format!("{} of {} requests failed (first: {first}", self.failed, self.failed + self.answered.len());
        for other in &self.reasons[1..] {
            reason.push_str(&format!("; also: {other}"));
        }
        reason.push(')');
        Some(reason)
    }
}

/// Runs every requested scenario against the server at `url`, keeping (and, with
/// [`BenchConfig::out`], writing) one result per scenario as it completes.
///
/// Errors: [`BenchError::Invalid`] for a configuration that cannot run over HTTP (peers, training),
/// a server that cannot be reached or whose device cannot be priced or does not match the instance
/// type, a client thread that cannot be started, or a result that breaks its limits; errors writing
/// a result. Ctrl-C is not an error: [`Outcome::interrupted`] is set and the completed results kept.
/// Failed or unanswered requests are not errors either: they make that scenario's result invalid.
pub fn run(config: &BenchConfig, url: &str) -> Result<Outcome> {
    crate::run::validate(config)?;
    if !config.peers.is_empty() {
        return Err(BenchError::Invalid("--peers run in-process; they cannot be combined with --url".into()));
    }
    if config.scenarios.contains(&ScenarioKind::Training) {
        return Err(BenchError::Invalid(
            "a server does not train: the training scenario runs in-process, without --url".into(),
        ));
    }
    let base = url.trim_end_matches('/').to_string();
    let info = server_info(&base)?;
    let chat = info.task == Task::Chat;
    let bodies = config
        .texts
        .iter()
        .map(|t| {
            if chat {
                serde_json::json!({
                    "model": info.model,
                    "messages": [{ "role": "user", "content": t }],
                    "max_tokens": config.max_tokens,
                    "temperature": 0,
                    "ignore_eos": true,
                    "stream": true,
                    "stream_options": { "include_usage": true },
                })
            } else {
                serde_json::json!({ "model": info.model, "input": t })
            }
            .to_string()
        })
        .collect();
    let path = if chat { "/v1/chat/completions" } else { "/v1/embeddings" };
    if config.concurrency > MAX_IN_FLIGHT {
        return Err(BenchError::Invalid(format!(
            "--concurrency {} is over {MAX_IN_FLIGHT}, the most requests the HTTP client keeps out at once",
            config.concurrency
        )));
    }
    let mut target = Target::new(&base, path, bodies, chat, MAX_IN_FLIGHT);
    if chat {
        target.max_tokens = config.max_tokens;
    }
    let target = Arc::new(target);
    let device = DeviceInfo {
        kind: device_kind(&info.device)?,
        spec: info.device.clone(),
        name: format!("{} served at {base}", info.device),
        memory_total_bytes: None,
        memory_free_bytes: None,
        details: vec![],
    };
    // The server's device is what is priced: check it against the instance type before running.
    config.pricing.preflight(&Environment::capture(&info.backend, &device))?;
    let local = is_local(&base);
    let mut outcome = Outcome::default();
    for &kind in &config.scenarios {
        let rules = config.rules.unwrap_or_else(|| RunRules::mlperf(kind));
        let probe = LoadProbe::start(Vec::new());
        let scenario = run_scenario(config, &target, kind, &rules, &format!("{base} {kind}"));
        let (m, sweep, requests) = match scenario {
            Ok(s) => s,
            Err(BenchError::Interrupted) => {
                outcome.interrupted = true;
                break;
            }
            Err(e) => return Err(e),
        };
        let mut env = Environment::capture(&info.backend, &device);
        env.details = vec![
            ("target".into(), base.clone()),
            ("server_version".into(), info.version.clone()),
            ("client_concurrency".into(), concurrency_of(kind, config).to_string()),
        ];
        // A local server's CPU time cannot be told apart from other processes': only steal counts.
        env.host_load = probe.finish(!local);
        let mut r = BenchResult::new(&m, &info.model, "accelrt-serve", &config.pricing, &sweep, env, None);
        r.memory.peak_host_bytes = None; // the server's memory is not this process's
        if chat {
            r.generation =
                Some(GenerationMetrics::new(&requests, config.max_tokens, m.duration_s, r.price_usd_per_hour));
        }
        outcome.keep(config, r)?;
    }
    Ok(outcome)
}

/// Whether the URL's host is this machine.
fn is_local(base: &str) -> bool {
    let host = base.split("://").nth(1).unwrap_or(base).split(['/', ':']).next().unwrap_or("");
    matches!(host, "localhost" | "127.0.0.1" | "[" | "0.0.0.0") || host.starts_with("127.")
}

/// The kind of the server's device, from its device string (what is priced).
fn device_kind(spec: &str) -> Result<DeviceKind> {
    let device: DeviceSpec =
        spec.parse().map_err(|e| BenchError::Invalid(format!("the server's device cannot be priced: {e}")))?;
    Ok(device.kind())
}

fn concurrency_of(kind: ScenarioKind, config: &BenchConfig) -> usize {
    match kind {
        ScenarioKind::Offline => config.concurrency,
        ScenarioKind::SingleStream => 1,
        ScenarioKind::Server => 0,   // open loop: as many as the arrivals make
        ScenarioKind::Training => 1, // refused by `run` before any scenario starts
    }
}

type ScenarioOutput = (Measurement, Vec<Measurement>, Vec<RequestStats>);

fn run_scenario(
    config: &BenchConfig,
    target: &Arc<Target>,
    kind: ScenarioKind,
    rules: &RunRules,
    label: &str,
) -> Result<ScenarioOutput> {
    let hidden = Progress::hidden();
    let warmup = RunRules { min_queries: 0, min_duration: rules.warmup, ..*rules };
    match kind {
        ScenarioKind::Offline | ScenarioKind::SingleStream => {
            let progress = Progress::new(label, rules, config.progress);
            let clients = concurrency_of(kind, config);
            closed_loop(target, clients, &warmup, &hidden)?;
            let (collected, duration) = closed_loop(target, clients, rules, &progress)?;
            progress.finish();
            let (m, requests) = measure(kind, collected, duration, rules, None);
            Ok((m, vec![], requests))
        }
        ScenarioKind::Training => {
            Err(BenchError::Invalid("a server does not train: the training scenario runs in-process".into()))
        }
        ScenarioKind::Server => {
            let bound = config.p99_ms.expect("validated");
            let clients = config.concurrency;
            closed_loop(target, clients, &warmup, &hidden)?;
            if config.find_max_qps {
                let quick =
                    RunRules { min_queries: 8, min_duration: rules.min_duration.min(Duration::from_secs(3)), ..*rules };
                let (collected, duration) = closed_loop(target, clients, &quick, &hidden)?;
                let upper = collected.answered.len() as f64 / duration.as_secs_f64();
                let mut search = LoadSearch::new(upper)?;
                let mut runs: Vec<(Measurement, Vec<RequestStats>)> = Vec::new();
                for step in 0..config.search_steps.max(1) {
                    let qps = search.load();
                    let label = format!("{label} {}/{} {qps:.1}/s", step + 1, config.search_steps);
                    let progress = Progress::new(&label, rules, config.progress);
                    let (m, reqs, _) = open_loop(target, rules, qps, bound, config.seed, MAX_IN_FLIGHT, &progress)?;
                    progress.finish();
                    search.record(m.valid);
                    runs.push((m, reqs));
                }
                let (shown, all) = Sweep::new(runs).into_shown();
                Ok((shown.0, all, shown.1))
            } else {
                let qps = config.qps.expect("validated");
                let progress = Progress::new(label, rules, config.progress);
                let (m, reqs, _) = open_loop(target, rules, qps, bound, config.seed, MAX_IN_FLIGHT, &progress)?;
                progress.finish();
                Ok((m, vec![], reqs))
            }
        }
    }
}

/// A thread builder for one client thread.
fn client_thread(name: String) -> thread::Builder {
    thread::Builder::new().name(name).stack_size(STACK_BYTES)
}

/// `clients` clients (threads), each sending its next request when the last is answered, until the
/// rules' duration and query count (answered or failed) are both reached. Each request's latency is
/// from its send; each ends within the target's timeout, so the run ends too, and its threads are
/// joined before returning. Ctrl-C: the main thread notices within about 100 ms and returns
/// [`BenchError::Interrupted`] at once, leaving the clients to stop after their request out (each
/// ends by its own deadline; `accelrt bench` exits first) — as it does when a client cannot start.
fn closed_loop(
    target: &Arc<Target>,
    clients: usize,
    rules: &RunRules,
    progress: &Progress,
) -> Result<(Collected, Duration)> {
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let collected = Arc::new(Mutex::new(Collected::default()));
    let (min_duration, min_queries) = (rules.min_duration, rules.min_queries);
    // Each client holds a sender; the channel disconnects when the last one has ended.
    let (ended, clients_running) = mpsc::channel::<()>();
    let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(clients.max(1));
    for c in 0..clients.max(1) {
        let (target, next, done, stopped, collected) =
            (target.clone(), next.clone(), done.clone(), stop.clone(), collected.clone());
        let ended = ended.clone();
        let spawned = client_thread(format!("accelrt-client-{c}")).spawn(move || {
            let _ended = ended;
            while (start.elapsed() < min_duration || done.load(Ordering::Relaxed) < min_queries)
                && !stopped.load(Ordering::Relaxed)
                && !crate::interrupt::requested()
            {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let result = target.send(i, t + target.timeout);
                let answer = Answer { latency: t.elapsed(), result };
                done.fetch_add(1, Ordering::Relaxed);
                collected.lock().unwrap_or_else(|e| e.into_inner()).add(answer);
            }
        });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                // The clients started stop after their request out; they are not waited for.
                stop.store(true, Ordering::Relaxed);
                return Err(BenchError::Invalid(format!(
                    "cannot start HTTP client {} of {clients} (a thread): {e}",
                    c + 1
                )));
            }
        }
    }
    drop(ended);
    let show = |elapsed: Duration| {
        let c = collected.lock().unwrap_or_else(|e| e.into_inner());
        let (answered, failed) = (c.answered.len(), c.failed);
        drop(c);
        progress.set_unanswered(failed, 0);
        progress.update(elapsed, answered);
    };
    // Progress about every 100 ms while the clients run; Ctrl-C abandons them.
    while let Err(RecvTimeoutError::Timeout) = clients_running.recv_timeout(Duration::from_millis(100)) {
        if crate::interrupt::requested() {
            stop.store(true, Ordering::Relaxed);
            return Err(BenchError::Interrupted);
        }
        show(start.elapsed());
    }
    let duration = start.elapsed();
    // Every client has ended its loop (dropped its sender): the joins are immediate.
    join_all(threads)?;
    if crate::interrupt::requested() {
        return Err(BenchError::Interrupted);
    }
    show(duration);
    let collected = std::mem::take(&mut *collected.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((collected, duration))
}

/// Joins client threads; one that panicked is an error (its answers may be missing).
fn join_all(threads: Vec<JoinHandle<()>>) -> Result<()> {
    let panicked = threads.into_iter().map(JoinHandle::join).filter(std::result::Result::is_err).count();
    if panicked > 0 {
        return Err(BenchError::Invalid(format!("{panicked} HTTP client thread(s) panicked")));
    }
    Ok(())
}

/// What an open loop's threads came to, beside its measurement (for tests).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct OpenLoopThreads {
    /// Requests sent (a thread started for each).
    sent: usize,
    /// Threads joined (each as soon as it reported).
    joined: usize,
    /// The most threads started and not yet joined at any one time: never over the bound.
    peak: usize,
}

/// The requests of an open loop out: each one's thread, by arrival index, until it reports and is
/// joined (so threads, and their stacks, are bounded by the requests out, not by those made).
struct OutRequests {
    threads: std::collections::HashMap<usize, JoinHandle<()>>,
    collected: Collected,
    /// Requests still out at the give-up deadline (their answers, if any, came too late).
    abandoned: usize,
    panicked: usize,
    counts: OpenLoopThreads,
}

impl OutRequests {
    /// Takes request `i`'s report and joins its thread (which ends right after reporting).
    fn take(&mut self, (i, answer): (usize, Option<Answer>)) {
        if let Some(handle) = self.threads.remove(&i) {
            if handle.join().is_err() {
                self.panicked += 1;
            }
            self.counts.joined += 1;
        }
        match answer {
            Some(a) => self.collected.add(a),
            None => self.abandoned += 1,
        }
    }
}

/// Requests leave at Poisson arrival times (the same schedule as the in-process server scenario
/// for the same seed), whatever the server's state, each on its own thread, at most `max_in_flight`
/// out at once (an arrival that finds that many out is not sent, and counted: see
/// [`MAX_IN_FLIGHT`]); each thread is joined as soon as its request ends. Latency is from each
/// request's scheduled arrival. Requests still out at the schedule's give-up deadline are abandoned
/// (their own deadline is the same instant) and the run is invalid, as is a run in which an arrival
/// was not sent. Ctrl-C: [`BenchError::Interrupted`] within about 100 ms, while sending or while
/// waiting for the last answers; the requests out are left to end by the give-up deadline.
fn open_loop(
    target: &Arc<Target>,
    rules: &RunRules,
    qps: f64,
    p99_bound_ms: f64,
    seed: u64,
    max_in_flight: usize,
    progress: &Progress,
) -> Result<(Measurement, Vec<RequestStats>, OpenLoopThreads)> {
    let schedule = Arrivals::poisson(qps, rules, seed)?;
    let planned = schedule.at.len();
    let start = Instant::now();
    let give_up = start + schedule.give_up;
    // Each request's thread reports its index and its answer, or `None`: still out at the give-up.
    let (report, reports) = mpsc::channel::<(usize, Option<Answer>)>();
    let mut out = OutRequests {
        threads: std::collections::HashMap::new(),
        collected: Collected::default(),
        abandoned: 0,
        panicked: 0,
        counts: OpenLoopThreads::default(),
    };
    let (mut unsent, mut first_unsent) = (0usize, None::<String>);
    let show = |out: &OutRequests, unsent: usize| {
        progress.set_unanswered(out.collected.failed, unsent);
        progress.update(start.elapsed(), out.collected.answered.len());
    };
    for (i, at) in schedule.at.iter().enumerate() {
        let scheduled = start + *at;
        // Until the arrival: take the reports that come (joining their threads), and Ctrl-C.
        loop {
            if crate::interrupt::requested() {
                return Err(BenchError::Interrupted);
            }
            while let Ok(r) = reports.try_recv() {
                out.take(r);
            }
            let now = Instant::now();
            if now >= scheduled {
                break;
            }
            if let Ok(r) = reports.recv_timeout((scheduled - now).min(Duration::from_millis(100))) {
                out.take(r);
            }
        }
        show(&out, unsent);
        // A thread not yet joined has not reported: its request is still out.
        if out.threads.len() >= max_in_flight {
            unsent += 1;
            first_unsent.get_or_insert_with(|| format!("{max_in_flight} requests were out, the client's limit"));
            continue;
        }
        let (target, report) = (target.clone(), report.clone());
        let spawned = client_thread(format!("accelrt-request-{i}")).spawn(move || {
            let result = target.send(i, give_up);
            let latency = scheduled.elapsed();
            // Out at the give-up (answered or failed after it, or timed out at it): abandoned.
            let answer = (Instant::now() < give_up).then_some(Answer { latency, result });
            let _ = report.send((i, answer));
        });
        match spawned {
            Ok(handle) => {
                out.threads.insert(i, handle);
                out.counts.sent += 1;
                out.counts.peak = out.counts.peak.max(out.threads.len());
            }
            Err(e) => {
                unsent += 1;
                first_unsent.get_or_insert_with(|| format!("no thread could be started for it: {e}"));
            }
        }
    }
    drop(report);
    // The last answers, until the give-up (and a grace for the threads to notice it); Ctrl-C.
    while !out.threads.is_empty() {
        if crate::interrupt::requested() {
            return Err(BenchError::Interrupted);
        }
        let left = (give_up + JOIN_GRACE).saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match reports.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(r) => out.take(r),
            Err(RecvTimeoutError::Timeout) => show(&out, unsent),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    show(&out, unsent);
    let finished = out.abandoned == 0 && out.threads.is_empty();
    let duration = if finished { start.elapsed() } else { schedule.give_up };
    // A thread that did not report (still opening a connection) ends on its own within
    // CONNECT_TIMEOUT; its report goes nowhere.
    let OutRequests { threads, collected, panicked, counts, .. } = out;
    drop(threads);
    if panicked > 0 {
        return Err(BenchError::Invalid(format!("{panicked} HTTP client thread(s) panicked")));
    }
    let (answered, failed) = (collected.answered.len(), collected.failed);
    let (mut m, requests) = measure(ScenarioKind::Server, collected, duration, rules, Some((qps, p99_bound_ms)));
    if let Some(first) = first_unsent {
        m.invalid_reasons.push(format!("{unsent} of {planned} arrivals were not sent (first: {first})"));
        m.valid = false;
    }
    if !finished {
        m.invalid_reasons.push(schedule.gave_up(qps, answered, failed, unsent));
        m.valid = false;
    }
    Ok((m, requests, counts))
}

/// A measurement from what the requests came to: failed requests make the run invalid and are not
/// counted as throughput; latency percentiles are over the answered requests.
fn measure(
    kind: ScenarioKind,
    collected: Collected,
    duration: Duration,
    rules: &RunRules,
    server: Option<(f64, f64)>,
) -> (Measurement, Vec<RequestStats>) {
    let mut reasons = Vec::new();
    if let Some(failed) = collected.failure_reason() {
        reasons.push(failed);
    }
    let answered = collected.answered.len();
    scenario::check_rules(rules, duration, answered, &mut reasons);
    let latencies: Vec<Duration> = collected.answered.iter().map(|a| a.0).collect();
    let latency_ms = Latency::from_samples(&latencies);
    if let Some((_, bound)) = server {
        if latency_ms.p99 > bound {
            reasons.push(format!("p99 latency {:.2} ms exceeds the bound of {bound} ms", latency_ms.p99));
        }
    }
    let requests: Vec<RequestStats> = collected.answered.iter().filter_map(|a| a.1).collect();
    let m = Measurement {
        scenario: kind,
        batch_size: 1,
        queries: answered,
        samples: answered,
        duration_s: duration.as_secs_f64(),
        throughput_per_s: answered as f64 / duration.as_secs_f64().max(f64::MIN_POSITIVE),
        latency_ms,
        valid: reasons.is_empty(),
        invalid_reasons: reasons,
        target_qps: server.map(|s| s.0),
        p99_bound_ms: server.map(|s| s.1),
    };
    (m, requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_device_is_read_as_a_device_spec() {
        assert_eq!(device_kind("cuda:1").unwrap(), DeviceKind::Cuda);
        assert_eq!(device_kind("neuron:0-3").unwrap(), DeviceKind::Neuron);
        assert_eq!(device_kind("xla:cpu").unwrap(), DeviceKind::Cpu);
        assert_eq!(device_kind("cpu").unwrap(), DeviceKind::Cpu);
        // Before, anything not starting with cuda or neuron was priced as a CPU.
        let err = device_kind("gpu0").unwrap_err().to_string();
        assert!(err.contains("cannot be priced") && err.contains("gpu0"), "{err}");
    }

    /// A server that accepts connections, reads what comes, and never answers. Counts the
    /// connections accepted and those the client has since closed.
    fn silent_server() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, c) = (accepted.clone(), closed.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                thread::spawn(move || {
                    let mut sink = [0u8; 4096];
                    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (base, accepted, closed)
    }

    fn embeddings_target(base: &str) -> Arc<Target> {
        Arc::new(Target::new(base, "/v1/embeddings", vec!["{\"input\":\"x\"}".into()], false, 16))
    }

    /// Waits (generously: the machine may be slow) until `f` holds.
    fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(Instant::now() < deadline, "{what}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The open loop never has more than its bound out: the arrivals beyond it are not sent and
    /// are counted, the requests out at the give-up are abandoned (the run ends, invalid), and
    /// their threads end, closing their connections.
    #[test]
    fn the_open_loop_keeps_to_its_in_flight_bound_and_ends_at_its_give_up() {
        let (base, accepted, closed) = silent_server();
        let target = embeddings_target(&base);
        let rules = RunRules { warmup: Duration::ZERO, min_duration: Duration::ZERO, min_queries: 8 };
        let (qps, seed, bound) = (2.0, 3, 3);
        let schedule = Arrivals::poisson(qps, &rules, seed).unwrap();
        let planned = schedule.at.len();
        assert!(planned > bound);
        // Nothing the server does frees a slot before the give-up, so which arrivals are sent does
        // not depend on timing unless this thread oversleeps from the last arrival to the give-up.
        assert!(schedule.give_up - *schedule.at.last().unwrap() > Duration::from_secs(1), "{schedule:?}");
        let started = Instant::now();
        let (m, requests, threads) = open_loop(&target, &rules, qps, 1000.0, seed, bound, &Progress::hidden()).unwrap();
        assert_eq!((threads.sent, threads.peak), (bound, bound), "{threads:?}");
        let took = started.elapsed();
        assert!(took >= schedule.give_up, "{took:?}");
        assert!(took < schedule.give_up + Duration::from_secs(60), "the run hung: {took:?}");
        assert!(!m.valid && m.queries == 0 && requests.is_empty(), "{m:?}");
        let reasons = m.invalid_reasons.join("\n");
        let unsent =
            format!("{} of {planned} arrivals were not sent (first: {bound} requests were out", planned - bound);
        assert!(reasons.contains(&unsent), "{reasons}");
        assert!(reasons.contains(&format!("(0 of {planned} answered, {} not sent)", planned - bound)), "{reasons}");
        assert_eq!(m.duration_s, schedule.give_up.as_secs_f64());
        // Exactly the bound reached the server, and every one of those connections was closed.
        eventually("the requests sent reach the server", || accepted.load(Ordering::SeqCst) == bound);
        eventually("the abandoned requests' connections close", || closed.load(Ordering::SeqCst) == bound);
        assert_eq!(accepted.load(Ordering::SeqCst), bound);
    }

    /// A closed-loop client waits at most its timeout for an answer that never comes: the request
    /// fails and the run ends.
    #[test]
    fn a_closed_loop_request_to_a_silent_server_fails_at_its_timeout() {
        let (base, accepted, closed) = silent_server();
        let mut target = Target::new(&base, "/v1/embeddings", vec!["{}".into()], false, 16);
        target.timeout = Duration::from_millis(500);
        let target = Arc::new(target);
        let rules = RunRules { warmup: Duration::ZERO, min_duration: Duration::ZERO, min_queries: 2 };
        let started = Instant::now();
        let (collected, took) = closed_loop(&target, 2, &rules, &Progress::hidden()).unwrap();
        assert!(started.elapsed() < Duration::from_secs(60), "the run hung: {:?}", started.elapsed());
        assert!(took >= Duration::from_millis(500), "{took:?}");
        assert!(collected.answered.is_empty() && collected.failed >= 2, "{collected:?}");
        assert_eq!(collected.reasons.len(), 1, "{collected:?}");
        assert!(collected.reasons[0].contains("timed out"), "{collected:?}");
        let sent = collected.failed;
        eventually("the connections close", || closed.load(Ordering::SeqCst) == sent);
        assert_eq!(accepted.load(Ordering::SeqCst), sent);
    }

    /// A server that answers every `POST` at once with a small embeddings answer, over kept-alive
    /// connections.
    fn fast_server() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                thread::spawn(move || {
                    use std::io::{BufRead, Write};
                    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                    let mut out = stream;
                    loop {
                        let (mut line, mut length) = (String::new(), 0usize);
                        if !matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                            return;
                        }
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                                break;
                            }
                            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0u8; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let answer = r#"{"object":"list","data":[]}"#;
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", answer.len());
                        if out.write_all(format!("{head}{answer}").as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        base
    }

    /// The crash: every request's thread used to be kept unjoined until the run ended, so a run of
    /// ~32k requests ran out of memory maps. Threads are joined as their requests end: however many
    /// requests a run makes, the threads not yet joined never exceed the in-flight bound, and every
    /// thread started is joined.
    #[test]
    fn the_open_loop_joins_each_thread_as_its_request_ends() {
        let base = fast_server();
        let target = embeddings_target(&base);
        let rules = RunRules { warmup: Duration::ZERO, min_duration: Duration::ZERO, min_queries: 3000 };
        let (qps, bound) = (5000.0, 8);
        let planned = Arrivals::poisson(qps, &rules, 5).unwrap().at.len();
        let (m, _, threads) = open_loop(&target, &rules, qps, 60_000.0, 5, bound, &Progress::hidden()).unwrap();
        assert!(threads.peak <= bound, "{threads:?}");
        assert_eq!(threads.joined, threads.sent, "{threads:?}");
        // Far more requests than the bound were made (a fast server frees its slots at once), and
        // each one answered, failed or counted as not sent: none lost.
        assert!(threads.sent > 10 * bound, "{threads:?} {m:?}");
        assert_eq!(m.queries, threads.sent, "{m:?}");
        let reasons = m.invalid_reasons.join("\n");
        assert!(!reasons.contains("failed") && !reasons.contains("could not keep up"), "{reasons}");
        if threads.sent < planned {
            assert!(reasons.contains(&format!("{} of {planned} arrivals were not sent", planned - threads.sent)));
        }
    }

    /// Failed requests are counted, and only their first few distinct reasons kept, escaped.
    #[test]
    fn failures_are_counted_with_a_bounded_number_of_reasons() {
        let mut c = Collected::default();
        for i in 0..100_000 {
            c.fail(&format!("HTTP 503 \x1b[31mbusy\r\nvalid: yes {}", i % 10));
        }
        c.add(Answer { latency: Duration::from_millis(1), result: Ok(None) });
        assert_eq!((c.failed, c.answered.len(), c.reasons.len()), (100_000, 1, KEPT_REASONS));
        let reason = c.failure_reason().unwrap();
        assert!(
            reason.starts_with("100000 of 100001 requests failed (first: HTTP 503 \\u{1b}[31mbusy\\u{d}\\u{a}valid")
        );
        assert!(!reason.chars().any(char::is_control), "{reason}");
        c.fail(&"x".repeat(10_000));
        assert!(c.reasons.iter().all(|r| r.chars().count() <= MAX_REASON_CHARS));
    }

    #[test]
    fn control_characters_from_a_server_are_escaped() {
        assert_eq!(escape_control("ok ünïcode"), "ok ünïcode");
        assert_eq!(escape_control("\x1b]0;t\x07a\r\nb\u{9b}"), "\\u{1b}]0;t\\u{7}a\\u{d}\\u{a}b\\u{9b}");
    }

    fn events(stream: &[&[u8]]) -> Vec<String> {
        let (mut sse, mut events) = (SseParser::default(), Vec::new());
        for piece in stream {
            sse.feed(piece, &mut events).unwrap();
        }
        events
    }

    /// Events end at a blank line whatever the line ending (LF, CRLF or CR), even when a CRLF is
    /// split between reads; comments and other fields are skipped, data lines joined.
    #[test]
    fn server_sent_events_end_at_a_blank_line_of_any_line_ending() {
        let expected = vec!["{\"a\":1}".to_string(), "[DONE]".to_string()];
        assert_eq!(events(&[b"data: {\"a\":1}\n\ndata: [DONE]\n\n"]), expected);
        assert_eq!(events(&[b"data: {\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n"]), expected);
        assert_eq!(events(&[b"data: {\"a\":1}\r\r", b"data: [DONE]\r\r"]), expected);
        assert_eq!(events(&[b"data: {\"a\":1}\r", b"\n\r", b"\ndata:[DONE]\r\n", b"\r\n"]), expected);
        assert_eq!(events(&[b": comment\r\nevent: x\r\ndata: a\r\ndata: b\r\n\r\n"]), vec!["a\nb".to_string()]);
        // An event not yet ended is not dispatched.
        assert!(events(&[b"data: {\"a\":1}\r\n"]).is_empty());
        let mut sse = SseParser::default();
        let err = sse.feed(&vec![b'x'; MAX_EVENT_BYTES + 1], &mut Vec::new()).unwrap_err();
        assert!(err.contains("over 1 MiB"), "{err}");
    }

    /// `--concurrency` is refused above the in-flight bound (before, 10⁵ clients crashed the run).
    #[test]
    fn the_concurrency_limit_is_the_in_flight_bound() {
        assert_eq!(crate::limits::Limit::CLIENTS.max, MAX_IN_FLIGHT as f64);
        let err = crate::limits::check_flag("--concurrency", 100_000.0, crate::limits::Limit::CLIENTS).unwrap_err();
        assert!(err.to_string().contains("4096"), "{err}");
    }
}
