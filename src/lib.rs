//! accelrt: run one model graph on CPUs, NVIDIA GPUs and AWS Neuron, and measure what each
//! inference costs.
//!
//! This facade re-exports the crates and chooses a backend from a device string:
//! ```no_run
//! let backend = accelrt::open_backend("cpu")?;
//! # Ok::<(), accelrt::Error>(())
//! ```

#![warn(missing_docs)]

pub use accelrt_bench as bench;
pub use accelrt_candle as candle;
pub use accelrt_core as core;
pub use accelrt_models as models;
#[cfg(feature = "neuron")]
pub use accelrt_neuron as neuron;
#[cfg(feature = "pjrt")]
pub use accelrt_pjrt_backend as pjrt;
pub use accelrt_stablehlo as stablehlo;
pub use accelrt_train as train;

pub use accelrt_core::{
    Backend, DType, DeviceInfo, DeviceKind, DeviceSpec, Error, Executable, Graph, GraphBuilder, HostTensor, Op,
    Outputs, PrepareOptions, WeightSource,
};

/// Opens the backend for a device string (`cpu`, `cuda:N`, `neuron:N`, `xla:cpu`, `pjrt:PATH[:N]`). A device this build or this
/// machine cannot drive is an error that says why; nothing falls back to another device.
pub fn open_backend(device: &str) -> Result<Box<dyn Backend>, Error> {
    let spec: DeviceSpec = device.parse()?;
    if matches!(spec, DeviceSpec::XlaCpu | DeviceSpec::Pjrt { .. }) {
        #[cfg(feature = "pjrt")]
        return Ok(Box::new(accelrt_pjrt_backend::PjrtBackend::new(&spec)?));
        #[cfg(not(feature = "pjrt"))]
        return Err(Error::Unavailable {
            device: spec.to_string(),
            reason: "this build of accelrt has no PJRT backend (rebuild with `--features pjrt`)".into(),
        });
    }
    match spec.kind() {
        DeviceKind::Cpu | DeviceKind::Cuda => Ok(Box::new(accelrt_candle::CandleBackend::new(&spec)?)),
        #[cfg(feature = "neuron")]
        DeviceKind::Neuron => Ok(Box::new(accelrt_neuron::NeuronBackend::new(&spec)?)),
        #[cfg(not(feature = "neuron"))]
        DeviceKind::Neuron => Err(Error::Unavailable {
            device: spec.to_string(),
            reason: "this build of accelrt has no Neuron backend (rebuild with `--features neuron`)".into(),
        }),
        DeviceKind::Pjrt => unreachable!("PJRT devices are opened above"),
    }
}

/// Whether one kind of device can be used here, and what it is or why not.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceStatus {
    /// The device string to pass to [`open_backend`] (`cpu`, `cuda:0`, `neuron:0`, `xla:cpu`,
    /// `pjrt:PATH`); `pjrt:PATH` literally when no other PJRT plugin was found.
    pub device: String,
    /// Whether the backend opened and reported the device's facts; when true `info` is set, when
    /// false `reason` is.
    pub available: bool,
    /// The device's facts when available.
    pub info: Option<DeviceInfo>,
    /// Why it is not available.
    pub reason: Option<String>,
}

/// Every kind of device accelrt knows, probed on this machine, then the PJRT plugins: `xla:cpu`
/// (probed only if already fetched: listing devices never downloads) and every other plugin found
/// (`$ACCELRT_PJRT_PLUGIN`, AWS's Neuron plugin and jax's CUDA plugins in Python's site-packages).
pub fn list_devices() -> Vec<DeviceStatus> {
    let mut list: Vec<DeviceStatus> = ["cpu", "cuda:0", "neuron:0"].into_iter().map(probe).collect();
    list.extend(pjrt_devices());
    list
}

fn probe(device: &str) -> DeviceStatus {
    match open_backend(device).and_then(|b| b.device_info()) {
        Ok(info) => DeviceStatus { device: device.into(), available: true, info: Some(info), reason: None },
        Err(Error::Unavailable { reason, .. }) => {
            DeviceStatus { device: device.into(), available: false, info: None, reason: Some(reason) }
        }
        Err(e) => DeviceStatus { device: device.into(), available: false, info: None, reason: Some(e.to_string()) },
    }
}

#[cfg(not(feature = "pjrt"))]
fn pjrt_devices() -> Vec<DeviceStatus> {
    vec![DeviceStatus {
        device: "xla:cpu".into(),
        available: false,
        info: None,
        reason: Some("this build of accelrt has no PJRT backend (rebuild with `--features pjrt`)".into()),
    }]
}

#[cfg(feature = "pjrt")]
fn pjrt_devices() -> Vec<DeviceStatus> {
    use accelrt_pjrt_backend::pjrt::{PluginStore, PLUGIN_ENV, XLA_CPU};
    let mut out = Vec::new();
    let store = PluginStore::from_env();
    let cached = store.install_dir(&XLA_CPU).join("xla_cpu_pjrt.so");
    if std::env::var_os(PLUGIN_ENV).is_some() || cached.is_file() {
        out.push(probe("xla:cpu"));
    } else {
        out.push(DeviceStatus {
            device: "xla:cpu".into(),
            available: false,
            info: None,
            reason: Some(format!(
                "the XLA CPU plugin is not fetched yet (no {}); the first use of `xla:cpu` fetches it ({} {}, 63 MB, with `python3 -m pip download`)",
                cached.display(),
                XLA_CPU.package,
                XLA_CPU.version
            )),
        });
    }
    let found = accelrt_pjrt_backend::find_plugins();
    if found.is_empty() {
        out.push(DeviceStatus {
            device: "pjrt:PATH".into(),
            available: false,
            info: None,
            reason: Some(format!(
                "no other PJRT plugin found (looked for {} in {})",
                accelrt_pjrt_backend::KNOWN_PLUGINS.iter().map(|(_, p)| *p).collect::<Vec<_>>().join(", "),
                accelrt_pjrt_backend::python_site_dirs()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        });
    }
    for (what, path) in found {
        let mut status = probe(&format!("pjrt:{}", path.display()));
        if let Some(reason) = status.reason.as_mut() {
            *reason = format!("{what}: {reason}");
        }
        out.push(status);
    }
    out
}
