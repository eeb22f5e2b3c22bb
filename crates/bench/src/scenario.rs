//! The MLPerf LoadGen scenarios: offline, single-stream and server (Poisson arrivals with a p99
//! bound), and the search for the highest valid server load.

use crate::clock::Clock;
use crate::progress::Progress;
use crate::stats::Latency;
use crate::workload::Workload;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A scenario, named in flags and files in kebab case (`offline`, `single-stream`, `server`,
/// `training`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// Queries of `--batch-size` samples back to back, all available at once; the metric is
    /// samples/s ([`offline`]).
    Offline,
    /// One sample at a time, each issued when the previous one is done; the metric is latency
    /// ([`single_stream`]).
    SingleStream,
    /// Single-sample queries with Poisson arrivals at `--qps`, dynamically batched; valid only
    /// under the `--p99-ms` bound ([`server`], [`find_max_qps`]).
    Server,
    /// Training steps back to back on batches of the model's training data (forward, loss,
    /// backward, optimiser update); not an MLPerf Inference scenario, run on its own
    /// (`crate::run::training`).
    Training,
}

impl std::str::FromStr for ScenarioKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "offline" => Ok(ScenarioKind::Offline),
            "single-stream" => Ok(ScenarioKind::SingleStream),
            "server" => Ok(ScenarioKind::Server),
            "training" => Ok(ScenarioKind::Training),
            _ => Err(format!("unknown scenario `{s}` (offline, single-stream, server, training)")),
        }
    }
}

impl std::fmt::Display for ScenarioKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScenarioKind::Offline => "offline",
            ScenarioKind::SingleStream => "single-stream",
            ScenarioKind::Server => "server",
            ScenarioKind::Training => "training",
        })
    }
}

/// How long to run and what makes a run valid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunRules {
    /// Unrecorded time before measuring.
    pub warmup: Duration,
    /// A valid run lasts at least this long…
    pub min_duration: Duration,
    /// …and completes at least this many queries.
    pub min_queries: usize,
}

impl RunRules {
    /// Short defaults for a laptop-sized run.
    pub fn quick() -> RunRules {
        RunRules { warmup: Duration::from_secs(2), min_duration: Duration::from_secs(10), min_queries: 64 }
    }

    /// MLPerf Inference's minimums (600 s; 24,576 samples offline, 1,024 queries single-stream,
    /// 270,336 queries server). Training has no MLPerf Inference minimum: 600 s and 10 steps.
    pub fn mlperf(kind: ScenarioKind) -> RunRules {
        let min_queries = match kind {
            ScenarioKind::Offline => 24_576,
            ScenarioKind::SingleStream => 1_024,
            ScenarioKind::Server => 270_336,
            ScenarioKind::Training => 10,
        };
        RunRules { warmup: Duration::from_secs(10), min_duration: Duration::from_secs(600), min_queries }
    }
}

/// What one scenario run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The scenario that was run.
    pub scenario: ScenarioKind,
    /// Samples (inferences) per query issued by the harness (the maximum batch for the server).
    pub batch_size: usize,
    /// Queries completed after warm-up.
    pub queries: usize,
    /// Samples in those queries (`queries × batch_size` offline; `queries` for the server).
    pub samples: usize,
    /// Measured time in seconds, from the end of warm-up to the last completion.
    pub duration_s: f64,
    /// Samples per second over the measured part of the run.
    pub throughput_per_s: f64,
    /// Per query (offline, single-stream) or per sample from arrival to completion (server).
    pub latency_ms: Latency,
    /// Whether every rule held ([`RunRules`], and for the server the p99 bound and the schedule).
    pub valid: bool,
    /// One sentence per broken rule; empty when valid.
    pub invalid_reasons: Vec<String>,
    /// Server scenario only: the offered load, in queries/s.
    pub target_qps: Option<f64>,
    /// Server scenario only: the p99 latency bound, in ms.
    pub p99_bound_ms: Option<f64>,
}

/// Ends a scenario early when Ctrl-C was pressed.
fn stop_if_interrupted() -> Result<()> {
    if crate::interrupt::requested() {
        return Err(crate::BenchError::Interrupted);
    }
    Ok(())
}

