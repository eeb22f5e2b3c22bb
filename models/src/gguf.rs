//! GGUF files (llama.cpp's model format): metadata and tensors, memory-mapped.
//!
//! Layout (little-endian): "GGUF", version (2 or 3), tensor count, metadata count, the metadata
//! key/values, the tensor infos (name, dims innermost first, type, offset), then the tensor data
//! from the next multiple of `general.alignment` (32 by default).
//!
//! Nothing read from the file is trusted before it is checked, so a truncated, corrupt or hostile
//! file is an error that says where, never a panic or a huge allocation:
//! - every count and length must fit in the bytes that remain, at the least size one item of its
//!   kind takes in the file (1 byte for a u8 array item, 8 for a string, 24 for a tensor info);
//! - what the header decodes to (values, strings, names) is charged against
//!   [`MAX_DECODED_HEADER_BYTES`] before it is allocated, because a value takes more room decoded
//!   than in the file (a 1-byte u8 array item becomes a 32-byte [`GgufValue`]);
//! - every tensor's byte range is its type × shape, starts at a multiple of the alignment, lies in
//!   the data section, and overlaps no other tensor's (so a wrong type or offset cannot make one
//!   tensor read its neighbours' bytes). Types accelrt cannot run still get their real size.

use crate::weights::FileBytes;
use crate::{ModelError, Result};
use accelrt_core::{DType, QuantType, WeightSource, WeightView};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A metadata value, one variant per GGUF value type (the type id in the file is given on each).
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4; the usual type of counts such as `llama.block_count`.
    U32(u32),
    /// Type 5; token types (`tokenizer.ggml.token_type`) are arrays of these.
    I32(i32),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 6.
    F32(f32),
    /// Type 12.
    F64(f64),
    /// Type 7: one byte, any non-zero value is `true`.
    Bool(bool),
    /// Type 8: a length-prefixed UTF-8 string (a string that is not UTF-8 is refused).
    String(String),
    /// Type 9: items of one type. Arrays of arrays are refused (no model uses them).
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a float or a non-negative integer (converted, possibly
    /// rounding past 2^53).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The text of a [`GgufValue::String`]; `None` for every other type.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a [`GgufValue::Bool`]; integers are not read as booleans.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The items of a [`GgufValue::Array`]; `None` for every other type.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor is and what it holds.
#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    /// Row-major shape, outermost first (GGUF stores dims innermost first; this is reversed, so a
    /// matrix is `[rows, columns]`, as PyTorch writes it).
    pub shape: Vec<usize>,
    /// The ggml type id (0 F32, 1 F16, 30 BF16, 2 Q4_0, 3 Q4_1, …; see ggml's `ggml_type`). Types
    /// accelrt cannot run are kept here and refused by [`GgufTensorInfo::dtype`].
    pub type_id: u32,
    /// Byte range in the file.
    start: usize,
    end: usize,
}

impl GgufTensorInfo {
    /// The accelrt dtype of this tensor, or a message naming the unsupported ggml type.
    pub fn dtype(&self) -> Result<DType, String> {
        ggml_dtype(self.type_id)
    }
}

/// ggml type ids → accelrt dtypes.
fn ggml_dtype(type_id: u32) -> Result<DType, String> {
    Ok(match type_id {
        0 => DType::F32,
        1 => DType::F16,
        30 => DType::BF16,
        2 => DType::Quant(QuantType::Q4_0),
        3 => DType::Quant(QuantType::Q4_1),
        6 => DType::Quant(QuantType::Q5_0),
        7 => DType::Quant(QuantType::Q5_1),
        8 => DType::Quant(QuantType::Q8_0),
        10 => DType::Quant(QuantType::Q2K),
        11 => DType::Quant(QuantType::Q3K),
        12 => DType::Quant(QuantType::Q4K),
        13 => DType::Quant(QuantType::Q5K),
        14 => DType::Quant(QuantType::Q6K),
        15 => DType::Quant(QuantType::Q8K),
        other => {
            let name = match other {
                9 => "Q8_1",
                16 => "IQ2_XXS",
                17 => "IQ2_XS",
                18 => "IQ3_XXS",
                19 => "IQ1_S",
                20 => "IQ4_NL",
                21 => "IQ3_S",
                22 => "IQ2_S",
                23 => "IQ4_XS",
                24 => "I8",
                25 => "I16",
                26 => "I32",
                27 => "I64",
                28 => "F64",
                29 => "IQ1_M",
                _ => "unknown",
            };
            return Err(format!(
                "ggml type {other} ({name}) is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K…Q8_K)"
            ));
        }
    })
}

