//! A progress bar for runs long enough to wonder about (and only on a terminal).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar over `expected` run time; hidden when the run is short, output is not a terminal, or
    /// `enabled` is false.
    pub fn new(label: &str, expected: Duration, enabled: bool) -> Progress {
        if !enabled || expected < Duration::from_secs(2) || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new(expected.as_millis() as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>22} [{bar:30}] {elapsed_precise} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Progress(Some(bar))
    }

    pub fn hidden() -> Progress {
        Progress(None)
    }

    pub fn update(&self, elapsed: Duration, queries: usize) {
        if let Some(bar) = &self.0 {
            bar.set_position(elapsed.as_millis() as u64);
            bar.set_message(format!("{queries} queries"));
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
