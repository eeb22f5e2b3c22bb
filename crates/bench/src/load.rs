//! The open-loop load of the server scenario, whatever it is sent to (a workload in this process,
//! or an accelrt server over HTTP): Poisson arrivals, the rule for giving up on a load the system
//! cannot keep up with, and the search for the highest load whose run is valid.

use crate::scenario::{Measurement, RunRules};
use crate::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp};
use std::time::Duration;

/// The most arrivals one server-scenario run may plan (`--qps` × `--min-duration`, or
/// `--min-queries` if larger): each is kept in memory for the run (16 bytes, and its latency after),
/// so a plan beyond this is refused before anything is allocated.
pub const MAX_ARRIVALS: usize = 10_000_000;

/// When each query of a server-scenario run arrives, and when the run gives up.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrivals {
    /// Arrival times from the run's start, in order.
    pub at: Vec<Duration>,
    /// From the run's start: past this, queries still unanswered are abandoned and the run is
    /// invalid. Twice the last arrival plus the minimum duration: an overloaded system would
    /// otherwise take forever to drain its queue.
    pub give_up: Duration,
}

impl Arrivals {
    /// Poisson arrivals at `qps` per second (exponential gaps, seeded: the same seed gives the same
    /// schedule in-process and over HTTP), until both the rules' minimum query count (at least 1)
    /// and minimum duration are covered. `qps` must be finite and > 0.
    ///
    /// Errors: [`crate::BenchError::Invalid`] for a load that is not > 0, or a plan of more than
    /// [`MAX_ARRIVALS`] arrivals (refused before they are generated).
    pub fn poisson(qps: f64, rules: &RunRules, seed: u64) -> Result<Arrivals> {
        let gap = Exp::new(qps)
            .ok()
            .filter(|_| qps.is_finite() && qps > 0.0)
            .ok_or_else(|| crate::BenchError::Invalid(format!("the server scenario needs a load > 0, got {qps}")))?;
        let too_many = || {
            crate::BenchError::Invalid(format!(
                "the server scenario at {qps} queries/s for at least {} s and {} queries would plan more than \
                 {MAX_ARRIVALS} arrivals, the limit of one run: lower --qps, --min-duration or --min-queries",
                rules.min_duration.as_secs_f64(),
                rules.min_queries
            ))
        };
        let expected = (qps * rules.min_duration.as_secs_f64()).max(rules.min_queries as f64);
        if expected > MAX_ARRIVALS as f64 {
            return Err(too_many());
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut t = 0.0f64;
        let mut at = Vec::with_capacity(expected as usize + 1);
        while at.len() < rules.min_queries.max(1) || t < rules.min_duration.as_secs_f64() {
            if at.len() >= MAX_ARRIVALS {
                return Err(too_many());
            }
            t += gap.sample(&mut rng);
            at.push(Duration::from_secs_f64(t));
        }
        let give_up = Duration::from_secs_f64(2.0 * t + rules.min_duration.as_secs_f64());
        Ok(Arrivals { at, give_up })
    }

    /// Why a run that gave up is invalid: `answered` of the planned queries were answered, and
    /// (shown when not 0) `failed` failed and `unsent` were never sent; the rest were still out.
    pub fn gave_up(&self, qps: f64, answered: usize, failed: usize, unsent: usize) -> String {
        let mut counts = format!("{answered} of {} answered", self.at.len());
        if failed > 0 {
            counts.push_str(&format!(", {failed} failed"));
        }
        if unsent > 0 {
            counts.push_str(&format!(", {unsent} not sent"));
        }
        format!("could not keep up with {qps:.1} queries/s ({counts})")
    }
}

/// The arrival rates of the search for the highest valid server load: start at an upper estimate
/// (e.g. the offline throughput), double while runs stay valid, then bisect between the best valid
/// and the lowest invalid load.
#[derive(Debug, Clone)]
pub struct LoadSearch {
    /// The highest load seen valid (0: none yet).
    lo: f64,
    /// The lowest load seen invalid.
    hi: Option<f64>,
    qps: f64,
}

impl LoadSearch {
    /// Starts at `upper` queries/s (finite, > 0).
    pub fn new(upper: f64) -> Result<LoadSearch> {
        if !(upper.is_finite() && upper > 0.0) {
            return Err(crate::BenchError::Invalid(format!("the search needs a positive starting load, got {upper}")));
        }
        Ok(LoadSearch { lo: 0.0, hi: None, qps: upper })
    }

