//! What a result was measured on: captured into every result file.

use accelrt_core::DeviceInfo;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub backend: String,
    pub device: String,
    pub device_name: String,
    pub device_memory_total_bytes: Option<u64>,
    pub cpu_model: String,
    pub cpu_threads: usize,
    pub host_memory_bytes: Option<u64>,
    pub os: String,
    pub accelrt_version: String,
    pub git_commit: String,
    pub rustc: String,
    /// Further device/runtime facts (driver, runtime, library versions …).
    pub details: Vec<(String, String)>,
    /// When the run finished, RFC 3339 UTC.
    pub date: String,
}

impl Environment {
    pub fn capture(backend: &str, device: &DeviceInfo) -> Environment {
        Environment {
            backend: backend.into(),
            device: device.spec.clone(),
            device_name: device.name.clone(),
            device_memory_total_bytes: device.memory_total_bytes,
            cpu_model: accelrt_core::host::cpu_model(),
            cpu_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            host_memory_bytes: accelrt_core::host::meminfo_bytes("MemTotal"),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            accelrt_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: env!("ACCELRT_GIT_COMMIT").into(),
            rustc: env!("ACCELRT_RUSTC_VERSION").into(),
            details: device.details.clone(),
            date: now_rfc3339(),
        }
    }
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
pub fn peak_host_memory_bytes() -> Option<u64> {
    accelrt_core::host::process_status_bytes("VmHWM")
}
