//! The versioned result file (docs/bench.md, "Result files", documents the schema; every number is checked on load).

use crate::catalog::{Instance, Price};
use crate::environment::Environment;
use crate::hardware::HardwareCheck;
use crate::limits::{bounded_name, Limit, MAX_NAME_PART};
use crate::scenario::{Measurement, ScenarioKind};
use crate::stats::Latency;
use crate::training::TrainingMetrics;
use crate::{BenchError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The result file format this build writes and the only one [`BenchResult::load`] accepts.
pub const SCHEMA_VERSION: u32 = 1;

/// US dollars per million units (inferences, output tokens, training tokens) at `usd_per_hour`
/// (USD per instance-hour) and `throughput_per_s` units per second: `usd_per_hour × 10⁶ /
/// (3600 × throughput_per_s)`. `None` when the throughput is not positive or the price is not
/// finite.
pub fn usd_per_million(usd_per_hour: f64, throughput_per_s: f64) -> Option<f64> {
    (throughput_per_s > 0.0 && usd_per_hour.is_finite()).then(|| usd_per_hour * 1e6 / (3600.0 * throughput_per_s))
}

/// One load tried by the server scenario's search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The offered load: Poisson arrivals per second (queries/s; each query is one sample).
    pub target_qps: f64,
    /// Samples answered per second of that run (below `target_qps` when the system fell behind).
    pub throughput_per_s: f64,
    /// That run's 99th-percentile latency from scheduled arrival to completion, in ms.
    pub p99_ms: f64,
    /// Whether that run met every rule, the p99 bound included.
    pub valid: bool,
}

/// Text generation metrics (MLPerf LLM style), for generation workloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationMetrics {
    /// New tokens per request (every request produces exactly this many).
    pub max_tokens: usize,
    /// Requests (prompts) measured, warm-up excluded.
    pub requests: usize,
    /// Mean prompt length in tokens (chat template included), over the measured requests.
    pub prompt_tokens_mean: f64,
    /// Output tokens of all measured requests together.
    pub output_tokens: usize,
    /// Output tokens per second over the measured run (all sequences together).
    pub output_tokens_per_s: f64,
    /// Time to first token per request, in ms (offline: from the start of its batch).
    pub ttft_ms: Latency,
    /// Mean time per output token after the first, per request, in ms (requests of one output
    /// token are left out).
    pub tpot_ms: Latency,
    /// US dollars per million output tokens at the run's price per hour and
    /// `output_tokens_per_s` ([`usd_per_million`]); `None` when the run is unpriced.
    pub usd_per_million_output_tokens: Option<f64>,
}

impl GenerationMetrics {
    /// The metrics of the measured `requests` of a run of `duration_s` seconds (measured time,
    /// warm-up excluded), priced at `usd_per_hour` (USD per instance-hour) when given.
    pub fn new(
        requests: &[crate::workload::RequestStats],
        max_tokens: usize,
        duration_s: f64,
        usd_per_hour: Option<f64>,
    ) -> GenerationMetrics {
        let output_tokens: usize = requests.iter().map(|r| r.output_tokens).sum();
        let output_tokens_per_s = output_tokens as f64 / duration_s.max(f64::MIN_POSITIVE);
        let ttft: Vec<_> = requests.iter().map(|r| r.time_to_first_token).collect();
        let tpot: Vec<_> = requests.iter().filter_map(|r| r.time_per_output_token).collect();
        GenerationMetrics {
            max_tokens,
            requests: requests.len(),
            prompt_tokens_mean: requests.iter().map(|r| r.prompt_tokens as f64).sum::<f64>()
                / requests.len().max(1) as f64,
            output_tokens,
            output_tokens_per_s,
            ttft_ms: Latency::from_samples(&ttft),
            tpot_ms: Latency::from_samples(&tpot),
            usd_per_million_output_tokens: usd_per_hour.and_then(|p| usd_per_million(p, output_tokens_per_s)),
        }
    }
}

/// Memory the measured system used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Peak resident host memory (Linux `VmHWM`) in bytes: this process's for accelrt, the
    /// runner's own report for a training peer; `None` where it was not measured (inference peers,
    /// a server measured with `--url`) or off Linux.
    pub peak_host_bytes: Option<u64>,
    /// Device memory in use when the result was made (total minus free), in bytes, where the
    /// backend can report it; `None` for the CPU and for peers.
    pub device_bytes: Option<u64>,
}

