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
//! client is one thread sending its requests in turn; the open loop starts one thread per arrival,
//! at most [`MAX_IN_FLIGHT`] at once. Connections are kept alive and reused (one pool per run).
//! Nothing can wait forever on the server: a connection must open within [`CONNECT_TIMEOUT`], and
//! every request (sending, waiting, reading the answer or the whole stream) has a deadline — the
//! server scenario's give-up time, otherwise [`REQUEST_TIMEOUT`] after its send; a request past its
//! deadline fails (closed loop) or is abandoned as unanswered (open loop). Every thread is joined
//! before its run returns, with two exceptions, both left to end on their own with their answers
//! dropped: a request still opening a connection when the open loop gives up (it ends within
//! [`CONNECT_TIMEOUT`]), and the requests out when Ctrl-C stops an open loop (they end by the
//! give-up deadline; `accelrt bench` exits first).

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
}

impl Target {
    /// A target for `base` + `path` whose connection pool keeps up to `idle` connections alive.
    fn new(base: &str, path: &str, bodies: Vec<String>, chat: bool, idle: usize) -> Target {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .max_idle_connections(idle)
            .max_idle_connections_per_host(idle)
            .build();
        Target { agent, url: format!("{base}{path}"), bodies, chat, timeout: REQUEST_TIMEOUT }
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
                let status = format!("{code} {}", response.status_text());
                let mut text = Vec::new();
                let _ = response.into_reader().take(MAX_ERROR_BYTES).read_to_end(&mut text);
                let text = String::from_utf8_lossy(&text);
                return Err(format!("HTTP {status}: {}", text.chars().take(200).collect::<String>()));
            }
            Err(e) => return Err(format!("request: {e}")),
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
        let (mut buffer, mut first, mut tokens, mut prompt, mut done) = (Vec::new(), None, None, 0, false);
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading the stream: {e}")),
            };
            buffer.extend_from_slice(&chunk[..n]);
            while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event);
                let Some(data) = text.trim().strip_prefix("data:").map(str::trim) else { continue };
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
            if buffer.len() > MAX_EVENT_BYTES {
                return Err(format!("an event of the stream is over {} MiB", MAX_EVENT_BYTES >> 20));
            }
        }
        let end = started.elapsed();
        let (true, Some(tokens)) = (done, tokens) else {
            return Err("the stream ended without usage and [DONE]".into());
        };
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
    serde_json::from_reader(std::io::Read::take(response.into_reader(), 1 << 20))
        .map_err(|e| BenchError::Invalid(format!("{base}/info is not an accelrt server's info: {e}")))
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
    let target = Arc::new(Target::new(&base, path, bodies, chat, MAX_IN_FLIGHT.max(config.concurrency)));
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
            let (answers, duration) = closed_loop(target, clients, rules, &progress)?;
            progress.finish();
            let (m, requests) = measure(kind, answers, duration, rules, None);
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
                let (answers, duration) = closed_loop(target, clients, &quick, &hidden)?;
                let upper = answers.iter().filter(|a| a.result.is_ok()).count() as f64 / duration.as_secs_f64();
                let mut search = LoadSearch::new(upper)?;
                let mut runs: Vec<(Measurement, Vec<RequestStats>)> = Vec::new();
                for step in 0..config.search_steps.max(1) {
                    let qps = search.load();
                    let label = format!("{label} {}/{} {qps:.1}/s", step + 1, config.search_steps);
                    let progress = Progress::new(&label, rules, config.progress);
                    let (m, reqs) = open_loop(target, rules, qps, bound, config.seed, MAX_IN_FLIGHT, &progress)?;
                    progress.finish();
                    search.record(m.valid);
                    runs.push((m, reqs));
                }
                let (shown, all) = Sweep::new(runs).into_shown();
                Ok((shown.0, all, shown.1))
            } else {
                let qps = config.qps.expect("validated");
                let progress = Progress::new(label, rules, config.progress);
                let (m, reqs) = open_loop(target, rules, qps, bound, config.seed, MAX_IN_FLIGHT, &progress)?;
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
/// rules' duration and query count are both reached (or Ctrl-C: then after each client's request
/// in flight, [`BenchError::Interrupted`]). Each request's latency is from its send; each ends
/// within the target's timeout, so the run ends too; every thread is joined before returning.
fn closed_loop(
    target: &Arc<Target>,
    clients: usize,
    rules: &RunRules,
    progress: &Progress,
) -> Result<(Vec<Answer>, Duration)> {
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let (min_duration, min_queries) = (rules.min_duration, rules.min_queries);
    // Each client holds a sender; the channel disconnects when the last one has ended.
    let (ended, clients_running) = mpsc::channel::<()>();
    let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(clients.max(1));
    for c in 0..clients.max(1) {
        let (target, next, done, stopped, answers) =
            (target.clone(), next.clone(), done.clone(), stop.clone(), answers.clone());
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
                answers.lock().unwrap_or_else(|e| e.into_inner()).push(answer);
            }
        });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                join_all(threads)?;
                return Err(BenchError::Invalid(format!(
                    "cannot start HTTP client {} of {clients} (a thread): {e}",
                    c + 1
                )));
            }
        }
    }
    drop(ended);
    // Progress about every 100 ms while the clients run.
    while let Err(RecvTimeoutError::Timeout) = clients_running.recv_timeout(Duration::from_millis(100)) {
        progress.update(start.elapsed(), done.load(Ordering::Relaxed));
    }
    let duration = start.elapsed();
    join_all(threads)?;
    if crate::interrupt::requested() {
        return Err(BenchError::Interrupted);
    }
    progress.update(duration, done.load(Ordering::Relaxed));
    let answers = std::mem::take(&mut *answers.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((answers, duration))
}

