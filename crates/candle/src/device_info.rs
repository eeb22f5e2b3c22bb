//! What a device is (for `DeviceInfo` and results) and which compute dtypes it supports.

use accelrt_core::{DType, DeviceInfo, DeviceKind, DeviceSpec, Error, Result};
use candle_core::Device;

/// Facts about the device `spec` was opened as.
pub(crate) fn describe(spec: &DeviceSpec, device: &Device) -> Result<DeviceInfo> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => cuda_info(spec, device),
        _ => {
            let _ = spec;
            Ok(cpu_info())
        }
    }
}

/// `info` with the free memory read again (it changes as models are loaded).
pub(crate) fn refresh(info: &DeviceInfo, device: &Device) -> Result<DeviceInfo> {
    let mut info = info.clone();
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => {
            let (free, _) = cuda.cuda_stream().context().mem_get_info().map_err(|e| backend_err(e.to_string()))?;
            info.memory_free_bytes = Some(free as u64);
        }
        _ => info.memory_free_bytes = cpu_info().memory_free_bytes,
    }
    Ok(info)
}

/// Half-precision policy: bf16 needs compute capability 8.0 (A100/A10G/L4/H100…; not V100 or T4).
pub(crate) fn check_compute_dtype(info: &DeviceInfo, dtype: DType) -> Result<()> {
    let cc = info.details.iter().find(|(k, _)| k == "compute_capability").and_then(|(_, v)| v.parse::<f64>().ok());
    match (dtype, cc) {
        (DType::BF16, Some(cc)) if cc < 8.0 => Err(Error::Unsupported {
            backend: crate::convert::BACKEND.into(),
            what: format!("bf16 on {} (compute capability {cc}; bf16 needs 8.0 or later — use f16)", info.name),
        }),
        _ => Ok(()),
    }
}

#[cfg(feature = "cuda")]
fn backend_err(message: String) -> Error {
    Error::Backend { backend: crate::convert::BACKEND.into(), message }
}

#[cfg(feature = "cuda")]
fn cuda_info(spec: &DeviceSpec, device: &Device) -> Result<DeviceInfo> {
    let Device::Cuda(cuda) = device else { unreachable!("called for CUDA devices") };
    let stream = cuda.cuda_stream();
    let ctx = stream.context();
    let err = |e: candle_core::cuda_backend::cudarc::driver::DriverError| backend_err(e.to_string());
    let name = ctx.name().map_err(err)?;
    let (major, minor) = ctx.compute_capability().map_err(err)?;
    let (free, total) = ctx.mem_get_info().map_err(err)?;
    Ok(DeviceInfo {
        kind: DeviceKind::Cuda,
        spec: spec.to_string(),
        name,
        memory_total_bytes: Some(total as u64),
        memory_free_bytes: Some(free as u64),
        details: vec![
            ("compute_capability".into(), format!("{major}.{minor}")),
            ("bf16".into(), (major >= 8).to_string()),
            ("cuda_build".into(), option_env!("ACCELRT_CUDA_BUILD").unwrap_or("13.0").into()),
            ("candle".into(), "0.11".into()),
        ],
    })
}

pub(crate) fn cpu_info() -> DeviceInfo {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut features: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (f, on) in [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ] {
            if on {
                features.push(f);
            }
        }
    }
    DeviceInfo {
        kind: DeviceKind::Cpu,
        spec: "cpu".into(),
        name: accelrt_core::host::cpu_model(),
        memory_total_bytes: accelrt_core::host::meminfo_bytes("MemTotal"),
        memory_free_bytes: accelrt_core::host::meminfo_bytes("MemAvailable"),
        details: vec![
            ("threads".into(), threads.to_string()),
            ("simd".into(), features.join(",")),
            ("candle".into(), "0.11".into()),
        ],
    }
}
