//! What a number may be, by kind. Every numeric flag of `accelrt bench` / `accelrt report` and every
//! number read from a result or price file is checked here, where it enters, so a bad value is a
//! clear error naming the flag or the field instead of a nonsense cost or an endless chart later.

use crate::{BenchError, Result};
use std::path::Path;

/// The interval one kind of number must lie in (both ends included; always finite).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// The smallest value allowed, in `unit`.
    pub min: f64,
    /// The largest value allowed, in `unit`.
    pub max: f64,
    /// The unit, for messages.
    pub unit: &'static str,
}

impl Limit {
    /// A price per hour: a tenth of a cent to $10,000 (the largest EC2 instances cost a few hundred).
    pub const PRICE_PER_HOUR: Limit = Limit { min: 1e-4, max: 1e4, unit: "US$/h" };
    /// A measured rate: inferences, requests, tokens or queries per second.
    pub const RATE: Limit = Limit { min: 0.0, max: 1e9, unit: "per second" };
    /// An offered load (`--qps`): must be positive.
    pub const LOAD: Limit = Limit { min: 1e-3, max: 1e9, unit: "queries/s" };
    /// A measured latency.
    pub const LATENCY_MS: Limit = Limit { min: 0.0, max: 1e9, unit: "ms" };
    /// A latency objective (`--p99-ms`): positive, at most a day.
    pub const LATENCY_BOUND_MS: Limit = Limit { min: 1e-3, max: 8.64e7, unit: "ms" };
    /// A duration in seconds (warm-up, minimum duration, measured duration): at most 30 days.
    pub const SECONDS: Limit = Limit { min: 0.0, max: 2.592e6, unit: "s" };
    /// US$ per million inferences or output tokens.
    pub const COST: Limit = Limit { min: 0.0, max: 1e15, unit: "US$" };
    /// Counts of queries, samples, requests or tokens in a result.
    pub const COUNT: Limit = Limit { min: 0.0, max: 1e12, unit: "" };
    /// `--min-queries`: the harness plans this many arrivals up front. At least one: a run that
    /// answers no query measures nothing.
    pub const MIN_QUERIES: Limit = Limit { min: 1.0, max: 1e7, unit: "queries" };
    /// Samples per query, or the largest dynamic batch.
    pub const BATCH: Limit = Limit { min: 1.0, max: 1e6, unit: "samples" };
    /// `--search-steps`: server runs in the load search.
    pub const STEPS: Limit = Limit { min: 1.0, max: 100.0, unit: "runs" };
    /// `--concurrency`: clients with a request out at once; at most the HTTP client's bound on
    /// requests out ([`crate::http_target::MAX_IN_FLIGHT`], 4096).
    pub const CLIENTS: Limit = Limit { min: 1.0, max: 4096.0, unit: "clients" };
    /// `--max-tokens`, `--context`: tokens per sequence.
    pub const TOKENS: Limit = Limit { min: 1.0, max: 1e7, unit: "tokens" };
    /// A probability below 1 (dropout).
    pub const PROBABILITY: Limit = Limit { min: 0.0, max: 0.999_999, unit: "" };
    /// `--lr`, `--weight-decay`: a training hyper-parameter from 0 to 10, both included (0 is a
    /// legitimate weight decay, and a learning rate of 0 measures a step without moving anything).
    pub const HYPER: Limit = Limit { min: 0.0, max: 10.0, unit: "" };
    /// Step losses kept in a training result ([`crate::training::MAX_LOSSES`]).
    pub const LOSSES: Limit = Limit { min: 0.0, max: crate::training::MAX_LOSSES as f64, unit: "losses" };

    /// `Ok` when `value` is finite and within the limit; else what is wrong, without a subject
    /// ("must be …").
    pub fn check(&self, value: f64) -> std::result::Result<f64, String> {
        if value.is_finite() && value >= self.min && value <= self.max {
            return Ok(value);
        }
        let unit = if self.unit.is_empty() { String::new() } else { format!(" {}", self.unit) };
        Err(format!("must be a number from {} to {}{unit} (got {})", number(self.min), number(self.max), number(value)))
    }
}

/// Checks one command-line flag (or a config field named after its flag); the error names it.
pub fn check_flag(flag: &str, value: f64, limit: Limit) -> Result<f64> {
    limit.check(value).map_err(|why| BenchError::Invalid(format!("{flag} {why}")))
}

/// The most bytes the harness reads from any one file: an input set (`--texts`), a catalog
/// (`--catalog`), a price file (`--prices`), a result file (`accelrt report`), a chart it wrote, or a
/// host file under /proc. Far above any real one; a larger file (or a device such as /dev/zero) is
/// refused with its name and this limit instead of being read until memory runs out.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// The longest name part the harness derives from a result's strings (model, system, backend,
/// instance type) for a file it writes; a longer one is cut and a short hash of the whole keeps it
/// distinct (see [`bounded_name`]).
pub const MAX_NAME_PART: usize = 80;