/// (elements per block, bytes per block) of every ggml type with a known layout, as ggml lays them
/// out — also for the types accelrt cannot run, so that their tensors still get their true byte
/// range (a size of 0 would let such a tensor hide an overlap). Ids ggml has retired or never
/// assigned have no layout, and a file using one is refused.
fn ggml_block_layout(type_id: u32) -> Option<(usize, usize)> {
    Some(match type_id {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        _ => return None,
    })
}

/// The byte size of a tensor of ggml type `type_id` with GGUF dims `dims` (innermost first), or why
/// it has none: an unknown type, rows that are not whole blocks, or a size that overflows.
fn tensor_bytes(type_id: u32, dims: &[u64]) -> Result<usize, String> {
    let (per_block, block_bytes) =
        ggml_block_layout(type_id).ok_or_else(|| format!("ggml type {type_id} has no known layout"))?;
    // ggml quantises each row on its own, so the innermost dimension must be whole blocks.
    let row = dims.first().copied().unwrap_or(1);
    if row % per_block as u64 != 0 {
        return Err(format!("rows of {row} elements are not whole blocks of {per_block}"));
    }
    let elements = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    elements
        .map(|n| n / per_block as u64)
        .and_then(|blocks| blocks.checked_mul(block_bytes as u64))
        .and_then(|bytes| usize::try_from(bytes).ok())
        .ok_or_else(|| format!("dims {dims:?} overflow"))
}

/// The most memory the parsed header (metadata values, strings, tensor names and infos) may take.
/// Real files need a few tens of MiB at most (a 256k-token vocabulary with its merges); the bound
/// keeps counts that merely fit the file's bytes from decoding into many times the file's size.
pub const MAX_DECODED_HEADER_BYTES: usize = 256 << 20;

/// What one metadata key/value or tensor info costs beyond its strings and array items: the map
/// entry and its bookkeeping (a generous estimate; only the order of magnitude matters).
const ENTRY_COST: usize = 128;

/// A GGUF file mapped into memory; tensors are borrowed straight from the mapping.
pub struct GgufFile {
    path: PathBuf,
    bytes: FileBytes,
    /// The GGUF format version, 2 or 3 (others are refused).
    pub version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: BTreeMap<String, GgufTensorInfo>,
}

