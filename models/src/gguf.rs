//! GGUF files (llama.cpp's model format): metadata and tensors, memory-mapped.
//!
//! Layout (little-endian): "GGUF", version (2 or 3), tensor count, metadata count, the metadata
//! key/values, the tensor infos (name, dims innermost first, type, offset), then the tensor data
//! from the next multiple of `general.alignment` (32 by default). Every count, length and offset is
//! checked against the file size, so a truncated or corrupt file is an error that says where, never
//! a panic or a huge allocation.

use crate::{ModelError, Result};
use accelrt_core::{DType, QuantType, WeightSource, WeightView};
use memmap2::Mmap;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
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

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

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
    /// Row-major shape (GGUF stores dims innermost first; this is reversed to [rows, columns]).
    pub shape: Vec<usize>,
    /// The ggml type id.
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

/// A GGUF file mapped into memory; tensors are borrowed straight from the mapping.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    pub version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: BTreeMap<String, GgufTensorInfo>,
}

/// A bounds-checked reader over the file bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
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
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
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

    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.count(what, 1)?;
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
                let n = self.count(what, 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_type, what, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(format!("corrupt: {what} has unknown value type {other}")),
        })
    }
}

impl GgufFile {
    /// Maps and parses `path`, checking that every tensor lies inside the file.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        // Safety: read-only mapping of a file the cache only ever replaces by rename.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let (version, metadata, tensors) =
            parse(&mmap).map_err(|m| ModelError::config(path, format!("not a valid GGUF file: {m}")))?;
        Ok(GgufFile { path: path.to_path_buf(), mmap, version, metadata, tensors })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    pub fn value(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    pub fn tensors(&self) -> &BTreeMap<String, GgufTensorInfo> {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.get(name)
    }
}

type Parsed = (u32, BTreeMap<String, GgufValue>, BTreeMap<String, GgufTensorInfo>);

fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let mut r = Reader { bytes, pos: 0 };
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
        let value = r.value(type_id, &format!("`{key}`"), 0)?;
        metadata.insert(key, value);
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => {
            v.as_u64().filter(|a| a.is_power_of_two()).ok_or("general.alignment is not a power of two")? as usize
        }
    };
    let mut infos = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = r.string(&format!("tensor name {i}"))?;
        let n_dims = r.u32(&format!("the rank of `{name}`"))? as usize;
        if n_dims > 8 {
            return Err(format!("corrupt: tensor `{name}` has rank {n_dims}"));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(r.u64(&format!("the dims of `{name}`"))? as usize);
        }
        let type_id = r.u32(&format!("the type of `{name}`"))?;
        let offset = r.u64(&format!("the offset of `{name}`"))?;
        infos.push((name, dims, type_id, offset));
    }
    let data_start = r.pos.div_ceil(alignment) * alignment;
    let mut tensors = BTreeMap::new();
    for (name, dims, type_id, offset) in infos {
        let elements = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let size = match (ggml_dtype(type_id), elements) {
            (Ok(dtype), Some(n)) => {
                dtype.storage_bytes(n).ok_or_else(|| format!("tensor `{name}`: {n} elements are not whole blocks"))?
            }
            // An unsupported type is refused when the tensor is used, not when the file is opened.
            (Err(_), Some(_)) => 0,
            (_, None) => return Err(format!("corrupt: tensor `{name}` has dims {dims:?}")),
        };
        let start = usize::try_from(offset).ok().and_then(|o| o.checked_add(data_start));
        let end = start.and_then(|s| s.checked_add(size));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(format!("corrupt: tensor `{name}` has offset {offset}"));
        };
        if end > bytes.len() {
            return Err(format!(
                "truncated: tensor `{name}` needs bytes up to {end} but the file has {} bytes",
                bytes.len()
            ));
        }
        let shape = dims.iter().rev().copied().collect();
        tensors.insert(name, GgufTensorInfo { shape, type_id, start, end });
    }
    Ok((version, metadata, tensors))
}

impl WeightSource for GgufFile {
    fn get(&self, name: &str) -> accelrt_core::Result<WeightView<'_>> {
        let bad = |message: String| accelrt_core::Error::Weight { name: name.into(), message };
        let info = self.tensors.get(name).ok_or_else(|| bad(format!("not in {}", self.path.display())))?;
        let dtype = info.dtype().map_err(bad)?;
        Ok(WeightView { dtype, shape: info.shape.clone(), bytes: Cow::Borrowed(&self.mmap[info.start..info.end]) })
    }
}
