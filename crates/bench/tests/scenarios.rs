//! Scenario logic on a virtual clock with a fake workload of known service times, so throughput and
//! percentiles are exact (no timing in these tests).

use accelrt_bench::clock::{Clock, VirtualClock};
use accelrt_bench::progress::Progress;
use accelrt_bench::scenario::{self, RunRules, ScenarioKind};
use accelrt_bench::stats::{percentile, Latency};
use accelrt_bench::workload::Workload;
use std::sync::Arc;
use std::time::Duration;

/// Each query advances the clock by `service(query index, samples)`.
struct Fake<F: FnMut(usize, usize) -> Duration> {
    clock: Arc<VirtualClock>,
    service: F,
    calls: usize,
    samples: Vec<usize>,
}

impl<F: FnMut(usize, usize) -> Duration> Workload for Fake<F> {
    fn run(&mut self, _first: usize, count: usize) -> accelrt_bench::Result<()> {
        let d = (self.service)(self.calls, count);
        self.calls += 1;
        self.samples.push(count);
        self.clock.advance(d);
        Ok(())
    }
}

fn fake<F: FnMut(usize, usize) -> Duration>(clock: &Arc<VirtualClock>, service: F) -> Fake<F> {
    Fake { clock: clock.clone(), service, calls: 0, samples: vec![] }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn rules(min_s: u64, min_queries: usize) -> RunRules {
    RunRules { warmup: ms(100), min_duration: Duration::from_secs(min_s), min_queries }
}

#[test]
fn offline_throughput_is_samples_over_time() {
    let clock = Arc::new(VirtualClock::new());
    let mut w = fake(&clock, |_, _| ms(10));
    let m = scenario::offline(&mut w, clock.as_ref(), &rules(2, 10), 4, &Progress::hidden()).unwrap();
    assert_eq!(m.scenario, ScenarioKind::Offline);
    assert_eq!(m.queries, 200); // 2 s of 10 ms queries
    assert_eq!(m.samples, 800);
    assert!((m.throughput_per_s - 400.0).abs() < 1e-9, "{}", m.throughput_per_s);
    assert_eq!(m.latency_ms.p50, 10.0);
    assert!(m.valid && m.invalid_reasons.is_empty());
    // Warm-up queries ran but were not recorded.
    assert_eq!(w.calls, 210);
}

#[test]
fn min_queries_extends_a_run_past_min_duration() {
    let clock = Arc::new(VirtualClock::new());
    let mut w = fake(&clock, |_, _| ms(100));
    let m = scenario::offline(&mut w, clock.as_ref(), &rules(1, 50), 1, &Progress::hidden()).unwrap();
    assert_eq!(m.queries, 50);
    assert!((m.duration_s - 5.0).abs() < 1e-9);
}

#[test]
fn single_stream_percentiles_are_exact() {
    let clock = Arc::new(VirtualClock::new());
    // After one warm-up query, queries take 1, 2, …, 100 ms in turn.
    let mut w = fake(&clock, |i, n| {
        assert_eq!(n, 1, "single-stream issues one sample per query");
        if i == 0 {
            ms(100)
        } else {
            ms(((i - 1) % 100 + 1) as u64)
        }
    });
    let r = RunRules { warmup: ms(1), min_duration: Duration::ZERO, min_queries: 100 };
    let m = scenario::single_stream(&mut w, clock.as_ref(), &r, &Progress::hidden()).unwrap();
    assert_eq!(m.queries, 100);
    let l = m.latency_ms;
    assert_eq!((l.p50, l.p90, l.p95, l.p99, l.max), (50.0, 90.0, 95.0, 99.0, 100.0));
    assert!((l.mean - 50.5).abs() < 1e-9);
    assert!((m.throughput_per_s - 100.0 / 5.05).abs() < 1e-9);
}

#[test]
fn server_under_light_load_is_valid_with_latency_near_service_time() {
    let clock = Arc::new(VirtualClock::new());
    let mut w = fake(&clock, |_, n| ms(1) * n as u32);
    let m = scenario::server(&mut w, clock.as_ref(), &rules(10, 100), 8, 50.0, 20.0, 7, &Progress::hidden()).unwrap();
    assert!(m.valid, "{:?}", m.invalid_reasons);
    assert!((450..=550).contains(&m.samples), "about 50 qps × 10 s, got {}", m.samples);
    assert!(m.latency_ms.p50 >= 1.0 && m.latency_ms.p50 < 2.0, "{:?}", m.latency_ms);
    assert!((m.throughput_per_s - 50.0).abs() < 5.0, "{}", m.throughput_per_s);
    assert_eq!(m.target_qps, Some(50.0));
}

#[test]
fn server_batches_what_has_arrived() {
    let clock = Arc::new(VirtualClock::new());
    // 30 ms per batch whatever its size: at 100 qps several queries arrive during each batch.
    let mut w = fake(&clock, |_, _| ms(30));
    let m = scenario::server(&mut w, clock.as_ref(), &rules(5, 10), 16, 100.0, 100.0, 3, &Progress::hidden()).unwrap();
    assert!(m.valid, "{:?}", m.invalid_reasons);
    assert!(w.samples.iter().any(|&n| n > 1), "dynamic batches form");
    assert!(w.samples.iter().all(|&n| n <= 16), "never above the batch limit");
}

#[test]
fn overloaded_server_runs_are_flagged_invalid() {
    let clock = Arc::new(VirtualClock::new());
    let mut w = fake(&clock, |_, _| ms(50));
    // One sample per batch at 50 ms: capacity 20/s, offered 100/s.
    let m = scenario::server(&mut w, clock.as_ref(), &rules(5, 10), 1, 100.0, 100.0, 1, &Progress::hidden()).unwrap();
    assert!(!m.valid);
    assert!(
        m.invalid_reasons.iter().any(|r| r.contains("exceeds the bound") || r.contains("could not keep up")),
        "{:?}",
        m.invalid_reasons
    );
}

#[test]
fn find_max_qps_brackets_the_capacity() {
    let clock = Arc::new(VirtualClock::new());
    // 5 ms + 1 ms per sample, batches up to 8: capacity ≈ 8 / 13 ms ≈ 615 samples/s.
    let mut w = fake(&clock, |_, n| ms(5) + ms(1) * n as u32);
    let (best, sweep) = scenario::find_max_qps(&mut w, clock.as_ref(), &rules(5, 10), 8, 100.0, 50.0, 8, 11).unwrap();
    let best = best.expect("low loads are valid");
    assert!(best.valid);
    assert_eq!(sweep.len(), 8);
    assert!(sweep.windows(2).all(|p| p[0].target_qps <= p[1].target_qps), "sorted by load");
    let lowest_invalid = sweep.iter().filter(|m| !m.valid).map(|m| m.target_qps.unwrap()).fold(f64::INFINITY, f64::min);
    assert!(best.target_qps.unwrap() < lowest_invalid);
    assert!(best.target_qps.unwrap() > 200.0 && lowest_invalid < 1000.0, "{best:?} / {lowest_invalid}");
}

#[test]
fn bad_scenario_arguments_are_errors() {
    let clock = VirtualClock::new();
    let mut w = fake(&Arc::new(VirtualClock::new()), |_, _| ms(1));
    assert!(scenario::offline(&mut w, &clock, &rules(1, 1), 0, &Progress::hidden()).is_err());
    assert!(scenario::server(&mut w, &clock, &rules(1, 1), 1, 0.0, 10.0, 1, &Progress::hidden()).is_err());
    assert!(scenario::find_max_qps(&mut w, &clock, &rules(1, 1), 1, f64::NAN, 10.0, 2, 1).is_err());
    assert_eq!(clock.now(), Duration::ZERO);
}

#[test]
fn nearest_rank_percentiles() {
    let s: Vec<Duration> = (1..=10).map(ms).collect();
    assert_eq!(percentile(&s, 50.0), ms(5));
    assert_eq!(percentile(&s, 99.0), ms(10));
    assert_eq!(percentile(&s, 0.0), ms(1));
    assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    let l = Latency::from_samples(&[ms(3), ms(1), ms(2)]);
    assert_eq!((l.p50, l.max, l.mean), (2.0, 3.0, 2.0));
}
