//! Whether a run measured the instance type it is priced as.
//!
//! An instance type names hardware: the catalog's vCPUs, memory and accelerator. A run counts as a
//! measurement of that instance only when what it ran on matches: as many threads as vCPUs, about
//! the catalog's memory, and the device it used. A CPU-backend run on an accelerator instance's
//! host is legitimate (the accelerator must be present on the host), but it measures **that host's
//! CPU**, never the accelerator family: a family counts as measured only by a run on its
//! accelerator.

use crate::catalog::Instance;
use crate::environment::Environment;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Host memory (`MemTotal`) may fall this far below the catalog's figure (the kernel and firmware
/// keep some) …
pub const MEMORY_LOW: f64 = 0.85;
/// … and lie this far above it.
pub const MEMORY_HIGH: f64 = 1.10;

/// An accelerator found on the host, whether or not the run used it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostAccelerator {
    /// `cuda` (an NVIDIA GPU) or `neuron` (an AWS Inferentia/Trainium device).
    pub kind: String,
    /// The model as the driver names it (`NVIDIA A10G`), or what is known (`AWS Neuron device`).
    pub name: String,
}

/// The accelerators on this host, from the drivers' files under `root` (`/` on a real host): NVIDIA
/// GPUs from `proc/driver/nvidia/gpus/*/information`, Neuron devices from `dev/neuron*`.
pub fn probe_host_accelerators(root: &Path) -> Vec<HostAccelerator> {
    let mut found = Vec::new();
    let mut gpus: Vec<_> = std::fs::read_dir(root.join("proc/driver/nvidia/gpus"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    gpus.sort();
    for gpu in gpus {
        let info = crate::limits::read_bounded(&gpu.join("information"), crate::limits::MAX_FILE_BYTES, "driver file")
            .unwrap_or_default();
        let name = info
            .lines()
            .find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
            .unwrap_or_else(|| "NVIDIA GPU".into());
        found.push(HostAccelerator { kind: "cuda".into(), name });
    }
    let mut neuron: Vec<String> = std::fs::read_dir(root.join("dev"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.strip_prefix("neuron").is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
                })
                .collect()
        })
        .unwrap_or_default();
    neuron.sort();
    found.extend(
        neuron.into_iter().map(|_| HostAccelerator { kind: "neuron".into(), name: "AWS Neuron device".into() }),
    );
    found
}

/// The outcome of checking a run's environment against its instance type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardwareCheck {
    /// The instance type checked.
    pub instance_type: String,
    /// Whether the run's hardware matches the catalog's vCPUs, memory and accelerator.
    pub matches: bool,
    /// What does not match, in words (empty when it matches).
    pub mismatches: Vec<String>,
    /// The catalog category this run is a measurement of: the instance's own when it ran on the
    /// instance's accelerator (or the instance has none), `cpu` for a CPU-backend run on an
    /// accelerator instance (its host's CPU); `None` when the hardware does not match.
    pub measures: Option<String>,
    /// A remark for readers, e.g. that a CPU run on a g5 measured the host's CPU, not the GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The device kind of a device string: `cpu`, `cuda` or `neuron` (anything else as it is).
pub fn device_kind(device: &str) -> &str {
    let head = device.split(':').next().unwrap_or(device);
    match head {
        "" => "cpu",
        other => other,
    }
}

/// The words that name an accelerator model, upper-cased (`NVIDIA A100-SXM4-40GB` →
/// `NVIDIA`, `A100`, `SXM4`, `40GB`).
fn words(name: &str) -> Vec<String> {
    name.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).map(|w| w.to_ascii_uppercase()).collect()
}

/// Whether a device name (from the driver) is the catalog's accelerator model: the model's word
/// after the vendor (`A10G`, `T4`, `L40S`, `H100`) must be one of the device name's words, so `L4`
/// does not match an `L40S`.
pub fn same_accelerator_model(catalog_model: &str, device_name: &str) -> bool {
    let key = words(catalog_model).into_iter().find(|w| w != "NVIDIA" && w != "AWS" && w != "TESLA");
    match key {
        Some(key) => words(device_name).contains(&key),
        None => true,
    }
}

/// Checks `env` (what a run ran on) against `instance` (what it is priced as).
pub fn check(instance: &Instance, env: &Environment) -> HardwareCheck {
    let t = &instance.instance_type;
    let mut mismatches = Vec::new();
    if env.cpu_threads != instance.vcpus as usize {
        mismatches.push(format!("ran with {} threads; {t} has {} vCPUs", env.cpu_threads, instance.vcpus));
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    match env.host_memory_bytes {
        Some(b) if (MEMORY_LOW..=MEMORY_HIGH).contains(&(gib(b) / instance.memory_gib)) => {}
        Some(b) => mismatches.push(format!("host memory is {:.1} GiB; {t} has {} GiB", gib(b), instance.memory_gib)),
        None => mismatches.push(format!("host memory unknown; {t} has {} GiB", instance.memory_gib)),
    }
    let used = device_kind(&env.device).to_string();
    let mut note = None;
    match &instance.accelerator {
        None => {
            if used != "cpu" {
                mismatches.push(format!("ran on {} ({}); {t} has no accelerator", env.device, env.device_name));
            }
            if let Some(a) = env.host_accelerators.first() {
                mismatches.push(format!("this host has an accelerator ({}); {t} has none", a.name));
            }
        }
        Some(acc) => {
            let present = env
                .host_accelerators
                .iter()
                .filter(|h| h.kind == acc.kind && (h.kind != "cuda" || same_accelerator_model(&acc.model, &h.name)))
                .count();
            if used == "cpu" {
                if present == 0 {
                    let found: Vec<&str> = env.host_accelerators.iter().map(|h| h.name.as_str()).collect();
                    let found = if found.is_empty() { "none".to_string() } else { found.join(", ") };
                    mismatches.push(format!(
                        "no {} on this host (accelerators found: {found}); {t} has {}",
                        acc.model, acc.model
                    ));
                } else {
                    note = Some(format!("a CPU-backend run on {t}: it measures the host's CPU, not its {}", acc.model));
                }
            } else if used != acc.kind {
                mismatches.push(format!("ran on {}; {t}'s accelerator is {} ({})", env.device, acc.model, acc.kind));
            } else if acc.kind == "cuda" && !same_accelerator_model(&acc.model, &env.device_name) {
                mismatches.push(format!("ran on {}; {t} has {}", env.device_name, acc.model));
            }
        }
    }
    let matches = mismatches.is_empty();
    let measures = matches.then(|| if used == "cpu" { "cpu".to_string() } else { instance.category.clone() });
    HardwareCheck { instance_type: t.clone(), matches, mismatches, measures, note }
}