fn warm_up(w: &mut dyn Workload, clock: &dyn Clock, rules: &RunRules, batch: usize) -> Result<()> {
    let end = clock.now() + rules.warmup;
    let mut i = 0;
    while clock.now() < end {
        stop_if_interrupted()?;
        w.run(i * batch, batch)?;
        i += 1;
    }
    Ok(())
}

pub(crate) fn check_rules(rules: &RunRules, duration: Duration, queries: usize, reasons: &mut Vec<String>) {
    if duration < rules.min_duration {
        reasons.push(format!(
            "ran {:.2} s, below the minimum duration of {:.0} s",
            duration.as_secs_f64(),
            rules.min_duration.as_secs_f64()
        ));
    }
    if queries < rules.min_queries {
        reasons.push(format!("completed {queries} queries, below the minimum of {}", rules.min_queries));
    }
}

/// Back-to-back queries of `batch` samples: everything is available at once. Metric: samples/s.
///
/// # Errors
/// [`BenchError::Invalid`](crate::BenchError::Invalid) for a `batch` of 0;
/// [`BenchError::Interrupted`](crate::BenchError::Interrupted) on Ctrl-C; any error of the workload.
pub fn offline(
    w: &mut dyn Workload,
    clock: &dyn Clock,
    rules: &RunRules,
    batch: usize,
    progress: &Progress,
) -> Result<Measurement> {
    closed_loop(ScenarioKind::Offline, w, clock, rules, batch, progress)
}

/// One sample at a time, each issued when the previous one finished. Metric: latency percentiles.
///
/// # Errors
/// [`BenchError::Interrupted`](crate::BenchError::Interrupted) on Ctrl-C; any error of the workload.
pub fn single_stream(
    w: &mut dyn Workload,
    clock: &dyn Clock,
    rules: &RunRules,
    progress: &Progress,
) -> Result<Measurement> {
    closed_loop(ScenarioKind::SingleStream, w, clock, rules, 1, progress)
}

fn closed_loop(
    scenario: ScenarioKind,
    w: &mut dyn Workload,
    clock: &dyn Clock,
    rules: &RunRules,
    batch: usize,
    progress: &Progress,
) -> Result<Measurement> {
    if batch == 0 {
        return Err(crate::BenchError::Invalid("batch size must be at least 1".into()));
    }
    warm_up(w, clock, rules, batch)?;
    w.start_measuring();
    let start = clock.now();
    let mut latencies = Vec::new();
    while clock.now() - start < rules.min_duration || latencies.len() < rules.min_queries {
        stop_if_interrupted()?;
        let t = clock.now();
        w.run(latencies.len() * batch, batch)?;
        latencies.push(clock.now() - t);
        progress.update(clock.now() - start, latencies.len());
    }
    progress.finish();
    let duration = clock.now() - start;
    let mut reasons = Vec::new();
    check_rules(rules, duration, latencies.len(), &mut reasons);
    let samples = latencies.len() * batch;
    Ok(Measurement {
        scenario,
        batch_size: batch,
        queries: latencies.len(),
        samples,
        duration_s: duration.as_secs_f64(),
        throughput_per_s: samples as f64 / duration.as_secs_f64().max(f64::MIN_POSITIVE),
        latency_ms: Latency::from_samples(&latencies),
        valid: reasons.is_empty(),
        invalid_reasons: reasons,
        target_qps: None,
        p99_bound_ms: None,
    })
}

