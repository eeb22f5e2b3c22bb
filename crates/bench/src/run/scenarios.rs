//! Driving one workload through every requested inference scenario (offline, single-stream,
//! server with its load search), with the host's load probed around each.

use super::BenchConfig;
use crate::clock::RealClock;
use crate::environment::{HostLoad, LoadProbe};
use crate::progress::Progress;
use crate::scenario::{self, Measurement, RunRules, ScenarioKind};
use crate::workload::{RequestStats, Workload};
use crate::{BenchError, Result};

pub(super) fn rules_for(config: &BenchConfig, kind: ScenarioKind) -> RunRules {
    config.rules.unwrap_or_else(|| RunRules::mlperf(kind))
}

/// What one scenario produced: its measurement, the server's sweep, (generation) the requests, and
/// the host's load while it ran.
pub(crate) struct ScenarioOutput {
    pub m: Measurement,
    pub sweep: Vec<Measurement>,
    pub requests: Vec<RequestStats>,
    pub load: Option<HostLoad>,
}

/// Every requested scenario on one workload; `emit` gets each as soon as it completes. Returns
/// whether Ctrl-C stopped the run (the scenario in flight is then dropped).
pub(super) fn run_scenarios(
    config: &BenchConfig,
    w: &mut dyn Workload,
    system: &str,
    pids: &[u32],
    emit: &mut dyn FnMut(ScenarioOutput) -> Result<()>,
) -> Result<bool> {
    let clock = RealClock::new();
    let mut offline_rate = None;
    for &kind in &config.scenarios {
        let probe = LoadProbe::start(pids.to_vec());
        match run_scenario(config, w, system, kind, &clock, offline_rate) {
            Ok((m, sweep)) => {
                if m.scenario == ScenarioKind::Offline {
                    offline_rate = Some(m.throughput_per_s);
                }
                let requests = w.take_requests();
                emit(ScenarioOutput { m, sweep, requests, load: probe.finish(true) })?;
            }
            Err(BenchError::Interrupted) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

fn run_scenario(
    config: &BenchConfig,
    w: &mut dyn Workload,
    system: &str,
    kind: ScenarioKind,
    clock: &RealClock,
    offline_rate: Option<f64>,
) -> Result<(Measurement, Vec<Measurement>)> {
    let rules = rules_for(config, kind);
    let label = format!("{system} {kind}");
    match kind {
        ScenarioKind::Training => {
            Err(BenchError::Invalid("the training scenario runs on its own (crate::run::training)".into()))
        }
        ScenarioKind::Offline => {
            let progress = Progress::new(&label, &rules, config.progress);
            Ok((scenario::offline(w, clock, &rules, config.batch_size, &progress)?, vec![]))
        }
        ScenarioKind::SingleStream => {
            let progress = Progress::new(&label, &rules, config.progress);
            Ok((scenario::single_stream(w, clock, &rules, &progress)?, vec![]))
        }
        ScenarioKind::Server => {
            let bound = config.p99_ms.expect("validated");
            if !config.find_max_qps {
                let qps = config.qps.expect("validated");
                let progress = Progress::new(&format!("{label} {qps:.1}/s"), &rules, config.progress);
                let m = scenario::server(w, clock, &rules, config.batch_size, qps, bound, config.seed, &progress)?;
                return Ok((m, vec![]));
            }
            // Start from the offline rate: no arrival rate above it can be sustained for long.
            let upper = match offline_rate {
                Some(rate) => rate,
                None => {
                    let quick = RunRules {
                        min_queries: 8,
                        min_duration: rules.min_duration.min(std::time::Duration::from_secs(3)),
                        ..rules
                    };
                    let progress = Progress::new(&format!("{label} (offline rate)"), &quick, config.progress);
                    scenario::offline(w, clock, &quick, config.batch_size, &progress)?.throughput_per_s
                }
            };
            let mut step = 0;
            let (best, sweep) = scenario::search_max_qps(upper, config.search_steps, |qps| {
                step += 1;
                let label = format!("{label} {step}/{} {qps:.1}/s", config.search_steps);
                let progress = Progress::new(&label, &rules, config.progress);
                scenario::server(w, clock, &rules, config.batch_size, qps, bound, config.seed, &progress)
            })?;
            // With no valid load, report the lowest one tried (invalid) so the failure is visible.
            let shown = best.or_else(|| sweep.first().cloned()).expect("at least one step");
            Ok((shown, sweep))
        }
    }
}
