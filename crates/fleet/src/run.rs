//! Launching a plan, waiting for its results, and collecting them into one report.

use crate::aws::Aws;
use crate::plan::Plan;
use crate::{ec2, s3, FleetError};
use accelrt_bench::BenchResult;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a run launched: written to `s3://bucket/run_prefix/manifest.json` so that `collect` knows
/// which instance types to expect.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The run's id.
    pub run_id: String,
    /// `prefix/run_id`.
    pub run_prefix: String,
    /// Launch time (UTC, RFC 3339).
    pub started: String,
    /// The instances' deadline in minutes.
    pub max_minutes: u32,
    /// What the run could cost at most.
    pub worst_case_usd: f64,
    /// One entry per instance.
    pub instances: Vec<ManifestInstance>,
}

/// One launched instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestInstance {
    /// e.g. `c7i.xlarge`.
    pub instance_type: String,
    /// `i-…`.
    pub instance_id: String,
    /// The family name.
    pub family: String,
    /// US$/h it was priced at.
    pub usd_per_hour: f64,
}

/// How one instance ended, as far as the tool can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its status object says `done`.
    Done,
    /// Its status object says `failed` (bench.log has the reason).
    Failed,
    /// No status: it was terminated (by the tool at the deadline, by a spot interruption, …)
    /// before it uploaded one.
    NoStatus,
}

/// Terminates `ids`, tags them with why, and returns `err` with a note of what was done: every
/// failure after a launch goes through here, so nothing launched is left running by the tool.
fn terminate_after(aws: &Aws, ids: &[String], why: &str, err: FleetError) -> FleetError {
    if ids.is_empty() {
        return err;
    }
    let _ = ec2::create_tags(aws, ids, &[("accelrt:terminated-by".into(), format!("accelrt fleet: {why}"))]);
    match ec2::terminate_instances(aws, ids) {
        Ok(()) => FleetError::Stopped { cause: Box::new(err), terminated: ids.to_vec(), left_running: vec![] },
        Err(e) => FleetError::Stopped {
            cause: Box::new(err),
            terminated: vec![],
            left_running: ids.iter().map(|i| format!("{i} ({e})")).collect(),
        },
    }
}

/// Launches every instance of the plan, one request each, and writes the manifest. If any launch
/// (or the manifest) fails, the instances already launched are terminated before the error returns.
pub fn launch(aws: &Aws, plan: &Plan) -> Result<Manifest, FleetError> {
    let mut launched: Vec<(String, String)> = Vec::new();
    let ids = |l: &[(String, String)]| l.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>();
    for i in &plan.instances {
        if accelrt_bench::interrupt::requested() {
            return Err(terminate_after(aws, &ids(&launched), "interrupted", FleetError::Interrupted));
        }
        match ec2::run_instance(aws, &i.spec) {
            Ok(id) => launched.push((i.instance_type.clone(), id)),
            Err(e) => return Err(terminate_after(aws, &ids(&launched), "a later launch failed", e)),
        }
    }
    let manifest = Manifest {
        run_id: plan.run_id.clone(),
        run_prefix: plan.run_prefix.clone(),
        started: chrono::Utc::now().to_rfc3339(),
        max_minutes: plan.max_minutes,
        worst_case_usd: plan.worst_case_usd,
        instances: plan
            .instances
            .iter()
            .zip(&launched)
            .map(|(p, (_, id))| ManifestInstance {
                instance_type: p.instance_type.clone(),
                instance_id: id.clone(),
                family: p.family.name().into(),
                usd_per_hour: p.usd_per_hour,
            })
            .collect(),
    };
    let body = serde_json::to_vec_pretty(&manifest).expect("the manifest serialises");
    if let Err(e) = s3::put(aws, &plan.bucket, &format!("{}/manifest.json", plan.run_prefix), &body, "application/json")
    {
        return Err(terminate_after(aws, &ids(&launched), "the manifest could not be written", e));
    }
    Ok(manifest)
}