/// Joins client threads; one that panicked is an error (its answers may be missing).
fn join_all(threads: Vec<JoinHandle<()>>) -> Result<()> {
    let panicked = threads.into_iter().map(JoinHandle::join).filter(std::result::Result::is_err).count();
    if panicked > 0 {
        return Err(BenchError::Invalid(format!("{panicked} HTTP client thread(s) panicked")));
    }
    Ok(())
}

/// One request of the open loop out: dropped (the count decreases) when its thread ends, or when
/// its thread could not be started.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::AcqRel);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Requests leave at Poisson arrival times (the same schedule as the in-process server scenario
/// for the same seed), whatever the server's state, each on its own thread, at most `max_in_flight`
/// out at once (an arrival that finds that many out is not sent, and counted: see
/// [`MAX_IN_FLIGHT`]). Latency is from each request's scheduled arrival. Requests still out at the
/// schedule's give-up deadline are abandoned (their own deadline is the same instant) and the run
/// is invalid, as is a run in which an arrival was not sent. Ctrl-C: [`BenchError::Interrupted`] at
/// the next arrival, the requests out left to end at the give-up deadline.
fn open_loop(
    target: &Arc<Target>,
    rules: &RunRules,
    qps: f64,
    p99_bound_ms: f64,
    seed: u64,
    max_in_flight: usize,
    progress: &Progress,
) -> Result<(Measurement, Vec<RequestStats>)> {
    let schedule = Arrivals::poisson(qps, rules, seed)?;
    let planned = schedule.at.len();
    let start = Instant::now();
    let give_up = start + schedule.give_up;
    let in_flight = Arc::new(AtomicUsize::new(0));
    // Each request's thread reports its index and its answer, or `None`: still out at the give-up.
    let (report, reports) = mpsc::channel::<(usize, Option<Answer>)>();
    let mut threads: Vec<(usize, JoinHandle<()>)> = Vec::with_capacity(planned);
    let (mut unsent, mut first_unsent) = (0usize, None::<String>);
    for (i, at) in schedule.at.iter().enumerate() {
        let scheduled = start + *at;
        loop {
            if crate::interrupt::requested() {
                return Err(BenchError::Interrupted);
            }
            let now = Instant::now();
            if now >= scheduled {
                break;
            }
            thread::sleep((scheduled - now).min(Duration::from_millis(100)));
        }
        progress.update(start.elapsed(), i);
        if in_flight.load(Ordering::Acquire) >= max_in_flight {
            unsent += 1;
            first_unsent.get_or_insert_with(|| format!("{max_in_flight} requests were out, the client's limit"));
            continue;
        }
        let out = InFlight::enter(&in_flight);
        let (target, report) = (target.clone(), report.clone());
        let spawned = client_thread(format!("accelrt-request-{i}")).spawn(move || {
            let _out = out;
            let result = target.send(i, give_up);
            let latency = scheduled.elapsed();
            // Out at the give-up (answered or failed after it, or timed out at it): abandoned.
            let answer = (Instant::now() < give_up).then_some(Answer { latency, result });
            let _ = report.send((i, answer));
        });
        match spawned {
            Ok(handle) => threads.push((i, handle)),
            Err(e) => {
                // The closure, and with it `out`, was dropped: the count is back.
                unsent += 1;
                first_unsent.get_or_insert_with(|| format!("no thread could be started for it: {e}"));
            }
        }
    }
    drop(report);
    let sent = threads.len();
    let mut answers = Vec::with_capacity(sent);
    let (mut reported, mut abandoned) = (Vec::with_capacity(sent), 0usize);
    while reported.len() < sent {
        let wait = (give_up + JOIN_GRACE).saturating_duration_since(Instant::now());
        match reports.recv_timeout(wait) {
            Ok((i, answer)) => {
                reported.push(i);
                match answer {
                    Some(a) => answers.push(a),
                    None => abandoned += 1,
                }
            }
            Err(_) => break,
        }
    }
    let finished = abandoned == 0 && reported.len() == sent;
    let duration = if finished { start.elapsed() } else { schedule.give_up };
    // Every thread that reported is ending: join it. One that did not (still opening a connection)
    // ends on its own within CONNECT_TIMEOUT; its report goes nowhere.
    reported.sort_unstable();
    let (done, stragglers): (Vec<_>, Vec<_>) =
        threads.into_iter().partition(|(i, _)| reported.binary_search(i).is_ok());
    drop(stragglers);
    join_all(done.into_iter().map(|(_, h)| h).collect())?;
    let answered = answers.len();
    let (mut m, requests) = measure(ScenarioKind::Server, answers, duration, rules, Some((qps, p99_bound_ms)));
    if let Some(first) = first_unsent {
        m.invalid_reasons.push(format!("{unsent} of {planned} arrivals were not sent (first: {first})"));
        m.valid = false;
    }
    if !finished {
        m.invalid_reasons.push(schedule.gave_up(qps, answered));
        m.valid = false;
    }
    Ok((m, requests))
}

