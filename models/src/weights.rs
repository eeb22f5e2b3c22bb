//! Weights from a memory-mapped safetensors file.

use crate::{ModelError, Result};
use accelrt_core::{DType, WeightSource, WeightView};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, SafeTensors};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// A safetensors file mapped into memory; weights are borrowed straight from the mapping.
pub struct SafetensorsWeights {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    metadata: Metadata,
}

impl SafetensorsWeights {
    /// Maps and validates `path` (header, offsets and total length: a truncated file is refused).
    pub fn open(path: &Path) -> Result<SafetensorsWeights> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        // Safety: the mapping is read-only; the model files are not modified while mapped
        // (the cache replaces files by rename, which keeps the mapped inode intact).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| ModelError::Safetensors { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(SafetensorsWeights { path: path.to_path_buf(), mmap, header_len, metadata })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.metadata.info(name).is_some()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
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
        let info = self.metadata.info(name).ok_or_else(|| accelrt_core::Error::Weight {
            name: name.into(),
            message: format!("not in {}", self.path.display()),
        })?;
        let dtype = to_dtype(info.dtype).ok_or_else(|| accelrt_core::Error::Weight {
            name: name.into(),
            message: format!("safetensors dtype {:?} is not supported", info.dtype),
        })?;
        let start = 8 + self.header_len;
        let (a, b) = info.data_offsets;
        Ok(WeightView { dtype, shape: info.shape.clone(), bytes: Cow::Borrowed(&self.mmap[start + a..start + b]) })
    }
}