/// A bounds-checked reader over the file bytes, with the budget for what the header decodes to.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Bytes of decoded header still allowed (see [`MAX_DECODED_HEADER_BYTES`]).
    budget: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            format!(
                "truncated: {what} needs {n} bytes at offset {} but the file has {} bytes",
                self.pos,
                self.bytes.len()
            )
        })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that must fit in the rest of the file at `min_size` bytes per item.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize, String> {
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_size as u64) > left {
            return Err(format!("truncated or corrupt: {what} is {n}, more than the {left} bytes left could hold"));
        }
        Ok(n as usize)
    }

    /// Takes `bytes` of decoded header from the budget; called before the memory is allocated.
    fn charge(&mut self, bytes: usize, what: &str) -> Result<(), String> {
        self.budget = self.budget.checked_sub(bytes).ok_or_else(|| {
            format!(
                "corrupt or unsupported: {what} would take the decoded header past {} MiB",
                MAX_DECODED_HEADER_BYTES >> 20
            )
        })?;
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.count(what, 1)?;
        self.charge(n, what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("corrupt: {what} is not UTF-8"))
    }

    fn value(&mut self, type_id: u32, what: &str, depth: usize) -> Result<GgufValue, String> {
        Ok(match type_id {
            0 => GgufValue::U8(self.array::<1>(what)?[0]),
            1 => GgufValue::I8(self.array::<1>(what)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(self.u32(what)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => GgufValue::Bool(self.array::<1>(what)?[0] != 0),
            8 => GgufValue::String(self.string(what)?),
            9 if depth == 0 => {
                let item_type = self.u32(what)?;
                let item_size = min_value_size(item_type)
                    .ok_or_else(|| format!("corrupt or unsupported: {what} is an array of value type {item_type}"))?;
                let n = self.count(what, item_size)?;
                // Each item is a whole `GgufValue` in memory, however few bytes it has in the file.
                self.charge(n.saturating_mul(std::mem::size_of::<GgufValue>()), what)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_type, what, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(format!("corrupt or unsupported: {what} has value type {other}")),
        })
    }
}

/// The fewest bytes a value of `type_id` takes in the file, for the array item types this reader
/// accepts (an array of arrays is not one: no GGUF model uses them).
fn min_value_size(type_id: u32) -> Option<usize> {
    match type_id {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        // A string is at least its 8-byte length.
        8 | 10..=12 => Some(8),
        _ => None,
    }
}

impl GgufFile {
    /// Maps and parses `path`, checking every count, size and tensor range (see the module docs).
    ///
    /// # Errors
    ///
    /// [`ModelError::Io`] when the file cannot be opened or mapped; [`ModelError::Config`] ("not a
    /// valid GGUF file: …", saying where) when the header is truncated, corrupt, of an
    /// unsupported version, or over [`MAX_DECODED_HEADER_BYTES`].
    pub fn open(path: &Path) -> Result<GgufFile> {
        GgufFile::new(path, FileBytes::map(path)?)
    }

    /// Parses a file held in memory, as [`GgufFile::open`] does one on disk (for tests and fuzzing);
    /// `path` only names it in messages.
    ///
    /// # Errors
    ///
    /// [`ModelError::Config`], as [`GgufFile::open`].
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<GgufFile> {
        GgufFile::new(path, FileBytes::Owned(bytes))
    }

    fn new(path: &Path, bytes: FileBytes) -> Result<GgufFile> {
        let (version, metadata, tensors) =
            parse(&bytes).map_err(|m| ModelError::config(path, format!("not a valid GGUF file: {m}")))?;
        Ok(GgufFile { path: path.to_path_buf(), bytes, version, metadata, tensors })
    }

    /// The path the file was opened from (for a file parsed from memory, the name given); errors
    /// about the file name it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every metadata key/value, sorted by key (e.g. `general.architecture`, `llama.block_count`,
    /// `tokenizer.ggml.tokens`).
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// The metadata value under `key` (a full dotted key such as `llama.context_length`), if any.
    pub fn value(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// Every tensor's info, sorted by name (e.g. `blk.0.attn_q.weight`).
    pub fn tensors(&self) -> &BTreeMap<String, GgufTensorInfo> {
        &self.tensors
    }

    /// The info of tensor `name`, if the file holds it; its bytes are read through
    /// [`WeightSource::get`].
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.get(name)
    }
}

type Parsed = (u32, BTreeMap<String, GgufValue>, BTreeMap<String, GgufTensorInfo>);

/// The most dims a ggml tensor has (GGML_MAX_DIMS).
const MAX_DIMS: usize = 4;

fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let mut r = Reader { bytes, pos: 0, budget: MAX_DECODED_HEADER_BYTES };
    if r.take(4, "the magic number")? != b"GGUF" {
        return Err("the file does not start with the GGUF magic number".into());
    }
    let version = r.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(format!("GGUF version {version} is not supported (2 and 3 are)"));
    }
    // A tensor info is at least 24 bytes, a key/value at least 13.
    let n_tensors = r.count("the tensor count", 24)?;
    let n_kv = r.count("the metadata count", 13)?;
    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = r.string(&format!("metadata key {i}"))?;
        let type_id = r.u32(&format!("the type of `{key}`"))?;
        r.charge(ENTRY_COST, &format!("`{key}`"))?;
        let value = r.value(type_id, &format!("`{key}`"), 0)?;
        if metadata.contains_key(&key) {
            return Err(format!("corrupt: metadata key `{key}` appears twice"));
        }
        metadata.insert(key, value);
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => {
            let a = v.as_u64().filter(|a| a.is_power_of_two()).ok_or("general.alignment is not a power of two")?;
            usize::try_from(a).map_err(|_| format!("general.alignment {a} is too large"))?
        }
    };
    let mut infos = Vec::new();
    for i in 0..n_tensors {
        let name = r.string(&format!("tensor name {i}"))?;
        r.charge(ENTRY_COST, &format!("tensor `{name}`"))?;
        let n_dims = r.u32(&format!("the rank of `{name}`"))? as usize;
        if n_dims > MAX_DIMS {
            return Err(format!("corrupt: tensor `{name}` has rank {n_dims} (ggml tensors have at most {MAX_DIMS})"));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(r.u64(&format!("the dims of `{name}`"))?);
        }
        let type_id = r.u32(&format!("the type of `{name}`"))?;
        let offset = r.u64(&format!("the offset of `{name}`"))?;
        infos.push((name, dims, type_id, offset));
    }
    let data_start = r
        .pos
        .div_ceil(alignment)
        .checked_mul(alignment)
        .ok_or_else(|| format!("general.alignment {alignment} puts the data past any file"))?;

    let mut tensors = BTreeMap::new();
    // (start, end, name) of every tensor, to find overlaps once all are known.
    let mut ranges = Vec::with_capacity(infos.len());
    for (name, dims, type_id, offset) in infos {
        let size = tensor_bytes(type_id, &dims).map_err(|m| format!("corrupt: tensor `{name}`: {m}"))?;
        if offset % alignment as u64 != 0 {
            return Err(format!(
                "corrupt: tensor `{name}` has offset {offset}, not a multiple of the alignment {alignment}"
            ));
        }
        let start = usize::try_from(offset).ok().and_then(|o| o.checked_add(data_start));
        let end = start.and_then(|s| s.checked_add(size));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(format!("corrupt: tensor `{name}` has offset {offset}"));
        };
        if end > bytes.len() {
            return Err(format!(
                "truncated: tensor `{name}` ({size} bytes at data offset {offset}) needs bytes up to {end} but the file has {} bytes",
                bytes.len()
            ));
        }
        let shape = dims.iter().rev().map(|&d| d as usize).collect();
        if tensors.contains_key(&name) {
            return Err(format!("corrupt: tensor `{name}` appears twice"));
        }
        ranges.push((start, end, name.clone()));
        tensors.insert(name, GgufTensorInfo { shape, type_id, start, end });
    }
    // Sorted by start, disjoint ranges each end before the next begins; the first pair that does
    // not is an overlap (empty tensors hold no bytes and overlap nothing).
    ranges.retain(|(start, end, _)| start < end);
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let ((_, end, a), (start, _, b)) = (&pair[0], &pair[1]);
        if start < end {
            return Err(format!("corrupt: the data of tensors `{a}` and `{b}` overlap"));
        }
    }
    Ok((version, metadata, tensors))
}