    /// The load to try next.
    pub fn load(&self) -> f64 {
        self.qps
    }

    /// Takes the outcome of a run at `load()` and picks the next load.
    pub fn record(&mut self, valid: bool) {
        if valid {
            self.lo = self.qps;
        } else {
            self.hi = Some(self.hi.map_or(self.qps, |h| h.min(self.qps)));
        }
        self.qps = match self.hi {
            None => self.qps * 2.0,
            Some(h) if self.lo == 0.0 => h / 2.0,
            Some(h) => (self.lo + h) / 2.0,
        };
    }
}

/// Every run of a load search, each with what its runner kept beside the measurement (`T`: e.g.
/// the run's per-request records), in order of load.
#[derive(Debug, Clone)]
pub struct Sweep<T> {
    runs: Vec<(Measurement, T)>,
    /// Index into `runs` of the valid run with the highest throughput (the first such run tried).
    best: Option<usize>,
}

impl<T> Sweep<T> {
    /// The sweep of these runs (in any order; their loads distinct and finite): the best is the
    /// valid run with the highest throughput, ties going to the run that comes first.
    pub fn new(mut runs: Vec<(Measurement, T)>) -> Sweep<T> {
        let mut best: Option<usize> = None;
        for (i, (m, _)) in runs.iter().enumerate() {
            if m.valid && best.is_none_or(|b| m.throughput_per_s > runs[b].0.throughput_per_s) {
                best = Some(i);
            }
        }
        let best_load = best.map(|i| runs[i].0.target_qps);
        runs.sort_by(|a, b| a.0.target_qps.partial_cmp(&b.0.target_qps).expect("finite loads"));
        let best = best_load.map(|q| runs.iter().position(|(m, _)| m.target_qps == q).expect("still there"));
        Sweep { runs, best }
    }

    /// The valid run with the highest throughput, if any run was valid.
    pub fn best(&self) -> Option<&(Measurement, T)> {
        self.best.map(|i| &self.runs[i])
    }

    /// The run to report: the best valid one, or (none valid) the lowest load tried, so the
    /// failure shows; and every run's measurement in order of load (for latency-vs-load curves).
    pub fn into_shown(mut self) -> ((Measurement, T), Vec<Measurement>) {
        let all = self.measurements();
        // Runs are in order of load: the first is the lowest.
        let shown = self.runs.swap_remove(self.best.unwrap_or(0));
        (shown, all)
    }