/// One scenario's result on one system: the file `accelrt bench` writes and `accelrt report`
/// reads (schema in docs/bench.md, "Result files").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Always [`SCHEMA_VERSION`] in a file this build wrote or accepted.
    pub schema_version: u32,
    /// Which scenario was run.
    pub scenario: ScenarioKind,
    /// The model measured: its id for a known model (e.g. `sentence-transformers/all-MiniLM-L6-v2`),
    /// else the name of the file or directory given.
    pub model: String,
    /// What ran the model: `accelrt`, or a peer (`pytorch`, `onnxruntime`).
    pub system: String,
    /// The device string (`cpu`, `cuda:0`, `neuron:0`).
    pub backend: String,
    /// Samples per query (offline), 1 (single-stream), the largest dynamic batch (server), or rows
    /// per training step (training).
    pub batch_size: usize,
    /// Whether the run met every rule (duration, query count, the server's p99 bound, a training
    /// peer's first loss). An invalid result is kept and shown, marked.
    pub valid: bool,
    /// Why it is invalid, one sentence per broken rule; empty when valid.
    pub invalid_reasons: Vec<String>,
    /// Inferences (samples) per second over the measured duration; for generation, requests per
    /// second; for training, training samples (pairs or windows) per second.
    pub throughput_per_s: f64,
    /// Latency in ms: per query (offline, single-stream), per sample from scheduled arrival to
    /// completion (server), per step (training).
    pub latency_ms: Latency,
    /// Queries (training: steps) completed in the measured part, warm-up excluded.
    pub queries: usize,
    /// Samples (inferences, requests, training rows) in those queries.
    pub samples: usize,
    /// Measured time in seconds, warm-up excluded; for training, the sum of the measured steps'
    /// own times.
    pub duration_s: f64,
    /// The EC2 instance type the run is priced as; `None` when unknown.
    pub instance_type: Option<String>,
    /// Where the instance type came from: `--instance-type`, `ACCELRT_INSTANCE_TYPE`, `imds`, or `unknown`.
    pub instance_type_source: String,
    /// The price the cost uses, in USD per instance-hour (`price.usd_per_hour`); `None` when unpriced.
    pub price_usd_per_hour: Option<f64>,
    /// The full price record: basis, region, source and the date it was read.
    pub price: Option<Price>,
    /// US dollars per million inferences: `price_usd_per_hour × 10⁶ / (3600 × throughput_per_s)`
    /// ([`usd_per_million`]). `None` when unpriced, when nothing was answered, and always for
    /// training (see `training.usd_per_million_tokens`).
    pub usd_per_million_inferences: Option<f64>,
    /// Which throughput the cost uses, in words.
    pub cost_basis: String,
    /// Server scenario only: the offered load of this run, in queries/s (one sample per query).
    pub target_qps: Option<f64>,
    /// Server scenario only: the p99 latency bound (`--p99-ms`), in ms.
    pub p99_bound_ms: Option<f64>,
    /// Server scenario with `--find-max-qps`: every load tried, in the order tried; empty otherwise.
    pub sweep: Vec<SweepPoint>,
    /// Host and device memory the measured system used.
    pub memory: Memory,
    /// The machine, software and host load the result was measured with.
    pub environment: Environment,
    /// Text generation only: tokens, TTFT, TPOT and cost per 1M output tokens. For generation,
    /// "inferences" above are requests (each of `max_tokens` output tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationMetrics>,
    /// The training scenario only: task, data, optimiser, training tokens/s, step losses and cost
    /// per 1M training tokens. For training, "inferences" above are training samples (pairs or
    /// windows), latency is the step time, and `usd_per_million_inferences` is left empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingMetrics>,
    /// The catalog's facts about `instance_type` (vCPUs, memory, accelerator, prices) as checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
    /// Whether the environment matched `instance`: only a matching run is a measurement of that
    /// instance type (the report checks again from `environment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<HardwareCheck>,
}