impl WeightSource for GgufFile {
    fn get(&self, name: &str) -> accelrt_core::Result<WeightView<'_>> {
        let bad = |message: String| accelrt_core::Error::Weight { name: name.into(), message };
        let info = self.tensors.get(name).ok_or_else(|| bad(format!("not in {}", self.path.display())))?;
        let dtype = info.dtype().map_err(bad)?;
        Ok(WeightView { dtype, shape: info.shape.clone(), bytes: Cow::Borrowed(&self.bytes[info.start..info.end]) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout table that sizes tensors must agree with the one the backends read them by.
    #[test]
    fn block_layouts_agree_with_the_supported_dtypes() {
        for type_id in 0..64 {
            if let Ok(dtype) = ggml_dtype(type_id) {
                let (per_block, bytes) = ggml_block_layout(type_id).expect("a supported type has a layout");
                assert_eq!(dtype.storage_bytes(per_block * 3), Some(3 * bytes), "ggml type {type_id}");
            }
        }
    }

    #[test]
    fn tensor_sizes_refuse_partial_blocks_and_overflow() {
        assert_eq!(tensor_bytes(3, &[64, 2]), Ok(2 * 2 * 20));
        assert!(tensor_bytes(3, &[48, 2]).unwrap_err().contains("whole blocks"));
        assert!(tensor_bytes(0, &[u64::MAX, 2]).unwrap_err().contains("overflow"));
        assert!(tensor_bytes(0, &[1 << 62]).unwrap_err().contains("overflow"));
        assert!(tensor_bytes(31, &[32]).unwrap_err().contains("no known layout"));
    }
}
