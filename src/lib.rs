//! accelrt: run one model graph on CPUs, NVIDIA GPUs and AWS Neuron, and measure what each
//! inference costs.
//!
//! This facade re-exports the crates and chooses a backend from a device string:
//! ```no_run
//! let backend = accelrt::open_backend("cpu")?;
//! # Ok::<(), accelrt::Error>(())
//! ```

pub use accelrt_bench as bench;
pub use accelrt_candle as candle;
pub use accelrt_core as core;
pub use accelrt_models as models;
#[cfg(feature = "neuron")]
pub use accelrt_neuron as neuron;

pub use accelrt_core::{
    Backend, DType, DeviceInfo, DeviceKind, DeviceSpec, Error, Executable, Graph, GraphBuilder, HostTensor, Op,
    Outputs, PrepareOptions, WeightSource,
};

/// Opens the backend for a device string (`cpu`, `cuda:N`, `neuron:N`). A device this build or this
/// machine cannot drive is an error that says why; nothing falls back to another device.
pub fn open_backend(device: &str) -> Result<Box<dyn Backend>, Error> {
    let spec: DeviceSpec = device.parse()?;
    match spec.kind() {
        DeviceKind::Cpu | DeviceKind::Cuda => Ok(Box::new(accelrt_candle::CandleBackend::new(&spec)?)),
        #[cfg(feature = "neuron")]
        DeviceKind::Neuron => Ok(Box::new(accelrt_neuron::NeuronBackend::new(&spec)?)),
        #[cfg(not(feature = "neuron"))]
        DeviceKind::Neuron => Err(Error::Unavailable {
            device: spec.to_string(),
            reason: "this build of accelrt has no Neuron backend (rebuild with `--features neuron`)".into(),
        }),
    }
}

/// Whether one kind of device can be used here, and what it is or why not.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceStatus {
    pub device: String,
    pub available: bool,
    /// The device's facts when available.
    pub info: Option<DeviceInfo>,
    /// Why it is not available.
    pub reason: Option<String>,
}

/// Every kind of device accelrt knows, probed on this machine.
pub fn list_devices() -> Vec<DeviceStatus> {
    ["cpu", "cuda:0", "neuron:0"]
        .into_iter()
        .map(|device| match open_backend(device).and_then(|b| b.device_info()) {
            Ok(info) => DeviceStatus { device: device.into(), available: true, info: Some(info), reason: None },
            Err(Error::Unavailable { reason, .. }) => {
                DeviceStatus { device: device.into(), available: false, info: None, reason: Some(reason) }
            }
            Err(e) => DeviceStatus { device: device.into(), available: false, info: None, reason: Some(e.to_string()) },
        })
        .collect()
}