/// Poisson arrivals of single-sample queries at `qps`, served in dynamic batches of up to `batch`
/// (everything that has arrived when the device frees up). Latency runs from a query's scheduled
/// arrival to its completion, in ms. Valid only if p99 ≤ `p99_bound_ms` (and the run rules hold);
/// the arrival schedule is [`crate::load::Arrivals::poisson`] with `seed`, so a seed gives the same
/// arrivals on every system. A run that falls too far behind its schedule stops and is invalid.
///
/// # Errors
/// [`BenchError::Invalid`](crate::BenchError::Invalid) when `qps` is not a positive finite number
/// or `batch` is 0; [`BenchError::Interrupted`](crate::BenchError::Interrupted)
/// on Ctrl-C; any error of the workload.
#[allow(clippy::too_many_arguments)]
pub fn server(
    w: &mut dyn Workload,
    clock: &dyn Clock,
    rules: &RunRules,
    batch: usize,
    qps: f64,
    p99_bound_ms: f64,
    seed: u64,
    progress: &Progress,
) -> Result<Measurement> {
    if !(qps.is_finite() && qps > 0.0) || batch == 0 {
        return Err(crate::BenchError::Invalid(format!("server needs qps > 0 and batch ≥ 1 (got {qps}, {batch})")));
    }
    let schedule = crate::load::Arrivals::poisson(qps, rules, seed)?;
    warm_up(w, clock, rules, batch)?;
    w.start_measuring();
    let start = clock.now();
    let arrivals: Vec<Duration> = schedule.at.iter().map(|&a| start + a).collect();
    let planned = arrivals.len();
    let give_up = start + schedule.give_up;
    let mut latencies = Vec::with_capacity(planned);
    let mut next = 0;
    let mut reasons = Vec::new();
    while next < planned {
        stop_if_interrupted()?;
        let now = clock.now();
        if now > give_up {
            reasons.push(schedule.gave_up(qps, next, 0, 0));
            break;
        }
        if arrivals[next] > now {
            clock.sleep_until(arrivals[next]);
            continue;
        }
        let ready = arrivals[next..].iter().take(batch).take_while(|&&a| a <= now).count();
        w.run(next, ready)?;
        let done = clock.now();
        latencies.extend(arrivals[next..next + ready].iter().map(|&a| done - a));
        next += ready;
        progress.update(done - start, next);
    }
    progress.finish();
    let duration = clock.now() - start;
    check_rules(rules, duration, latencies.len(), &mut reasons);
    let latency_ms = Latency::from_samples(&latencies);
    if latency_ms.p99 > p99_bound_ms {
        reasons.push(format!("p99 latency {:.2} ms exceeds the bound of {p99_bound_ms} ms", latency_ms.p99));
    }
    Ok(Measurement {
        scenario: ScenarioKind::Server,
        batch_size: batch,
        queries: latencies.len(),
        samples: latencies.len(),
        duration_s: duration.as_secs_f64(),
        throughput_per_s: latencies.len() as f64 / duration.as_secs_f64().max(f64::MIN_POSITIVE),
        latency_ms,
        valid: reasons.is_empty(),
        invalid_reasons: reasons,
        target_qps: Some(qps),
        p99_bound_ms: Some(p99_bound_ms),
    })
}

/// The search for the highest arrival rate whose server run is valid: starting at `upper` (e.g. the
/// offline throughput), doubling while runs stay valid, then bisecting between the best valid and the
/// lowest invalid load, `steps` runs in all. Every tried load is
/// kept, for latency-vs-load curves.
#[allow(clippy::too_many_arguments)]
pub fn find_max_qps(
    w: &mut dyn Workload,
    clock: &dyn Clock,
    rules: &RunRules,
    batch: usize,
    upper: f64,
    p99_bound_ms: f64,
    steps: usize,
    seed: u64,
) -> Result<(Option<Measurement>, Vec<Measurement>)> {
    search_max_qps(upper, steps, |qps| server(w, clock, rules, batch, qps, p99_bound_ms, seed, &Progress::hidden()))
}

/// The search of `find_max_qps` over any way of running the server scenario at a given load
/// ([`crate::load::search`]): the best valid run, if any, and every run in order of load.
pub fn search_max_qps(
    upper: f64,
    steps: usize,
    mut run_at: impl FnMut(f64) -> Result<Measurement>,
) -> Result<(Option<Measurement>, Vec<Measurement>)> {
    let sweep = crate::load::search(upper, steps, |_, qps| Ok((run_at(qps)?, ())))?;
    Ok((sweep.best().map(|(m, ())| m.clone()), sweep.measurements()))
}

pub use crate::load::LoadSearch;
