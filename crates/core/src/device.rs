//! Device strings (`cpu`, `cuda:0`, `neuron:0-3`, `xla:cpu`, `pjrt:PATH[:N]`) and what a backend says about its device.

use crate::{Error, Result};
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Which device a backend should run on, parsed from a device string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    /// The host CPU (`cpu`), all of its cores.
    Cpu,
    /// An NVIDIA GPU by ordinal.
    Cuda(usize),
    /// A contiguous range of NeuronCores: `neuron:N` is one core, `neuron:A-B` cores A to B inclusive.
    Neuron {
        /// Index of the first core, below 65536.
        first: u32,
        /// Number of cores, at least 1.
        count: u32,
    },
    /// The XLA CPU PJRT plugin (fetched and verified into the cache), through the PJRT backend.
    XlaCpu,
    /// Device `device` of the PJRT plugin library at `plugin` (`pjrt:PATH` is device 0).
    Pjrt {
        /// Path of the plugin's shared library, as written in the device string.
        plugin: PathBuf,
        /// The plugin's device index, below 65536.
        device: usize,
    },
}

impl DeviceSpec {
    /// The family of hardware this spec names; `xla:cpu` counts as [`DeviceKind::Cpu`], while a
    /// `pjrt:` plugin is [`DeviceKind::Pjrt`] until it is opened.
    pub fn kind(&self) -> DeviceKind {
        match self {
            DeviceSpec::Cpu => DeviceKind::Cpu,
            DeviceSpec::Cuda(_) => DeviceKind::Cuda,
            DeviceSpec::Neuron { .. } => DeviceKind::Neuron,
            DeviceSpec::XlaCpu => DeviceKind::Cpu,
            DeviceSpec::Pjrt { .. } => DeviceKind::Pjrt,
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
        // NeuronCore indices stay far below u32::MAX (the largest instance has 128 cores), which
        // keeps `first + count` from overflowing anywhere a range is used.
        const MAX_INDEX: u32 = 1 << 16;
        let number = |s: &str| {
            s.parse::<u32>()
                .ok()
                .filter(|&n| n < MAX_INDEX)
                .ok_or_else(|| bad("the index must be an integer from 0 to 65535"))
        };
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
            ("xla", Some("cpu")) => Ok(DeviceSpec::XlaCpu),
            ("xla", _) => {
                Err(bad("the only built-in XLA device is `xla:cpu`; load other plugins with `pjrt:PATH[:N]`"))
            }
            ("pjrt", Some(rest)) => {
                // The device index is a trailing `:N`; everything before it is the library's path.
                let (path, device) = match rest.rsplit_once(':') {
                    Some((path, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                        (path, number(n)? as usize)
                    }
                    _ => (rest, 0),
                };
                if path.is_empty() {
                    return Err(bad(
                        "`pjrt:` needs the path of a PJRT plugin library, e.g. `pjrt:/path/to/plugin.so:0`",
                    ));
                }
                Ok(DeviceSpec::Pjrt { plugin: PathBuf::from(path), device })
            }
            ("pjrt", None) => Err(bad("`pjrt` needs a plugin library: `pjrt:PATH[:N]`")),
            _ => Err(bad("expected `cpu`, `cuda:N`, `neuron:N` / `neuron:A-B`, `xla:cpu` or `pjrt:PATH[:N]`")),
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
            DeviceSpec::XlaCpu => f.write_str("xla:cpu"),
            DeviceSpec::Pjrt { plugin, device: 0 } => write!(f, "pjrt:{}", plugin.display()),
            DeviceSpec::Pjrt { plugin, device } => write!(f, "pjrt:{}:{device}", plugin.display()),
        }
    }
}

/// The family of hardware a device belongs to; serialised in snake case (`cpu`, `cuda`, …) in
/// benchmark results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// A host CPU, directly or through the XLA CPU plugin.
    Cpu,
    /// An NVIDIA GPU.
    Cuda,
    /// AWS NeuronCores (Inferentia, Trainium).
    Neuron,
    /// A PJRT plugin's device, before the plugin says what hardware it is (an opened backend
    /// reports the real kind in its `DeviceInfo`).
    Pjrt,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Neuron => "neuron",
            DeviceKind::Pjrt => "pjrt",
        })
    }
}

/// What a backend reports about the device it runs on (recorded in benchmark results).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceInfo {
    /// The hardware family actually found (a PJRT backend reports what its plugin runs on).
    pub kind: DeviceKind,
    /// The device string it was opened with, e.g. `cuda:0`.
    pub spec: String,
    /// Human-readable model name, e.g. the CPU brand string or the GPU name.
    pub name: String,
    /// The device's total memory in bytes (host RAM for a CPU); `None` where the runtime does
    /// not say.
    pub memory_total_bytes: Option<u64>,
    /// Memory still free, in bytes (available host RAM for a CPU), when the info was read; it
    /// changes as models are loaded. `None` where the runtime does not say.
    pub memory_free_bytes: Option<u64>,
    /// Further facts (core count, compute capability, driver and runtime versions …).
    pub details: Vec<(String, String)>,
}
