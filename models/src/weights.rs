//! Weights from a memory-mapped safetensors file.
//!
//! The header is checked before anything it describes is used: its length must fit in the file (and
//! under the safetensors crate's 100 MB bound, so parsing it allocates at most a small multiple of
//! that), and every tensor's dtype × shape must be exactly its byte range, inside the data section,
//! overlapping no other. The safetensors crate checks these too; they are checked again here so that
//! [`SafetensorsWeights::get`] can rely on them whatever the crate's version does.

use crate::{ModelError, Result};
use accelrt_core::{DType, WeightSource, WeightView};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, SafeTensors};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// The bytes of a model file: memory-mapped, or held in memory (tests and fuzzing).
pub(crate) enum FileBytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl FileBytes {
    /// Maps `path` read-only.
    pub(crate) fn map(path: &Path) -> Result<FileBytes> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        // Safety: the mapping is read-only; the model files are not modified while mapped
        // (the cache replaces files by rename, which keeps the mapped inode intact).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        Ok(FileBytes::Mapped(mmap))
    }
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

/// A safetensors file mapped into memory; weights are borrowed straight from the mapping.
pub struct SafetensorsWeights {
    path: PathBuf,
    bytes: FileBytes,
    header_len: usize,
    metadata: Metadata,
}

impl SafetensorsWeights {
    /// Maps and validates `path` (header, offsets and total length: a truncated file is refused).
    ///
    /// # Errors
    ///
    /// [`ModelError::Io`] when the file cannot be opened or mapped; [`ModelError::Safetensors`]
    /// when the header or a tensor's byte range is invalid.
    pub fn open(path: &Path) -> Result<SafetensorsWeights> {
        SafetensorsWeights::new(path, FileBytes::map(path)?)
    }

    /// Validates a file held in memory, as [`SafetensorsWeights::open`] does one on disk (for tests
    /// and fuzzing); `path` only names it in messages.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<SafetensorsWeights> {
        SafetensorsWeights::new(path, FileBytes::Owned(bytes))
    }

    fn new(path: &Path, bytes: FileBytes) -> Result<SafetensorsWeights> {
        let bad = |message: String| ModelError::Safetensors { path: path.to_path_buf(), message };
        check_header_len(&bytes).map_err(bad)?;
        let (header_len, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        check_ranges(&metadata, bytes.len() - 8 - header_len).map_err(bad)?;
        Ok(SafetensorsWeights { path: path.to_path_buf(), bytes, header_len, metadata })
    }

    /// Whether the file holds a tensor called `name` (whatever its dtype).
    pub fn contains(&self, name: &str) -> bool {
        self.metadata.info(name).is_some()
    }

    /// The names of the tensors, in the order of their data.
    pub fn names(&self) -> Vec<String> {
        self.metadata.offset_keys()
    }

    /// The shape of tensor `name`, if the file holds it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.metadata.info(name).map(|info| info.shape.as_slice())
    }

    /// The path the file was opened from (for a file held in memory, the name given); errors
    /// about the file name it.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The header length (the first 8 bytes) must leave room for itself in the file.
fn check_header_len(bytes: &[u8]) -> std::result::Result<(), String> {
    let prefix: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("the file has {} bytes, fewer than the 8-byte header length", bytes.len()))?;
    let n = u64::from_le_bytes(prefix);
    if n > bytes.len() as u64 - 8 {
        return Err(format!("the header length is {n} but only {} bytes follow it", bytes.len() - 8));
    }
    Ok(())
}

/// Every tensor's byte range is its dtype × shape, lies inside the `data_len` bytes of data, and
/// overlaps no other tensor's.
fn check_ranges(metadata: &Metadata, data_len: usize) -> std::result::Result<(), String> {
    let mut ranges = Vec::new();
    for (name, info) in metadata.tensors() {
        let (start, end) = info.data_offsets;
        let elements = info.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let bytes = elements
            .and_then(|n| n.checked_mul(info.dtype.bitsize()))
            .filter(|bits| bits % 8 == 0)
            .map(|bits| bits / 8);
        if start > end || end > data_len || bytes != Some(end - start) {
            return Err(format!(
                "tensor `{name}` ({:?} {:?}) has data offsets {start}..{end} in {data_len} bytes of data",
                info.dtype, info.shape
            ));
        }
        if start < end {
            ranges.push((start, end, name));
        }
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let ((_, end, a), (start, _, b)) = (&pair[0], &pair[1]);
        if start < end {
            return Err(format!("the data of tensors `{a}` and `{b}` overlap"));
        }
    }
    Ok(())
}

fn to_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::U32 => DType::U32,
        Dtype::U8 => DType::U8,
        _ => return None,
    })
}

impl WeightSource for SafetensorsWeights {
    fn get(&self, name: &str) -> accelrt_core::Result<WeightView<'_>> {
        let bad = |message: String| accelrt_core::Error::Weight { name: name.into(), message };
        let info = self.metadata.info(name).ok_or_else(|| bad(format!("not in {}", self.path.display())))?;
        let dtype =
            to_dtype(info.dtype).ok_or_else(|| bad(format!("safetensors dtype {:?} is not supported", info.dtype)))?;
        // The range was checked when the file was opened.
        let start = 8 + self.header_len;
        let (a, b) = info.data_offsets;
        Ok(WeightView { dtype, shape: info.shape.clone(), bytes: Cow::Borrowed(&self.bytes[start + a..start + b]) })
    }
}
