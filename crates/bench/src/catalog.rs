//! The instance catalog (data/instances.json, shipped in the binary) and user price overrides.

use crate::limits::Limit;
use crate::{BenchError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

const BUILTIN: &str = include_str!("../data/instances.json");

/// An instance's accelerator, as the catalog states it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accelerator {
    /// e.g. `NVIDIA A10G`, `AWS Inferentia2 (2 NeuronCore-v2)`.
    pub model: String,
    /// How many of them the instance has (GPUs, or Inferentia/Trainium chips).
    pub count: u32,
    /// Accelerator memory in GiB, all `count` devices together.
    pub memory_gib: f64,
    /// The accelrt device kind that drives it: `cuda` or `neuron`.
    pub kind: String,
}

/// One price of an instance type, with what it is and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// `on-demand`, `reserved-1yr`, `spot`, …
    pub basis: String,
    /// The price in US dollars per instance-hour; checked to lie in `Limit::PRICE_PER_HOUR`.
    pub usd_per_hour: f64,
    /// The AWS region the price is for (e.g. `us-east-1`); `None` when the source does not say.
    #[serde(default)]
    pub region: Option<String>,
    /// Where the price was read (a URL, a pricing API, `--price-per-hour`, a user's note).
    pub source: String,
    /// When it was read: `YYYY-MM-DD` or `YYYY-MM` (see [`price_date`]); drives the staleness flag.
    pub date_read: String,
}

/// One EC2 instance type: its hardware and prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The EC2 API name, e.g. `c7i.xlarge`, `inf2.xlarge`.
    pub instance_type: String,
    /// The family part of the type, e.g. `c7i`, `g5`, `inf2`.
    pub family: String,
    /// `cpu`, `gpu-g`, `gpu-p`, `inferentia1`, `inferentia2`, `trainium1`, `trainium2`.
    pub category: String,
    /// vCPUs (hardware threads); a run must use exactly this many threads to be priced as this type.
    pub vcpus: u32,
    /// Host memory in GiB (2^30 bytes).
    pub memory_gib: f64,
    /// The accelerator, or `None` for a CPU-only type.
    pub accelerator: Option<Accelerator>,
    /// Its prices, one per basis (and region), in no particular order.
    pub prices: Vec<Price>,
    /// Free text shown with the instance (a caveat about its price or hardware).
    #[serde(default)]
    pub note: Option<String>,
}

/// The instance catalog: `{"schema_version": 1, "description": …, "instances": […]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// The file format's version; `1` today.
    pub schema_version: u32,
    /// Free text about the catalog (its sources and how prices were read).
    #[serde(default)]
    pub description: String,
    /// Every instance type, each `instance_type` once.
    pub instances: Vec<Instance>,
}

impl Catalog {
    /// The catalog shipped in the binary (`crates/bench/data/instances.json`).
    pub fn builtin() -> Catalog {
        serde_json::from_str(BUILTIN).expect("the shipped catalog parses (checked by tests)")
    }

    /// A catalog file of the same schema (`--catalog FILE`), e.g. to add instance types the shipped
    /// one lacks. Every price is checked like a `--prices` file's.
    ///
    /// # Errors
    /// [`BenchError::Io`] or [`BenchError::File`] when the file cannot be read or is over
    /// `limits::MAX_FILE_BYTES`; [`BenchError::File`] when it does not parse, an instance has zero
    /// vCPUs or non-positive memory, a price is out of bounds, or a `date_read` is not a date.
    pub fn load(path: &Path) -> Result<Catalog> {
        let text = crate::limits::read_bounded(path, crate::limits::MAX_FILE_BYTES, "catalog")?;
        let c: Catalog =
            serde_json::from_str(&text).map_err(|e| BenchError::File { path: path.into(), message: e.to_string() })?;
        for i in &c.instances {
            let bad = |message: String| BenchError::File { path: path.into(), message };
            if i.vcpus == 0 || !(i.memory_gib.is_finite() && i.memory_gib > 0.0) {
                return Err(bad(format!("{}: vCPUs and memory must be positive", i.instance_type)));
            }
            for p in &i.prices {
                Limit::PRICE_PER_HOUR
                    .check(p.usd_per_hour)
                    .map_err(|why| bad(format!("{} `usd_per_hour` {why}", i.instance_type)))?;
                price_date(&p.date_read).ok_or_else(|| {
                    bad(format!("{}: date_read {:?} is not YYYY-MM or YYYY-MM-DD", i.instance_type, p.date_read))
                })?;
            }
        }
        Ok(c)
    }

