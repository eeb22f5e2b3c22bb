//! Progress of one scenario, with an estimate of the time left: a bar on a terminal, one line per
//! interval otherwise (a log, a pipe, CI), nothing with `--no-progress`.
//!
//! A scenario ends when it has run for the minimum duration **and** completed the minimum number of
//! queries, so its progress is the smaller of the two fractions, and the time left the larger of the
//! two remainders (the query remainder estimated from the rate so far).

use crate::scenario::RunRules;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

/// How often a line is written when stderr is not a terminal.
pub const LINE_INTERVAL: Duration = Duration::from_secs(5);

/// Where a scenario stands: the fraction done (0 to 1) and the estimated time left, from the time
/// measured so far and the queries completed.
pub fn estimate(rules: &RunRules, elapsed: Duration, queries: usize) -> (f64, Duration) {
    let min_s = rules.min_duration.as_secs_f64();
    let t = elapsed.as_secs_f64();
    let time_fraction = if min_s > 0.0 { (t / min_s).min(1.0) } else { 1.0 };
    let query_fraction = if rules.min_queries > 0 { (queries as f64 / rules.min_queries as f64).min(1.0) } else { 1.0 };
    let time_left = (min_s - t).max(0.0);
    let queries_left = rules.min_queries.saturating_sub(queries);
    let query_time_left = match (queries_left, queries) {
        (0, _) => 0.0,
        // No query finished yet: at least the rest of the minimum duration; unknown beyond.
        (_, 0) => 0.0,
        (n, done) => n as f64 * t / done as f64,
    };
    (time_fraction.min(query_fraction), Duration::from_secs_f64(time_left.max(query_time_left)))
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 90.0 {
        format!("{:.0} min {:02.0} s", (s / 60.0).floor(), (s % 60.0).floor())
    } else if s < 10.0 && (s - s.round()).abs() >= 0.05 {
        format!("{s:.1} s")
    } else {
        format!("{s:.0} s")
    }
}

enum Mode {
    Off,
    Bar(ProgressBar),
    Lines { out: Mutex<Box<dyn Write + Send>>, interval: Duration, last: Mutex<Option<Duration>> },
}

/// The progress display of one scenario run.
pub struct Progress {
    label: String,
    rules: RunRules,
    mode: Mode,
    last: Mutex<(Duration, usize)>,
    /// Queries that failed, and arrivals never sent (shown when not 0).
    unanswered: Mutex<(usize, usize)>,
}

impl Progress {
    /// A bar on stderr when it is a terminal, else a line every [`LINE_INTERVAL`]; nothing when
    /// `enabled` is false.
    pub fn new(label: &str, rules: &RunRules, enabled: bool) -> Progress {
        if !enabled {
            return Progress::hidden();
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(1000);
            bar.set_style(
                ProgressStyle::with_template("{prefix:>24} [{bar:30}] {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar.set_message(format!("warming up {}", seconds(rules.warmup)));
            return Progress::with_mode(label, rules, Mode::Bar(bar));
        }
        Progress::lines(label, rules, Box::new(std::io::stderr()), LINE_INTERVAL)
    }

    /// Lines into `out`: one when the scenario starts, one per `interval` of measured time, one when
    /// it ends.
    pub fn lines(label: &str, rules: &RunRules, out: Box<dyn Write + Send>, interval: Duration) -> Progress {
        let p =
            Progress::with_mode(label, rules, Mode::Lines { out: Mutex::new(out), interval, last: Mutex::new(None) });
        p.line(&format!(
            "started: warm-up {}, then at least {} and {} queries",
            seconds(rules.warmup),
            seconds(rules.min_duration),
            rules.min_queries
        ));
        p
    }

    fn with_mode(label: &str, rules: &RunRules, mode: Mode) -> Progress {
        Progress {
            label: label.to_string(),
            rules: *rules,
            mode,
            last: Mutex::new((Duration::ZERO, 0)),
            unanswered: Mutex::new((0, 0)),
        }
    }

    /// No display.
    pub fn hidden() -> Progress {
        Progress::with_mode("", &RunRules::quick(), Mode::Off)
    }

    fn line(&self, text: &str) {
        if let Mode::Lines { out, .. } = &self.mode {
            let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(out, "[{}] {text}", self.label);
            let _ = out.flush();
        }
    }

    /// `answered` queries answered, and (when not 0) how many failed and were not sent.
    fn counts(&self, answered: usize) -> String {
        let (failed, unsent) = *self.unanswered.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = format!("{answered} queries answered");
        if failed > 0 {
            text.push_str(&format!(", {failed} failed"));
        }
        if unsent > 0 {
            text.push_str(&format!(", {unsent} not sent"));
        }
        text
    }

    fn status(&self, elapsed: Duration, queries: usize) -> (f64, String) {
        let (fraction, left) = estimate(&self.rules, elapsed, queries);
        let text = format!(
            "{} (≥ {} needed), {} of ≥ {}, about {} left",
            self.counts(queries),
            self.rules.min_queries,
            seconds(elapsed),
            seconds(self.rules.min_duration),
            seconds(left)
        );
        (fraction, text)
    }

    /// Queries that failed and arrivals never sent so far (shown beside the answered ones; call
    /// before [`Progress::update`]).
    pub fn set_unanswered(&self, failed: usize, not_sent: usize) {
        *self.unanswered.lock().unwrap_or_else(|e| e.into_inner()) = (failed, not_sent);
    }

    /// `queries` answered after `elapsed` of measured time.
    pub fn update(&self, elapsed: Duration, queries: usize) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = (elapsed, queries);
        match &self.mode {
            Mode::Off => {}
            Mode::Bar(bar) => {
                let (fraction, text) = self.status(elapsed, queries);
                bar.set_position((fraction * 1000.0) as u64);
                bar.set_message(text);
            }
            Mode::Lines { interval, last, .. } => {
                let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|l| elapsed >= l + *interval) {
                    *last = Some(elapsed);
                    drop(last);
                    let (fraction, text) = self.status(elapsed, queries);
                    self.line(&format!("{:3.0} % {text}", fraction * 100.0));
                }
            }
        }
    }

