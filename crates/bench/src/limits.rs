//! What a number may be, by kind. Every numeric flag of `accelrt bench` / `accelrt report` and every
//! number read from a result or price file is checked here, where it enters, so a bad value is a
//! clear error naming the flag or the field instead of a nonsense cost or an endless chart later.

use crate::{BenchError, Result};

/// The interval one kind of number must lie in (both ends included; always finite).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub min: f64,
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
    /// `--min-queries`: the harness plans this many arrivals up front.
    pub const MIN_QUERIES: Limit = Limit { min: 0.0, max: 1e7, unit: "queries" };
    /// Samples per query, or the largest dynamic batch.
    pub const BATCH: Limit = Limit { min: 1.0, max: 1e6, unit: "samples" };
    /// `--search-steps`: server runs in the load search.
    pub const STEPS: Limit = Limit { min: 1.0, max: 100.0, unit: "runs" };
    /// `--concurrency`: clients with a request out at once.
    pub const CLIENTS: Limit = Limit { min: 1.0, max: 1e5, unit: "clients" };
    /// `--max-tokens`, `--context`: tokens per sequence.
    pub const TOKENS: Limit = Limit { min: 1.0, max: 1e7, unit: "tokens" };

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
}