/// The statuses uploaded so far under the run, by instance type.
fn statuses(aws: &Aws, bucket: &str, manifest: &Manifest) -> Result<Vec<(String, Outcome)>, FleetError> {
    let mut out = Vec::new();
    let keys = s3::list(aws, bucket, &format!("{}/", manifest.run_prefix))?;
    for i in &manifest.instances {
        let key = format!("{}/{}/status", manifest.run_prefix, i.instance_type);
        if keys.iter().any(|(k, _)| *k == key) {
            let body = s3::get(aws, bucket, &key)?;
            let outcome = if String::from_utf8_lossy(&body).trim() == "done" { Outcome::Done } else { Outcome::Failed };
            out.push((i.instance_type.clone(), outcome));
        }
    }
    Ok(out)
}

/// Waits until every instance has uploaded its status or is terminated, polling every `poll`,
/// then terminates whatever is still running (an instance that uploaded but did not power off).
/// Past `deadline`, or on Ctrl-C ([`accelrt_bench::interrupt`]), or on any error, every instance
/// is terminated first. `progress` gets one line per change.
pub fn wait(
    aws: &Aws,
    bucket: &str,
    manifest: &Manifest,
    deadline: Instant,
    poll: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<(String, Outcome)>, FleetError> {
    let all: Vec<String> = manifest.instances.iter().map(|i| i.instance_id.clone()).collect();
    let mut last = String::new();
    loop {
        if accelrt_bench::interrupt::requested() {
            return Err(terminate_after(aws, &all, "interrupted", FleetError::Interrupted));
        }
        let step = (|| -> Result<Option<Vec<(String, Outcome)>>, FleetError> {
            let states = ec2::describe_instances(aws, &all)?;
            let done = statuses(aws, bucket, manifest)?;
            let state_of =
                |id: &str| states.iter().find(|s| s.instance_id == id).map(|s| s.state.as_str()).unwrap_or("unknown");
            let line = manifest
                .instances
                .iter()
                .map(|i| {
                    let status = done.iter().find(|(t, _)| *t == i.instance_type).map(|(_, o)| match o {
                        Outcome::Done => "results uploaded",
                        Outcome::Failed => "failed (see bench.log)",
                        Outcome::NoStatus => "no status",
                    });
                    format!("{} {}: {}", i.instance_type, i.instance_id, status.unwrap_or(state_of(&i.instance_id)))
                })
                .collect::<Vec<_>>()
                .join("; ");
            if line != last {
                progress(&line);
                last = line;
            }
            let finished = manifest
                .instances
                .iter()
                .all(|i| done.iter().any(|(t, _)| *t == i.instance_type) || state_of(&i.instance_id) == "terminated");
            if !finished {
                return Ok(None);
            }
            let running: Vec<String> =
                all.iter().filter(|id| !matches!(state_of(id), "terminated" | "shutting-down")).cloned().collect();
            if !running.is_empty() {
                ec2::create_tags(
                    aws,
                    &running,
                    &[("accelrt:terminated-by".into(), "accelrt fleet: run finished".into())],
                )?;
                ec2::terminate_instances(aws, &running)?;
            }
            Ok(Some(
                manifest
                    .instances
                    .iter()
                    .map(|i| {
                        let o = done.iter().find(|(t, _)| *t == i.instance_type).map(|(_, o)| o.clone());
                        (i.instance_type.clone(), o.unwrap_or(Outcome::NoStatus))
                    })
                    .collect(),
            ))
        })();
        match step {
            Ok(Some(outcomes)) => return Ok(outcomes),
            Ok(None) => {}
            Err(e) => return Err(terminate_after(aws, &all, "the tool failed while waiting", e)),
        }
        if Instant::now() >= deadline {
            let e = FleetError::Deadline(manifest.max_minutes);
            return Err(terminate_after(aws, &all, "deadline", e));
        }
        // Sleep in short steps so Ctrl-C is answered within a second.
        let until = Instant::now() + poll;
        while Instant::now() < until && !accelrt_bench::interrupt::requested() {
            std::thread::sleep(Duration::from_millis(200).min(poll));
        }
    }
}

/// What `collect` found and wrote.
#[derive(Debug)]
pub struct Collected {
    /// Result files written under `out/results/<instance type>/`.
    pub result_files: Vec<PathBuf>,
    /// Each instance type's outcome (from the manifest, when there is one; else every type with a
    /// status or results).
    pub outcomes: Vec<(String, Outcome)>,
    /// `out/report.md`.
    pub report: PathBuf,
}

/// `true` for the `<instance type>` and `<file>.json` parts collect accepts from bucket keys: a
/// key naming `..` or a path is never turned into a local path.
fn safe_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s != "."
        && s != ".."
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(&c))
}