    /// Every run's measurement, in order of load.
    pub fn measurements(&self) -> Vec<Measurement> {
        self.runs.iter().map(|(m, _)| m.clone()).collect()
    }
}

/// Runs `steps` (≥ 1) server-scenario runs at the loads of a [`LoadSearch`] from `upper`:
/// `run_at(step, qps)` runs one (step counts from 0) and returns its measurement and what else it
/// keeps. (An async runner steps a [`LoadSearch`] itself and ends with [`Sweep::new`].)
pub fn search<T>(
    upper: f64,
    steps: usize,
    mut run_at: impl FnMut(usize, f64) -> Result<(Measurement, T)>,
) -> Result<Sweep<T>> {
    let mut search = LoadSearch::new(upper)?;
    let mut runs: Vec<(Measurement, T)> = Vec::new();
    for step in 0..steps.max(1) {
        let (m, kept) = run_at(step, search.load())?;
        search.record(m.valid);
        runs.push((m, kept));
    }
    Ok(Sweep::new(runs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ScenarioKind;
    use crate::stats::Latency;

    fn rules(min_queries: usize, min_secs: u64) -> RunRules {
        RunRules { warmup: Duration::ZERO, min_duration: Duration::from_secs(min_secs), min_queries }
    }

    #[test]
    fn arrivals_cover_the_rules_repeat_by_seed_and_give_up_after_twice_the_last() {
        let a = Arrivals::poisson(50.0, &rules(10, 2), 7).unwrap();
        assert!(a.at.len() >= 10 && *a.at.last().unwrap() >= Duration::from_secs(2));
        assert!(a.at.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(a.give_up, *a.at.last().unwrap() * 2 + Duration::from_secs(2));
        assert_eq!(a, Arrivals::poisson(50.0, &rules(10, 2), 7).unwrap());
        assert_ne!(a, Arrivals::poisson(50.0, &rules(10, 2), 8).unwrap());
        assert!(Arrivals::poisson(0.0, &rules(1, 1), 1).is_err());
        assert!(Arrivals::poisson(f64::NAN, &rules(1, 1), 1).is_err());
    }

    /// A plan of more arrivals than the limit is refused before any is generated (this would be
    /// 160 GB), naming the limit; one at the limit is not.
    #[test]
    fn a_plan_of_more_arrivals_than_the_limit_is_refused_before_allocating() {
        let err = Arrivals::poisson(1e9, &rules(1, 10), 1).unwrap_err().to_string();
        assert!(err.contains(&MAX_ARRIVALS.to_string()) && err.contains("--qps"), "{err}");
        assert!(Arrivals::poisson(1.0, &rules(MAX_ARRIVALS + 1, 0), 1).is_err());
        assert!(Arrivals::poisson(1e6, &rules(1, 11), 1).is_err());
        let a = Arrivals::poisson(1e5, &rules(1, 1), 1).unwrap();
        assert!(a.at.len() > 90_000 && a.at.len() < 110_000, "{}", a.at.len());
    }

    #[test]
    fn giving_up_counts_answered_failed_and_unsent_apart() {
        let a = Arrivals::poisson(10.0, &rules(10, 0), 1).unwrap();
        let n = a.at.len();
        assert_eq!(a.gave_up(10.0, 3, 0, 0), format!("could not keep up with 10.0 queries/s (3 of {n} answered)"));
        assert_eq!(
            a.gave_up(10.0, 0, 4, 5),
            format!("could not keep up with 10.0 queries/s (0 of {n} answered, 4 failed, 5 not sent)")
        );
    }

    fn run(qps: f64, throughput: f64, valid: bool) -> (Measurement, f64) {
        let m = Measurement {
            scenario: ScenarioKind::Server,
            batch_size: 1,
            queries: 1,
            samples: 1,
            duration_s: 1.0,
            throughput_per_s: throughput,
            latency_ms: Latency::from_samples(&[Duration::from_millis(1)]),
            valid,
            invalid_reasons: vec![],
            target_qps: Some(qps),
            p99_bound_ms: Some(10.0),
        };
        (m, qps)
    }

    #[test]
    fn the_sweep_shows_the_best_valid_run_or_else_the_lowest_load() {
        let ((m, kept), all) =
            Sweep::new(vec![run(8.0, 7.0, true), run(16.0, 9.0, false), run(4.0, 4.0, true)]).into_shown();
        assert_eq!((m.target_qps, kept), (Some(8.0), 8.0));
        assert_eq!(all.iter().map(|m| m.target_qps.unwrap()).collect::<Vec<_>>(), [4.0, 8.0, 16.0]);
        let ((m, _), _) = Sweep::new(vec![run(8.0, 7.0, false), run(2.0, 2.0, false)]).into_shown();
        assert_eq!(m.target_qps, Some(2.0));
    }
}
