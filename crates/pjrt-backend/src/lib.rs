//! accelrt-pjrt-backend: the PJRT `Backend` (`xla:cpu`, `pjrt:PATH[:N]`). It joins the StableHLO
//! exporter (`accelrt-stablehlo`) and the PJRT binding (`accelrt-pjrt`):
//!
//! - `prepare` reads every weight once (dequantising block-quantised ones, as the manifest says)
//!   and uploads it as a device buffer that every program shares; programs are compiled per shape
//!   bucket on first use, kept in memory, and kept on disk (see [`cache`]);
//! - a run picks its bucket ([`BucketPolicy`]), pads the inputs, runs, and cuts the outputs back;
//! - sessions keep the KV caches as device buffers between steps, with one spare slot that padded
//!   batch rows write to; every step's cache writes are checked on the host first
//!   (`SessionState::plan_cache_write`), since `dynamic_update_slice` would clamp a bad write
//!   instead of failing, and so are embedding ids (a `gather` clamps them).
//!
//! It lives apart from `accelrt-pjrt` so that the binding depends on no accelrt crate (it can load
//! and test plugins on its own), while this crate is the only one that needs both the graph and
//! the plugin.

#![warn(missing_docs)]

mod buckets;
pub mod cache;
mod executable;

pub use buckets::{BucketPolicy, BUCKETS_ENV, DEFAULT_BUCKETS};
pub use executable::PjrtExecutable;

use accelrt_core::{
    Backend, DeviceInfo, DeviceKind, DeviceSpec, Error, Executable, Graph, PrepareOptions, Result, WeightSource,
};
use accelrt_pjrt::{Client, CompileOptions, Device, Plugin};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

pub(crate) const BACKEND: &str = "pjrt";

/// How programs are bucketed and cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PjrtOptions {
    /// Which symbolic sizes a run is padded up to, so that fewer programs are compiled.
    pub buckets: BucketPolicy,
    /// The on-disk compile cache; `None` keeps programs in memory only.
    pub cache_dir: Option<PathBuf>,
}

impl PjrtOptions {
    /// `$ACCELRT_PJRT_BUCKETS` and `$ACCELRT_PJRT_CACHE` (see [`BUCKETS_ENV`], [`cache::CACHE_ENV`]).
    ///
    /// # Errors
    /// A malformed `$ACCELRT_PJRT_BUCKETS`: the message names the variable, its value and what is
    /// wrong. (Every value of `$ACCELRT_PJRT_CACHE` is a valid setting: `off`, a directory, or
    /// empty for the default.)
    pub fn from_env() -> std::result::Result<PjrtOptions, String> {
        Ok(PjrtOptions { buckets: BucketPolicy::from_env()?, cache_dir: cache::cache_dir_from_env() })
    }
}

/// A backend on one device of one PJRT plugin.
pub struct PjrtBackend {
    spec: DeviceSpec,
    client: Client,
    device: Device,
    /// Programs are compiled portable and run with `execute_device` on devices other than the
    /// first (the default device assignment runs on the first).
    portable: bool,
    options: PjrtOptions,
    info: DeviceInfo,
    /// Names the compiler for the compile cache: plugin file, API and platform versions, attributes.
    compiler: String,
}

impl PjrtBackend {
    /// Opens `xla:cpu` or `pjrt:PATH[:N]` with options from the environment. A plugin that cannot
    /// be found, fetched, verified or loaded (wrong API version, not a plugin), or a device it does
    /// not have, is `Error::Unavailable` with the reason; nothing falls back to another device.
    ///
    /// # Errors
    /// `Error::Backend` (backend `pjrt`) naming the variable and its value when
    /// `$ACCELRT_PJRT_BUCKETS` is malformed (the device is not at fault, so it is not
    /// `Error::InvalidDevice`); otherwise those of [`PjrtBackend::with_options`].
    pub fn new(spec: &DeviceSpec) -> Result<PjrtBackend> {
        let options = PjrtOptions::from_env().map_err(|reason| {
            backend_err(format!("bad configuration: {reason} (fix it, or unset it for the default)"))
        })?;
        PjrtBackend::with_options(spec, options)
    }

    /// Opens `spec` with explicit options instead of the environment's.
    ///
    /// # Errors
    /// `Error::InvalidDevice` if `spec` is not `xla:cpu` or `pjrt:PATH[:N]`; `Error::Unavailable`
    /// with the reason if the plugin cannot be found, fetched, verified or loaded, its client cannot
    /// be created, or it has no device `N`.
    pub fn with_options(spec: &DeviceSpec, options: PjrtOptions) -> Result<PjrtBackend> {
        let unavailable = |reason: String| Error::Unavailable { device: spec.to_string(), reason };
        let (plugin, index) = match spec {
            DeviceSpec::XlaCpu => (accelrt_pjrt::xla_cpu_plugin().map_err(|e| unavailable(e.to_string()))?, 0),
            DeviceSpec::Pjrt { plugin, device } => {
                if !plugin.is_file() {
                    return Err(unavailable(format!("no PJRT plugin library at {}", plugin.display())));
                }
                (Plugin::load(plugin).map_err(|e| unavailable(e.to_string()))?, *device)
            }
            other => {
                return Err(Error::InvalidDevice {
                    spec: other.to_string(),
                    reason: "not a PJRT device (`xla:cpu` or `pjrt:PATH[:N]`)".into(),
                })
            }
        };
        let client = Client::new(&plugin).map_err(|e| unavailable(e.to_string()))?;
        let devices = client.devices();
        let device = devices.get(index).cloned().ok_or_else(|| {
            unavailable(format!("the plugin {} has {} device(s)", plugin.path().display(), devices.len()))
        })?;
        let compiler = compiler_identity(&plugin, &client);
        let info = describe(spec, &plugin, &client, &device, devices.len());
        Ok(PjrtBackend { spec: spec.clone(), client, device, portable: index != 0, options, info, compiler })
    }