/// Downloads a run's results (`s3://bucket/run_prefix/<type>/results/*.json`) and logs into
/// `out`, checks every result file (schema, validity) and writes the merged report with
/// `accelrt report`'s writer (`out/report.md`, `out/report.html`).
pub fn collect(
    aws: &Aws,
    bucket: &str,
    run_prefix: &str,
    out: &Path,
    p99_ms: Option<f64>,
) -> Result<Collected, FleetError> {
    let run_prefix = run_prefix.trim_matches('/');
    let keys = s3::list(aws, bucket, &format!("{run_prefix}/"))?;
    if keys.is_empty() {
        return Err(FleetError::Input(format!(
            "nothing under s3://{bucket}/{run_prefix}/ (wrong --run-id or --prefix?)"
        )));
    }
    let manifest: Option<Manifest> = if keys.iter().any(|(k, _)| *k == format!("{run_prefix}/manifest.json")) {
        let body = s3::get(aws, bucket, &format!("{run_prefix}/manifest.json"))?;
        Some(serde_json::from_slice(&body).map_err(|e| FleetError::File {
            path: format!("s3://{bucket}/{run_prefix}/manifest.json"),
            message: e.to_string(),
        })?)
    } else {
        None
    };
    let io = |p: &Path, e: std::io::Error| FleetError::File { path: p.display().to_string(), message: e.to_string() };
    let mut result_files = Vec::new();
    let mut results = Vec::new();
    let mut statuses: Vec<(String, Outcome)> = Vec::new();
    for (key, size) in &keys {
        let rel = &key[run_prefix.len() + 1..];
        let parts: Vec<&str> = rel.split('/').collect();
        match parts.as_slice() {
            [t, "results", file] if safe_part(t) && safe_part(file) && file.ends_with(".json") => {
                if *size > accelrt_bench::limits::MAX_FILE_BYTES {
                    return Err(FleetError::File {
                        path: format!("s3://{bucket}/{key}"),
                        message: format!("{size} bytes: too large for a result file"),
                    });
                }
                let dir = out.join("results").join(t);
                std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
                let path = dir.join(file);
                std::fs::write(&path, s3::get(aws, bucket, key)?).map_err(|e| io(&path, e))?;
                results.push(BenchResult::load(&path)?);
                result_files.push(path);
            }
            [t, "bench.log"] if safe_part(t) => {
                let dir = out.join("logs");
                std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
                let path = dir.join(format!("{t}.log"));
                std::fs::write(&path, s3::get(aws, bucket, key)?).map_err(|e| io(&path, e))?;
            }
            [t, "status"] if safe_part(t) => {
                let body = s3::get(aws, bucket, key)?;
                let o = if String::from_utf8_lossy(&body).trim() == "done" { Outcome::Done } else { Outcome::Failed };
                statuses.push((t.to_string(), o));
            }
            _ => {}
        }
    }
    let types: Vec<String> = match &manifest {
        Some(m) => m.instances.iter().map(|i| i.instance_type.clone()).collect(),
        None => {
            let mut t: Vec<String> = statuses.iter().map(|(t, _)| t.clone()).collect();
            for f in &result_files {
                if let Some(name) = f.parent().and_then(|p| p.file_name()) {
                    t.push(name.to_string_lossy().into_owned());
                }
            }
            t.sort();
            t.dedup();
            t
        }
    };
    let outcomes = types
        .into_iter()
        .map(|t| {
            let o = statuses.iter().find(|(s, _)| *s == t).map(|(_, o)| o.clone()).unwrap_or(Outcome::NoStatus);
            (t, o)
        })
        .collect();
    if results.is_empty() {
        return Err(FleetError::NoResults { location: format!("s3://{bucket}/{run_prefix}/"), outcomes });
    }
    let options = accelrt_bench::report::ReportOptions { p99_ms, ..Default::default() };
    let report = accelrt_bench::report::write_report_with(&results, out, &options)?;
    Ok(Collected { result_files, outcomes, report })
}
