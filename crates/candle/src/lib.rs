//! accelrt-candle: the `Backend` built on candle. CPU always; CUDA behind the `cuda` feature.

#![warn(missing_docs)]

mod convert;
mod device_info;
mod executable;
pub mod kernels;
pub mod linear;
mod ops;
mod padding;
pub mod qmatmul;
mod quantized;
mod team;

pub use executable::CandleExecutable;

use accelrt_core::{Backend, DeviceInfo, DeviceSpec, Error, Executable, Graph, PrepareOptions, Result, WeightSource};
use candle_core::Device;

/// A candle device opened from a device string.
pub struct CandleBackend {
    spec: DeviceSpec,
    device: Device,
    info: DeviceInfo,
}

impl CandleBackend {
    /// Opens `spec`. Only devices this build can really use are accepted: asking for a GPU in a
    /// build without CUDA, or for a device candle does not drive, is an error that says why.
    pub fn new(spec: &DeviceSpec) -> Result<CandleBackend> {
        let device = match spec {
            DeviceSpec::Cpu => Device::Cpu,
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(ordinal) => Device::new_cuda(*ordinal).map_err(|e| Error::Unavailable {
                device: spec.to_string(),
                // candle appends a backtrace to its errors; the first line is the driver's answer.
                reason: format!(
                    "the CUDA driver could not open GPU {ordinal}: {}",
                    e.to_string().lines().next().unwrap_or_default()
                ),
            })?,
            #[cfg(not(feature = "cuda"))]
            DeviceSpec::Cuda(_) => {
                return Err(Error::Unavailable {
                    device: spec.to_string(),
                    reason: "this build of accelrt has no CUDA support (rebuild with `--features cuda`)".into(),
                })
            }
            DeviceSpec::Neuron { .. } => {
                return Err(Error::Unavailable {
                    device: spec.to_string(),
                    reason: "NeuronCores are driven by the Neuron backend, not candle".into(),
                })
            }
            DeviceSpec::XlaCpu | DeviceSpec::Pjrt { .. } => {
                return Err(Error::Unavailable {
                    device: spec.to_string(),
                    reason: "PJRT plugins are driven by the PJRT backend, not candle".into(),
                })
            }
        };
        let info = device_info::describe(spec, &device)?;
        Ok(CandleBackend { spec: spec.clone(), device, info })
    }

    /// The CPU backend, which cannot fail: the same as `new(&DeviceSpec::Cpu)` without the
    /// `Result`.
    pub fn cpu() -> CandleBackend {
        CandleBackend { spec: DeviceSpec::Cpu, device: Device::Cpu, info: device_info::cpu_info() }
    }
}

impl Backend for CandleBackend {
    fn name(&self) -> &'static str {
        convert::BACKEND
    }

    fn device(&self) -> &DeviceSpec {
        &self.spec
    }

    fn device_info(&self) -> Result<DeviceInfo> {
        device_info::refresh(&self.info, &self.device)
    }

    fn prepare(
        &self,
        graph: &Graph,
        weights: &dyn WeightSource,
        options: &PrepareOptions,
    ) -> Result<Box<dyn Executable>> {
        if let Some(dtype) = options.compute_dtype {
            device_info::check_compute_dtype(&self.info, dtype)?;
        }
        Ok(Box::new(CandleExecutable::prepare(graph, weights, self.device.clone(), options.compute_dtype)?))
    }
}