    /// The PJRT client (for tests and tools that run programs themselves).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket lists and compile cache every executable prepared here uses.
    pub fn options(&self) -> &PjrtOptions {
        &self.options
    }

    pub(crate) fn compile_options(&self) -> CompileOptions {
        if self.portable {
            CompileOptions::portable(1, 1)
        } else {
            CompileOptions::default()
        }
    }
}

/// What names the compiler in a cache key. The library is identified by its canonical path, size
/// and modification time (hashing a 260 MB library in every process would cost more than most
/// compiles), plus what the plugin says of itself.
fn compiler_identity(plugin: &Plugin, client: &Client) -> String {
    let meta = std::fs::metadata(plugin.path()).ok();
    let modified =
        meta.as_ref().and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let attributes: Vec<String> = plugin.attributes().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let text = format!(
        "{}|{}|{:?}|api {}|{}|{}|{}",
        plugin.path().display(),
        meta.map(|m| m.len()).unwrap_or(0),
        modified,
        plugin.api_version(),
        client.platform_name(),
        client.platform_version(),
        attributes.join(",")
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn describe(spec: &DeviceSpec, plugin: &Plugin, client: &Client, device: &Device, count: usize) -> DeviceInfo {
    let kind = match device.kind().to_ascii_lowercase().as_str() {
        "cpu" => DeviceKind::Cpu,
        "gpu" | "cuda" => DeviceKind::Cuda,
        k if k.contains("neuron") => DeviceKind::Neuron,
        _ => DeviceKind::Pjrt,
    };
    let name = if kind == DeviceKind::Cpu {
        format!("{} (PJRT {} plugin)", accelrt_core::host::cpu_model(), client.platform_name())
    } else {
        format!("{} (PJRT {} plugin)", device.description(), client.platform_name())
    };
    let mut details = vec![
        ("pjrt_plugin".to_string(), plugin.path().display().to_string()),
        ("pjrt_api".into(), plugin.api_version().to_string()),
        ("pjrt_platform".into(), client.platform_name().to_string()),
        ("pjrt_platform_version".into(), client.platform_version().to_string()),
        ("pjrt_device".into(), device.description().to_string()),
        ("pjrt_devices".into(), count.to_string()),
    ];
    details.extend(plugin.attributes().iter().map(|(k, v)| (format!("pjrt_{k}"), v.to_string())));
    if kind == DeviceKind::Cpu {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        details.push(("threads".into(), threads.to_string()));
    }
    DeviceInfo { kind, spec: spec.to_string(), name, memory_total_bytes: None, memory_free_bytes: None, details }
}

impl Backend for PjrtBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn device(&self) -> &DeviceSpec {
        &self.spec
    }

    fn device_info(&self) -> Result<DeviceInfo> {
        Ok(self.info.clone())
    }

    fn prepare(
        &self,
        graph: &Graph,
        weights: &dyn WeightSource,
        options: &PrepareOptions,
    ) -> Result<Box<dyn Executable>> {
        Ok(Box::new(PjrtExecutable::prepare(self, graph, weights, options)?))
    }
}

pub(crate) fn backend_err(message: impl std::fmt::Display) -> Error {
    Error::Backend { backend: BACKEND.into(), message: message.to_string() }
}

pub use accelrt_pjrt as pjrt;

/// PJRT plugins from other projects that `accelrt devices` looks for, by where they sit inside
/// Python's site-packages: (what it is, relative path).
pub const KNOWN_PLUGINS: &[(&str, &str)] = &[
    ("AWS Neuron plugin (libneuronxla)", "libneuronxla/libneuronpjrt.so"),
    ("jax CUDA 12 plugin", "jax_plugins/xla_cuda12/xla_cuda_plugin.so"),
    ("jax CUDA 13 plugin", "jax_plugins/xla_cuda13/xla_cuda_plugin.so"),
];

/// Python site-packages directories on this machine (system, user, and an active virtualenv),
/// found by listing the usual places, without running Python.
pub fn python_site_dirs() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = vec!["/usr/lib".into(), "/usr/local/lib".into(), "/opt/conda/lib".into()];
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(home).join(".local/lib"));
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        roots.push(PathBuf::from(venv).join("lib"));
    }
    let mut dirs = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        let mut pythons: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python3")))
            .collect();
        pythons.sort();
        for python in pythons {
            for sub in ["site-packages", "dist-packages"] {
                let dir = python.join(sub);
                if dir.is_dir() {
                    dirs.push(dir);
                }
            }
        }
    }
    dirs
}

/// Known PJRT plugins ([`KNOWN_PLUGINS`]) present in [`python_site_dirs`]: (what, library path).
pub fn find_plugins() -> Vec<(&'static str, PathBuf)> {
    let mut found = Vec::new();
    for dir in python_site_dirs() {
        for (what, rel) in KNOWN_PLUGINS {
            let path = dir.join(rel);
            if path.is_file() {
                found.push((*what, path));
            }
        }
    }
    found
}