/// Reads `path` as UTF-8 text, at most `max_bytes` of it: a larger file is an error naming the file,
/// `what` it is and the limit. Reads through `File::take`, so a file that never ends is fine too.
pub fn read_bounded(path: &Path, max_bytes: u64, what: &str) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| BenchError::Io { path: path.into(), source: e })?;
    let mut raw = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut raw)
        .map_err(|e| BenchError::Io { path: path.into(), source: e })?;
    if raw.len() as u64 > max_bytes {
        return Err(BenchError::File {
            path: path.into(),
            message: format!("the {what} is larger than the limit of {}", bytes(max_bytes)),
        });
    }
    String::from_utf8(raw)
        .map_err(|e| BenchError::File { path: path.into(), message: format!("the {what} is not UTF-8 text: {e}") })
}

/// A byte count for a message: `67108864 bytes (64 MiB)`.
fn bytes(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{n} bytes ({} MiB)", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// A file-name part from `text`: `keep` characters stay, every other becomes `-`; when the result
/// is longer than `max` characters it is cut to `max` and `-` plus 8 hex digits of a hash of the
/// whole `text` (FNV-1a, stable across builds) is appended, so two long names that share a prefix
/// stay distinct. Never longer than `max + 9` characters, all of them ASCII.
pub fn bounded_name(text: &str, max: usize, keep: impl Fn(char) -> bool) -> String {
    let clean: String = text.chars().map(|c| if c.is_ascii() && keep(c) { c } else { '-' }).collect();
    if clean.len() <= max {
        return clean;
    }
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    format!("{}-{:08x}", &clean[..max], (hash ^ (hash >> 32)) as u32)
}

/// A number for a message: plain when readable, scientific when tiny or huge (`1e-320`, not 320 zeros).
fn number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() || (1e-4..1e9).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_non_finite_and_out_of_range_values_and_say_so_readably() {
        let p = Limit::PRICE_PER_HOUR;
        assert_eq!(p.check(0.5), Ok(0.5));
        assert_eq!(p.check(1e-4), Ok(1e-4));
        for bad in [1e-320, 0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e5] {
            assert!(p.check(bad).is_err(), "{bad}");
        }
        let err = check_flag("--price-per-hour", 1e-320, p).unwrap_err().to_string();
        assert_eq!(err, "--price-per-hour must be a number from 0.0001 to 10000 US$/h (got 1e-320)");
        assert_eq!(Limit::COUNT.check(-1.0).unwrap_err(), "must be a number from 0 to 1e12 (got -1)");
    }

    #[test]
    fn min_queries_must_be_at_least_one() {
        assert!(Limit::MIN_QUERIES.check(0.0).is_err());
        assert_eq!(Limit::MIN_QUERIES.check(1.0), Ok(1.0));
        let err = check_flag("--min-queries", 0.0, Limit::MIN_QUERIES).unwrap_err().to_string();
        assert!(err.starts_with("--min-queries must be a number from 1 to"), "{err}");
    }

    #[test]
    fn read_bounded_reads_up_to_the_limit_and_refuses_one_byte_more_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("at.txt");
        std::fs::write(&at, "x".repeat(16)).unwrap();
        assert_eq!(read_bounded(&at, 16, "input set").unwrap(), "x".repeat(16));
        let over = dir.path().join("over.txt");
        std::fs::write(&over, "x".repeat(17)).unwrap();
        let err = read_bounded(&over, 16, "input set").unwrap_err().to_string();
        assert!(err.contains("over.txt") && err.contains("input set") && err.contains("limit of 16 bytes"), "{err}");
        let err = read_bounded(&dir.path().join("missing"), 16, "input set").unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn read_bounded_stops_at_the_limit_on_a_file_that_never_ends() {
        let zero = Path::new("/dev/zero");
        if zero.exists() {
            let err = read_bounded(zero, 1 << 20, "result file").unwrap_err().to_string();
            assert!(err.contains("/dev/zero") && err.contains("limit of 1048576 bytes (1 MiB)"), "{err}");
        }
    }

    #[test]
    fn bounded_names_are_short_ascii_and_distinct() {
        let keep = |c: char| c.is_ascii_alphanumeric() || c == '.';
        assert_eq!(bounded_name("org/model v1.2", 80, keep), "org-model-v1.2");
        let a = "m".repeat(300) + "a";
        let b = "m".repeat(300) + "b";
        let (na, nb) = (bounded_name(&a, 80, keep), bounded_name(&b, 80, keep));
        assert_eq!(na.len(), 89);
        assert_ne!(na, nb);
        assert_eq!(na, bounded_name(&a, 80, keep), "deterministic");
        let wide = "é".repeat(200);
        assert!(bounded_name(&wide, 80, keep).len() <= 89);
    }
}
