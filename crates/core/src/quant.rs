//! Dequantisation of GGUF block formats to f32, on the host. Used by the reference evaluator and by
//! backends that hold a type they cannot compute with directly.

use crate::{DType, Error, QuantType, Result};
use half::f16;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantises `bytes` (whole blocks of `q`) to f32 values.
pub fn dequantize(q: QuantType, bytes: &[u8]) -> Result<Vec<f32>> {
    let (per_block, block_bytes) = q.block_layout();
    if !bytes.len().is_multiple_of(block_bytes) {
        return Err(Error::Tensor(format!("{} bytes are not whole {q:?} blocks of {block_bytes}", bytes.len())));
    }
    let mut out = Vec::with_capacity(bytes.len() / block_bytes * per_block);
    for b in bytes.chunks_exact(block_bytes) {
        match q {
            QuantType::Q4_0 => {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&v| ((v & 0xf) as f32 - 8.0) * d));
                out.extend(qs.iter().map(|&v| ((v >> 4) as f32 - 8.0) * d));
            }
            QuantType::Q4_1 => {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&v| (v & 0xf) as f32 * d + m));
                out.extend(qs.iter().map(|&v| (v >> 4) as f32 * d + m));
            }
            QuantType::Q5_0 | QuantType::Q5_1 => {
                let (d, m, rest) = match q {
                    QuantType::Q5_0 => (f16_at(b, 0), None, &b[2..]),
                    _ => (f16_at(b, 0), Some(f16_at(b, 2)), &b[4..]),
                };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..20];
                let value = |i: usize| -> f32 {
                    let nib = if i < 16 { qs[i] & 0xf } else { qs[i - 16] >> 4 };
                    let v = (nib as u32 | (((qh >> i) & 1) << 4)) as f32;
                    match m {
                        Some(m) => v * d + m,
                        None => (v - 16.0) * d,
                    }
                };
                out.extend((0..32).map(value));
            }
            QuantType::Q8_0 => {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|&v| v as i8 as f32 * d));
            }
            other => {
                return Err(Error::UnsupportedDType {
                    dtype: DType::Quant(other),
                    context: "no host dequantiser for this k-quant type yet (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 have one)"
                        .into(),
                })
            }
        }
    }
    Ok(out)
}

/// Quantises f32 values (a multiple of 32) to Q4_1 or Q8_0 blocks the way ggml's reference
/// quantiser does. For tests and for building small quantised models.
pub fn quantize(q: QuantType, values: &[f32]) -> Result<Vec<u8>> {
    if !values.len().is_multiple_of(32) {
        return Err(Error::Tensor(format!("{} values are not whole blocks of 32", values.len())));
    }
    let mut out = Vec::new();
    for block in values.chunks_exact(32) {
        match q {
            QuantType::Q4_1 => {
                let min = block.iter().copied().fold(f32::INFINITY, f32::min);
                let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(f16::from_f32(min).to_le_bytes());
                let level = |x: f32| (((x - min) * id + 0.5) as u8).min(15);
                out.extend((0..16).map(|i| level(block[i]) | (level(block[i + 16]) << 4)));
            }
            QuantType::Q8_0 => {
                let amax = block.iter().fold(0f32, |a, x| a.max(x.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(block.iter().map(|&x| (x * id).round() as i8 as u8));
            }
            other => {
                return Err(Error::UnsupportedDType {
                    dtype: DType::Quant(other),
                    context: "quantize() writes Q4_1 and Q8_0".into(),
                })
            }
        }
    }
    Ok(out)
}

/// Another weight source with every block-quantised tensor dequantised to f32 (others as stored):
/// the same model for a graph built with f32 where the file holds quantised blocks — e.g. to run
/// a backend's f32 path on exactly the values a quantising backend dequantises at upload.
pub struct Dequantized<'a>(pub &'a dyn crate::WeightSource);

impl crate::WeightSource for Dequantized<'_> {
    fn get(&self, name: &str) -> Result<crate::WeightView<'_>> {
        let view = self.0.get(name)?;
        match view.dtype {
            DType::Quant(q) => {
                let bytes = dequantize(q, &view.bytes)?.iter().flat_map(|v| v.to_le_bytes()).collect();
                Ok(crate::WeightView { dtype: DType::F32, shape: view.shape, bytes: std::borrow::Cow::Owned(bytes) })
            }
            _ => Ok(view),
        }
    }
}
