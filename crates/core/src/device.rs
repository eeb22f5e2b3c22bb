//! Device strings (`cpu`, `cuda:0`, `neuron:0-3`) and what a backend says about its device.

use crate::{Error, Result};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// Which device a backend should run on, parsed from a device string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    Cpu,
    /// An NVIDIA GPU by ordinal.
    Cuda(usize),
    /// A contiguous range of NeuronCores: `neuron:N` is one core, `neuron:A-B` cores A to B inclusive.
    Neuron {
        first: u32,
        count: u32,
    },
}

impl DeviceSpec {
    pub fn kind(&self) -> DeviceKind {
        match self {
            DeviceSpec::Cpu => DeviceKind::Cpu,
            DeviceSpec::Cuda(_) => DeviceKind::Cuda,
            DeviceSpec::Neuron { .. } => DeviceKind::Neuron,
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<DeviceSpec> {
        let bad = |reason: &str| Error::InvalidDevice { spec: spec.to_string(), reason: reason.to_string() };
        let (kind, index) = match spec.split_once(':') {
            Some((k, i)) => (k, Some(i)),
            None => (spec, None),
        };
        let number = |s: &str| s.parse::<u32>().map_err(|_| bad("the index must be a non-negative integer"));
        match (kind, index) {
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("cpu", Some(_)) => Err(bad("the CPU device takes no index; use `cpu`")),
            ("cuda", None) => Ok(DeviceSpec::Cuda(0)),
            ("cuda", Some(i)) => Ok(DeviceSpec::Cuda(number(i)? as usize)),
            ("neuron", None) => Ok(DeviceSpec::Neuron { first: 0, count: 1 }),
            ("neuron", Some(range)) => match range.split_once('-') {
                None => Ok(DeviceSpec::Neuron { first: number(range)?, count: 1 }),
                Some((a, b)) => {
                    let (a, b) = (number(a)?, number(b)?);
                    if b < a {
                        return Err(bad("a NeuronCore range A-B needs A ≤ B"));
                    }
                    Ok(DeviceSpec::Neuron { first: a, count: b - a + 1 })
                }
            },
            _ => Err(bad("expected `cpu`, `cuda:N` or `neuron:N` / `neuron:A-B`")),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Neuron { first, count: 1 } => write!(f, "neuron:{first}"),
            DeviceSpec::Neuron { first, count } => write!(f, "neuron:{first}-{}", first + count - 1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Cpu,
    Cuda,
    Neuron,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Neuron => "neuron",
        })
    }
}

/// What a backend reports about the device it runs on (recorded in benchmark results).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceInfo {
    pub kind: DeviceKind,
    /// The device string it was opened with, e.g. `cuda:0`.
    pub spec: String,
    /// Human-readable model name, e.g. the CPU brand string or the GPU name.
    pub name: String,
    pub memory_total_bytes: Option<u64>,
    pub memory_free_bytes: Option<u64>,
    /// Further facts (core count, compute capability, driver and runtime versions …).
    pub details: Vec<(String, String)>,
}
