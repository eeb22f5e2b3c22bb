//! Element types of graph values and weights.

use serde::{Deserialize, Serialize};
use std::fmt;

/// GGUF block-quantised storage types. Weights may be stored this way; a backend that cannot run a
/// type dequantises it or refuses the graph explicitly.
///
/// Layouts are ggml's (`ggml-common.h`); the GGUF type id is given per variant. In each block, q are
/// the stored integers and d, m the f16 scale and minimum; the k-quants group 256 values into
/// sub-blocks with their own quantised scales. The host dequantiser (`quant::dequantize`) reads
/// Q4_0 to Q8_0 only; the k-quants need a backend that reads them (candle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantType {
    /// 32 values in 18 bytes (4.5 bits each): d and 4-bit q, value = d·(q − 8). GGUF type 2.
    Q4_0,
    /// 32 values in 20 bytes (5 bits each): d, m and 4-bit q, value = d·q + m. GGUF type 3.
    Q4_1,
    /// 32 values in 22 bytes (5.5 bits each): d and 5-bit q, value = d·(q − 16). GGUF type 6.
    Q5_0,
    /// 32 values in 24 bytes (6 bits each): d, m and 5-bit q, value = d·q + m. GGUF type 7.
    Q5_1,
    /// 32 values in 34 bytes (8.5 bits each): d and i8 q, value = d·q. GGUF type 8.
    Q8_0,
    /// k-quant, 256 values in 84 bytes (2.625 bits each): 2-bit q in 16 sub-blocks of 16 with 4-bit
    /// scales and minimums. GGUF type 10 (`Q2_K`).
    Q2K,
    /// k-quant, 256 values in 110 bytes (3.4375 bits each): 3-bit q in 16 sub-blocks of 16 with
    /// 6-bit scales. GGUF type 11 (`Q3_K`).
    Q3K,
    /// k-quant, 256 values in 144 bytes (4.5 bits each): 4-bit q in 8 sub-blocks of 32 with 6-bit
    /// scales and minimums. GGUF type 12 (`Q4_K`).
    Q4K,
    /// k-quant, 256 values in 176 bytes (5.5 bits each): 5-bit q in 8 sub-blocks of 32 with 6-bit
    /// scales and minimums. GGUF type 13 (`Q5_K`).
    Q5K,
    /// k-quant, 256 values in 210 bytes (6.5625 bits each): 6-bit q in 16 sub-blocks of 16 with i8
    /// scales. GGUF type 14 (`Q6_K`).
    Q6K,
    /// k-quant, 256 values in 292 bytes: i8 q with an f32 scale and per-16 sums; ggml uses it for
    /// activations in k-quant dot products rather than for stored weights. GGUF type 15 (`Q8_K`).
    Q8K,
}

impl QuantType {
    /// (elements per block, bytes per block), as laid out by ggml.
    pub fn block_layout(self) -> (usize, usize) {
        match self {
            QuantType::Q4_0 => (32, 18),
            QuantType::Q4_1 => (32, 20),
            QuantType::Q5_0 => (32, 22),
            QuantType::Q5_1 => (32, 24),
            QuantType::Q8_0 => (32, 34),
            QuantType::Q2K => (256, 84),
            QuantType::Q3K => (256, 110),
            QuantType::Q4K => (256, 144),
            QuantType::Q5K => (256, 176),
            QuantType::Q6K => (256, 210),
            QuantType::Q8K => (256, 292),
        }
    }
}

/// The element type of a value in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    /// IEEE 754 binary32: about 7 significant digits, largest finite value about 3.4e38.
    F32,
    /// IEEE 754 binary16: about 3 significant digits, largest finite value 65504.
    F16,
    /// bfloat16: f32's 8-bit exponent (so f32's range) with a 7-bit mantissa (about 2 to 3
    /// significant digits).
    BF16,
    /// Signed 64-bit integer, e.g. token ids as PyTorch and ONNX models take them.
    I64,
    /// Unsigned 32-bit integer: `Op::Positions` output, dropout seeds, ids.
    U32,
    /// Unsigned 8-bit integer (0 to 255), e.g. 0/1 masks.
    U8,
    /// Block-quantised storage (weights only).
    Quant(QuantType),
}

impl DType {
    /// Whether this is F32, F16 or BF16, the types ops compute in (`Quant` is not: it is storage).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// Whether this is I64, U32 or U8 (ids, positions, masks, seeds).
    pub fn is_int(self) -> bool {
        matches!(self, DType::I64 | DType::U32 | DType::U8)
    }

    /// Bytes per element, or `None` for block-quantised types.
    pub fn size_in_bytes(self) -> Option<usize> {
        match self {
            DType::F32 | DType::U32 => Some(4),
            DType::F16 | DType::BF16 => Some(2),
            DType::I64 => Some(8),
            DType::U8 => Some(1),
            DType::Quant(_) => None,
        }
    }

    /// Bytes needed to store `elements` values of this type (whole blocks for quantised types);
    /// `None` if `elements` is not a whole number of blocks or the byte count overflows `usize`.
    pub fn storage_bytes(self, elements: usize) -> Option<usize> {
        match self {
            DType::Quant(q) => {
                let (per_block, bytes) = q.block_layout();
                elements.is_multiple_of(per_block).then_some(elements / per_block * bytes)
            }
            other => other.size_in_bytes().and_then(|s| s.checked_mul(elements)),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DType::F32 => f.write_str("f32"),
            DType::F16 => f.write_str("f16"),
            DType::BF16 => f.write_str("bf16"),
            DType::I64 => f.write_str("i64"),
            DType::U32 => f.write_str("u32"),
            DType::U8 => f.write_str("u8"),
            DType::Quant(q) => write!(f, "{q:?}"),
        }
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(DType::F32),
            "f16" => Ok(DType::F16),
            "bf16" => Ok(DType::BF16),
            "i64" => Ok(DType::I64),
            "u32" => Ok(DType::U32),
            "u8" => Ok(DType::U8),
            other => Err(format!("unknown dtype `{other}` (expected f32, f16, bf16, i64, u32 or u8)")),
        }
    }
}