/// Where this run's instance type and price come from.
#[derive(Debug, Clone)]
pub struct Pricing {
    /// The instance type the run is priced as, if any.
    pub instance_type: Option<String>,
    /// Where it came from: `--instance-type`, `ACCELRT_INSTANCE_TYPE`, `imds` or `unknown`.
    pub instance_type_source: String,
    /// The price per hour used.
    pub price: Option<Price>,
    /// The catalog's record of `instance_type` (required whenever `instance_type` is set, so the
    /// run can be checked against it).
    pub instance: Option<Instance>,
}

impl Pricing {
    /// Whether the price was given explicitly with `--price-per-hour` (the user prices this machine).
    pub fn price_is_explicit(&self) -> bool {
        self.price.as_ref().is_some_and(|p| p.source == "--price-per-hour")
    }

    /// Checks `env` against the instance type before anything runs: a run on hardware that is not
    /// the instance's is refused unless the price was given with `--price-per-hour` (the result is
    /// then kept, marked as not a measurement of that instance type).
    pub fn preflight(&self, env: &Environment) -> Result<Option<HardwareCheck>> {
        let Some(instance) = &self.instance else { return Ok(None) };
        let check = crate::hardware::check(instance, env);
        if !check.matches && !self.price_is_explicit() {
            return Err(BenchError::Invalid(format!(
                "{} ({}) does not match what this run uses: {}. Run on that instance type, drop the instance \
                 type, or price this machine yourself with --price-per-hour (the result is then not counted \
                 as a {} measurement)",
                instance.instance_type,
                self.instance_type_source,
                check.mismatches.join("; "),
                instance.instance_type
            )));
        }
        Ok(Some(check))
    }
}

impl BenchResult {
    /// A result from a measurement, its pricing, the load search's runs and the environment.
    pub fn new(
        m: &Measurement,
        model: &str,
        system: &str,
        pricing: &Pricing,
        sweep: &[Measurement],
        environment: Environment,
        device_bytes: Option<u64>,
    ) -> BenchResult {
        let cost_basis = match (m.scenario, m.p99_bound_ms) {
            (ScenarioKind::Server, Some(b)) if !sweep.is_empty() => {
                format!("highest valid server load found (p99 ≤ {b} ms)")
            }
            (ScenarioKind::Server, Some(b)) => {
                format!("server throughput at {:.1} queries/s (p99 ≤ {b} ms)", m.target_qps.unwrap_or(0.0))
            }
            (ScenarioKind::Offline, _) => "offline throughput".into(),
            (ScenarioKind::Training, _) => "training throughput: $ per 1M training tokens (see `training`)".into(),
            _ => "single-stream throughput (one query at a time)".into(),
        };
        let price_usd_per_hour = pricing.price.as_ref().map(|p| p.usd_per_hour);
        BenchResult {
            schema_version: SCHEMA_VERSION,
            scenario: m.scenario,
            model: model.into(),
            system: system.into(),
            backend: environment.device.clone(),
            batch_size: m.batch_size,
            valid: m.valid,
            invalid_reasons: m.invalid_reasons.clone(),
            throughput_per_s: m.throughput_per_s,
            latency_ms: m.latency_ms,
            queries: m.queries,
            samples: m.samples,
            duration_s: m.duration_s,
            instance_type: pricing.instance_type.clone(),
            instance_type_source: pricing.instance_type_source.clone(),
            price_usd_per_hour,
            price: pricing.price.clone(),
            usd_per_million_inferences: price_usd_per_hour.and_then(|p| usd_per_million(p, m.throughput_per_s)),
            cost_basis,
            target_qps: m.target_qps,
            p99_bound_ms: m.p99_bound_ms,
            sweep: sweep
                .iter()
                .map(|s| SweepPoint {
                    target_qps: s.target_qps.unwrap_or(0.0),
                    throughput_per_s: s.throughput_per_s,
                    p99_ms: s.latency_ms.p99,
                    valid: s.valid,
                })
                .collect(),
            memory: Memory { peak_host_bytes: crate::environment::peak_host_memory_bytes(), device_bytes },
            hardware: pricing.instance.as_ref().map(|i| crate::hardware::check(i, &environment)),
            instance: pricing.instance.clone(),
            environment,
            generation: None,
            training: None,
        }
        .refusing_empty()
    }