    /// The scenario ended.
    pub fn finish(&self) {
        let (elapsed, queries) = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        match &self.mode {
            Mode::Off => {}
            Mode::Bar(bar) => bar.finish_and_clear(),
            Mode::Lines { .. } => self.line(&format!("done: {} in {}", self.counts(queries), seconds(elapsed))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn rules(min_s: u64, min_queries: usize) -> RunRules {
        RunRules { warmup: Duration::from_secs(2), min_duration: Duration::from_secs(min_s), min_queries }
    }

    #[test]
    fn progress_is_the_smaller_fraction_and_time_left_the_larger_remainder() {
        let s = Duration::from_secs;
        // 9 of 64 queries after the full 10 s: 14 % done, not full; 55 queries at 10/9 s each left.
        let (f, left) = estimate(&rules(10, 64), s(10), 9);
        assert!((f - 9.0 / 64.0).abs() < 1e-12);
        assert!((left.as_secs_f64() - 55.0 * 10.0 / 9.0).abs() < 1e-6);
        // Queries done early: the duration decides.
        let (f, left) = estimate(&rules(10, 64), s(4), 64);
        assert!((f - 0.4).abs() < 1e-12);
        assert_eq!(left, s(6));
        // Both met: done.
        assert_eq!(estimate(&rules(10, 64), s(11), 70), (1.0, Duration::ZERO));
        // No minimums at all.
        assert_eq!(estimate(&rules(0, 0), s(0), 0), (1.0, Duration::ZERO));
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Failed queries and arrivals not sent are shown apart from the answered ones, never as done.
    #[test]
    fn failed_and_unsent_queries_are_not_counted_as_answered() {
        let out = Shared::default();
        let p = Progress::lines("s", &rules(3, 2), Box::new(out.clone()), Duration::from_secs(5));
        p.set_unanswered(4094, 25_599);
        p.update(Duration::from_secs(3), 0);
        p.finish();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("0 queries answered, 4094 failed, 25599 not sent (≥ 2 needed)"), "{text}");
        assert!(text.contains("done: 0 queries answered, 4094 failed, 25599 not sent in 3 s"), "{text}");
    }

    #[test]
    fn off_a_terminal_one_line_per_interval_with_the_time_left() {
        let out = Shared::default();
        let p = Progress::lines("accelrt offline", &rules(10, 64), Box::new(out.clone()), Duration::from_secs(5));
        for t in 1..=12 {
            p.update(Duration::from_secs(t), t as usize * 4);
        }
        p.finish();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // started, t = 1, 6, 11, done.
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("[accelrt offline] started: warm-up 2 s, then at least 10 s and 64 queries"));
        assert!(lines[1].contains("6 % 4 queries answered (≥ 64 needed), 1 s of ≥ 10 s, about 15 s left"), "{text}");
        assert!(lines[3].contains("69 % 44 queries answered (≥ 64 needed), 11 s of ≥ 10 s, about 5 s left"), "{text}");
        assert_eq!(lines[4], "[accelrt offline] done: 48 queries answered in 12 s");
    }
}