    /// The instance of that type, if the catalog has it.
    pub fn get(&self, instance_type: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.instance_type == instance_type)
    }

    /// The instance of that type.
    ///
    /// # Errors
    /// [`BenchError::Invalid`] when the catalog lacks it, naming up to three close types.
    pub fn lookup(&self, instance_type: &str) -> Result<&Instance> {
        self.get(instance_type).ok_or_else(|| {
            let close = self.close_names(instance_type, 3);
            let hint = if close.is_empty() { String::new() } else { format!("; did you mean {}?", close.join(", ")) };
            BenchError::Invalid(format!(
                "unknown instance type `{instance_type}`: not in the catalog{hint} (a catalog of your own: --catalog FILE)"
            ))
        })
    }

    /// Up to `n` catalog types closest to `name` (Jaro-Winkler similarity, best first).
    pub fn close_names(&self, name: &str, n: usize) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        let mut scored: Vec<(f64, &str)> = self
            .instances
            .iter()
            .map(|i| (strsim::jaro_winkler(&name, &i.instance_type), i.instance_type.as_str()))
            .filter(|(s, _)| *s >= 0.6)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        scored.into_iter().take(n).map(|(_, t)| t.to_string()).collect()
    }
}

/// The day a price was read: `YYYY-MM-DD`, or `YYYY-MM` (taken as the 1st of the month, so the age
/// is never understated by more than a month).
pub fn price_date(date_read: &str) -> Option<chrono::NaiveDate> {
    let d = date_read.trim();
    chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
        .ok()
        .or_else(|| chrono::NaiveDate::parse_from_str(&format!("{d}-01"), "%Y-%m-%d").ok())
}

/// How old a price is, in days, on `today` (`None` when its date cannot be read).
pub fn price_age_days(price: &Price, today: chrono::NaiveDate) -> Option<i64> {
    price_date(&price.date_read).map(|d| (today - d).num_days())
}

/// A price older than this many days is flagged as stale wherever it is shown.
pub const STALE_AFTER_DAYS: i64 = 365;

/// Whether `price` is more than [`STALE_AFTER_DAYS`] old on `today` (an unreadable date counts as stale).
pub fn price_is_stale(price: &Price, today: chrono::NaiveDate) -> bool {
    price_age_days(price, today).is_none_or(|d| d > STALE_AFTER_DAYS)
}

/// A user's own prices (`--prices FILE`): `{"prices": [{"instance_type": …, "basis": …,
/// "usd_per_hour": …, "source": …, "date_read": …}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PriceOverrides {
    /// The prices in file order; for one type and basis the first entry wins.
    pub prices: Vec<PriceOverride>,
}

/// One entry of a `--prices` file: a price for one instance type, its fields flattened beside
/// `instance_type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceOverride {
    /// The EC2 type the price is for; it need not be in the catalog.
    pub instance_type: String,
    /// The price (`basis`, `usd_per_hour`, `region`, `source`, `date_read`).
    #[serde(flatten)]
    pub price: Price,
}

impl PriceOverrides {
    /// Reads a `--prices` file.
    ///
    /// # Errors
    /// [`BenchError::Io`] or [`BenchError::File`] when it cannot be read or is over
    /// `limits::MAX_FILE_BYTES`; [`BenchError::File`] when it does not parse or a `usd_per_hour` is
    /// out of `Limit::PRICE_PER_HOUR` or a `date_read` is not a date (as in [`Catalog::load`]),
    /// naming the entry.
    pub fn load(path: &Path) -> Result<PriceOverrides> {
        let text = crate::limits::read_bounded(path, crate::limits::MAX_FILE_BYTES, "price file")?;
        let o: PriceOverrides =
            serde_json::from_str(&text).map_err(|e| BenchError::File { path: path.into(), message: e.to_string() })?;
        for (i, p) in o.prices.iter().enumerate() {
            Limit::PRICE_PER_HOUR.check(p.price.usd_per_hour).map_err(|why| BenchError::File {
                path: path.into(),
                message: format!("`prices[{i}].usd_per_hour` ({}) {why}", p.instance_type),
            })?;
            // Checked as the catalog's are: an unreadable date would only show later, as "stale".
            price_date(&p.price.date_read).ok_or_else(|| BenchError::File {
                path: path.into(),
                message: format!(
                    "`prices[{i}].date_read` ({}) {:?} is not YYYY-MM or YYYY-MM-DD",
                    p.instance_type, p.price.date_read
                ),
            })?;
        }
        Ok(o)
    }
}

/// The price to use for `instance_type` on `basis`. Precedence: `--price-per-hour` (`flag`, USD per
/// hour; basis `user`, dated today), then the overrides file (its entry for that basis, else its
/// first entry for the type on any basis), then the catalog's price on `basis`. `None` when no
/// instance type is known and no flag is given, or nothing matches.
pub fn resolve_price(
    catalog: &Catalog,
    overrides: Option<&PriceOverrides>,
    flag: Option<f64>,
    instance_type: Option<&str>,
    basis: &str,
) -> Option<Price> {
    if let Some(usd) = flag {
        return Some(Price {
            basis: "user".into(),
            usd_per_hour: usd,
            region: None,
            source: "--price-per-hour".into(),
            date_read: crate::environment::now_rfc3339()[..10].to_string(),
        });
    }
    let t = instance_type?;
    if let Some(p) = overrides
        .and_then(|o| o.prices.iter().find(|p| p.instance_type == t && p.price.basis == basis))
        .or_else(|| overrides.and_then(|o| o.prices.iter().find(|p| p.instance_type == t)))
    {
        return Some(p.price.clone());
    }
    catalog.get(t)?.prices.iter().find(|p| p.basis == basis).cloned()
}