/// A measurement from the answers: failed requests make the run invalid and are not counted as
/// throughput; latency percentiles are over the answered requests.
fn measure(
    kind: ScenarioKind,
    answers: Vec<Answer>,
    duration: Duration,
    rules: &RunRules,
    server: Option<(f64, f64)>,
) -> (Measurement, Vec<RequestStats>) {
    let mut reasons = Vec::new();
    let failed: Vec<&String> = answers.iter().filter_map(|a| a.result.as_ref().err()).collect();
    if let Some(first) = failed.first() {
        reasons.push(format!("{} of {} requests failed (first: {first})", failed.len(), answers.len()));
    }
    let ok: Vec<&Answer> = answers.iter().filter(|a| a.result.is_ok()).collect();
    scenario::check_rules(rules, duration, ok.len(), &mut reasons);
    let latencies: Vec<Duration> = ok.iter().map(|a| a.latency).collect();
    let latency_ms = Latency::from_samples(&latencies);
    if let Some((_, bound)) = server {
        if latency_ms.p99 > bound {
            reasons.push(format!("p99 latency {:.2} ms exceeds the bound of {bound} ms", latency_ms.p99));
        }
    }
    let requests: Vec<RequestStats> = ok.iter().filter_map(|a| a.result.as_ref().ok().copied().flatten()).collect();
    let m = Measurement {
        scenario: kind,
        batch_size: 1,
        queries: ok.len(),
        samples: ok.len(),
        duration_s: duration.as_secs_f64(),
        throughput_per_s: ok.len() as f64 / duration.as_secs_f64().max(f64::MIN_POSITIVE),
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
        let (m, requests) = open_loop(&target, &rules, qps, 1000.0, seed, bound, &Progress::hidden()).unwrap();
        let took = started.elapsed();
        assert!(took >= schedule.give_up, "{took:?}");
        assert!(took < schedule.give_up + Duration::from_secs(60), "the run hung: {took:?}");
        assert!(!m.valid && m.queries == 0 && requests.is_empty(), "{m:?}");
        let reasons = m.invalid_reasons.join("\n");
        let unsent =
            format!("{} of {planned} arrivals were not sent (first: {bound} requests were out", planned - bound);
        assert!(reasons.contains(&unsent), "{reasons}");
        assert!(reasons.contains(&format!("(0 of {planned} answered)")), "{reasons}");
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
        let (answers, _) = closed_loop(&target, 2, &rules, &Progress::hidden()).unwrap();
        assert!(started.elapsed() < Duration::from_secs(60), "the run hung: {:?}", started.elapsed());
        assert!(answers.len() >= 2, "{}", answers.len());
        for a in &answers {
            let err = a.result.as_ref().unwrap_err();
            assert!(err.contains("timed out"), "{err}");
            assert!(a.latency >= Duration::from_millis(500), "{:?}", a.latency);
        }
        let sent = answers.len();
        eventually("the connections close", || closed.load(Ordering::SeqCst) == sent);
        assert_eq!(accepted.load(Ordering::SeqCst), sent);
    }
}
