//! `accelrt bench --url URL`: the scenarios against a running accelrt server over HTTP, one sample
//! per request, so the server's own batching, queueing, tokenisation and HTTP stack are all measured.
//!
//! - offline: `concurrency` clients, each sending its next request as soon as the last is answered
//!   (the server saturated); metric: samples/s.
//! - single-stream: one client, one request at a time; metric: latency.
//! - server: open loop — requests leave at Poisson arrival times whether or not earlier ones have
//!   been answered; latency from the scheduled arrival to the answer; valid only if p99 ≤ the bound
//!   and no request failed (a 429 counts as a failure).
//!
//! Embeddings servers get `POST /v1/embeddings` with one text; chat servers get a streamed
//! `POST /v1/chat/completions` (greedy, `ignore_eos`, exactly `max_tokens` tokens), timed to the
//! first text chunk (TTFT) and per token after it (TPOT).

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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How one request went.
struct Answer {
    /// From the request's start (or its scheduled arrival, in the server scenario) to its end.
    latency: Duration,
    result: std::result::Result<Option<RequestStats>, String>,
}

struct Target {
    base: String,
    client: reqwest::Client,
    path: &'static str,
    /// Request bodies, one per input text, serialised once.
    bodies: Vec<String>,
    chat: bool,
}

impl Target {
    async fn send(&self, i: usize) -> std::result::Result<Option<RequestStats>, String> {
        let started = Instant::now();
        let body = self.bodies[i % self.bodies.len()].clone();
        let mut response = self
            .client
            .post(format!("{}{}", self.base, self.path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(format!("HTTP {status}: {}", text.chars().take(200).collect::<String>()));
        }
        if !self.chat {
            response.bytes().await.map_err(|e| format!("reading the answer: {e}"))?;
            return Ok(None);
        }
        // Server-sent events: note the first text chunk, read the usage chunk, stop at [DONE].
        let (mut buffer, mut first, mut tokens, mut prompt, mut done) = (Vec::new(), None, None, 0, false);
        while let Some(bytes) = response.chunk().await.map_err(|e| format!("reading the stream: {e}"))? {
            buffer.extend_from_slice(&bytes);
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

/// Reads `GET URL/info`.
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

/// Runs every requested scenario against the server at `url`.
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
    let target = Arc::new(Target {
        base: base.clone(),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(usize::MAX)
            .build()
            .map_err(|e| BenchError::Invalid(format!("HTTP client: {e}")))?,
        path: if chat { "/v1/chat/completions" } else { "/v1/embeddings" },
        bodies,
        chat,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Invalid(format!("client runtime: {e}")))?;
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
        let scenario = runtime.block_on(run_scenario(config, &target, kind, &rules, &format!("{base} {kind}")));
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

async fn run_scenario(
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
            closed_loop(target, clients, &warmup, &hidden).await?;
            let (answers, duration) = closed_loop(target, clients, rules, &progress).await?;
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
            closed_loop(target, clients, &warmup, &hidden).await?;
            if config.find_max_qps {
                let quick =
                    RunRules { min_queries: 8, min_duration: rules.min_duration.min(Duration::from_secs(3)), ..*rules };
                let (answers, duration) = closed_loop(target, clients, &quick, &hidden).await?;
                let upper = answers.iter().filter(|a| a.result.is_ok()).count() as f64 / duration.as_secs_f64();
                let mut search = LoadSearch::new(upper)?;
                let mut runs: Vec<(Measurement, Vec<RequestStats>)> = Vec::new();
                for step in 0..config.search_steps.max(1) {
                    let qps = search.load();
                    let label = format!("{label} {}/{} {qps:.1}/s", step + 1, config.search_steps);
                    let progress = Progress::new(&label, rules, config.progress);
                    let (m, reqs) = open_loop(target, rules, qps, bound, config.seed, &progress).await?;
                    progress.finish();
                    search.record(m.valid);
                    runs.push((m, reqs));
                }
                let (shown, all) = Sweep::new(runs).into_shown();
                Ok((shown.0, all, shown.1))
            } else {
                let qps = config.qps.expect("validated");
                let progress = Progress::new(label, rules, config.progress);
                let (m, reqs) = open_loop(target, rules, qps, bound, config.seed, &progress).await?;
                progress.finish();
                Ok((m, vec![], reqs))
            }
        }
    }
}

/// `clients` clients, each sending its next request when the last is answered, until the rules'
/// duration and query count are both reached.
async fn closed_loop(
    target: &Arc<Target>,
    clients: usize,
    rules: &RunRules,
    progress: &Progress,
) -> Result<(Vec<Answer>, Duration)> {
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let (min_duration, min_queries) = (rules.min_duration, rules.min_queries);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let (target, next, done, answers) = (target.clone(), next.clone(), done.clone(), answers.clone());
        tasks.spawn(async move {
            while (start.elapsed() < min_duration || done.load(Ordering::Relaxed) < min_queries)
                && !crate::interrupt::requested()
            {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let result = target.send(i).await;
                let answer = Answer { latency: t.elapsed(), result };
                done.fetch_add(1, Ordering::Relaxed);
                answers.lock().unwrap_or_else(|e| e.into_inner()).push(answer);
            }
        });
    }
    // Progress about every 100 ms while the clients run.
    loop {
        match tokio::time::timeout(Duration::from_millis(100), tasks.join_next()).await {
            Ok(None) => break,
            Ok(Some(_)) => {}
            Err(_) => progress.update(start.elapsed(), done.load(Ordering::Relaxed)),
        }
    }
    if crate::interrupt::requested() {
        return Err(BenchError::Interrupted);
    }
    let duration = start.elapsed();
    progress.update(duration, done.load(Ordering::Relaxed));
    let answers = std::mem::take(&mut *answers.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((answers, duration))
}

/// Requests leave at Poisson arrival times (the same schedule as the in-process server scenario
/// for the same seed), whatever the server's state.
async fn open_loop(
    target: &Arc<Target>,
    rules: &RunRules,
    qps: f64,
    p99_bound_ms: f64,
    seed: u64,
    progress: &Progress,
) -> Result<(Measurement, Vec<RequestStats>)> {
    let schedule = Arrivals::poisson(qps, rules, seed)?;
    let planned = schedule.at.len();
    let start = tokio::time::Instant::now();
    let answers = Arc::new(Mutex::new(Vec::with_capacity(planned)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, at) in schedule.at.iter().enumerate() {
        if crate::interrupt::requested() {
            return Err(BenchError::Interrupted);
        }
        tokio::time::sleep_until(start + *at).await;
        progress.update(start.elapsed(), i);
        let (target, answers, scheduled) = (target.clone(), answers.clone(), start + *at);
        tasks.spawn(async move {
            let result = target.send(i).await;
            let answer = Answer { latency: scheduled.elapsed(), result };
            answers.lock().unwrap_or_else(|e| e.into_inner()).push(answer);
        });
    }
    let finished =
        tokio::time::timeout_at(start + schedule.give_up, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_ok();
    // Requests still out when the run gives up are abandoned (JoinSet drops abort them).
    let duration = start.elapsed();
    let answers = std::mem::take(&mut *answers.lock().unwrap_or_else(|e| e.into_inner()));
    let answered = answers.len();
    let (mut m, requests) = measure(ScenarioKind::Server, answers, duration, rules, Some((qps, p99_bound_ms)));
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
}
