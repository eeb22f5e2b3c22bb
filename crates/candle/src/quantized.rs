//! GGUF block-quantised weights on a candle device: they stay quantised in memory and serve as the
//! matrix of a `Linear` (a quantised matmul) or as an embedding table (rows dequantised on lookup).

use crate::convert::{candle_err, BACKEND};
use crate::qmatmul::{self, best_kernel, Kernel, QFormat};
use accelrt_core::{quant, DType, Error, QuantType, Result, WeightView};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};

pub(crate) struct QuantWeight {
    qtype: QuantType,
    /// [rows, columns]: [out, in] for a linear layer, [vocab, hidden] for a table.
    rows: usize,
    cols: usize,
    /// The blocks as stored in the file, kept on the host for embedding lookups and the CPU kernels.
    raw: Vec<u8>,
    /// How `Linear` computes with it.
    matmul: QuantMatmul,
}

enum QuantMatmul {
    /// accelrt's own CPU kernels (Q4_1, Q8_0).
    Cpu(Kernel, QFormat),
    /// candle's quantised matmul (CUDA, and CPU for the other GGUF types).
    Candle(QMatMul),
}

fn ggml_dtype(q: QuantType) -> GgmlDType {
    match q {
        QuantType::Q4_0 => GgmlDType::Q4_0,
        QuantType::Q4_1 => GgmlDType::Q4_1,
        QuantType::Q5_0 => GgmlDType::Q5_0,
        QuantType::Q5_1 => GgmlDType::Q5_1,
        QuantType::Q8_0 => GgmlDType::Q8_0,
        QuantType::Q2K => GgmlDType::Q2K,
        QuantType::Q3K => GgmlDType::Q3K,
        QuantType::Q4K => GgmlDType::Q4K,
        QuantType::Q5K => GgmlDType::Q5K,
        QuantType::Q6K => GgmlDType::Q6K,
        QuantType::Q8K => GgmlDType::Q8K,
    }
}

impl QuantWeight {
    /// Takes a weight already checked by `load_weight` (dtype, shape and byte size).
    pub(crate) fn upload(view: &WeightView<'_>, device: &Device) -> Result<QuantWeight> {
        let DType::Quant(qtype) = view.dtype else {
            return Err(Error::Backend {
                backend: BACKEND.into(),
                message: format!("{} is not quantised", view.dtype),
            });
        };
        let [rows, cols] = view.shape[..] else {
            return Err(Error::Unsupported {
                backend: BACKEND.into(),
                what: format!("quantised weights of rank {} (only matrices)", view.shape.len()),
            });
        };
        let cpu_format = match qtype {
            QuantType::Q4_1 => Some(QFormat::Q4_1),
            QuantType::Q8_0 => Some(QFormat::Q8_0),
            _ => None,
        };
        let matmul = match (device, cpu_format) {
            (Device::Cpu, Some(format)) => QuantMatmul::Cpu(best_kernel(), format),
            _ => {
                let q =
                    qtensor_from_ggml(ggml_dtype(qtype), &view.bytes, vec![rows, cols], device).map_err(candle_err)?;
                QuantMatmul::Candle(QMatMul::from_qtensor(q).map_err(candle_err)?)
            }
        };
        Ok(QuantWeight { qtype, rows, cols, raw: view.bytes.to_vec(), matmul })
    }

    /// x [..., cols] · Wᵀ → [..., rows], in x's dtype.
    pub(crate) fn linear(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut out_shape = x.dims().to_vec();
        *out_shape.last_mut().expect("rank ≥ 1 (checked by inference)") = self.rows;
        let dtype = x.dtype();
        let x2 = x.to_dtype(candle_core::DType::F32)?.contiguous()?.reshape(((), self.cols))?;
        let y = match &self.matmul {
            QuantMatmul::Cpu(kernel, format) => {
                let m = x2.dim(0)?;
                let xs: Vec<f32> = x2.flatten_all()?.to_vec1()?;
                let y = qmatmul::matmul(*kernel, *format, &self.raw, self.rows, self.cols, &xs, m);
                Tensor::from_vec(y, (m, self.rows), x.device())?
            }
            QuantMatmul::Candle(q) => q.forward(&x2)?,
        };
        y.reshape(out_shape)?.to_dtype(dtype)
    }

    /// Rows `ids` of the table, dequantised to `dtype`: ids.shape + [cols].
    pub(crate) fn embedding(&self, ids: &Tensor, dtype: candle_core::DType) -> candle_core::Result<Tensor> {
        let (per_block, block_bytes) = self.qtype.block_layout();
        let row_bytes = self.cols / per_block * block_bytes;
        let flat: Vec<i64> = ids.to_dtype(candle_core::DType::I64)?.flatten_all()?.to_vec1()?;
        let mut values = Vec::with_capacity(flat.len() * self.cols);
        for &id in &flat {
            if id < 0 || id as usize >= self.rows {
                candle_core::bail!("id {id} is out of range for an embedding table of {} rows", self.rows);
            }
            let row = &self.raw[id as usize * row_bytes..(id as usize + 1) * row_bytes];
            values.extend(quant::dequantize(self.qtype, row).map_err(candle_core::Error::wrap)?);
        }
        let mut shape = ids.dims().to_vec();
        shape.push(self.cols);
        Tensor::from_vec(values, shape, ids.device())?.to_dtype(dtype)
    }
}
