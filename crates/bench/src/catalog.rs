//! The instance catalog (data/instances.json, shipped in the binary) and user price overrides.

use crate::limits::Limit;
use crate::{BenchError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

const BUILTIN: &str = include_str!("../data/instances.json");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accelerator {
    pub model: String,
    pub count: u32,
    pub memory_gib: f64,
    /// The accelrt device kind that drives it: `cuda` or `neuron`.
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// `on-demand`, `reserved-1yr`, `spot`, …
    pub basis: String,
    pub usd_per_hour: f64,
    #[serde(default)]
    pub region: Option<String>,
    pub source: String,
    pub date_read: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub instance_type: String,
    pub family: String,
    /// `cpu`, `gpu-g`, `gpu-p`, `inferentia1`, `inferentia2`, `trainium1`, `trainium2`.
    pub category: String,
    pub vcpus: u32,
    pub memory_gib: f64,
    pub accelerator: Option<Accelerator>,
    pub prices: Vec<Price>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub schema_version: u32,
    #[serde(default)]
    pub description: String,
    pub instances: Vec<Instance>,
}

impl Catalog {
    pub fn builtin() -> Catalog {
        serde_json::from_str(BUILTIN).expect("the shipped catalog parses (checked by tests)")
    }

    pub fn get(&self, instance_type: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.instance_type == instance_type)
    }
}

/// A user's own prices (`--prices FILE`): `{"prices": [{"instance_type": …, "basis": …,
/// "usd_per_hour": …, "source": …, "date_read": …}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PriceOverrides {
    pub prices: Vec<PriceOverride>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceOverride {
    pub instance_type: String,
    #[serde(flatten)]
    pub price: Price,
}

impl PriceOverrides {
    pub fn load(path: &Path) -> Result<PriceOverrides> {
        let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
        let o: PriceOverrides =
            serde_json::from_str(&text).map_err(|e| BenchError::File { path: path.into(), message: e.to_string() })?;
        for (i, p) in o.prices.iter().enumerate() {
            Limit::PRICE_PER_HOUR.check(p.price.usd_per_hour).map_err(|why| BenchError::File {
                path: path.into(),
                message: format!("`prices[{i}].usd_per_hour` ({}) {why}", p.instance_type),
            })?;
        }
        Ok(o)
    }
}

/// The price to use for `instance_type` on `basis`. Precedence: `--price-per-hour`, then the
/// overrides file, then the catalog.
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