    /// Why this result measured nothing, if it did not: no answered query, no sample, or no
    /// measured time. Such a result's zeros are not a measurement (a throughput of 0 and a p99 of
    /// 0 ms would otherwise look valid, and cheapest).
    pub fn empty_reason(&self) -> Option<String> {
        let no_tokens = self.training.as_ref().is_some_and(|t| t.tokens == 0);
        (self.queries == 0 || self.samples == 0 || self.duration_s <= 0.0 || self.duration_s.is_nan() || no_tokens)
            .then(|| {
                let tokens = if no_tokens { ", 0 training tokens" } else { "" };
                format!(
                    "empty measurement: {} queries answered, {} samples{tokens} in {} s (a result needs at least one answered query over a measured time)",
                    self.queries, self.samples, self.duration_s
                )
            })
    }

    /// This result, marked invalid (with the reason, once) when it measured nothing; see
    /// [`empty_reason`](Self::empty_reason). Applied to every result made here and every result
    /// file loaded, so an empty one is never shown as valid nor priced.
    pub fn refusing_empty(mut self) -> BenchResult {
        if let Some(why) = self.empty_reason() {
            self.valid = false;
            if !self.invalid_reasons.iter().any(|r| r.starts_with("empty measurement")) {
                self.invalid_reasons.push(why);
            }
        }
        self
    }

    /// A file name that says what the result is. Every part taken from the result's strings is
    /// cleaned to ASCII letters, digits and dots and bounded to [`MAX_NAME_PART`] characters (plus a
    /// short hash when cut), so the name stays well under file systems' 255-byte limit.
    pub fn file_name(&self) -> String {
        let clean = |s: &str| bounded_name(s, MAX_NAME_PART, |c| c.is_ascii_alphanumeric() || c == '.');
        let stem = format!(
            "{}-{}-{}-{}-b{}-{}-{}",
            clean(&self.system),
            clean(&self.model),
            clean(&self.backend),
            self.scenario,
            self.batch_size,
            clean(self.instance_type.as_deref().unwrap_or("unknown-instance")),
            clean(&self.environment.date.replace(':', ""))
        );
        // The parts together, bounded again: at most 2 × MAX_NAME_PART + 9 + ".json" in all.
        format!(
            "{}.json",
            bounded_name(&stem, 2 * MAX_NAME_PART, |c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        )
    }

    /// Writes the result into `dir` (created if needed) under [`file_name`](Self::file_name) and
    /// returns its path. The file appears whole or not at all (written aside, then renamed), so an
    /// interrupted run never leaves half a result. An existing file of the same name is replaced.
    ///
    /// # Errors
    /// [`BenchError::Io`] naming the directory or file that could not be created, written or renamed.
    pub fn save(&self, dir: &Path) -> Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
        let path = dir.join(self.file_name());
        let partial = dir.join(format!(".{}.partial", self.file_name()));
        let text = serde_json::to_string_pretty(self).expect("results serialise");
        std::fs::write(&partial, text + "\n").map_err(|e| BenchError::io(&partial, e))?;
        std::fs::rename(&partial, &path).map_err(|e| BenchError::io(&path, e))?;
        Ok(path)
    }

