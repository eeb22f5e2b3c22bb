//! Element types of graph values and weights.

use serde::{Deserialize, Serialize};
use std::fmt;

/// GGUF block-quantised storage types. Weights may be stored this way; a backend that cannot run a
/// type dequantises it or refuses the graph explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
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
    F32,
    F16,
    BF16,
    I64,
    U32,
    U8,
    /// Block-quantised storage (weights only).
    Quant(QuantType),
}

impl DType {
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

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

    /// Bytes needed to store `elements` values of this type (whole blocks for quantised types).
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
