//! Conversions between accelrt's host types and candle's.

use accelrt_core::{DType, Error, HostTensor, Result, TensorData, WeightView};
use candle_core::{DType as CDType, Device, Tensor};

pub(crate) const BACKEND: &str = "candle";

pub(crate) fn candle_err(e: candle_core::Error) -> Error {
    Error::Backend { backend: BACKEND.into(), message: e.to_string() }
}

pub(crate) fn to_candle_dtype(dtype: DType) -> Result<CDType> {
    Ok(match dtype {
        DType::F32 => CDType::F32,
        DType::F16 => CDType::F16,
        DType::BF16 => CDType::BF16,
        DType::I64 => CDType::I64,
        DType::U32 => CDType::U32,
        DType::U8 => CDType::U8,
        DType::Quant(_) => {
            return Err(Error::Unsupported {
                backend: BACKEND.into(),
                what: format!("{dtype} weights (quantised matmuls are not wired into this backend yet)"),
            })
        }
    })
}

/// Copies a host tensor to `device`.
pub(crate) fn upload(t: &HostTensor, device: &Device) -> Result<Tensor> {
    let shape = t.shape();
    let r = match t.data() {
        TensorData::F32(v) => Tensor::from_slice(v, shape, device),
        TensorData::F16(v) => Tensor::from_slice(v, shape, device),
        TensorData::BF16(v) => Tensor::from_slice(v, shape, device),
        TensorData::I64(v) => Tensor::from_slice(v, shape, device),
        TensorData::U32(v) => Tensor::from_slice(v, shape, device),
        TensorData::U8(v) => Tensor::from_slice(v, shape, device),
    };
    r.map_err(candle_err)
}

/// Copies weight bytes straight to `device` (no intermediate host tensor).
pub(crate) fn upload_weight(view: &WeightView<'_>, device: &Device) -> Result<Tensor> {
    let dtype = to_candle_dtype(view.dtype)?;
    Tensor::from_raw_buffer(&view.bytes, dtype, &view.shape, device).map_err(candle_err)
}

/// Reads a tensor back to the host as `dtype`.
pub(crate) fn download(t: &Tensor, dtype: DType) -> Result<HostTensor> {
    let shape = t.dims().to_vec();
    let flat = t.to_dtype(to_candle_dtype(dtype)?).and_then(|t| t.flatten_all()).map_err(candle_err)?;
    let data = match dtype {
        DType::F32 => flat.to_vec1().map(TensorData::F32),
        DType::F16 => flat.to_vec1().map(TensorData::F16),
        DType::BF16 => flat.to_vec1().map(TensorData::BF16),
        DType::I64 => flat.to_vec1().map(TensorData::I64),
        DType::U32 => flat.to_vec1().map(TensorData::U32),
        DType::U8 => flat.to_vec1().map(TensorData::U8),
        DType::Quant(_) => unreachable!("rejected by to_candle_dtype"),
    }
    .map_err(candle_err)?;
    HostTensor::new(shape, data)
}

/// The f32 values of a contiguous CPU tensor's storage, borrowed in place (`op` names the caller
/// in the errors: not on the CPU, not contiguous, not f32).
pub(crate) fn cpu_f32<'a>(
    storage: &'a candle_core::Storage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::Storage::Cpu(cpu) = storage else { candle_core::bail!("{op}: not a CPU tensor") };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("{op}: not contiguous") };
    Ok(&cpu.as_slice::<f32>()?[start..end])
}