    /// Reads a result file, refusing other schema versions with a clear message. A result that
    /// measured nothing is returned marked invalid ([`refusing_empty`](Self::refusing_empty)).
    ///
    /// # Errors
    /// [`BenchError::Io`] when it cannot be read; [`BenchError::File`] when it is over
    /// `limits::MAX_FILE_BYTES`, is not JSON, has no or another `schema_version`, does not match
    /// the schema, or fails [`check`](Self::check).
    pub fn load(path: &Path) -> Result<BenchResult> {
        let text = crate::limits::read_bounded(path, crate::limits::MAX_FILE_BYTES, "result file")?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| BenchError::File { path: path.into(), message: e.to_string() })?;
        match value.get("schema_version").and_then(|v| v.as_u64()) {
            Some(v) if v == SCHEMA_VERSION as u64 => {}
            Some(v) => {
                return Err(BenchError::File {
                    path: path.into(),
                    message: format!("result schema {v} is not supported (this build reads {SCHEMA_VERSION})"),
                })
            }
            None => {
                return Err(BenchError::File {
                    path: path.into(),
                    message: "no schema_version: not an accelrt result".into(),
                })
            }
        }
        let result: BenchResult = serde_json::from_value(value)
            .map_err(|e| BenchError::File { path: path.into(), message: e.to_string() })?;
        result.check().map_err(|message| BenchError::File { path: path.into(), message })?;
        Ok(result.refusing_empty())
    }

    /// Checks every number against the limit of its kind (finite, not negative, a sane size); the
    /// error names the first field that breaks its limit.
    pub fn check(&self) -> std::result::Result<(), String> {
        let opt = |v: Option<f64>| v.unwrap_or(0.0);
        let mut fields: Vec<(String, f64, Limit)> = vec![
            ("batch_size".into(), self.batch_size as f64, Limit::BATCH),
            ("throughput_per_s".into(), self.throughput_per_s, Limit::RATE),
            ("queries".into(), self.queries as f64, Limit::COUNT),
            ("samples".into(), self.samples as f64, Limit::COUNT),
            ("duration_s".into(), self.duration_s, Limit::SECONDS),
            ("usd_per_million_inferences".into(), opt(self.usd_per_million_inferences), Limit::COST),
            ("target_qps".into(), opt(self.target_qps), Limit::RATE),
            ("p99_bound_ms".into(), opt(self.p99_bound_ms), Limit::LATENCY_MS),
        ];
        if let Some(p) = self.price_usd_per_hour {
            fields.push(("price_usd_per_hour".into(), p, Limit::PRICE_PER_HOUR));
        }
        if let Some(p) = &self.price {
            fields.push(("price.usd_per_hour".into(), p.usd_per_hour, Limit::PRICE_PER_HOUR));
        }
        latency_fields(&mut fields, "latency_ms", &self.latency_ms);
        for (i, s) in self.sweep.iter().enumerate() {
            fields.push((format!("sweep[{i}].target_qps"), s.target_qps, Limit::RATE));
            fields.push((format!("sweep[{i}].throughput_per_s"), s.throughput_per_s, Limit::RATE));
            fields.push((format!("sweep[{i}].p99_ms"), s.p99_ms, Limit::LATENCY_MS));
        }
        if let Some(g) = &self.generation {
            fields.extend([
                ("generation.max_tokens".into(), g.max_tokens as f64, Limit::TOKENS),
                ("generation.requests".into(), g.requests as f64, Limit::COUNT),
                ("generation.prompt_tokens_mean".into(), g.prompt_tokens_mean, Limit::COUNT),
                ("generation.output_tokens".into(), g.output_tokens as f64, Limit::COUNT),
                ("generation.output_tokens_per_s".into(), g.output_tokens_per_s, Limit::RATE),
                ("generation.usd_per_million_output_tokens".into(), opt(g.usd_per_million_output_tokens), Limit::COST),
            ]);
            latency_fields(&mut fields, "generation.ttft_ms", &g.ttft_ms);
            latency_fields(&mut fields, "generation.tpot_ms", &g.tpot_ms);
        }
        match (&self.training, self.scenario) {
            (Some(t), ScenarioKind::Training) => {
                fields.extend(t.fields());
                t.check_consistent(self.duration_s, self.price_usd_per_hour)?;
            }
            (None, ScenarioKind::Training) => return Err("a training result without its `training` block".into()),
            (Some(_), other) => return Err(format!("a `training` block on a {other} result")),
            (None, _) => {}
        }
        for (name, value, limit) in fields {
            limit.check(value).map_err(|why| format!("`{name}` {why}"))?;
        }
        Ok(())
    }
}

fn latency_fields(fields: &mut Vec<(String, f64, Limit)>, prefix: &str, l: &Latency) {
    for (name, v) in [
        ("p50", l.p50),
        ("p90", l.p90),
        ("p95", l.p95),
        ("p99", l.p99),
        ("p99.9", l.p999),
        ("max", l.max),
        ("mean", l.mean),
    ] {
        fields.push((format!("{prefix}.{name}"), v, Limit::LATENCY_MS));
    }
}
