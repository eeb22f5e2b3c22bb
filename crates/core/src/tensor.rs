//! Host tensors: the currency of `Executable::run` (inputs and outputs live on the host).

use crate::{DType, Error, Result};
use half::{bf16, f16};

/// Typed, contiguous, row-major element storage.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// IEEE 754 single precision.
    F32(Vec<f32>),
    /// IEEE 754 half precision.
    F16(Vec<f16>),
    /// bfloat16 (the top 16 bits of an f32).
    BF16(Vec<bf16>),
    /// Signed 64-bit integers, e.g. token ids in the PyTorch convention.
    I64(Vec<i64>),
    /// Unsigned 32-bit integers, e.g. token ids or attention masks.
    U32(Vec<u32>),
    /// Bytes, e.g. masks.
    U8(Vec<u8>),
}

impl TensorData {
    /// Number of elements (not bytes).
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::BF16(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::U32(v) => v.len(),
            TensorData::U8(v) => v.len(),
        }
    }

    /// True when there are no elements (a shape with a 0 dimension).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type; never a quantised dtype.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::I64(_) => DType::I64,
            TensorData::U32(_) => DType::U32,
            TensorData::U8(_) => DType::U8,
        }
    }
}

/// A dense tensor in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl HostTensor {
    /// Builds a tensor, checking that the element count matches the shape.
    ///
    /// # Errors
    /// [`Error::Tensor`] if `data` does not hold exactly the product of `shape` elements.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<HostTensor> {
        // Checked: a wrapped product of a lying shape could equal the data's length.
        let expected = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if expected != Some(data.len()) {
            let expected = expected.map_or_else(|| "more than fits in memory".to_string(), |e| e.to_string());
            return Err(Error::Tensor(format!(
                "shape {shape:?} holds {expected} elements but {} were given",
                data.len()
            )));
        }
        Ok(HostTensor { shape, data })
    }

    /// An f32 tensor; see [`HostTensor::new`] for the error.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Result<HostTensor> {
        HostTensor::new(shape, TensorData::F32(data))
    }

    /// A u32 tensor; see [`HostTensor::new`] for the error.
    pub fn u32(shape: Vec<usize>, data: Vec<u32>) -> Result<HostTensor> {
        HostTensor::new(shape, TensorData::U32(data))
    }

    /// An i64 tensor; see [`HostTensor::new`] for the error.
    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Result<HostTensor> {
        HostTensor::new(shape, TensorData::I64(data))
    }

    /// Size of each dimension, outermost first; empty for a scalar.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type (always a plain, non-quantised dtype).
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The elements, row-major.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The elements, row-major, without copying; the shape is dropped.
    pub fn into_data(self) -> TensorData {
        self.data
    }

    /// Number of elements: the product of the shape (1 for a scalar).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when some dimension is 0.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements if the tensor is f32, else `None` (no conversion; see
    /// [`HostTensor::to_f64_vec`] for any dtype).
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Every element widened to f64 (exact for all supported types but very large i64).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            TensorData::BF16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    /// Every element as i64; `None` for floating-point tensors.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        match &self.data {
            TensorData::I64(v) => Some(v.clone()),
            TensorData::U32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::U8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            _ => None,
        }
    }

    /// Builds a tensor of `dtype` from f64 values, rounding to the target type
    /// (integers truncate toward zero, as a cast does).
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] for a quantised `dtype`; [`Error::Tensor`] if `values` does not
    /// fit `shape`.
    pub fn from_f64(dtype: DType, shape: Vec<usize>, values: &[f64]) -> Result<HostTensor> {
        let data = match dtype {
            DType::F32 => TensorData::F32(values.iter().map(|&x| x as f32).collect()),
            DType::F16 => TensorData::F16(values.iter().map(|&x| f16::from_f64(x)).collect()),
            DType::BF16 => TensorData::BF16(values.iter().map(|&x| bf16::from_f64(x)).collect()),
            DType::I64 => TensorData::I64(values.iter().map(|&x| x as i64).collect()),
            DType::U32 => TensorData::U32(values.iter().map(|&x| x as u32).collect()),
            DType::U8 => TensorData::U8(values.iter().map(|&x| x as u8).collect()),
            DType::Quant(_) => {
                return Err(Error::UnsupportedDType { dtype, context: "host tensors hold plain element types".into() })
            }
        };
        HostTensor::new(shape, data)
    }

    /// Decodes little-endian bytes (as stored in safetensors/GGUF files) into a tensor.
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] for a quantised `dtype` (see `quant` to dequantise);
    /// [`Error::Tensor`] if `bytes` is not exactly `shape`'s element count times the dtype's size.
    pub fn from_le_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Result<HostTensor> {
        let size = dtype.size_in_bytes().ok_or_else(|| Error::UnsupportedDType {
            dtype,
            context: "block-quantised bytes cannot become a host tensor".into(),
        })?;
        // Checked: a shape read from a file may lie, and a wrapped product could match the bytes.
        let expected = shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d));
        if expected != Some(bytes.len()) {
            let expected = expected.map_or_else(|| "more than fits in memory".to_string(), |e| e.to_string());
            return Err(Error::Tensor(format!(
                "{} bytes given for shape {shape:?} of {dtype} (expected {expected})",
                bytes.len()
            )));
        }
        fn chunks<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            bytes.chunks_exact(N).map(|c| f(c.try_into().expect("chunk of N bytes"))).collect()
        }
        let data = match dtype {
            DType::F32 => TensorData::F32(chunks(bytes, f32::from_le_bytes)),
            DType::F16 => TensorData::F16(chunks(bytes, f16::from_le_bytes)),
            DType::BF16 => TensorData::BF16(chunks(bytes, bf16::from_le_bytes)),
            DType::I64 => TensorData::I64(chunks(bytes, i64::from_le_bytes)),
            DType::U32 => TensorData::U32(chunks(bytes, u32::from_le_bytes)),
            DType::U8 => TensorData::U8(bytes.to_vec()),
            DType::Quant(_) => unreachable!("rejected above"),
        };
        HostTensor::new(shape, data)
    }

    /// The little-endian byte image of the elements.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match &self.data {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::U8(v) => v.clone(),
        }
    }
}
